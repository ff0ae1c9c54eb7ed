"""LLaVA-style conversation JSON (GeoChat boxes with angles, 0-1 and 0-1000 boxes) -> rsvlm rows, on fixtures
written here in each exact notation."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from data_gen.convert import convert
from data_gen.convert.boxes import PRESETS, BoxRangeError, to_protocol
from data_gen.convert.report import FormatError
from rsvlm.grounding import parse_answer
from train.data import SFTData


def write_images(folder: Path, names, size=64) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in names:
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(folder / name)
    return folder


def turn(who: str, text: str) -> dict:
    return {"from": who, "value": text}


def geochat_entries() -> list[dict]:
    """GeoChat_Instruct's notation: task tag, <p>object</p> in the question, {<x1><y1><x2><y2>|<θ>} on 0-100."""
    return [
        {"id": "refer-rotated", "image": "a.png", "conversations": [
            turn("human", "<image>\n[refer] give me the location of <p>the white plane</p>"),
            turn("gpt", "{<40><40><60><50>|<30>}")]},
        {"id": "grounding", "image": "a.png", "conversations": [
            turn("human", "[grounding] describe the image in detail"),
            turn("gpt", "Two <p>storage tanks</p> {<10><20><30><40>|<0>}{<50><20><70><40>|<0>} near a road.")]},
        {"id": "identify", "image": "b.png", "conversations": [
            turn("human", "<image>\n[identify] what is this {<45><30><55><70>|<10>}"),
            turn("gpt", "A ship.")]},
        {"id": "caption", "image": "b.png", "conversations": [
            turn("human", "<image>\nDescribe the image briefly."), turn("gpt", "A harbour with ships.")]},
        {"id": "off-grid", "image": "a.png", "conversations": [
            turn("human", "<image>\n[refer] where is <p>the car</p>"), turn("gpt", "{<10><20><130><40>|<0>}")]},
        {"id": "inverted", "image": "a.png", "conversations": [
            turn("human", "<image>\n[refer] where is <p>the car</p>"), turn("gpt", "{<30><20><10><40>|<0>}")]},
        {"id": "unknown-tag", "image": "a.png", "conversations": [
            turn("human", "<image>\n[detection] find all planes"), turn("gpt", "{<10><20><30><40>|<0>}")]},
        {"id": "no-image-file", "image": "missing.png", "conversations": [
            turn("human", "<image>\nWhat is this?"), turn("gpt", "A field.")]},
    ]  # fmt: skip


@pytest.fixture
def geochat(tmp_path) -> tuple[Path, Path]:
    images = write_images(tmp_path / "images", ["a.png", "b.png"])
    src = tmp_path / "geochat.json"
    src.write_text(json.dumps(geochat_entries()))
    return src, images


def rows_by_id(out: Path) -> dict[str, dict]:
    data = SFTData([out], "train")
    return {row["id"]: row for row in data.dataset}


def test_geochat_boxes_and_tags_become_the_rsvlm_protocol(geochat, tmp_path) -> None:
    src, images = geochat
    report = convert("geochat", src, images, tmp_path / "out")
    assert (report.read, report.written) == (8, 4)
    assert report.skipped == {"box out of range": 2, "unknown tag": 1, "missing image": 1}
    assert report.missing_images == ["missing.png"]
    saved = json.loads((tmp_path / "out" / "conversion.json").read_text())
    assert saved["skipped"] == dict(sorted(report.skipped.items())) and saved["written"] == 4

    rows = rows_by_id(tmp_path / "out")
    assert set(rows) == {"refer-rotated", "grounding", "identify", "caption"}
    refer = rows["refer-rotated"]["conversations"]
    # cx = 50, cy = 45, w = 20, h = 10 on 0-100 -> x 10 on 0-1000; the angle is kept.
    assert refer[1]["content"] == "<obb>[500, 450, 200, 100, 30]</obb>"
    assert (
        refer[0]["content"]
        == "<image>\ngive me the location of the white plane Answer with its oriented box."
    )
    assert rows["refer-rotated"]["task"] == "grounding"

    grounding = rows["grounding"]["conversations"]
    assert grounding[0]["content"].startswith(
        "<image>\ndescribe the image in detail Give a box"
    )  # <image> added
    answer = grounding[1]["content"]
    assert (
        answer
        == "Two storage tanks <box>[100, 200, 300, 400]</box><box>[500, 200, 700, 400]</box> near a road."
    )
    parsed = parse_answer(answer)
    assert not parsed.warnings and [r.label for r in parsed.regions][0] == "Two storage tanks"

    # A tall box rotated by 10 degrees: long-side convention swaps w and h and turns the angle by 90.
    identify = rows["identify"]
    assert (
        identify["conversations"][0]["content"]
        == "<image>\nwhat is this <obb>[500, 500, 400, 100, -80]</obb>"
    )
    assert identify["task"] == "vqa" and rows["caption"]["task"] == "caption"
    for row in rows.values():
        for message in row["conversations"]:
            assert "[refer]" not in message["content"] and "<p>" not in message["content"]
            assert not parse_answer(message["content"]).warnings, message


