"""Readers on code-written fixtures in each benchmark's exact layout (issue 10, items 6, 9 and 10)."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from eval import metrics as m
from eval.readers import BenchmarkError, read_benchmark


def _rsvg_xml(filename: str, objects: list[tuple[str, list[int], str]]) -> str:
    body = "".join(
        f"<object><name>{name}</name><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}</xmax>"
        f"<ymax>{b[3]}</ymax></bndbox><description>{text}</description></object>"
        for name, b, text in objects
    )
    return f"<annotation><filename>{filename}</filename><size><width>800</width><height>800</height></size>{body}</annotation>"


@pytest.fixture
def dior_rsvg(tmp_path) -> Path:
    """DIOR-RSVG as released: Annotations/*.xml, JPEGImages/*.jpg, and {train,val,test}.txt of object indices."""
    root = tmp_path / "DIOR_RSVG"
    (root / "Annotations").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    files = {
        "00001": [("airport", [10, 10, 100, 100], "the airport"), ("ship", [200, 200, 240, 260], "a ship")],
        "00002": [("bridge", [0, 300, 800, 340], "the long bridge")],
        "00003": [("dam", [50, 60, 70, 80], "the dam"), ("tank", [1, 2, 3, 4], "a small tank")],
    }
    for stem, objects in files.items():
        (root / "Annotations" / f"{stem}.xml").write_text(_rsvg_xml(f"{stem}.jpg", objects))
        Image.new("RGB", (8, 8)).save(root / "JPEGImages" / f"{stem}.jpg")
    # Global object indices 0..4 in file order: 0 airport, 1 ship, 2 bridge, 3 dam, 4 tank.
    (root / "train.txt").write_text("0\n3\n")
    (root / "val.txt").write_text("4\n")
    (root / "test.txt").write_text("1\n2\n")
    return root


def test_9_dior_rsvg_root_with_split_reads_the_split_files_object_indices(dior_rsvg):
    test = read_benchmark("dior-rsvg", dior_rsvg, split="test")
    assert [r.id for r in test] == ["00001#1", "00002#0"]
    assert [r.box for r in test] == [[200, 200, 240, 260], [0, 300, 800, 340]]
    assert "the long bridge" in test[1].question
    assert Path(test[0].images[0]) == dior_rsvg / "JPEGImages/00001.jpg"
    assert [r.id for r in read_benchmark("dior-rsvg", dior_rsvg, split="train")] == ["00001#0", "00003#0"]
    assert len(read_benchmark("dior-rsvg", dior_rsvg)) == 5  # the root without a split: every object


def test_9_a_folder_that_is_not_dior_rsvg_says_what_is_missing(dior_rsvg):
    with pytest.raises(BenchmarkError, match="missing .*trainval.txt"):
        read_benchmark("dior-rsvg", dior_rsvg, split="trainval")
    (dior_rsvg / "JPEGImages" / "00001.jpg").unlink()
    for f in (dior_rsvg / "JPEGImages").iterdir():
        f.unlink()
    (dior_rsvg / "JPEGImages").rmdir()
    with pytest.raises(BenchmarkError, match="missing .*JPEGImages"):
        read_benchmark("dior-rsvg", dior_rsvg, split="test")
    with pytest.raises(BenchmarkError, match="needs the dataset root"):
        read_benchmark("dior-rsvg", dior_rsvg / "Annotations", split="test")


def test_9_levircc_official_json_keeps_only_the_asked_split(tmp_path):
    # LevirCCcaptions.json layout: images[{filepath, filename, split, sentences[{raw, tokens}]}].
    def item(split, name):
        return {
            "filepath": split,
            "filename": name,
            "split": split,
            "sentences": [{"raw": f" a change in {name} ", "tokens": ["a"]}] * 5,
        }

    data = {
        "images": [
            item("train", "train_000001.png"),
            item("test", "test_000001.png"),
            item("val", "val_000001.png"),
        ]
    }
    (tmp_path / "LevirCCcaptions.json").write_text(json.dumps(data))
    test = read_benchmark(
        "levircc", tmp_path / "LevirCCcaptions.json", images=tmp_path / "images", split="test"
    )
    assert [r.id for r in test] == ["test_000001"]
    assert test[0].images == [
        str(tmp_path / "images/test/A/test_000001.png"),
        str(tmp_path / "images/test/B/test_000001.png"),
    ]
    assert test[0].texts == ["a change in test_000001.png"] * 5
    assert len(read_benchmark("levircc", tmp_path / "LevirCCcaptions.json")) == 3


def test_10_change_labels_are_read_as_bit_label_div_255(tmp_path):
    for d in ("A", "B", "label"):
        (tmp_path / "test" / d).mkdir(parents=True)
    label = np.array([[0, 128, 255, 254]], np.uint8)  # an anti-aliased edge: only 255 is change for BIT
    Image.fromarray(label).save(tmp_path / "test/label/p.png")
    for d in ("A", "B"):
        Image.new("RGB", (4, 1)).save(tmp_path / "test" / d / "p.png")
    (record,) = read_benchmark("levircd", tmp_path, split="test")
    assert record.target_mask((1, 4)).tolist() == [[False, False, True, False]]


def _lisa_json(path: Path, shapes: list[tuple[str, list[list[float]]]], texts: list[str]) -> None:
    path.write_text(
        json.dumps(
            {
                "text": texts,
                "is_sentence": True,
                "shapes": [
                    {"label": label, "points": pts, "group_id": None, "shape_type": "polygon", "flags": {}}
                    for label, pts in shapes
                ],
            }
        )
    )


def test_6_lisa_reader_ignores_every_ignore_label_skips_flag_and_takes_the_first_text(tmp_path):
    square = [[0, 0], [9, 0], [9, 9], [0, 9]]  # a 10 x 10 target (PIL fills the outline too)
    strip = [[12, 0], [15, 0], [15, 9], [12, 9]]
    flag = [[0, 12], [15, 12], [15, 15], [0, 15]]
    _lisa_json(
        tmp_path / "img1.json",
        [("target", square), ("Ignore_2", strip), ("flag", flag)],
        ["What lets planes land here?", "A second query LISA does not validate on."],
    )
    Image.new("RGB", (16, 16)).save(tmp_path / "img1.jpg")
    (record,) = read_benchmark("lisa", tmp_path)
    assert record.id == "img1" and record.question.startswith("What lets planes land here?")
    target, ignore = record.target_mask((16, 16)), record.ignore_mask((16, 16))
    assert target.sum() == 100 and ignore.sum() == 4 * 10 and not (target & ignore).any()
    assert not target[12:].any() and not ignore[12:].any()  # the flag shape is neither
    # A prediction equal to LISA's own target (1 on the square, 255 on the strip) scores 1; spilling into
    # the ignored strip costs nothing.
    lisa_target = np.zeros((16, 16), bool)
    lisa_target[:10, :10] = True
    assert m.sample_iou(*m.mask_counts(lisa_target, target, ignore)) == 1.0
    spill = lisa_target.copy()
    spill[:10, 12:16] = True
    assert m.sample_iou(*m.mask_counts(spill, target, ignore)) == 1.0


def test_6_lisa_paints_the_larger_shape_first(tmp_path):
    # An ignore hole inside a target: the smaller shape (the hole) wins its pixels, as LISA's area sort.
    big = [[0, 0], [9, 0], [9, 9], [0, 9]]
    hole = [[3, 3], [5, 3], [5, 5], [3, 5]]
    _lisa_json(tmp_path / "a.json", [("ignore", hole), ("target", big)], ["q"])
    (record,) = read_benchmark("lisa", tmp_path, images=tmp_path)
    assert record.ignore_mask((10, 10)).sum() == 9 and record.target_mask((10, 10)).sum() == 91
