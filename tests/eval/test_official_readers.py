"""RRSIS-D, RefSegRS, EarthReason, RSVQA and GeoChat-Bench read from their released layouts, each written here by
code in its exact format (no such file is in ../shared/data): records, targets, splits, skipped entries counted,
a folder that is not the benchmark named in one line, and an oracle scoring 1 through the predictions path."""

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask

from eval.cli import main as eval_main
from eval.predictions import score_predictions
from eval.readers import BenchmarkError, read_benchmark
from eval.refer_seg import PlainUnpickler

# ------------------------------------------------------------------------------------------------ RRSIS-D


def _square(x0: int, y0: int, side: int, shape=(16, 16)) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    mask[y0 : y0 + side, x0 : x0 + side] = 1
    return mask


def _rrsisd(root: Path, refs: list[dict], *, as_json: bool = False) -> Path:
    """REFER's data root: rrsisd/refs(unc).p (protocol 2, as REFER's Python 2 pickles), rrsisd/instances.json and
    images/rrsisd/JPEGImages/."""
    (root / "rrsisd").mkdir(parents=True)
    (root / "images/rrsisd/JPEGImages").mkdir(parents=True)
    rle = coco_mask.encode(np.asfortranarray(_square(4, 4, 6)))
    rle["counts"] = rle["counts"].decode()  # as COCO json stores a compressed RLE
    instances = {
        "images": [{"id": 1, "file_name": "00001.jpg", "height": 16, "width": 16}],
        "annotations": [
            {"id": 10, "image_id": 1, "segmentation": [[0, 0, 8, 0, 8, 8, 0, 8]], "bbox": [0, 0, 8, 8]},
            {"id": 11, "image_id": 1, "segmentation": [rle], "bbox": [4, 4, 6, 6]},
            {"id": 12, "image_id": 1, "segmentation": [[1, 2, 3, 4]], "bbox": [0, 0, 1, 1]},  # two points
        ],
        "categories": [{"id": 1, "name": "vehicle"}],
    }
    (root / "rrsisd/instances.json").write_text(json.dumps(instances))
    Image.new("RGB", (16, 16)).save(root / "images/rrsisd/JPEGImages/00001.jpg")
    if as_json:
        (root / "rrsisd/refs(unc).json").write_text(json.dumps(refs))
    else:
        (root / "rrsisd/refs(unc).p").write_bytes(pickle.dumps(refs, protocol=2))
    return root


def _ref(ref_id, ann_id, split, *sentences):
    return {
        "ref_id": ref_id,
        "ann_id": ann_id,
        "image_id": 1,
        "category_id": 1,
        "split": split,
        "file_name": f"00001_{ann_id}.jpg",  # REFER's per-ref name, not the image's: ignored, as REFER does
        "sent_ids": list(range(len(sentences))),
        "sentences": [
            {"raw": s, "sent": s.lower(), "sent_id": k, "tokens": s.split()} for k, s in enumerate(sentences)
        ],
    }


REFS = [
    _ref(0, 10, "train", "The car on the left"),
    _ref(1, 11, "test", "a white vehicle", "the vehicle in the middle"),
    _ref(2, 12, "test", "a broken one"),
]


def test_rrsisd_reads_every_sentence_of_a_test_ref_and_decodes_its_coco_mask(tmp_path):
    root = _rrsisd(tmp_path / "RRSIS-D", REFS)
    test = read_benchmark("rrsisd", root, split="test")
    assert [r.id for r in test] == ["1#0", "1#1"]  # LAVT / RMSIN score every sentence of a ref
    assert test[0].question == "Segment a white vehicle." and test[1].texts == ["the vehicle in the middle"]
    assert Path(test[0].images[0]) == root / "images/rrsisd/JPEGImages/00001.jpg"
    assert test.skipped == {"broken geometry": 1}  # ref 2's polygon has two points
    assert (test[0].target_mask((16, 16)) == _square(4, 4, 6).astype(bool)).all()
    (train,) = read_benchmark("rrsisd", root / "rrsisd", split="train")  # the rrsisd/ folder works too
    polygon = train.target_mask((16, 16))
    assert polygon.sum() == 64 and polygon[:8, :8].all()  # pycocotools' fill of [0, 8]²: 8 x 8 pixels
    with pytest.raises(BenchmarkError, match="an RLE mask of .16, 16. on an image of .8, 8."):
        test[0].target_mask((8, 8))


