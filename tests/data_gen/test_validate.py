"""`rsvlm gen validate` passes a generated dataset and fails corrupted copies."""

from __future__ import annotations

import json
import re
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data_gen.cli import main
from data_gen.config import GenConfig
from data_gen.driver import build_dataset
from data_gen.validate import validate_dataset
from tests.data_gen.task_fixtures import fixture_loader, fixture_planner


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("vds")
    build_dataset(
        GenConfig(out=str(out), tile_size=64, extra={"tiles_per_shard": 4, "grid": 2}),
        fixture_planner,
        fixture_loader,
    )
    return out


def _corrupt(src, dst, edit) -> None:
    """Copy the dataset, applying ``edit(row) -> bool`` to rows until one returns True."""
    shutil.copytree(src, dst)
    done = False
    for f in sorted((dst / "data").glob("*.parquet")):
        table = pq.read_table(f)
        rows = table.to_pylist()
        for r in rows:
            if not done and edit(r):
                done = True
        pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), f)
    assert done, "no row to corrupt"


def test_validate_passes_a_generated_dataset(dataset, capsys) -> None:
    report = validate_dataset(dataset, show_progress=False)
    assert report.ok, report.summary()
    assert report.checks["box"] + report.checks["obb"] > 0 and report.checks["share"] > 0
    assert main(["validate", str(dataset)]) == 0
    assert "0 samples failed" in capsys.readouterr().out


def _move_box(r) -> bool:
    """Shift a box by 30 grid units in the text and in its fact, so only the mask can tell."""
    meta = json.loads(r["meta"])
    for f in meta["facts"]:
        if f["kind"] == "box":
            nums = [int(x) for x in re.findall(r"\d+", f["quote"])]
            nums = [min(1000, n + 30) if i % 2 == 0 else n for i, n in enumerate(nums)]
            moved = f"<box>[{', '.join(map(str, nums))}]</box>"
            if moved == f["quote"]:
                continue
            turn = r["conversations"][f["turn"]]
            turn["content"] = turn["content"].replace(f["quote"], moved)
            f["quote"] = moved
            r["meta"] = json.dumps(meta)
            return True
    return False


def _change_share(r) -> bool:
    meta = json.loads(r["meta"])
    for f in meta["facts"]:
        m = re.search(r"\((\d+) %\)", f.get("quote", "")) if f["kind"] == "share" else None
        if m:
            wrong = f["quote"].replace(f"({m.group(1)} %)", f"({int(m.group(1)) + 7} %)")
            turn = r["conversations"][f["turn"]]
            turn["content"] = turn["content"].replace(f["quote"], wrong)
            f["quote"] = wrong
            r["meta"] = json.dumps(meta)
            return True
    return False


def _drop_mask(r) -> bool:
    if r["masks"]:
        r["masks"] = r["masks"][:-1]
        return True
    return False


def _wrong_count(r) -> bool:
    meta = json.loads(r["meta"])
    for f in meta["facts"]:
        if f["kind"] == "count" and f["method"] == "components":
            turn = r["conversations"][f["turn"]]
            turn["content"] = turn["content"].replace(f"{f['quote']} ", f"{f['count'] + 2} ", 1)
            f["quote"], f["count"] = str(f["count"] + 2), f["count"] + 2
            r["meta"] = json.dumps(meta)
            return True
    return False


@pytest.mark.parametrize(
    "edit, kind", [(_move_box, "box"), (_change_share, "share"), (_drop_mask, "seg"), (_wrong_count, "count")]
)
def test_validate_fails_a_corrupted_dataset(dataset, tmp_path, edit, kind) -> None:
    bad = tmp_path / "bad"
    _corrupt(dataset, bad, edit)
    report = validate_dataset(bad, show_progress=False)
    assert not report.ok
    assert report.failed_samples == 1 and report.by_kind[kind] >= 1, report.summary()
    assert main(["gen", "validate", str(bad)]) == 1


def test_cli_errors_are_one_line_exit_2(tmp_path, capsys) -> None:
    assert main(["validate", str(tmp_path / "missing")]) == 2
    assert main(["--tile-size", "0", "--image", "x.tif"]) == 2
    assert main([]) == 2
    assert main(["--tasks", "captions", "--image", "x.tif"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 4 and all(line.startswith("rsvlm gen: error:") for line in err)


def test_gen_and_validate_a_real_loveda_scene_through_the_cli(tmp_path, capsys) -> None:
    from tests.data_gen.task_fixtures import LOVEDA

    if not (LOVEDA / "img/1.png").exists():
        pytest.skip("../shared/data LoveDA sample not available")
    out = tmp_path / "loveda"
    argv = [
        "--image",
        str(LOVEDA / "img/1.png"),
        "--labels",
        str(LOVEDA / "ann/1.png"),
        "--taxonomy",
        "loveda",
    ]
    assert main(["gen", *argv, "--tile-size", "512", "--max-tiles", "2", "--out", str(out)]) == 0
    assert main(["validate", str(out)]) == 0
    assert "0 samples failed" in capsys.readouterr().out
    rows = [r for f in (out / "data").glob("*.parquet") for r in pq.read_table(f).to_pylist()]
    assert {r["task"] for r in rows} >= {"caption", "vqa", "grounding", "gcg"}
