"""rsvlm.geo.vector: pixels <-> EPSG:4326 GeoJSON (boxes, polygons, traced masks, unions), and bad inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from make_fixtures import ORIGIN_UTM, UTM18, from_origin
from pyproj import Transformer
from shapely.geometry import Polygon, box, shape

from rsvlm import geo
from rsvlm.geo import RasterError
from tests.geo.helpers import GRIDS, is_ccw


@pytest.mark.parametrize("grid", list(GRIDS))
@settings(max_examples=25, deadline=None)
@given(
    x=st.floats(0, 900),
    y=st.floats(0, 900),
    w=st.floats(0.5, 300),
    h=st.floats(0.5, 300),
)
def test_pixel_box_round_trip_within_half_a_pixel(grid, x, y, w, h):
    crs, transform = GRIDS[grid]
    geometry = geo.pixel_box_to_geometry((x, y, x + w, y + h), transform, crs)
    assert geometry["type"] == "Polygon"
    ring = geometry["coordinates"][0]
    assert ring[0] == ring[-1] and len(ring) == 5 and is_ccw(ring)  # RFC 7946: closed, CCW exterior
    assert all(-180 <= lon <= 180 and -90 <= lat <= 90 for lon, lat in ring)
    back = geo.geometry_to_pixels(geometry, transform, crs)
    x1, y1, x2, y2 = shape(back).bounds
    assert max(abs(x1 - x), abs(y1 - y), abs(x2 - x - w), abs(y2 - y - h)) < 0.5
    assert json.loads(json.dumps(geometry)) == geometry  # plain JSON types


def test_box_lands_where_the_crs_says(fx):
    # The top-left pixel corner of the UTM fixture is (500000 E, 4100000 N) on the zone 18 central meridian.
    geometry = geo.pixel_box_to_geometry((0, 0, 1, 1), from_origin(*ORIGIN_UTM, 10, 10), UTM18)
    lon, lat = Transformer.from_crs(UTM18, "EPSG:4326", always_xy=True).transform(*ORIGIN_UTM)
    xs = [p[0] for p in geometry["coordinates"][0]]
    ys = [p[1] for p in geometry["coordinates"][0]]
    assert min(xs) == pytest.approx(lon, abs=1e-9) and max(ys) == pytest.approx(lat, abs=1e-9)
    assert lon == pytest.approx(-75.0) and 37.0 < lat < 37.1


def test_pixel_polygon_to_geometry_is_oriented(fx):
    crs, transform = GRIDS["utm"]
    clockwise_in_pixels = [(0, 0), (0, 10), (10, 10), (10, 0)]
    geometry = geo.pixel_polygon_to_geometry(clockwise_in_pixels, transform, crs)
    assert is_ccw(geometry["coordinates"][0])
    assert geo.pixel_polygon_to_geometry(clockwise_in_pixels, transform, None) is None


def test_mask_to_polygons_drops_specks_keeps_holes_and_areas():
    crs, transform = GRIDS["utm"]
    mask = np.zeros((40, 40), bool)
    mask[5:25, 5:25] = True  # 20 × 20 px with a 6 × 6 hole
    mask[12:18, 12:18] = False
    mask[30:33, 30:34] = True  # 12 px
    mask[38, 38] = True  # a 1 px speck: dropped (min_area_px=4)
    polygons = geo.mask_to_polygons(mask, transform, crs)
    assert len(polygons) == 2
    big, small = polygons  # largest first
    assert len(big["coordinates"]) == 2  # exterior + hole
    assert is_ccw(big["coordinates"][0]) and not is_ccw(big["coordinates"][1])
    assert geo.area_m2(big) == pytest.approx((400 - 36) * 100, rel=0.005)
    assert geo.area_m2(small) == pytest.approx(12 * 100, rel=0.005)
    x1, y1, x2, y2 = shape(geo.geometry_to_pixels(big, transform, crs)).bounds
    np.testing.assert_allclose([x1, y1, x2, y2], [5, 5, 25, 25], atol=0.5)
    assert geo.mask_to_polygons(np.zeros((4, 4), bool), transform, crs) == []
    rings = geo.mask_to_pixel_polygons(mask)
    assert len(rings) == 2 and Polygon(rings[0]).area == pytest.approx(400)


def test_mask_to_polygons_simplifies_in_pixels():
    crs, transform = GRIDS["utm"]
    yy, xx = np.mgrid[:64, :64]
    disc = (xx - 32) ** 2 + (yy - 32) ** 2 < 25**2
    raw = geo.mask_to_polygons(disc, transform, crs, simplify_px=0)
    simple = geo.mask_to_polygons(disc, transform, crs, simplify_px=1.0)
    assert len(simple[0]["coordinates"][0]) < len(raw[0]["coordinates"][0])
    assert geo.area_m2(simple[0]) == pytest.approx(disc.sum() * 100, rel=0.02)


def test_unions_follow_the_right_hand_rule():
    crs, transform = GRIDS["utm"]
    a = geo.pixel_box_to_geometry((0, 0, 20, 10), transform, crs)
    b = geo.pixel_box_to_geometry((10, 0, 30, 10), transform, crs)
    far = geo.pixel_box_to_geometry((100, 100, 110, 110), transform, crs)
    union = geo.union_geometries([a, b])
    assert union["type"] == "Polygon" and is_ccw(union["coordinates"][0])
    multi = geo.union_geometries([a, b, far])
    assert multi["type"] == "MultiPolygon" and all(is_ccw(p[0]) for p in multi["coordinates"])
    ring = box(0, 0, 10, 10).difference(box(3, 3, 6, 6))  # a hole survives a union, clockwise
    holed = geo.union_geometries([ring, box(20, 20, 21, 21)])
    polygons = [Polygon(p[0], p[1:]) for p in holed["coordinates"]]
    assert all(p.exterior.is_ccw and not any(r.is_ccw for r in p.interiors) for p in polygons)
    assert geo.union_geometries([]) is None


def test_vectorised_masks_are_always_valid_non_empty_and_oriented():
    rng = np.random.default_rng(7)
    for crs, transform in GRIDS.values():
        for _ in range(12):
            mask = rng.random((24, 24)) < rng.uniform(0.3, 0.7)  # ragged: holes, diagonal touches, specks
            for simplify in (0.5, 2.0):
                for geometry in geo.mask_to_polygons(mask, transform, crs, simplify_px=simplify):
                    poly = shape(geometry)
                    assert geometry["type"] == "Polygon" and poly.is_valid and poly.area > 0
                    assert poly.exterior.is_ccw and not any(r.is_ccw for r in poly.interiors)


def test_bad_masks_and_geometry_inputs(tmp_path):
    transform = from_origin(500_000, 4_100_000, 10, 10)
    with pytest.raises(RasterError, match="2-D"):
        geo.mask_to_polygons(np.ones((2, 3, 3), bool), transform, "EPSG:32618")
    with pytest.raises(RasterError, match="0-255"):
        geo.write_mask_geotiff(tmp_path / "m.tif", np.full((3, 3), 300), transform, "EPSG:32618")
    with pytest.raises(RasterError, match="4 numbers"):
        geo.pixel_box_to_geometry((1, 2, 3), transform, "EPSG:32618")
    with pytest.raises(RasterError, match="3 finite"):
        geo.pixel_polygon_to_geometry([(0, 0), (1, 1)], transform, "EPSG:32618")
    with pytest.raises(RasterError, match="not a CRS"):
        geo.pixel_box_to_geometry((0, 0, 1, 1), transform, "EPSG:not-a-code")
    with pytest.raises(RasterError, match="without a CRS"):
        geo.geometry_to_pixels({"type": "Point", "coordinates": [0, 0]}, transform, None)