def test_rrsisd_oracle_masks_score_1_and_the_report_counts_what_was_left_out(tmp_path):
    root = _rrsisd(tmp_path / "RRSIS-D", REFS)
    records = read_benchmark("rrsisd", root, split="test")
    Image.fromarray(_square(4, 4, 6) * 255).save(tmp_path / "oracle.png")
    lines = [json.dumps({"id": r.id, "mask": "oracle.png"}) for r in records]
    (tmp_path / "p.jsonl").write_text("\n".join(lines) + "\n")
    s = score_predictions(records, tmp_path / "p.jsonl", tmp_path / "run", skipped=dict(records.skipped))
    assert s["tasks"]["refseg"]["giou"] == 1.0 and s["tasks"]["refseg"]["ciou"] == 1.0
    assert s["skipped"] == {"broken geometry": 1}
    report = (tmp_path / "run/report.md").read_text()
    assert "Left out while reading the benchmark: 1" in report and "- broken geometry: 1" in report


def test_rrsisd_json_refs_are_read_and_a_pickle_naming_a_class_is_refused_unrun(tmp_path):
    (json_refs,) = [
        r for r in read_benchmark("rrsisd", _rrsisd(tmp_path / "j", REFS, as_json=True)) if r.id == "0#0"
    ]
    assert json_refs.question == "Segment The car on the left."
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    root = _rrsisd(tmp_path / "evil", REFS)
    (root / "rrsisd/refs(unc).p").write_bytes(pickle.dumps([*REFS, Payload()], protocol=2))
    with pytest.raises(BenchmarkError, match="refs pickle.*only plain containers"):
        read_benchmark("rrsisd", root)
    assert not marker.exists()
    with pytest.raises(pickle.UnpicklingError):  # numpy, datetime ...: no class at all
        PlainUnpickler(__import__("io").BytesIO(pickle.dumps(np.int64(3)))).load()


