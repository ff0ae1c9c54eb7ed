"""rsvlm.geo: reading (bands, windows, overviews, nodata), composites, pixel <-> map geometry, areas, writes,
two-date alignment. Fixtures are written by tests/make_fixtures.py; real files come from tests/data and, when
present, ../shared/data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from make_fixtures import GSD_UTM, ORIGIN_UTM, UTM18, write_all
from pyproj import Geod

from rsvlm import geo
from rsvlm.bands import PRESETS, resolve_bands, stretch

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
