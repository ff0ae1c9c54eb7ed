"""OSM and vector labels rasterised onto the image grid as instances (and burnt into labels)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio

from data_gen.config import GenConfig
from data_gen.sources import SourceError, load_tile, plan_tiles
from data_gen.sources.osm import classify_area, classify_line
from data_gen.sources.raster import Grid
from tests.data_gen.source_fixtures import CRS, TRANSFORM, X0, Y0, H, W, write_osm, write_scene


def _lonlat_box():
    w, s, e, n = Grid(rasterio.crs.CRS.from_user_input(CRS), TRANSFORM, W, H).bounds_lonlat()
    return w, s, e - w, n - s


def test_tags_become_human_names():
    assert classify_line({"highway": "residential"})[:2] == ("residential road", "road")
    assert classify_line({"highway": "motorway"})[3] == 12.0
    assert classify_line({"highway": "footway"})[3] == 2.0
    assert classify_line({"highway": "primary", "lanes": "4"})[3] == 14.0
    assert classify_line({"waterway": "canal"})[:2] == ("canal", "water")
    assert classify_line({"highway": "bus_stop"}) is None
    assert classify_area({"landuse": "farmland"})[:2] == ("farmland", "farmland")
    assert classify_area({"natural": "water", "water": "lake"})[:2] == ("lake", "water")
    assert classify_area({"building": "house"})[:2] == ("house", "building")
    assert classify_area({"amenity": "bench"}) is None


def test_osm_over_the_image_grid(tmp_path):
    paths = write_scene(tmp_path)
    osm = write_osm(tmp_path / "area.osm", *_lonlat_box())
    cfg = GenConfig(image=str(paths["image"]), osm=str(osm), tile_size=128, weak_labels="off")
    (ref,) = plan_tiles(cfg)
    tile = load_tile(cfg, ref)
    by_label = {i.label: i for i in tile.instances}
    assert set(by_label) == {"building", "residential road", "canal"}
    road, canal, building = by_label["residential road"], by_label["canal"], by_label["building"]
    assert road.name == "Mill Lane" and road.attributes["osm"]["highway"] == "residential"
    assert road.attributes["category"] == "road" and road.attributes["osm_id"] == "way/101"
    assert canal.name == "Old Canal"
    # Widths: a residential road is 6 m, a canal 10 m; at 1 m/px that is 6 and 10 pixel rows/columns.
    road_rows = road.mask[:, 10:60].sum(axis=0)
    assert 5 <= np.median(road_rows) <= 7
    assert 9 <= np.median(canal.mask[10:70].sum(axis=1)) <= 11
    assert 55 <= building.mask.sum() <= 100  # a ~9.6 m x 8 m footprint
    # Burnt into labels as no label raster was given: building 1, water 3, road 4, rest background 0.
    assert (tile.labels[building.mask] == 1).all()
    assert (tile.labels[canal.mask & ~road.mask] == 3).all()
    assert set(np.unique(tile.labels)) == {0, 1, 3, 4}
    assert "OpenStreetMap" in tile.license


def test_osm_outside_the_image_is_a_clear_error(tmp_path):
    paths = write_scene(tmp_path)
    w, s, dw, dh = _lonlat_box()
    osm = write_osm(tmp_path / "far.osm", w + 3.0, s, dw, dh)
    with pytest.raises(SourceError, match="no OSM feature falls inside .*image.tif's footprint \\(bbox"):
        plan_tiles(GenConfig(image=str(paths["image"]), osm=str(osm)))


def test_osm_only_scene_is_rendered(tmp_path):
    w, s, dw, dh = _lonlat_box()
    osm = write_osm(tmp_path / "area.osm", w, s, dw, dh)
    cfg = GenConfig(osm=str(osm), tile_size=64, taxonomy="osm", extra={"gsd": 2.0})
    refs = plan_tiles(cfg)
    tiles = [t for t in (load_tile(cfg, r) for r in refs) if t is not None]
    assert tiles and all(t.source.startswith("osm-render") for t in tiles)
    t = tiles[0]
    assert t.crs == "EPSG:32633" and t.gsd == pytest.approx(2.0)
    assert t.image.shape[:2] == t.labels.shape and t.image.dtype == np.uint8
    colours = {v: c.colour for v, c in t.taxonomy.classes.items()}
    road = t.labels == 2
    assert road.any() and np.abs(t.image[road].mean(0) - colours[2]).max() < 10


def _geojson(tmp_path, props):
    w, s, dw, dh = _lonlat_box()
    ring = [[w + 0.2 * dw, s + 0.2 * dh], [w + 0.4 * dw, s + 0.2 * dh], [w + 0.4 * dw, s + 0.45 * dh],
            [w + 0.2 * dw, s + 0.45 * dh], [w + 0.2 * dw, s + 0.2 * dh]]  # fmt: skip
    fc = {"type": "FeatureCollection",
          "features": [{"type": "Feature", "properties": props, "geometry": {"type": "Polygon", "coordinates": [ring]}}]}  # fmt: skip
    p = tmp_path / "b.geojson"
    p.write_text(json.dumps(fc))
    return p


def test_geojson_features_become_instances(tmp_path):
    paths = write_scene(tmp_path)
    gj = _geojson(tmp_path, {"kind": "building", "name": "Town Hall"})
    cfg = GenConfig(image=str(paths["image"]), vectors=str(gj), tile_size=128, vector_label_field="kind",
                    weak_labels="off")  # fmt: skip
    tile = load_tile(cfg, plan_tiles(cfg)[0])
    (inst,) = tile.instances
    assert inst.label == "building" and inst.name == "Town Hall"
    assert abs(int(inst.mask.sum()) - 0.2 * W * 0.25 * H) < 0.1 * 0.2 * W * 0.25 * H
    assert (tile.labels[inst.mask] == 1).all() and (tile.labels[~inst.mask] == 0).all()
    bad = GenConfig(image=str(paths["image"]), vectors=str(gj), tile_size=128, vector_label_field="class")
    with pytest.raises(SourceError, match="no field 'class'"):
        load_tile(bad, plan_tiles(bad)[0])


def test_shapefile_in_projected_crs(tmp_path):
    shapefile = pytest.importorskip("shapefile")
    paths = write_scene(tmp_path)
    with shapefile.Writer(str(tmp_path / "trees")) as wr:
        wr.field("species", "C")
        wr.poly(
            [
                [
                    [X0 + 10, Y0 - 10],
                    [X0 + 20, Y0 - 10],
                    [X0 + 20, Y0 - 20],
                    [X0 + 10, Y0 - 20],
                    [X0 + 10, Y0 - 10],
                ]
            ]
        )
        wr.record("oak")
    (tmp_path / "trees.prj").write_text(rasterio.crs.CRS.from_user_input(CRS).to_wkt("WKT1_ESRI"))
    cfg = GenConfig(image=str(paths["image"]), vectors=str(tmp_path / "trees.shp"), vector_label="tree",
                    tile_size=128, weak_labels="off")  # fmt: skip
    tile = load_tile(cfg, plan_tiles(cfg)[0])
    (inst,) = tile.instances
    assert inst.label == "tree" and inst.attributes["species"] == "oak"
    expected = np.zeros((H, W), bool)
    expected[10:20, 10:20] = True
    np.testing.assert_array_equal(inst.mask, expected)


def test_vector_errors(tmp_path):
    paths = write_scene(tmp_path)
    (tmp_path / "x.kml").write_text("<kml/>")
    with pytest.raises(SourceError, match="unsupported format"):
        plan_tiles(GenConfig(image=str(paths["image"]), vectors=str(tmp_path / "x.kml")))
    far = _geojson(tmp_path, {})
    obj = json.loads(far.read_text())
    for pt in obj["features"][0]["geometry"]["coordinates"][0]:
        pt[0] += 5
    far.write_text(json.dumps(obj))
    with pytest.raises(SourceError, match="no vector feature falls inside"):
        plan_tiles(GenConfig(image=str(paths["image"]), vectors=str(far)))


def test_building_outlines_alone_never_say_that_water_or_trees_are_missing(tmp_path):
    """Outlines burnt onto a land-cover taxonomy label buildings only: no "no water" answer, no "none here: the
    image shows no trees", no list of "what the image contains"; the buildings are still asked about."""
    import random

    from data_gen.tasks import regions
    from data_gen.tasks.reasoning import concept_values, reasoning_samples
    from data_gen.tasks.vqa import vqa_samples

    paths = write_scene(tmp_path)
    cfg = GenConfig(image=str(paths["image"]), vectors=str(_geojson(tmp_path, {})), tile_size=128,
                    weak_labels="off")  # fmt: skip
    tile = load_tile(cfg, plan_tiles(cfg)[0])
    assert tile.known_values == {0, 1}  # the background and the buildings
    analysis = regions.analyse(tile)
    assert analysis.absent == [] and [c.info.name for c in analysis.cover] == ["background", "building"]
    assert set(concept_values(tile)) == {"building"}
    samples = [s for seed in range(8) for s in vqa_samples(tile, random.Random(seed))]
    samples += reasoning_samples(tile, random.Random(0))
    facts = [f for s in samples for f in s.meta.get("facts", [])]
    assert not any(f["kind"] == "presence" and f["answer"] == "no" for f in facts)
    assert not any(f["kind"] in ("classes", "none") for f in facts)
    assert any(f["kind"] == "presence" and f["answer"] == "yes" for f in facts)
    # A land-cover raster speaks for every class of its taxonomy, as before.
    labelled = GenConfig(
        image=str(paths["image"]), labels=str(paths["labels"]), tile_size=128, weak_labels="off"
    )
    assert load_tile(labelled, plan_tiles(labelled)[0]).known_values is None
