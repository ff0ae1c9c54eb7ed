"""Wording a demanding reader checks: units that follow the size, proportion words that match the number,
agreement ("There is 1 ..."), positions of widespread classes, 'none here' reasons, OSM building counts and the
weak change of an RGBN pair. Each test pins one fix found by reading generated samples."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from data_gen.config import GenConfig
from data_gen.sources import load_tile, plan_tiles
from data_gen.sources.scene import _date_in_name
from data_gen.tasks import phrasing, regions, run_tasks
from data_gen.tasks.reasoning import missing_text
from tests.data_gen.task_fixtures import synthetic_tile

SHARED = Path(__file__).resolve().parents[2] / "../shared/data"


def _texts(families, seeds=range(30), **kw):
    return [
        t["content"]
        for seed in seeds
        for s in run_tasks(synthetic_tile(**kw), families, seed)
        for t in s.conversations
        if t["role"] == "assistant"
    ]


def test_area_unit_follows_the_size() -> None:
    assert regions.area_quote(120, 1.0) == "120 m²"  # was "120 m² (0.01 ha)"
    assert regions.area_quote(18_037, 1.0) == "1.8 ha (18,037 m²)"
    assert regions.area_quote(42_000, 4.0) == "67 ha"  # 672,000 m²
    assert regions.area_quote(72_149, 5.0) == "1.80 km² (180 ha)"  # was "1,803,725 m² (180.37 ha)"
    assert regions.area_quote(1234, None) == "1,234 pixels"


def test_proportion_word_matches_the_number() -> None:
    assert regions.share_quote(5, 100) == "a small part (5 %)"  # was "about a tenth (5 %)"
    assert regions.share_quote(7, 100) == "a small part (7 %)"
    assert regions.share_quote(9, 100) == "about a tenth (9 %)"
    assert regions.share_quote(34, 100) == "about a third (34 %)"


def test_widespread_mask_is_not_mostly_in_one_corner() -> None:
    everywhere = np.ones((90, 90), bool)
    everywhere[:10, :10] = (
        False  # the top-left cell holds slightly less: it used to be "mostly in the top left"
    )
    assert regions.cells_covering(everywhere) == [regions.WHOLE_SCENE]
    assert regions.where_text(regions.cells_covering(everywhere)) == "spread across the whole scene"
    corner = np.zeros((90, 90), bool)
    corner[:30, :30] = True
    assert regions.where_text(regions.cells_covering(corner)) == "mostly in the top left"
    two = np.zeros((90, 90), bool)
    two[:30, :20] = two[60:, 70:] = True
    assert regions.where_text(regions.cells_covering(two)) == "mostly in the top left and in the bottom right"


def test_counts_agree_in_number_and_things_are_plural() -> None:
    texts = _texts(["vqa", "grounding"])
    assert not [t for t in texts if re.search(r"\bare 1 ", t)]  # was "There are 1 patch of water."
    assert not [t for t in texts if t.startswith("The building is")]  # "The buildings are mostly ..."
    assert not [t for t in texts if t.startswith("Building covers")]  # "Buildings cover ..."
    assert any(t.startswith("The buildings are ") for t in texts)


def test_caption_lead_and_regions_read_correctly() -> None:
    texts = _texts(["caption"], seeds=range(40))
    assert texts
    for t in texts:
        assert not re.search(r"\bIn the (top|bottom|left|right)\b(?! left| right)", t), t  # "On the right"
        assert not re.search(r"mainly \w+( \w+)?, (all|nearly all) \(", t), (
            t
        )  # not "mainly forest, all (100 %)"
        m = re.match(
            r"(This image is mostly covered by|The scene is dominated by|Most of this tile is) .*?\((\d+) %\)",
            t,
        )
        if m:
            assert int(m.group(2)) >= 50, t  # "mostly" only for a majority class


def test_gcg_has_no_nested_parentheses() -> None:
    texts = _texts(["gcg"])
    assert texts and not [t for t in texts if re.search(r"\([^()]*\([^()]*\)\)", t)]


def test_none_here_reason_is_a_readable_list() -> None:
    assert missing_text([("water",), ("road", "barren", "grass")]) == (
        "the image shows no water, and no roads, bare ground or grassland"
    )  # was "no water and road or barren or grass"
    assert missing_text([("building",)]) == "the image shows no buildings"


def test_plural_and_article_of_osm_labels() -> None:
    assert phrasing.plural("garages") == "garages" and phrasing.plural("steps") == "steps"
    assert phrasing.plural("terraced houses") == "terraced houses"
    assert phrasing.plural("building") == "buildings" and phrasing.plural("grass") == "grasses"
    assert phrasing.article("industrial building") == "an" and phrasing.article("house") == "a"


def test_acquisition_dates_from_file_names() -> None:
    assert _date_in_name("m_4709963_se_14_1_20090818.tif") == "2009-08-18"
    assert _date_in_name("test_2_0000_0000.png") is None
    assert _date_in_name("x_20201301.tif") is None  # month 13


def test_osm_buildings_are_counted_together() -> None:
    osm = SHARED / "osm/osmnx_planet_10.068_48.135_10.071_48.137.osm"
    if not osm.exists():
        pytest.skip("shared OSM extract not available")
    cfg = GenConfig(osm=str(osm), tasks=("vqa",))
    tile = load_tile(cfg, plan_tiles(cfg)[0])
    buildings = [i for i in tile.instances if i.attributes["category"] == "building"]
    assert len(buildings) == 30 and {i.label for i in buildings} == {
        "building"
    }  # not 29 "building" + 1 "house"
    assert sum(i.attributes["building_type"] == "house" for i in buildings) == 1
    for seed in range(20):
        for s in run_tasks(tile, ["vqa"], seed):
            for f in s.meta["facts"]:
                if f["kind"] == "count" and f["method"] == "instances" and len(f["instance_pixels"]) == 1:
                    pytest.fail(f"an OSM count of 1: {s.conversations}")


def test_naip_pair_gets_weak_change_and_dates() -> None:
    a = SHARED / "change/m_4709963_se_14_1_20090818.tif"
    b = SHARED / "change/m_4709963_se_14_1_20200831.tif"
    if not (a.exists() and b.exists()):
        pytest.skip("shared NAIP pair not available")
    cfg = GenConfig(image=str(a), image2=str(b), tile_size=128, max_tiles=1)
    tile = load_tile(cfg, plan_tiles(cfg)[0])
    assert tile.weak and tile.labels2 is not None and tile.change is not None
    np.testing.assert_array_equal(tile.change, (tile.labels != tile.labels2) & (tile.labels != 255))
    assert tile.dates == ("2009-08-18", "2020-08-31")
    samples = run_tasks(tile, ["change"], 0)
    assert samples and samples[0].conversations[0]["content"].startswith("Image 1 (2009-08-18): <image>")
    assert "other" not in " ".join(t["content"] for s in samples for t in s.conversations).split()


def test_unknown_label_values_reach_the_card(tmp_path) -> None:
    """read_labels maps unknown values to ignore, so the card used to say 'none' even for a wrong taxonomy."""
    import rasterio
    from rasterio.transform import from_origin

    from data_gen.driver import build_dataset

    lab = np.full((64, 64), 6, np.uint8)
    lab[:20, :20] = 9  # not a LoveDA class
    profile = dict(driver="GTiff", width=64, height=64, dtype="uint8", crs="EPSG:32633",
                   transform=from_origin(500000, 5000000, 1, 1))  # fmt: skip
    with rasterio.open(tmp_path / "img.tif", "w", count=3, **profile) as d:
        d.write(np.random.default_rng(0).integers(0, 255, (3, 64, 64), dtype=np.uint8))
    with rasterio.open(tmp_path / "lab.tif", "w", count=1, **profile) as d:
        d.write(lab[None])
    cfg = GenConfig(image=str(tmp_path / "img.tif"), labels=str(tmp_path / "lab.tif"), taxonomy="loveda",
                    tile_size=64, tasks=("caption",), out=str(tmp_path / "ds"))  # fmt: skip
    tile = load_tile(cfg, plan_tiles(cfg)[0])
    assert tile.unknown_values == {9: 400} and not (tile.labels == 9).any()
    card = (build_dataset(cfg) / "README.md").read_text()
    assert "Unknown label values (not in the taxonomy): 9 (400 px)" in card
