"""`rsvlm gen` through the console-script entry (``rsvlm.cli.main``): generate from a real LoveDA scene, validate
(exit 0), corrupt the dataset (exit 1), bad input (exit 2 with one line on stderr). Needs ``rsvlm.cli`` to pass
``--options`` through to ``data_gen.cli`` (an ``argparse.REMAINDER`` positional alone does not, CPython 61252).
"""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from data_gen.tasks import regions
from rsvlm.cli import main
from tests.data_gen.source_fixtures import DATA

LOVEDA = DATA / "landcover_seg/loveda"


def gen_argv(out) -> list[str]:
    return ["gen", "--image", str(LOVEDA / "img/1.png"), "--labels", str(LOVEDA / "ann/1.png"),
            "--taxonomy", "loveda", "--tile-size", "256", "--max-tiles", "2", "--out", str(out)]  # fmt: skip


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    if not (LOVEDA / "img/1.png").exists():
        pytest.skip("LoveDA sample not available")
    out = tmp_path_factory.mktemp("gen") / "ds"
    assert main(gen_argv(out)) == 0
    return out


def test_gen_then_validate_passes(generated, capsys) -> None:
    shards = sorted((generated / "data").glob("*.parquet"))
    rows = [r for f in shards for r in pq.read_table(f).to_pylist()]
    assert rows and len({r["tile_id"] for r in rows}) == 2
    assert {r["task"] for r in rows} >= {"caption", "vqa", "grounding", "gcg"}
    assert (generated / "README.md").is_file()
    capsys.readouterr()
    assert main(["gen", "validate", str(generated)]) == 0
    assert f"{len(rows)} samples" in capsys.readouterr().out


def _corrupt_copy(src, dst, edit) -> None:
    (dst / "data").mkdir(parents=True)
    for f in sorted((src / "data").glob("*.parquet")):
        table = pq.read_table(f)
        rows = table.to_pylist()
        edit(rows)
        pq.write_table(type(table).from_pylist(rows, schema=table.schema), dst / "data" / f.name)


def test_a_wrong_quoted_share_fails_validation(generated, tmp_path, capsys) -> None:
    done = []

    def edit(rows) -> None:
        for row in rows:
            meta = json.loads(row["meta"])
            for f in meta["facts"]:
                if f["kind"] == "share" and not done:
                    wrong = regions.share_quote(f["pixels"] + f["total"] // 3, f["total"])
                    turn = row["conversations"][f["turn"]]
                    turn["content"] = turn["content"].replace(f["quote"], wrong, 1)
                    f["quote"] = wrong  # text and fact agree; only the rasters can tell it is false
                    row["meta"] = json.dumps(meta)
                    done.append(row["id"])

    _corrupt_copy(generated, tmp_path, edit)
    assert done
    capsys.readouterr()
    assert main(["gen", "validate", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "1 samples failed" in out and done[0] in out and "[share]" in out


def test_a_missing_mask_fails_validation(generated, tmp_path, capsys) -> None:
    def edit(rows) -> None:
        row = next(r for r in rows if r["masks"])
        row["masks"] = row["masks"][:-1]

    _corrupt_copy(generated, tmp_path, edit)
    capsys.readouterr()
    assert main(["gen", "validate", str(tmp_path)]) == 1
    assert "[seg]" in capsys.readouterr().out


def test_validate_of_a_missing_folder_is_one_line_exit_2(tmp_path, capsys) -> None:
    assert main(["gen", "validate", str(tmp_path / "absent")]) == 2
    err = capsys.readouterr().err.strip()
    assert "absent" in err and "\n" not in err


def test_bad_input_through_the_console_script_is_one_line_exit_2(tmp_path, capsys) -> None:
    assert main(["gen", "--image", str(tmp_path / "nope.tif"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "nope.tif" in err and "\n" not in err
