"""rsvlm.geo.measure: GSD and areas in m² from an equal-area projection, never from degrees or Mercator."""

from __future__ import annotations

import numpy as np
import pytest
from make_fixtures import ORIGIN_UTM, UTM18, from_origin
from pyproj import Geod, Transformer
from shapely.geometry import box, shape

from rsvlm import geo
from tests.geo.helpers import GRIDS


def test_gsd_of_geographic_crs_is_metres_from_latitude(fx):
    # 1e-4 degree pixels at 50° N: ~7.2 m east-west, ~11.1 m north-south -> mean ~9.1 m.
    info = geo.inspect_raster(fx["float_nan_4326"])
    geod = Geod(ellps="WGS84")
    dx = geod.inv(10.0016, 49.9984, 10.0017, 49.9984)[2]
    dy = geod.inv(10.0016, 49.9984, 10.0016, 49.9983)[2]
    assert info.gsd == pytest.approx((dx + dy) / 2, rel=1e-3)
    assert 7 < dx < 7.3 and 11 < dy < 11.2
    assert geo.inspect_raster(fx["plain_png"]).gsd is None


def test_area_of_a_100_m_square_in_utm():
    square = box(500_000, 4_100_000, 500_100, 4_100_100)
    assert geo.area_m2(square, UTM18) == pytest.approx(10_000, rel=0.005)
    as_geojson = geo.pixel_box_to_geometry((0, 0, 10, 10), from_origin(*ORIGIN_UTM, 10, 10), UTM18)
    assert geo.area_m2(as_geojson) == pytest.approx(10_000, rel=0.005)
    assert geo.area_m2(box(0, 0, 0, 0), UTM18) == 0.0


def test_area_of_a_square_in_4326_is_metres_not_degrees():
    lon0, lat0, side = 10.0, 45.0, 0.01
    square = {
        "type": "Polygon",
        "coordinates": [
            [[lon0, lat0], [lon0 + side, lat0], [lon0 + side, lat0 + side], [lon0, lat0 + side], [lon0, lat0]]
        ],
    }
    area = geo.area_m2(square)
    geodesic, _ = Geod(ellps="WGS84").geometry_area_perimeter(shape(square))
    assert area == pytest.approx(abs(geodesic), rel=1e-3)
    # Spherical check by hand: R² Δλ (sin φ2 − sin φ1).
    r = 6_371_008.8
    sphere = r**2 * np.radians(side) * (np.sin(np.radians(lat0 + side)) - np.sin(np.radians(lat0)))
    assert area == pytest.approx(sphere, rel=0.005)
    assert 870_000 < area < 880_000


def test_area_in_web_mercator_is_corrected_for_latitude():
    crs, transform = GRIDS["3857"]  # ~37° N: a "100 m" Mercator square is ~100 cos(37°) m on the ground
    square = box(-8_350_000, 4_449_900, -8_349_900, 4_450_000)
    lat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(-8_349_950, 4_449_950)[1]
    assert geo.area_m2(square, crs) == pytest.approx(10_000 * np.cos(np.radians(lat)) ** 2, rel=0.005)


@pytest.mark.parametrize("grid", list(GRIDS))
def test_mask_area_m2_matches_polygon_area(grid):
    crs, transform = GRIDS[grid]
    mask = np.zeros((300, 300), bool)
    mask[20:280, 50:120] = True
    mask[100:110, 200:290] = True
    polygons = geo.mask_to_polygons(mask, transform, crs, simplify_px=0)
    total = sum(geo.area_m2(p) for p in polygons)
    assert geo.mask_area_m2(mask, transform, crs) == pytest.approx(total, rel=0.002)
    if grid == "utm":
        assert total == pytest.approx(mask.sum() * 100, rel=0.005)
    assert geo.mask_area_m2(np.zeros((3, 3), bool), transform, crs) == 0.0


def test_gsd_in_web_mercator_is_the_ground_size(fx):
    # A 12.5 m Web Mercator pixel at ~37° N is ~10 m on the ground; UTM keeps its nominal 10 m.
    info = geo.inspect_raster(fx["grey_3857"])
    cx, cy = info.transform @ (16, 16)
    lon, lat = Transformer.from_crs("EPSG:3857", "EPSG:4326", always_xy=True).transform(cx, cy)
    assert info.gsd == pytest.approx(12.5 * np.cos(np.radians(lat)), rel=0.005)
    assert geo.inspect_raster(fx["rgb_uint8"]).gsd == 10.0


def test_mask_area_on_a_4326_grid_follows_latitude():
    # The same 10 × 10 pixel square of 1e-4° at the equator and at 60° N: the second is half the first.
    equator = from_origin(0.0, 0.0005, 1e-4, 1e-4)
    north = from_origin(0.0, 60.0005, 1e-4, 1e-4)
    mask = np.zeros((10, 10), bool)
    mask[:, :] = True
    a0 = geo.mask_area_m2(mask, equator, "EPSG:4326")
    a60 = geo.mask_area_m2(mask, north, "EPSG:4326")
    geod = Geod(ellps="WGS84")
    assert a0 == pytest.approx(
        abs(geod.geometry_area_perimeter(box(0.0, -0.0005, 0.001, 0.0005))[0]), rel=1e-3
    )
    assert a60 == pytest.approx(
        abs(geod.geometry_area_perimeter(box(0.0, 59.9995, 0.001, 60.0005))[0]), rel=1e-3
    )
    assert 0.5 < a60 / a0 < 0.51  # cos 60° on a sphere; the ellipsoid's flattening adds 1 %