@pytest.mark.parametrize(
    ("preset", "good", "expected", "bad"),
    [
        ("llava-unit", "[0.1, 0.2, 0.3, 0.45]", "<box>[100, 200, 300, 450]</box>", "[0.1, 0.2, 1.3, 0.4]"),
        ("llava-1000", "[100, 200, 300, 450]", "<box>[100, 200, 300, 450]</box>", "[100, 200, 1300, 400]"),
    ],
)
def test_normalised_boxes_each_convention(tmp_path, preset, good, expected, bad) -> None:
    images = write_images(tmp_path / "images", ["a.png"])
    entries = [
        {"id": "ok", "image": "a.png", "conversations": [
            turn("human", "<image>\nWhere is the pool?"), turn("gpt", f"The pool is at {good}.")]},
        {"id": "bad", "image": "a.png", "conversations": [
            turn("human", "<image>\nWhere is the pool?"), turn("gpt", f"At {bad}.")]},
    ]  # fmt: skip
    (tmp_path / "set.jsonl").write_text("\n".join(json.dumps(e) for e in entries))  # JSON Lines too
    report = convert(preset, tmp_path / "set.jsonl", images, tmp_path / "out")
    assert report.written == 1 and report.skipped == {"box out of range": 1}
    (row,) = rows_by_id(tmp_path / "out").values()
    assert row["conversations"][1]["content"] == f"The pool is at {expected}."
    assert row["task"] == "grounding"


def _rotated_corners(x1, y1, x2, y2, angle) -> np.ndarray:
    """Corners of the rectangle rotated about its centre, computed without rsvlm's OrientedBox."""
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    t = math.radians(angle)
    rot = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    pts = np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]], float) - [cx, cy]
    return pts @ rot.T + [cx, cy]


@settings(max_examples=60, deadline=None)
@given(
    x=st.integers(5, 45), y=st.integers(5, 45), w=st.integers(2, 50), h=st.integers(2, 50),
    angle=st.integers(-89, 89),
)  # fmt: skip
def test_geochat_rotated_box_keeps_its_corners(x, y, w, h, angle) -> None:
    x2, y2 = min(100, x + w), min(100, y + h)
    text = to_protocol([x, y, x2, y2], angle, 100.0)
    (region,) = parse_answer(text).regions
    shape = region.obb or region.box
    if region.obb is None:
        assert angle == 0
        got = np.array(
            [[shape.x1, shape.y1], [shape.x2, shape.y1], [shape.x2, shape.y2], [shape.x1, shape.y2]]
        )
    else:
        got = region.obb.corners()
    want = _rotated_corners(x * 10, y * 10, x2 * 10, y2 * 10, angle)
    # Same four points in any order, within the rounding to integers (grid units and degrees).
    distance = np.abs(got[:, None, :] - want[None, :, :]).sum(-1).min(1)
    tolerance = 2 + math.radians(0.5) * max(x2 - x, y2 - y) * 10
    assert distance.max() <= tolerance, (text, got, want)


def test_out_of_range_values_are_refused_not_clipped() -> None:
    with pytest.raises(BoxRangeError):
        to_protocol([-1, 0, 10, 10], 0, 100.0)
    assert PRESETS["geochat"].rewrite("no boxes here") == ("no boxes here", 0)


def test_a_file_of_another_format_names_the_missing_keys(tmp_path) -> None:
    (tmp_path / "x.json").write_text(json.dumps([{"id": 1, "img": "a.png", "caption": "x"}]))
    with pytest.raises(FormatError, match="missing key.*image, conversations"):
        convert("geochat", tmp_path / "x.json", None, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # refused before anything is written


def test_cli_prints_counts_and_refuses_a_bad_file(geochat, tmp_path, capsys) -> None:
    from rsvlm.cli import main

    src, images = geochat
    assert main(["convert", "geochat", str(src), "--images", str(images), "--out", str(tmp_path / "o")]) == 0
    printed = capsys.readouterr().out
    assert "8 rows read, 4 written" in printed and "skipped 2 x box out of range" in printed
    (tmp_path / "bad.json").write_text("{}")
    assert main(["convert", "rsvqa", str(tmp_path / "bad.json"), "--out", str(tmp_path / "o2")]) == 2
    assert "rsvlm convert: error:" in capsys.readouterr().err
