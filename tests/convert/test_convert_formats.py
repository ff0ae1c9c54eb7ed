"""GeoPixelD, LISA / GRES reasoning, LEVIR-CC and RSVQA -> rsvlm rows: fixtures written here in each format, then
the real files in ../shared/data (skipped when absent)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from data_gen.convert import convert
from data_gen.convert.report import FormatError
from rsvlm.grounding import parse_answer
from train.data import SFTData, decode_mask

DATA = Path(__file__).resolve().parents[2] / "../shared/data"


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is not available")
    return path


def write_image(path: Path, size=(48, 40)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(str(path)))
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def rows(out: Path, split: str = "train") -> list[dict]:
    return list(SFTData([out], split).dataset)


def block(x0: int, y0: int, x1: int, y1: int) -> list[list[int]]:
    """The boundary-pixel ring of the pixel block x0..x1, y0..y1 (inclusive), as GeoPixelD and LISA store it."""
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]


def block_mask(shape, x0, y0, x1, y1) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[y0 : y1 + 1, x0 : x1 + 1] = True
    return mask


# ------------------------------------------------------------------------------------------------ GeoPixelD


def test_geopixeld_index_becomes_one_gcg_row_with_a_mask_per_seg(tmp_path) -> None:
    write_image(tmp_path / "train" / "scene.png")
    caption = "A port. The <p> ship-1 </p> [SEG] , <p> ship-2 </p> [SEG] and a <p> harbor-1 </p> [SEG] ."
    per_image = {"id": 0, "img": "data/GeoPixelD/train/scene.png", "gcg_description": caption,
                 "polygons": [[block(2, 3, 10, 8)], [block(20, 20, 30, 25)], [block(0, 30, 47, 39)]]}  # fmt: skip
    (tmp_path / "train" / "scene.json").write_text(json.dumps(per_image))
    bad = {**per_image, "img": "data/GeoPixelD/train/bad.png", "polygons": per_image["polygons"][:2]}
    (tmp_path / "train" / "bad.json").write_text(json.dumps(bad))
    index = [
        {"id": 0, "conversations": [{"from": "human", "value": "Describe it with masks."},
                                    {"from": "bot", "value": caption}],
         "image": "data/GeoPixelD/train/scene.png", "polygons": "data/GeoPixelD/train/scene.json"},
        {"id": 1, "conversations": [], "image": "data/GeoPixelD/train/bad.png",
         "polygons": "data/GeoPixelD/train/bad.json"},
        {"id": 2, "conversations": [], "image": "x.png", "polygons": "data/GeoPixelD/train/gone.json"},
    ]  # fmt: skip
    (tmp_path / "GeoPixelD.json").write_text(json.dumps(index))
    report = convert("geopixeld", tmp_path / "GeoPixelD.json", tmp_path / "train", tmp_path / "out")
    assert (report.read, report.written) == (3, 1)
    assert report.skipped == {"[SEG] count differs from the polygons": 1, "missing polygon file": 1}
    (row,) = rows(tmp_path / "out")
    assert row["task"] == "gcg"
    assert row["conversations"][0]["content"] == "<image>\nDescribe it with masks."
    answer = row["conversations"][1]["content"]
    assert answer == ("A port. The <p>ship</p> [SEG], <p>ship</p> [SEG] and a <p>harbor</p> [SEG].")
    assert parse_answer(answer).num_seg == 3 and not parse_answer(answer).warnings
    masks = [decode_mask(m) > 0 for m in row["masks"]]
    expected = [block_mask((40, 48), 2, 3, 10, 8), block_mask((40, 48), 20, 20, 30, 25),
                block_mask((40, 48), 0, 30, 47, 39)]  # fmt: skip
    assert all(np.array_equal(m, e) for m, e in zip(masks, expected, strict=True))


def test_geopixeld_real_sample_matches_an_independent_rasterisation(tmp_path) -> None:
    index = need(DATA / "grounding" / "GeoPixelD.json")
    report = convert("geopixeld", index, DATA / "grounding", tmp_path / "out")
    assert (report.read, report.written, dict(report.skipped)) == (1, 1, {})
    (row,) = rows(tmp_path / "out")
    assert row["conversations"][1]["content"].count("<p>tennis court</p> [SEG]") == 4
    # PIL fills each ring including its outline: the source mask GeoPixelD's rings were traced from.
    polygons = json.loads((DATA / "grounding" / "P0224_0_800_0_800.json").read_text())["polygons"]
    for mask, rings in zip(row["masks"], polygons, strict=True):
        reference = Image.new("1", (800, 800), 0)
        for ring in rings:
            ImageDraw.Draw(reference).polygon([tuple(p) for p in ring], fill=1, outline=1)
        ours, ref = decode_mask(mask) > 0, np.asarray(reference, bool)
        assert (ours & ref).sum() / (ours | ref).sum() > 0.98


# ------------------------------------------------------------------------------------------------ LISA


def test_lisa_queries_become_reasoning_rows_with_the_target_mask(tmp_path) -> None:
    write_image(tmp_path / "img" / "a.jpg")
    good = {"text": ["Find what stores fuel.", "Which thing holds oil?"], "is_sentence": True,
            "shapes": [{"label": "target", "points": block(4, 4, 12, 10), "image_name": "a.jpg"},
                       {"label": "ignore", "points": block(30, 30, 40, 35), "image_name": "a.jpg"}]}  # fmt: skip
    degenerate = {"text": ["Find the road."], "shapes": [{"label": "target", "points": [[1, 1], [5, 5]]}]}
    untargeted = {"text": ["Find the lake."], "shapes": [{"label": "ignore", "points": block(1, 1, 5, 5)}]}
    folder = tmp_path / "ann"
    folder.mkdir()
    for name, obj in {"a": good, "b": degenerate, "c": untargeted}.items():
        (folder / f"{name}.json").write_text(json.dumps(obj))
    report = convert("lisa", folder, tmp_path / "img", tmp_path / "out")
    assert (report.read, report.written) == (4, 2)
    assert report.skipped == {"bad polygon": 1, "no target shape": 1}
    first, second = rows(tmp_path / "out")
    assert first["task"] == "reasoning" and "stores fuel" in first["conversations"][0]["content"]
    assert first["conversations"][1]["content"] == "It is <p>the target</p> [SEG]."
    assert np.array_equal(decode_mask(second["masks"][0]) > 0, block_mask((40, 48), 4, 4, 12, 10))

    (folder / "d.json").write_text(json.dumps({"sentences": ["x"], "shapes": []}))
    with pytest.raises(FormatError, match="missing key.*text"):
        convert("lisa", folder / "d.json", None, tmp_path / "out2")


def test_real_reasoning_annotations_count_every_missing_image(tmp_path) -> None:
    folder = need(DATA / "reasoning_annotations")
    report = convert("lisa", folder, tmp_path, tmp_path / "out")
    assert (report.read, report.written, dict(report.skipped)) == (10, 0, {"missing image": 10})
    names = [p.with_suffix(".jpg").name for p in sorted(folder.glob("*.json"))]
    assert report.missing_image_count == 10 and report.missing_images == names
    # The images are not distributed: stand-ins show the polygons become masks. On 512 x 512 (the LISAT chips'
    # size) every target lands; on 640 x 480 the one drawn at rows 503-512 lies off the image and is refused.
    for name in names:
        Image.new("RGB", (512, 512)).save(tmp_path / name)
    report = convert("lisa", folder, tmp_path, tmp_path / "out2")
    assert report.written == 10 and not report.skipped
    for name in names:
        Image.new("RGB", (640, 480)).save(tmp_path / name)
    report = convert("lisa", folder, tmp_path, tmp_path / "out3")
    assert report.written == 9 and report.skipped == {"bad polygon": 1}


# ------------------------------------------------------------------------------------------------ LEVIR-CC


def test_levircc_official_layout_two_dates_one_row_per_distinct_caption(tmp_path) -> None:
    for date in ("A", "B"):
        write_image(tmp_path / "images" / "train" / date / "train_000001.png", (32, 32))
        write_image(tmp_path / "images" / "val" / date / "val_000001.png", (32, 32))
    same = [{"raw": " the scene is the same as before "}] * 5
    official = {"images": [
        {"filepath": "train", "filename": "train_000001.png", "split": "train",
         "sentences": [{"raw": "a road is built"}, {"raw": "houses appear"}]},
        {"filepath": "val", "filename": "val_000001.png", "split": "val", "sentences": same},
        {"filepath": "test", "filename": "test_000009.png", "split": "test", "sentences": same},
    ]}  # fmt: skip
    (tmp_path / "LevirCCcaptions.json").write_text(json.dumps(official))
    report = convert("levircc", tmp_path / "LevirCCcaptions.json", tmp_path / "images", tmp_path / "out")
    assert (report.read, report.written) == (4, 3) and report.skipped == {"missing image": 1}
    assert report.missing_images == ["test/A/test_000009.png"]
    train = rows(tmp_path / "out", "train")
    assert [r["conversations"][1]["content"] for r in train] == ["a road is built", "houses appear"]
    user = train[0]["conversations"][0]["content"]
    assert user.startswith("Image 1 (before): <image>\nImage 2 (after): <image>\n")
    assert len(train[0]["images"]) == 2 and train[0]["task"] == "change"
    (val,) = rows(tmp_path / "out", "validation")
    assert val["conversations"][1]["content"] == "the scene is the same as before"


def test_real_levircc_files(tmp_path) -> None:
    pairs = need(DATA / "change_captions" / "levircc_pairs_captions.json")
    report = convert("levircc", pairs, DATA, tmp_path / "pairs")
    assert (report.read, report.written, dict(report.skipped)) == (20, 20, {})
    assert report.splits == {"train": 15, "test": 5}
    every = need(DATA / "change_captions" / "levir_cc_captions.json.gz")
    report = convert("levircc", every, DATA / "change" / "levircc", tmp_path / "all")
    # Text only: of 10,077 pairs only train_000016 has its images in change/levircc; the rest are counted.
    assert report.written == 5 and report.missing_image_count == 10076 and len(report.missing_images) == 10
    assert report.read == report.written + report.skipped["missing image"]


def test_levircc_names_the_keys_it_expects(tmp_path) -> None:
    (tmp_path / "x.json").write_text(json.dumps({"annotations": []}))
    with pytest.raises(FormatError, match="missing key 'images'.*'captions'.*'pairs'.*annotations"):
        convert("levircc", tmp_path / "x.json", None, tmp_path / "out")


# ------------------------------------------------------------------------------------------------ RSVQA


def test_rsvqa_questions_and_answers_become_vqa_rows(tmp_path) -> None:
    for k in (0, 1):
        write_image(tmp_path / "Images_LR" / f"{k}.tif", (32, 32))
    questions = {"questions": [
        {"id": 0, "img_id": 0, "question": "Is there a road?", "type": "presence", "answers_ids": [0], "active": True},
        {"id": 1, "img_id": 1, "question": "How many buildings are there?", "type": "count", "answers_ids": [1],
         "active": True},
        {"id": 2, "img_id": 1, "question": "Is it rural?", "type": "rural_urban", "answers_ids": [2], "active": False},
        {"id": 3, "img_id": 7, "question": "Is there water?", "type": "presence", "answers_ids": [3], "active": True},
    ]}  # fmt: skip
    answers = {"answers": [{"id": i, "question_id": i, "answer": a, "active": True}
                           for i, a in enumerate(["yes", "12", "rural", "no"])]}  # fmt: skip
    (tmp_path / "LR_split_val_questions.json").write_text(json.dumps(questions))
    (tmp_path / "LR_split_val_answers.json").write_text(json.dumps(answers))
    report = convert(
        "rsvqa", tmp_path / "LR_split_val_questions.json", tmp_path / "Images_LR", tmp_path / "out"
    )
    assert (report.read, report.written) == (4, 2)
    assert report.skipped == {"inactive question": 1, "missing image": 1} and report.missing_images == [
        "7.tif"
    ]
    first, second = rows(tmp_path / "out", "validation")
    assert first["conversations"] == [
        {"role": "user", "content": "<image>\nIs there a road?"},
        {"role": "assistant", "content": "yes"},
    ]
    assert second["conversations"][1]["content"] == "12" and second["task"] == "vqa"
    (tmp_path / "LR_split_val_answers.json").write_text(json.dumps({"answer": []}))
    with pytest.raises(FormatError, match="missing key.*answers"):
        convert("rsvqa", tmp_path / "LR_split_val_questions.json", None, tmp_path / "out2")
