"""Sources on real data from ../shared/data (skipped when absent) and the NAIP crops bundled in tests/data."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import rasterio
from PIL import Image

from data_gen.config import GenConfig
from data_gen.sources import load_tile, plan_tiles, read_osm, read_vectors
from tests.data_gen.source_fixtures import DATA, REPO_DATA, write_raster


def need(*parts: str):
    p = DATA.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"{p} not available")
    return p


def first_tile(cfg: GenConfig):
    for ref in plan_tiles(cfg):
        t = load_tile(cfg, ref)
        if t is not None:
            return ref, t
    raise AssertionError("no non-empty tile")


def test_loveda_image_and_annotation(caplog):
    img, ann = need("landcover_seg/loveda/img"), need("landcover_seg/loveda/ann")
    cfg = GenConfig(image=str(img), labels=str(ann), taxonomy="loveda", tile_size=256, max_tiles=3,
                    extra={"gsd": 0.3})  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="data_gen.sources"):
        ref, t = first_tile(cfg)
    assert not [r for r in caplog.records if "not in taxonomy" in r.getMessage()]
    raw = np.array(Image.open(ann / "0.png"))
    c, r, w, h = ref.window
    np.testing.assert_array_equal(t.labels, raw[r : r + h, c : c + w])
    assert t.gsd == 0.3 and t.crs is None and t.taxonomy.name == "loveda"


def test_levircd_pair_with_binary_mask():
    root = need("change/levircd")
    cfg = GenConfig(
        image=str(root / "A"), image2=str(root / "B"), change_mask=str(root / "label"), tile_size=256
    )
    refs = plan_tiles(cfg)
    # One 256² tile per pair that has both dates and a label, whatever the folder's size.
    pairs = {p.stem for p in (root / "label").glob("*.png") if (root / "A" / p.name).is_file()}
    assert pairs and sorted(r.id.split("_r0_c0")[0] for r in refs) == sorted(pairs)
    t = load_tile(cfg, refs[0])
    stem = refs[0].id.split("_r0_c0")[0]
    expected = np.array(Image.open(root / "label" / f"{stem}.png")) > 0
    np.testing.assert_array_equal(t.change, expected)
    np.testing.assert_array_equal(t.image2, np.array(Image.open(root / "B" / f"{stem}.png").convert("RGB")))


def test_oscd_sentinel2_band_files_and_cm_tif():
    city = need("change/oscd/bercy")
    cfg = GenConfig(image=str(city / "imgs_1"), image2=str(city / "imgs_2"), change_mask=str(city / "bercy-cm.tif"),
                    change_values=(2,), tile_size=128, max_tiles=4, weak_labels="off")  # fmt: skip
    ref, t = first_tile(cfg)
    assert t.dates == ("2016-11-30", "2017-08-29")  # from dates.txt
    assert t.crs == "EPSG:4326" and 8 < t.gsd < 13  # 10 m Sentinel-2, from latitude
    with rasterio.open(city / "bercy-cm.tif") as ds:
        cm = ds.read(1)
    c, r, w, h = ref.window
    np.testing.assert_array_equal(t.change, cm[r : r + h, c : c + w] == 2)
    with rasterio.open(next((city / "imgs_1").glob("*_B04.tif"))) as ds:
        red = ds.read(1)[r : r + h, c : c + w].astype(float)
    # The composite's red channel is B04, stretched monotonically.
    assert np.corrcoef(red.ravel(), t.image[..., 0].ravel().astype(float))[0, 1] > 0.95


def test_naip_pair_weak_labels():
    a, b = REPO_DATA / "naip_2020_256.tif", REPO_DATA / "naip_2009_256.tif"
    if not a.exists():
        pytest.skip("bundled NAIP crops absent")
    cfg = GenConfig(image=str(a), image2=str(b), tile_size=128)
    refs = plan_tiles(cfg)
    tiles = [load_tile(cfg, r) for r in refs]
    assert len(tiles) == 4 and all(t.weak and t.taxonomy.name == "weak-ndvi-ndwi" for t in tiles)
    assert all(t.image2 is not None and t.gsd == pytest.approx(5.0) and t.crs == "EPSG:26914" for t in tiles)
    labels = np.concatenate([t.labels.ravel() for t in tiles])
    assert (labels == 1).mean() > 0.2  # late-summer North Dakota: plenty of vegetation
    # The 2009 crop sits 4 m west / 1 m north of the 2020 one: the uncovered edge is ignore (255).
    assert set(np.unique(labels)) <= {0, 1, 2, 255} and (labels == 255).mean() < 0.02


def test_naip_full_scenes_on_shifted_grids():
    a = need("change/m_4709963_se_14_1_20200831.tif")
    b = need("change/m_4709963_se_14_1_20090818.tif")  # its grid is 1 m east and 1 m north of the 2020 one
    cfg = GenConfig(image=str(a), image2=str(b), tile_size=256, max_tiles=5)
    ref = plan_tiles(cfg)[4]
    t = load_tile(cfg, ref)
    assert t.image2.shape == t.image.shape and (t.image2[8:-8, 8:-8] > 0).any(axis=-1).all()


def test_alexandria_buildings_on_the_dsm_grid():
    dsm = need("grounding/opengeos_alexandria_dsm.tif")
    gj = need("grounding/opengeos_alexandria_buildings.geojson")
    cfg = GenConfig(image=str(dsm), vectors=str(gj), tile_size=283, weak_labels="off")
    (ref,) = plan_tiles(cfg)
    t = load_tile(cfg, ref)
    n_features = len(json.loads(gj.read_text())["features"])  # all 84 footprints lie on the DSM
    assert len(t.instances) == n_features and all(i.label == "building" for i in t.instances)
    # Footprint areas (SQMETERS attribute) match the rasterised masks at 2 m x 2 m per pixel.
    inner = [i for i in t.instances if not (i.mask[0].any() or i.mask[-1].any() or i.mask[:, 0].any()
                                            or i.mask[:, -1].any()) and (i.attributes["SQMETERS"] or 0) > 400]  # fmt: skip
    got = sum(int(i.mask.sum()) * 4.0 for i in inner)
    want = sum(i.attributes["SQMETERS"] for i in inner)
    assert abs(got - want) / want < 0.1


def test_sjer_csv_pixel_boxes():
    tif = need("grounding/deepforest_extra/2018_SJER_3_252000_4107000_image_477.tif")
    csv = need("grounding/deepforest_extra/2018_SJER_3_252000_4107000_image_477_truth.csv")
    cfg = GenConfig(image=str(tif), vectors=str(csv), vector_label="tree", tile_size=400)
    t = load_tile(cfg, plan_tiles(cfg)[0])
    assert len(t.instances) == 7 and {i.label for i in t.instances} == {"tree"}
    first = t.instances[0]  # xmin 1, xmax 82, ymin 103, ymax 235 in pixels
    rows, cols = np.nonzero(first.mask)
    assert (cols.min(), cols.max(), rows.min(), rows.max()) == (1, 81, 103, 234)
    assert t.taxonomy.classes[int(np.bincount(t.labels[first.mask]).argmax())].name == "woodland"


def test_yell_voc_xml_boxes():
    png = need("grounding/deepforest_extra/2019_YELL_2_541000_4977000_image_crop.png")
    xml = need("grounding/deepforest_extra/2019_YELL_2_541000_4977000_image_crop.xml")
    layer = read_vectors(str(xml))
    assert layer.pixel and len(layer.features) == 279 and layer.features[0].label == "tree"
    cfg = GenConfig(image=str(png), vectors=str(xml), tile_size=256, max_tiles=1)
    t = load_tile(cfg, plan_tiles(cfg)[0])
    assert t.instances and all(i.label == "tree" for i in t.instances)


def test_xbd_pixel_wkt_polygons(tmp_path):
    js = need("grounding/xbd_santa_rosa/santa-rosa-wildfire_00000007_post_disaster.json")
    layer = read_vectors(str(js))
    meta = json.loads(js.read_text())["metadata"]
    assert layer.pixel and len(layer.features) == len(json.loads(js.read_text())["features"]["xy"])
    # The image itself is not in the sample set: a blank stand-in of the right size and name.
    img = write_raster(
        tmp_path / meta["img_name"], np.full((3, 1024, 1024), 90, np.uint8), crs=None, driver="PNG"
    )
    cfg = GenConfig(image=str(img), vectors=str(js), tile_size=1024, weak_labels="off")
    t = load_tile(cfg, plan_tiles(cfg)[0])
    assert len(t.instances) > 100 and {i.attributes["subtype"] for i in t.instances} >= {
        "no-damage",
        "destroyed",
    }


def test_osm_only_small_extracts():
    for name in ("osmnx_planet_10.068_48.135_10.071_48.137.osm", "West-Oakland.osm.bz2"):
        osm = need("osm", name)
        cfg = GenConfig(osm=str(osm), tile_size=256, taxonomy="osm")
        ref, t = first_tile(cfg)
        assert (
            t.source.startswith("osm-render") and t.crs.startswith("EPSG:326") and t.gsd == pytest.approx(1.0)
        )
        assert t.instances and all(i.mask.shape == t.labels.shape for i in t.instances)
        assert any(i.attributes["category"] == "road" for i in t.instances)
    feats = read_osm(str(need("osm", "osmnx_planet_10.068_48.135_10.071_48.137.osm")))
    assert any(f.label == "residential road" and f.name for f in feats)


@pytest.mark.slow
def test_liechtenstein_extract():
    osm = need("osm", "liechtenstein.osm.pbf")
    feats = read_osm(str(osm))
    labels = {f.label for f in feats}
    assert len(feats) > 20_000 and {"building", "residential road", "farmland", "forest", "stream"} <= labels
    assert any(f.name for f in feats if f.category == "water")
    cfg = GenConfig(osm=str(osm), tile_size=256, taxonomy="osm", extra={"gsd": 4.0})
    refs = plan_tiles(cfg)
    t = load_tile(cfg, refs[len(refs) // 2])
    assert t is None or t.source.startswith("osm-render")
