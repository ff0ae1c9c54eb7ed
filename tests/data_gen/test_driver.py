"""The driver on code-written tiles: block splits, resume, determinism, card, paraphrase guard."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from data_gen.config import GenConfig
from data_gen.driver import assign_splits, build_dataset, decode_png, encode_png
from data_gen.paraphrase import accept, paraphrase_samples
from data_gen.tasks import run_tasks
from tests.data_gen.task_fixtures import fixture_loader, fixture_planner, synthetic_tile


def _cfg(out, **kw) -> GenConfig:
    return GenConfig(out=str(out), tile_size=64, extra={"tiles_per_shard": 3}, **kw)


def _rows(out):
    return [r for f in sorted((out / "data").glob("*.parquet")) for r in pq.read_table(f).to_pylist()]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("ds")
    build_dataset(_cfg(out), fixture_planner, fixture_loader)
    return out


def test_layout_schema_and_card(built) -> None:
    files = sorted(p.name for p in (built / "data").glob("*.parquet"))
    assert files[0].startswith("test-") and any(f.startswith("train-") for f in files)
    rows = _rows(built)
    assert rows and {r["task"] for r in rows} == {"caption", "vqa", "grounding", "reasoning", "gcg", "change"}
    r = rows[0]
    assert set(r) >= {
        "id",
        "images",
        "conversations",
        "masks",
        "task",
        "source",
        "license",
        "weak",
        "crs",
        "transform",
        "split",
        "meta",
    }
    assert all(len(x["images"]) == (2 if x["task"] == "change" else 1) for x in rows)
    assert decode_png(r["images"][0]).shape == (64, 64, 3)
    card = (built / "README.md").read_text()
    assert "1 empty, skipped" in card and "| vqa |" in card and "Class balance" in card
    assert (built / "task_mix.png").stat().st_size > 1000
    from datasets import load_dataset

    ds = load_dataset("parquet", data_dir=str(built / "data"))
    assert sum(len(ds[s]) for s in ds) == len(rows)


def test_splits_never_share_a_block(built) -> None:
    blocks: dict[str, set[str]] = {}
    for r in _rows(built):
        blocks.setdefault(r["split"], set()).add(r["block"])
    splits = list(blocks)
    assert len(splits) == 3
    for i, a in enumerate(splits):
        for b in splits[i + 1 :]:
            assert not blocks[a] & blocks[b]


def test_assign_splits_deterministic_and_fractions() -> None:
    blocks = [f"b{i}" for i in range(100)]
    a = assign_splits(blocks, (0.8, 0.1, 0.1), seed=1)
    assert a == assign_splits(list(reversed(blocks)), (0.8, 0.1, 0.1), seed=1)
    assert a != assign_splits(blocks, (0.8, 0.1, 0.1), seed=2)
    counts = {s: list(a.values()).count(s) for s in ("train", "validation", "test")}
    assert counts == {"train": 80, "validation": 10, "test": 10}
    assert set(assign_splits(["x", "y", "z"], (0.8, 0.1, 0.1), 0).values()) == {"train", "validation", "test"}
    with pytest.raises(ValueError):
        assign_splits(blocks, (1.0, -0.5, 0.5), 0)


def test_resume_skips_finished_shards_and_is_deterministic(built, tmp_path) -> None:
    out = tmp_path / "ds"
    build_dataset(_cfg(out), fixture_planner, fixture_loader)
    shards = sorted((out / "data").glob("*.parquet"))
    kept = {p: p.stat().st_mtime_ns for p in shards[1:]}
    shards[0].unlink()
    build_dataset(_cfg(out), fixture_planner, fixture_loader)
    assert shards[0].exists()
    assert all(p.stat().st_mtime_ns == t for p, t in kept.items())
    # Same seed, separate folder, two processes: identical samples.
    key = [(r["id"], r["conversations"], r["meta"]) for r in _rows(out)]
    assert key == [(r["id"], r["conversations"], r["meta"]) for r in _rows(built)]


def test_parallel_matches_serial(built, tmp_path) -> None:
    out = tmp_path / "par"
    build_dataset(_cfg(out, num_proc=2), fixture_planner, fixture_loader)
    assert [(r["id"], r["conversations"]) for r in _rows(out)] == [
        (r["id"], r["conversations"]) for r in _rows(built)
    ]


def test_a_different_plan_in_the_same_folder_is_refused(built) -> None:
    with pytest.raises(ValueError, match="different plan"):
        build_dataset(_cfg(built, seed=5), fixture_planner, fixture_loader)


def test_png_round_trip() -> None:
    import numpy as np

    for arr in (
        np.eye(5, dtype=bool),
        np.arange(25, dtype=np.uint8).reshape(5, 5),
        np.arange(25).reshape(5, 5) * 1000,
    ):
        assert np.array_equal(decode_png(encode_png(arr)), arr)


def test_paraphrase_keeps_numbers_and_tags() -> None:
    assert accept("How many buildings are there?", "Count the buildings in this picture.")
    assert not accept("Is the 2 m strip wide?", "Is the strip wide?")
    assert not accept("Segment the road.", "Segment <p>the road</p> [SEG].")
    samples = run_tasks(synthetic_tile(64, named=False), ["vqa", "change"], 0)
    out = paraphrase_samples(samples, generate=lambda q: "Please rewrite: " + q + " 99")
    assert [s.conversations for s in out] == [s.conversations for s in samples]  # added a number: rejected
    out = paraphrase_samples(samples, generate=lambda q: "Kindly answer: " + q)
    first = out[0].conversations[0]["content"]
    assert first.startswith("<image>\nKindly answer: ")
    change = [s for s in out if s.task == "change"][0].conversations[0]["content"]
    assert change.startswith("Image 1 (2019): <image>\nImage 2 (2023): <image>\nKindly answer: ")
    assert all(
        a == b
        for s, t in zip(out, samples)
        for a, b in zip(s.conversations, t.conversations)
        if a["role"] == "assistant"
    )
    assert json.dumps([s.meta.get("paraphrased") for s in out]).count("true") == len(out)
