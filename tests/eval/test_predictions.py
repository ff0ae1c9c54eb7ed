"""`rsvlm eval --predictions`: an oracle scores 100 %, a centre box its hand-computed figure, missing ids and
broken lines are misses that the report lists; every report carries the baselines and the plots."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from eval.predictions import read_predictions, score_predictions
from eval.readers import read_benchmark
from rsvlm.cli import main as rsvlm_main

BOXES = {"p1": [0, 0, 50, 50], "p2": [25, 25, 75, 75], "p3": [60, 60, 100, 100]}
# IoU of each target with the centre box [25, 25, 75, 75] of a 100 x 100 image.
CENTRE_IOU = {"p1": 625 / 4375, "p2": 1.0, "p3": 225 / 3875}


@pytest.fixture
def rsvg_root(tmp_path) -> Path:
    root = tmp_path / "DIOR_RSVG"
    (root / "Annotations").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    for stem, b in BOXES.items():
        (root / "Annotations" / f"{stem}.xml").write_text(
            f"<annotation><filename>{stem}.jpg</filename><object><name>thing</name><bndbox><xmin>{b[0]}</xmin>"
            f"<ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox><description>the {stem}"
            "</description></object></annotation>"
        )
        Image.new("RGB", (100, 100)).save(root / "JPEGImages" / f"{stem}.jpg")
    (root / "test.txt").write_text("0\n1\n2\n")
    return root


def _write(path: Path, lines: list) -> Path:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def test_an_oracle_scores_100_percent_and_the_centre_box_its_hand_figure(rsvg_root, tmp_path):
    records = read_benchmark("dior-rsvg", rsvg_root, split="test")
    oracle = _write(tmp_path / "oracle.jsonl", [{"id": r.id, "box": r.box} for r in records])
    s = score_predictions(records, oracle, tmp_path / "oracle")
    g = s["tasks"]["grounding"]
    assert g["acc@0.5"] == g["acc@0.9"] == g["miou"] == g["cumiou"] == 1.0 and g["n"] == 3
    centre = _write(tmp_path / "centre.jsonl", [{"id": r.id, "box": [25, 25, 75, 75]} for r in records])
    c = score_predictions(records, centre, tmp_path / "centre")["tasks"]["grounding"]
    assert c["miou"] == pytest.approx(sum(CENTRE_IOU.values()) / 3)
    assert c["acc@0.5"] == pytest.approx(1 / 3) and c["acc@0.25"] == pytest.approx(1 / 3)
    assert c["cumiou"] == pytest.approx((625 + 2500 + 225) / (4375 + 2500 + 3875))
    # The report's centre-box baseline is the same figure, computed from the images' sizes.
    assert s["baselines"]["centre box"]["grounding"]["miou"] == pytest.approx(c["miou"])
    report = (tmp_path / "oracle" / "report.md").read_text()
    assert "| **model** | 1.0000" in report and "| centre box |" in report
    for plot in ("grounding_iou_hist.png", "grounding_success.png"):
        assert (tmp_path / "oracle" / "plots" / plot).stat().st_size > 1000
        assert f"plots/{plot}" in report


def test_missing_ids_and_broken_lines_are_listed_misses(rsvg_root, tmp_path):
    records = read_benchmark("dior-rsvg", rsvg_root, split="test")
    lines = [
        {"id": records[0].id, "box": records[0].box},
        '{"id": "p2#0", "box": [1, 2',  # torn
        {"id": records[1].id, "box": [1, 2, "x"]},  # wrong shape: a miss with its reason
        {"box": [0, 0, 1, 1]},  # no id
        {"id": "elsewhere#0", "box": [0, 0, 1, 1]},
    ]
    s = score_predictions(records, _write(tmp_path / "p.jsonl", lines), tmp_path / "run")
    g = s["tasks"]["grounding"]
    assert g["miou"] == pytest.approx(1 / 3) and g["n"] == 3
    assert s["missing_ids"] == [records[2].id] and s["unknown_ids"] == ["elsewhere#0"]
    assert [p.split(":")[0] for p in s["unreadable_lines"]] == ["line 2", "line 4"]
    rows = [json.loads(x) for x in (tmp_path / "run/samples.jsonl").read_text().splitlines()]
    assert rows[1]["error"] == "box is not four numbers" and rows[2]["error"] == "no prediction for this id"
    report = (tmp_path / "run/report.md").read_text()
    assert "Records without a prediction (scored as misses): 1" in report and "p3#0" in report
    _, problems = read_predictions(tmp_path / "p.jsonl")
    assert len(problems) == 2


def test_mask_predictions_oracle_and_the_mask_baselines(tmp_path):
    for d in ("A", "B", "label"):
        (tmp_path / "cd" / d).mkdir(parents=True)
    label = np.zeros((8, 8), np.uint8)
    label[:2] = 255  # a quarter of the pixels changed
    Image.fromarray(label).save(tmp_path / "cd/label/x.png")
    for d in ("A", "B"):
        Image.new("RGB", (8, 8)).save(tmp_path / "cd" / d / "x.png")
    records = read_benchmark("levircd", tmp_path / "cd")
    preds = _write(tmp_path / "p.jsonl", [{"id": "x", "mask": "cd/label/x.png"}])
    s = score_predictions(records, preds, tmp_path / "run")
    assert s["tasks"]["change_mask"]["iou"] == 1.0 and s["tasks"]["change_mask"]["f1"] == 1.0
    base = s["baselines"]
    assert base["whole-image mask"]["change_mask"]["iou"] == pytest.approx(0.25)
    assert base["empty mask"]["change_mask"]["iou"] == 0.0 and base["empty mask"]["change_mask"]["oa"] == 0.75
    bad = _write(tmp_path / "bad.jsonl", [{"id": "x", "mask": "nowhere.png"}])
    s = score_predictions(records, bad, tmp_path / "bad")
    assert s["tasks"]["change_mask"]["iou"] == 0.0  # an unreadable mask is a miss


def test_majority_answer_baseline_and_text_predictions(tmp_path):
    from eval.readers import Record

    image = tmp_path / "i.png"
    Image.new("RGB", (4, 4)).save(image)
    records = [
        Record(f"q{k}", "vqa", [str(image)], "?", texts=[a]) for k, a in enumerate(["yes", "yes", "no"])
    ]
    preds = _write(tmp_path / "p.jsonl", [{"id": "q0", "text": "Yes."}, {"id": "q2", "answer": "no"}])
    s = score_predictions(records, preds, tmp_path / "run")
    assert s["tasks"]["vqa"]["accuracy"] == pytest.approx(2 / 3)
    assert s["baselines"]["majority answer"]["vqa"]["accuracy"] == pytest.approx(2 / 3)


def test_the_cli_scores_a_predictions_file_without_a_model(rsvg_root, tmp_path, capsys):
    records = read_benchmark("dior-rsvg", rsvg_root, split="test")
    oracle = _write(tmp_path / "o.jsonl", [{"id": r.id, "box": r.box} for r in records])
    argv = ["eval", "--benchmark", "dior-rsvg", "--data", str(rsvg_root), "--split", "test"]
    assert rsvlm_main(argv + ["--predictions", str(oracle), "--out", str(tmp_path / "run")]) == 0
    assert json.loads(capsys.readouterr().out)["grounding"]["acc@0.5"] == 1.0
    assert (
        rsvlm_main(argv + ["--predictions", str(tmp_path / "none.jsonl"), "--out", str(tmp_path / "r")]) == 2
    )
