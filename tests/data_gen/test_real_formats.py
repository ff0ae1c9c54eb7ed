"""Real annotation formats end to end: GeoPixelD grounded captions and DSIFN change pairs from ../shared/data
(skipped when absent), a code-written GeoPixelD file whose masks are known by hand, and the template counts of
every question type a generated dataset actually uses."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from PIL import Image, ImageDraw

from data_gen.config import GenConfig
from data_gen.driver import build_dataset
from data_gen.sources import SourceError, load_tile, plan_tiles, read_vectors
from data_gen.tasks import FAMILIES, phrasing, run_tasks
from data_gen.tasks.reasoning import RULES
from data_gen.validate import validate_dataset
from rsvlm.grounding import parse_answer
from tests.data_gen.source_fixtures import DATA
from tests.data_gen.task_fixtures import synthetic_tile

GROUNDING = DATA / "grounding"
STEM = "P0224_0_800_0_800"


def need(path):
    if not path.exists():
        pytest.skip(f"{path} not available")
    return path


def reference_masks(polygon_json) -> list[np.ndarray]:
    """GeoPixelD masks drawn independently of our reader: PIL fills each ring including its outline pixels."""
    obj = json.loads(polygon_json.read_text())
    w, h = Image.open(polygon_json.with_suffix(".png")).size
    out = []
    for rings in obj["polygons"]:
        img = Image.new("1", (w, h), 0)
        for ring in rings:
            ImageDraw.Draw(img).polygon([tuple(p) for p in ring], fill=1, outline=1)
        out.append(np.array(img, dtype=bool))
    return out


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def whole_image_tile(vectors):
    cfg = GenConfig(image=str(GROUNDING / f"{STEM}.png"), vectors=str(vectors), tile_size=1024)
    refs = plan_tiles(cfg)
    assert len(refs) == 1 and refs[0].window == (0, 0, 800, 800)
    return load_tile(cfg, refs[0])


def caption_sample(samples):
    human = [s for s in samples if s.task == "gcg" and s.meta.get("human_caption")]
    assert len(human) == 1
    return human[0]


# ------------------------------------------------------------------------------------------------ GeoPixelD


def test_geopixeld_file_is_read_as_phrases_with_pixel_polygons() -> None:
    path = need(GROUNDING / f"{STEM}.json")
    layer = read_vectors(str(path))
    assert layer.pixel and layer.crs is None and len(layer.features) == 4
    assert [f.label for f in layer.features] == ["tennis court"] * 4
    assert [f.props["phrase"] for f in layer.features] == [f"tennis court-{k}" for k in (1, 2, 3, 4)]
    assert [f.props["seg"] for f in layer.features] == [0, 1, 2, 3]
    assert {f.image.rsplit("/", 1)[-1] for f in layer.features} == {f"{STEM}.png"}


def test_geopixeld_masks_match_an_independent_rasterisation() -> None:
    path = need(GROUNDING / f"{STEM}.json")
    tile = whole_image_tile(path)
    refs = reference_masks(path)
    insts = sorted(tile.instances, key=lambda i: i.attributes["seg"])
    assert len(insts) == 4 and tile.labels is None and tile.gsd is None
    for inst, ref in zip(insts, refs):
        assert iou(inst.mask, ref) > 0.99, (inst.attributes["phrase"], iou(inst.mask, ref))
    assert insts[0].mask[:, 688:786].sum() == insts[0].mask.sum()  # court-1 "at right": x 688..785


def test_geopixeld_caption_rewritten_onto_our_protocol_with_masks_in_seg_order() -> None:
    path = need(GROUNDING / f"{STEM}.json")
    tile = whole_image_tile(path)
    samples = run_tasks(tile, FAMILIES, 0)
    s = caption_sample(samples)
    answer = s.conversations[-1]["content"]
    parsed = parse_answer(answer)
    assert not parsed.warnings and parsed.num_seg == 4 == len(s.masks)
    assert answer.count("<p>tennis court</p> [SEG]") == 4 and "tennis court-1" not in answer
    assert "[SEG], <p>" in answer and " ," not in answer  # GeoPixelD's "[SEG] , <p>" tidied
    # The prose is the human caption's, word for word, once the phrase marks are removed.
    source = json.loads(path.read_text())["gcg_description"]

    def words(text: str) -> list[str]:
        text = re.sub(r"<p>\s*([^<]*?)(?:-\d+)?\s*</p>\s*\[SEG\]", r"\1", text)
        return re.findall(r"[a-z]+", text.lower())

    assert words(answer) == words(source)
    by_seg = sorted(tile.instances, key=lambda i: i.attributes["seg"])
    for mask, inst in zip(s.masks, by_seg):
        np.testing.assert_array_equal(mask, inst.mask)
    # The other families still run on the instances (templated samples besides the human caption).
    assert {"vqa", "grounding"} <= {x.task for x in samples}
    assert any(x.task == "gcg" and not x.meta.get("human_caption") for x in samples)
    counts = [f for x in samples for f in x.meta["facts"] if f["kind"] == "count"]
    assert counts and all(f["count"] == 4 for f in counts)


def test_geopixeld_index_brings_the_human_question() -> None:
    index = need(GROUNDING / "GeoPixelD.json")
    need(GROUNDING / f"{STEM}.json")
    tile = whole_image_tile(index)
    s = caption_sample(run_tasks(tile, ["gcg"], 0))
    question = json.loads(index.read_text())[0]["conversations"][0]["value"]
    assert s.conversations[0]["content"] == f"<image>\n{question}"
    assert s.meta["types"] == ["gcg_source"]


def test_geopixeld_windows_clip_masks_and_drop_the_whole_image_caption() -> None:
    path = need(GROUNDING / f"{STEM}.json")
    full = {i.attributes["seg"]: i.mask for i in whole_image_tile(path).instances}
    cfg = GenConfig(image=str(GROUNDING / f"{STEM}.png"), vectors=str(path), tile_size=512)
    seen = 0
    for ref in plan_tiles(cfg):
        c, r, w, h = ref.window
        tile = load_tile(cfg, ref)
        expect = {k: m[r : r + h, c : c + w] for k, m in full.items() if m[r : r + h, c : c + w].any()}
        got = {i.attributes["seg"]: i.mask for i in tile.instances}
        assert sorted(got) == sorted(expect), ref.window
        for k in got:
            np.testing.assert_array_equal(got[k], expect[k])
            seen += 1
        assert not any("gcg_caption" in i.attributes for i in tile.instances)
        assert not [s for s in run_tasks(tile, ["gcg"], 0) if s.meta.get("human_caption")]
    assert seen >= 5  # court-1 is cut by two windows


def test_geopixeld_dataset_validates(tmp_path) -> None:
    path = need(GROUNDING / f"{STEM}.json")
    cfg = GenConfig(
        image=str(GROUNDING / f"{STEM}.png"), vectors=str(path), tile_size=1024, out=str(tmp_path)
    )
    build_dataset(cfg)
    report = validate_dataset(tmp_path, show_progress=False)
    assert report.ok, report.summary()
    assert report.samples >= 5 and report.checks["mask"] >= 5


def write_geopixeld(folder, stem: str, caption: str, polygons: list) -> None:
    Image.fromarray(np.full((64, 48, 3), 90, np.uint8)).save(folder / f"{stem}.png")
    obj = {
        "id": 7,
        "img": f"data/GeoPixelD/train/{stem}.png",
        "gcg_description": caption,
        "polygons": polygons,
    }
    (folder / f"{stem}.json").write_text(json.dumps(obj))


def ring(x0: int, y0: int, x1: int, y1: int) -> list[list[int]]:
    """Boundary-pixel contour of the pixel block x0..x1, y0..y1 (inclusive), as GeoPixelD stores masks."""
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]


def test_code_written_geopixeld_folder_masks_by_hand(tmp_path) -> None:
    caption = "A <p> small pond-1 </p> [SEG] lies left of the <p> storage tank-1 </p> [SEG] , near a road."
    # Pond: pixels x 2..11, y 5..14 -> 10 x 10 = 100 px. Tank: two rings (x 30..39, y 40..44: 50 px;
    # x 30..31, y 50..52: 6 px) -> 56 px.
    write_geopixeld(
        tmp_path, "scene_a", caption, [[ring(2, 5, 11, 14)], [ring(30, 40, 39, 44), ring(30, 50, 31, 52)]]
    )
    cfg = GenConfig(image=str(tmp_path / "scene_a.png"), vectors=str(tmp_path), tile_size=64)
    tile = load_tile(cfg, plan_tiles(cfg)[0])
    masks = {i.label: i.mask for i in tile.instances}
    assert sorted(masks) == ["small pond", "storage tank"]
    expect = np.zeros((64, 48), bool)
    expect[5:15, 2:12] = True
    np.testing.assert_array_equal(masks["small pond"], expect)
    assert masks["storage tank"].sum() == 56
    s = caption_sample(run_tasks(tile, ["gcg"], 3))
    assert s.conversations[-1]["content"] == (
        "A <p>small pond</p> [SEG] lies left of the <p>storage tank</p> [SEG], near a road."
    )
    assert [int(m.sum()) for m in s.masks] == [100, 56]
    templated = [x for x in run_tasks(tile, ["gcg"], 3) if not x.meta.get("human_caption")]
    assert "<p>a small pond</p> [SEG]" in templated[0].conversations[-1]["content"]  # one: no count quoted
    cfg.out = str(tmp_path / "ds")
    build_dataset(cfg)
    report = validate_dataset(cfg.out, show_progress=False)
    assert report.ok, report.summary()


def test_geopixeld_errors_are_one_line(tmp_path) -> None:
    write_geopixeld(
        tmp_path, "bad", "Two <p> ships </p> [SEG] and <p> a dock </p> [SEG].", [[ring(1, 1, 5, 5)]]
    )
    with pytest.raises(SourceError, match=r"2 '<p> … </p> \[SEG\]' phrases but there are 1 polygon"):
        read_vectors(str(tmp_path / "bad.json"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SourceError, match="no .json files"):
        read_vectors(str(empty))
    (tmp_path / "index.json").write_text(
        json.dumps([{"conversations": [], "polygons": "train/missing.json"}])
    )
    with pytest.raises(SourceError, match="missing.json .* not found"):
        read_vectors(str(tmp_path / "index.json"))


# ------------------------------------------------------------------------------------------------ DSIFN


def dsifn_config(out: str = "unused", **kw) -> GenConfig:
    root = need(DATA / "change/dsifn")
    return GenConfig(image=str(root / "A"), image2=str(root / "B"), change_mask=str(root / "label"),
                     tile_size=256, out=out, **kw)  # fmt: skip


def test_dsifn_pairs_give_change_samples_with_hand_checked_areas() -> None:
    cfg = dsifn_config()
    refs = plan_tiles(cfg)
    # One 256² tile per complete pair (A, B and label share a stem), however many pairs the folder holds.
    root = DATA / "change/dsifn"
    pairs = {p.stem for p in (root / "label").glob("*.png") if (root / "A" / p.name).is_file()}
    assert pairs and sorted(ref.id.split("_r0_c0")[0] for ref in refs) == sorted(pairs)
    types: set[str] = set()
    areas = 0
    for ref in refs:
        tile = load_tile(cfg, ref)
        stem = ref.id.split("_r0_c0")[0]
        label = np.array(Image.open(DATA / "change/dsifn/label" / f"{stem}.png").convert("L")) > 0
        np.testing.assert_array_equal(tile.change, label)
        for seed in range(6):
            for s in run_tasks(tile, ["change"], seed):
                types |= set(s.meta["types"])
                for f in s.meta["facts"]:
                    if f["kind"] == "area":  # no GSD in a PNG: the area is quoted in pixels
                        assert f["quote"] == f"{int(label.sum()):,} pixels"
                        assert f["quote"] in s.conversations[f["turn"]]["content"]
                        areas += 1
    assert areas > 0
    assert {"change_caption", "change_binary", "change_quantify", "change_localise"} <= types


def test_dsifn_dataset_validates(tmp_path) -> None:
    build_dataset(dsifn_config(str(tmp_path), tasks=("change",)))
    report = validate_dataset(tmp_path, show_progress=False)
    assert report.ok, report.summary()
    assert report.samples >= 6 and report.checks["area"] >= 1


# ------------------------------------------------------------------------------------------------ phrasings


def test_every_question_type_a_dataset_uses_has_fifteen_phrasings() -> None:
    """Read the types off generated samples (not off the template table), so a task that asks a question type
    missing from the table, or with too few phrasings, fails here."""
    used: set[str] = set()
    for seed in range(12):
        for s in run_tasks(synthetic_tile(256), FAMILIES, seed):
            used |= set(s.meta["types"])
    rules = {r.name: r for r in RULES}
    assert len(used) >= 20
    for qtype in sorted(used):
        if qtype in rules:
            n = len(set(rules[qtype].questions)) * len(set(phrasing.REASONING_FRAMES))
        elif qtype == "gcg_source":
            continue  # the source's own human question
        else:
            assert qtype in phrasing.TEMPLATES, f"question type {qtype!r} has no templates"
            n = len(set(phrasing.TEMPLATES[qtype]))
        assert n >= 15, (qtype, n)


def test_dior_oriented_box_is_read_as_its_four_corners():
    from data_gen.sources import read_vectors

    xml = DATA / "grounding" / "dior" / "00001.xml"
    if not xml.exists():
        pytest.skip("../shared/data absent")
    layer = read_vectors(xml)
    assert [f.label for f in layer.features] == ["golffield"]
    assert layer.features[0].geom.bounds == (133.0, 237.0, 684.0, 672.0)


def test_yell_tree_boxes_give_a_dataset_that_validates(tmp_path):
    image = DATA / "grounding" / "deepforest_extra" / "2019_YELL_2_541000_4977000_image_crop.png"
    if not image.exists():
        pytest.skip("../shared/data absent")
    cfg = GenConfig(image=str(image), vectors=str(image.with_suffix(".xml")), tile_size=512, max_tiles=6)
    for ref in plan_tiles(cfg)[:2]:
        for sample in run_tasks(load_tile(cfg, ref), ["vqa"], 0):
            checked = {
                key for fact in sample.meta["facts"] for key in ("raster", "a", "more") if fact.get(key)
            }
            assert not checked or sample.meta["rasters"], (sample.task, sample.meta["facts"])
    cfg.out = str(tmp_path / "ds")
    build_dataset(cfg)
    report = validate_dataset(cfg.out, show_progress=False)
    # relations, comparisons and class lists are re-checked against the stored rasters too
    assert report.ok, report.summary()