def test_a_folder_that_is_not_rrsisd_names_what_it_lacks(tmp_path, capsys):
    (tmp_path / "rrsisd").mkdir()
    with pytest.raises(
        BenchmarkError, match=r"not an RRSIS-D .*missing .*refs\(unc\)\.p, .*instances\.json, .*JPEGImages"
    ):
        read_benchmark("rrsisd", tmp_path)
    assert eval_main(["--benchmark", "rrsisd", "--data", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "instances.json" in err


# ------------------------------------------------------------------------------------------------ RefSegRS


def test_refsegrs_phrase_lines_become_records_with_their_tif_masks(tmp_path):
    root = tmp_path / "RefSegRS"
    for d in ("images", "masks"):
        (root / d).mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(root / "images/12.tif")
    Image.fromarray(_square(0, 0, 4, (8, 8)) * 255).save(root / "masks/12.tif")
    (root / "output_phrase_test.txt").write_text("12 road on the left\n12 the low vegetation\nno id here\n\n")
    (root / "output_phrase_val.txt").write_text("12 a building\n")
    test = read_benchmark("refsegrs", root, split="test")
    assert [r.id for r in test] == ["12#0", "12#1"] and test.skipped == {"phrase line without an image id": 1}
    assert test[0].question == "Segment road on the left." and test[0].target_mask((8, 8)).sum() == 16
    assert len(read_benchmark("refsegrs", root)) == 3  # no split: every phrase file
    with pytest.raises(BenchmarkError, match="not a RefSegRS root: missing output_phrase_train.txt"):
        read_benchmark("refsegrs", root, split="train")


# ------------------------------------------------------------------------------------------------ EarthReason


def test_earthreason_split_pairs_images_labels_and_qas_by_name(tmp_path):
    split = tmp_path / "RSReasonSeg/val"
    for d in ("images", "labels", "QAs"):
        (split / d).mkdir(parents=True)
    for name, answers in (("a", ["The runway."]), ("b", [])):
        Image.new("RGB", (8, 8)).save(split / "images" / f"{name}.jpg")
        Image.fromarray(_square(2, 2, 3, (8, 8)) * (name == "a")).save(split / "labels" / f"{name}.png")
        qa = {"questions": [f"Where would planes land in {name}?", "a second wording"], "answer": answers}
        (split / "QAs" / f"{name}.json").write_text(json.dumps(qa))
    (split / "QAs/c.json").write_text(json.dumps({"questions": ["no label for this one"], "answer": []}))
    records = read_benchmark("earthreason", tmp_path / "RSReasonSeg", split="val")
    assert [r.id for r in records] == ["a", "b"] and records.skipped == {"QA without its label mask": 1}
    assert records[0].question == "Where would planes land in a? Please output the segmentation mask."
    assert records[0].target_mask((8, 8)).sum() == 9 and not records[1].target_mask((8, 8)).any()
    assert records[1].texts == ["There is no target object in the image."]
    with pytest.raises(BenchmarkError, match="not a EarthReason split root: missing images, labels, QAs"):
        read_benchmark("earthreason", tmp_path / "RSReasonSeg", split="test")


# ------------------------------------------------------------------------------------------------ RSVQA


def _rsvqa(root: Path, prefix: str, image_dir: str) -> None:
    (root / image_dir).mkdir(parents=True)
    for k in (0, 1, 2):
        Image.new("RGB", (4, 4)).save(root / image_dir / f"{k}.tif")
    questions = [
        {"id": 0, "img_id": 0, "question": "Is there a road?", "type": "presence", "answers_ids": [0], "active": True},
        {"id": 1, "img_id": 0, "question": "Are there more buildings than roads?", "type": "comp", "answers_ids": [1],
         "active": True},
        {"id": 2, "img_id": 1, "question": "Is there water?", "type": "presence", "answers_ids": [2], "active": True},
        {"id": 3, "img_id": 1, "question": "Is it rural?", "type": "rural_urban", "answers_ids": [3], "active": False},
        {"id": 4, "img_id": 2, "question": "Is there a farm?", "type": "presence", "answers_ids": [4], "active": True},
    ]  # fmt: skip
    answers = [
        {"id": i, "question_id": i, "answer": a, "active": True}
        for i, a in enumerate("yes no no rural yes".split())
    ]
    images = [{"id": k, "questions_ids": [], "active": k != 2} for k in (0, 1, 2)]  # image 2 was withdrawn
    for kind, items in (("questions", questions), ("answers", answers), ("images", images)):
        (root / f"{prefix}_{kind}.json").write_text(json.dumps({kind: items}))


def test_rsvqa_lr_root_and_split_keeps_active_questions_with_their_types(tmp_path):
    root = tmp_path / "RSVQA_LR"
    _rsvqa(root, "LR_split_test", "Images_LR")
    records = read_benchmark("rsvqa", root, split="test")
    assert [r.id for r in records] == ["0", "1", "2"] and records.skipped == {"inactive question": 2}
    assert records[1].texts == ["no"] and records[1].question_type == "comp"
    assert Path(records[2].images[0]) == root / "Images_LR/1.tif"
    preds = tmp_path / "p.jsonl"
    preds.write_text(
        "".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in (("0", "Yes"), ("1", "yes"), ("2", "no")))
    )
    vqa = score_predictions(records, preds, tmp_path / "run")["tasks"]["vqa"]
    assert vqa["accuracy"] == pytest.approx(2 / 3)  # OA
    assert (
        vqa["accuracy_presence"] == 1.0 and vqa["accuracy_comp"] == 0.0 and vqa["average_accuracy"] == 0.5
    )  # AA
    with pytest.raises(BenchmarkError, match=r"not an RSVQA root: missing \*_split_val_questions.json"):
        read_benchmark("rsvqa", root, split="val")


def test_rsvqa_hr_test_phili_and_flag_only_split_files(tmp_path):
    root = tmp_path / "RSVQA_HR"
    _rsvqa(root, "USGS_split_test_phili", "Data")
    assert [r.id for r in read_benchmark("rsvqa", root, split="test_phili")] == ["0", "1", "2"]
    assert Path(read_benchmark("rsvqa", root, split="test_phili")[0].images[0]).parent == root / "Data"
    # A split file holding only {id, active} flags takes its text from all_questions.json / all_answers.json.
    full = json.loads((root / "USGS_split_test_phili_questions.json").read_text())
    (root / "all_questions.json").write_text(json.dumps(full))
    flags = {"questions": [{"id": q["id"], "active": q["id"] in (0, 2)} for q in full["questions"]]}
    (root / "USGS_split_test_phili_questions.json").write_text(json.dumps(flags))
    records = read_benchmark("rsvqa", root, split="test_phili")
    assert [(r.id, r.question) for r in records] == [("0", "Is there a road?"), ("2", "Is there water?")]


# ------------------------------------------------------------------------------------------------ GeoChat-Bench


def test_geochat_bench_referring_single_and_several_objects_are_scored_broken_ones_counted(tmp_path):
    corners = [[10, 20], [50, 20], [50, 40], [10, 40]]
    other = [[10, 45], [50, 45], [50, 60], [10, 60]]
    lines = [
        {"question_id": 0, "image_id": "P0003_0002", "question": "the white plane at the top", "ground_truth": [corners],
         "type": "ref", "dataset": "SOTA", "obj_ids": [3], "size_group": "small"},
        {"question_id": 1, "image_id": "P0003_0002", "question": "2 large vehicles", "ground_truth": [corners, other],
         "type": "ref", "dataset": "SOTA", "obj_ids": [4, 5], "size_group": "small"},
        {"question_id": 2, "image_id": "P0003_0002", "question": "a line", "ground_truth": [[[0, 0], [5, 5], [9, 9], [0, 0]]],
         "type": "ref", "dataset": "SOTA", "obj_ids": [6], "size_group": "small"},
    ]  # fmt: skip
    (tmp_path / "referring.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    (tmp_path / "images").mkdir()
    Image.new("RGB", (64, 64)).save(tmp_path / "images/P0003_0002.png")
    records = read_benchmark("geochat-bench", tmp_path, split="referring")
    record, several = records
    assert (
        record.task == "obb"
        and record.obb == corners
        and record.question == "Give the oriented box of the white plane at the top."
    )
    assert Path(record.images[0]) == tmp_path / "images/P0003_0002.png"
    assert several.task == "obb_multi" and several.obbs == [corners, other]
    assert several.question == "Give the oriented boxes of 2 large vehicles."
    assert records.skipped == {"broken geometry": 1}
    # One of the two vehicles found, plus a box that matches nothing: Acc@0.5 over objects, as TEOChat scores it.
    far = [[60, 60], [63, 60], [63, 63], [60, 63]]
    (tmp_path / "p.jsonl").write_text(
        json.dumps({"id": "0", "obb": corners}) + "\n" + json.dumps({"id": "1", "obbs": [other, far]}) + "\n"
    )
    tasks = score_predictions(records, tmp_path / "p.jsonl", tmp_path / "run")["tasks"]
    assert tasks["obb"]["acc@0.5"] == 1.0 and tasks["obb"]["miou"] == 1.0
    assert tasks["obb_multi"]["acc@0.5"] == 0.5 and tasks["obb_multi"]["objects"] == 2
    assert tasks["obb_multi"]["precision@0.5"] == 0.5
    with pytest.raises(BenchmarkError, match="not a GeoChat-Bench folder: missing region_captioning.jsonl"):
        read_benchmark("geochat-bench", tmp_path, split="region_captioning")


def test_geochat_bench_region_captions_ask_about_the_region_on_rsvlms_protocol(tmp_path):
    lines = [
        {"question_id": 7, "image_id": "0001", "question": "{<25><50><75><100>|<0>}", "ground_truth": "a small white car",
         "type": "region", "dataset": "SIOR", "obj_ids": [1], "size_group": "small"},
        {"question_id": 8, "image_id": "0001", "question": "{<25><50><175><100>|<0>}", "ground_truth": "out of range",
         "type": "region", "dataset": "SIOR", "obj_ids": [2], "size_group": "small"},
    ]  # fmt: skip
    (tmp_path / "region_captioning.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    records = read_benchmark("geochat-bench", tmp_path / "region_captioning.jsonl")
    (record,) = records
    assert record.task == "caption" and record.texts == ["a small white car"]
    assert (
        record.question
        == "What is the object present at <box>[250, 500, 750, 1000]</box>? Describe it briefly."
    )
    assert records.skipped == {"broken geometry": 1}
