"""Task families on code-written tiles (known geometry) and on real LoveDA / LEVIR-CD tiles."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image, ImageDraw

from data_gen.tasks import FAMILIES, phrasing, regions, run_tasks
from data_gen.tasks.reasoning import RULES
from rsvlm.grounding import parse_answer
from tests.data_gen.task_fixtures import LOVEDA_TAXONOMY, levircd_tile, loveda_tile, synthetic_tile

ALL_TYPES = {
    "caption",
    "caption_named",
    "presence",
    "count",
    "area",
    "position",
    "relation",
    "comparison",
    "multilabel",
    "refer_seg",
    "refer_box",
    "refer_obb",
    "all_seg",
    "all_box",
    "gcg",
    "change_caption",
    "change_binary",
    "change_semantic",
    "change_quantify",
    "change_localise",
}


def _types(samples) -> set[str]:
    return {t for s in samples for t in s.meta["types"]}


def _check_protocol(samples) -> None:
    for s in samples:
        n_seg = 0
        for turn in s.conversations:
            if turn["role"] == "assistant":
                parsed = parse_answer(turn["content"])
                assert not parsed.warnings, (s.id, turn["content"], parsed.warnings)
                n_seg += parsed.num_seg
        assert n_seg == len(s.masks), s.id
        assert all(m.dtype == bool and m.any() for m in s.masks)


def test_templates_have_fifteen_distinct_phrasings_and_format() -> None:
    for qtype in phrasing.QUESTION_TYPES:
        templates = phrasing.TEMPLATES[qtype]
        assert len(set(templates)) >= 15, qtype
        allowed = set(phrasing.FIELDS.get(qtype, ()))
        for t in templates:
            assert phrasing.template_fields(t) <= allowed, (qtype, t)
    assert len(set(phrasing.REASONING_FRAMES)) >= 15
    for rule in RULES:
        assert len(rule.questions) * len(phrasing.REASONING_FRAMES) >= 15


def test_every_task_type_on_the_synthetic_tile() -> None:
    seen: set[str] = set()
    rules: set[str] = set()
    none_answers = 0
    dialogue = False
    for seed in range(12):
        samples = run_tasks(synthetic_tile(256), FAMILIES, seed)
        _check_protocol(samples)
        assert {s.task for s in samples} == set(FAMILIES)
        seen |= _types(samples)
        rules |= {s.meta["rule"] for s in samples if s.task == "reasoning"}
        none_answers += sum("None here" in s.conversations[-1]["content"] for s in samples)
        dialogue |= any(s.meta.get("dialogue") and len(s.conversations) >= 6 for s in samples)
    assert ALL_TYPES <= seen, ALL_TYPES - seen
    assert dialogue
    assert {"shade", "flood_fields"} <= rules
    assert none_answers > 0


def test_every_family_on_a_real_loveda_tile() -> None:
    tile = loveda_tile(1)
    samples = run_tasks(tile, [f for f in FAMILIES if f != "change"], 0)
    _check_protocol(samples)
    assert {s.task for s in samples} == {"caption", "vqa", "grounding", "reasoning", "gcg"}
    # LoveDA tile 1 has buildings, so the building class is counted and grounded at some seed.
    types = set()
    for seed in range(12):
        types |= _types(run_tasks(tile, ["vqa", "grounding"], seed))
    assert {"presence", "count", "area", "refer_box", "refer_obb", "refer_seg"} <= types


def test_change_on_a_real_levircd_pair() -> None:
    tile = levircd_tile()
    samples = run_tasks(tile, ["change", "caption", "vqa"], 0)
    assert {s.task for s in samples} == {"change"}  # no labels: only change tasks
    _check_protocol(samples)
    for s in samples:
        assert s.conversations[0]["content"].startswith("Image 1 (2012): <image>\nImage 2 (2016): <image>\n")
    quant = [f for s in samples for f in s.meta["facts"] if f["kind"] == "count"]
    assert quant and all(f["count"] == regions.count_components(tile.change, f["min_pixels"]) for f in quant)


def test_quoted_area_matches_a_hand_computation() -> None:
    # Forest is rows 0-127, cols 160-255 of the 256² synthetic tile: 128 * 96 = 12,288 px at 0.5 m = 3,072 m².
    assert regions.area_quote(128 * 96, 0.5) == "3,072 m²"
    assert regions.share_quote(128 * 96, 256 * 256 - 0) == "about a fifth (19 %)"
    found = False
    for seed in range(40):
        for s in run_tasks(synthetic_tile(256), ["vqa"], seed):
            for f in s.meta["facts"]:
                if f["kind"] == "area" and f["where"] == [{"raster": "labels", "values": [6]}]:
                    assert f["pixels"] == 12288
                    assert "3,072 m²" in s.conversations[f["turn"]]["content"]
                    found = True
    assert found


def test_area_without_gsd_is_in_pixels_and_share() -> None:
    texts = [
        t["content"]
        for seed in range(30)
        for s in run_tasks(synthetic_tile(128, gsd=None), ["vqa"], seed)
        for t in s.conversations
    ]
    assert any(re.search(r"covers [\d,]+ pixels, .*\(\d+ %\) of the tile", t) for t in texts)
    assert not any("m²" in t for t in texts)


def test_box_and_obb_geometry() -> None:
    mask = np.zeros((256, 256), bool)
    mask[20:40, 20:50] = True  # the largest synthetic building
    box = regions.grid_box(mask)
    assert [round(v, 2) for v in box.as_list()] == [78.12, 78.12, 195.31, 156.25]
    # A 120 x 30 px rectangle rotated by 30 degrees.
    img = Image.new("1", (400, 400))
    c, s = np.cos(np.radians(30)), np.sin(np.radians(30))
    corners = [
        (200 + dx * c - dy * s, 200 + dx * s + dy * c)
        for dx, dy in ((-60, -15), (60, -15), (60, 15), (-60, 15))
    ]
    ImageDraw.Draw(img).polygon(corners, fill=1)
    obb = regions.grid_obb(np.asarray(img, dtype=bool))
    assert abs(obb.angle - 30) < 2
    assert abs(obb.w - 120 * 2.5) < 10 and abs(obb.h - 30 * 2.5) < 10
    assert abs(obb.cx - 500) < 3 and abs(obb.cy - 500) < 3


def test_components_positions_and_words() -> None:
    mask = np.zeros((90, 90), bool)
    mask[0:10, 0:10] = True
    mask[50:60, 70:90] = True
    mask[89, 0] = True  # a speck below min_pixels
    _, ids, counts = regions.components(mask, min_pixels=4)
    assert counts == [200, 100]
    assert regions.position_name(np.pad(mask[0:10, 0:10], ((0, 80), (0, 80)))) == "top left"
    assert regions.direction((80.0, 10.0), (10.0, 80.0), compass=True) == "north-east of"
    assert regions.direction((10.0, 10.0), (10.0, 80.0), compass=False) == "above"
    assert regions.proportion_word(0.34) == "about a third"
    assert regions.percent_text(3, 1000) == "0.3 %"


def test_deterministic_for_a_seed_and_varied_across_seeds() -> None:
    a = run_tasks(synthetic_tile(128), FAMILIES, 7)
    b = run_tasks(synthetic_tile(128), FAMILIES, 7)
    c = run_tasks(synthetic_tile(128), FAMILIES, 8)
    assert [s.conversations for s in a] == [s.conversations for s in b]
    assert all(np.array_equal(x, y) for s, t in zip(a, b) for x, y in zip(s.masks, t.masks))
    assert [s.conversations for s in a] != [s.conversations for s in c]


def test_true_negatives_and_none_here() -> None:
    tile = synthetic_tile(128, change=False, named=False)
    tile.labels = np.where(tile.labels == 4, 1, tile.labels).astype(np.uint8)  # no water at all
    no_answers, none_here = [], []
    for seed in range(30):
        for s in run_tasks(tile, ["vqa", "reasoning"], seed):
            for f in s.meta["facts"]:
                if f["kind"] == "presence" and f["answer"] == "no":
                    no_answers.append(f["where"][0]["values"][0])
                if f["kind"] == "none":
                    none_here.append(f["rule"])
    assert no_answers and all(int((tile.labels == v).sum()) == 0 for v in no_answers)
    assert {"boat_launch", "flood_fields", "buildings_at_risk"} & set(none_here)


def test_named_osm_features_are_described() -> None:
    samples = run_tasks(synthetic_tile(256), ["caption"], 0)
    named = [s for s in samples if "caption_named" in s.meta["types"]]
    assert named and "Test Canal runs north-south" in named[0].conversations[-1]["content"]


def test_custom_taxonomy_without_labels_gives_no_label_tasks() -> None:
    tile = synthetic_tile(64, change=False, named=False)
    tile.labels = None
    assert run_tasks(tile, ["caption", "vqa", "grounding", "reasoning", "gcg", "change"], 0) == []
    assert LOVEDA_TAXONOMY.by_name("woodland").value == 6


def test_unknown_family_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown task family"):
        run_tasks(synthetic_tile(64), ["captions"], 0)
