"""`--mix`: weighted, seeded, resumable sampling over several --data sources, with per-source counts."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from data_gen.convert import convert
from tests.convert.test_convert_llava import write_images
from train.config import TrainConfig, TrainConfigError
from train.data import SFTData
from train.mixing import mixed_epoch_batches, plan_epoch, slot_counts
from train.sft import train

pytestmark = pytest.mark.usefixtures("single_thread")


def test_slots_follow_the_weights_exactly() -> None:
    assert slot_counts([0.7, 0.3], 100) == [70, 30]
    assert slot_counts([1, 1, 1], 8) == [3, 3, 2] and sum(slot_counts([0.2, 0.5, 0.3], 7)) == 7
    assert slot_counts([1, 0], 6) == [6, 0]


def test_a_mixed_epoch_is_seeded_weighted_and_repeats_a_small_source_evenly() -> None:
    sources = np.array([0] * 90 + [1] * 10)  # 90 rows of a, 10 of b
    plan = mixed_epoch_batches(sources, [0.5, 0.5], global_batch=4, seed=3, epoch=0)
    assert plan == mixed_epoch_batches(sources, [0.5, 0.5], 4, 3, 0)  # a resume replays it
    assert plan != mixed_epoch_batches(sources, [0.5, 0.5], 4, 3, 1)
    rows = [r for batch in plan for r in batch]
    assert len(plan) == 25 and Counter(sources[rows].tolist()) == {0: 50, 1: 50}
    b_rows = Counter(r for r in rows if sources[r] == 1)
    assert set(b_rows) == set(range(90, 100)) and set(b_rows.values()) == {5}  # 5 full laps, none favoured
    a_rows = [r for r in rows if sources[r] == 0]
    assert len(set(a_rows)) == 50  # subsampled without repeats
    only_a = mixed_epoch_batches(sources, [1, 0], 4, 3, 0)
    assert all(sources[r] == 0 for batch in only_a for r in batch)


@pytest.mark.parametrize(("mix", "message"), [
    ("0.7,0.2,0.1", r"3 weight\(s\) for 2 --data source"),
    ([0.7, -0.3], "must be >= 0"),
    ("0,0", "not all 0"),
    ("a,b", "numbers separated by commas"),
])  # fmt: skip
def test_bad_weights_are_refused_by_the_config(mix, message) -> None:
    with pytest.raises(TrainConfigError, match=message):
        TrainConfig(data=["a", "b"], mix=mix)


def test_cli_refuses_bad_weights_in_one_line_before_any_model_loads(monkeypatch, capsys) -> None:
    import train.sft
    from train.cli import main

    def no_model(*_a, **_k):
        raise AssertionError("a model was built")

    monkeypatch.setattr(train.sft, "build_model", no_model)
    assert main(["--recipe", "default-cpu", "--data", "a/", "b/", "--mix", "0.7,-0.3", "--out", "x"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "mix weights must be >= 0" in err


def _source(folder: Path, prefix: str, count: int) -> Path:
    names = [f"{prefix}{k}.png" for k in range(count)]
    write_images(folder / "images", names)
    entries = [{"id": f"{prefix}-{k}", "image": name, "conversations": [
        {"from": "human", "value": "<image>\nWhat is shown?"}, {"from": "gpt", "value": f"Answer {prefix}."}]}
        for k, name in enumerate(names)]  # fmt: skip
    (folder / "set.json").write_text(json.dumps(entries))
    convert("llava-1000", folder / "set.json", folder / "images", folder / "ds")
    return folder / "ds"


@pytest.fixture(scope="module")
def two_sources(tmp_path_factory) -> list[str]:
    root = tmp_path_factory.mktemp("mix")
    return [str(_source(root / "a", "a", 6)), str(_source(root / "b", "b", 4))]


def test_sources_keep_their_rows_apart(two_sources) -> None:
    data = SFTData(two_sources, "train")
    ids = data.dataset["id"]
    assert [data.source_names[s] for s in data.sources] == [two_sources[i[0] == "b"] for i in ids]


def test_mixed_training_counts_per_source_and_resumes_exactly(two_sources, tiny_model_spec, tmp_path) -> None:
    def config(out: str, **extra) -> TrainConfig:
        return TrainConfig(
            model={**tiny_model_spec, "lora_dropout": 0.0}, data=two_sources, mix="0.25,0.75", out=str(tmp_path / out),
            max_steps=4, micro_batch_size=2, grad_accum=1, max_length=512, eval_every=0, eval_at_start=False,
            save_every=2, log_every=2, num_threads=1, datasets_cache=str(tmp_path / "hf"), **extra,
        )  # fmt: skip

    whole = train(config("whole"))
    state = json.loads((tmp_path / "whole/checkpoints/step-000004/trainer_state.json").read_text())
    # Independently: the ids of the rows the plan feeds in 4 steps of 2.
    data = SFTData(two_sources, "train")
    plan = plan_epoch(data, 2, 0, 0, [0.25, 0.75])[:4]
    fed = Counter(data.dataset[r]["id"][0] for batch in plan for r in batch)
    assert state["samples_per_source"] == {two_sources[0]: fed["a"], two_sources[1]: fed["b"]}
    assert fed["b"] > fed["a"] and sum(fed.values()) == 8
    logged = [r["samples_per_source"] for r in whole.history if "samples_per_source" in r]
    assert logged[-1] == state["samples_per_source"] and sum(logged[0].values()) == 4

    first = train(config("split", stop_after_steps=2))
    assert first.step == 2
    second = train(config("split"))
    assert second.resumed_from is not None and second.step == 4
    a = load_file(tmp_path / "whole/final/model.safetensors")
    b = load_file(tmp_path / "split/final/model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    resumed = json.loads((tmp_path / "split/checkpoints/step-000004/trainer_state.json").read_text())
    assert resumed["samples_per_source"] == state["samples_per_source"]
