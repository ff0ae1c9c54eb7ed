"""rsvlm.geo.read: header facts and pixel reads (bands, windows, overviews, nodata, palettes, alpha), and the
bad files and requests that must give a one-line RasterError."""

from __future__ import annotations

import time

import numpy as np
import pytest
import rasterio
import rasterio.warp
from make_fixtures import GSD_UTM, ORIGIN_UTM, UTM18

from rsvlm import geo
from rsvlm.bands import PRESETS, resolve_bands, stretch
from rsvlm.geo import RasterError
from tests.geo.helpers import one_line, shared


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


def test_missing_file(tmp_path):
    with pytest.raises(RasterError) as e:
        geo.read_image(tmp_path / "nope.tif")
    assert "no such file" in one_line(e) and "nope.tif" in str(e.value)
    with pytest.raises(RasterError):
        geo.inspect_raster(tmp_path / "nope.tif")


def test_folder_instead_of_file(tmp_path):
    with pytest.raises(RasterError, match="folder"):
        geo.read_image(tmp_path)


def test_zero_byte_file(fx):
    with pytest.raises(RasterError) as e:
        geo.read_image(fx["empty"])
    assert "0 bytes" in one_line(e)


def test_text_file_named_tif(fx):
    for fn in (geo.read_image, geo.inspect_raster):
        with pytest.raises(RasterError) as e:
            fn(fx["text_as_tif"])
        assert "not a raster" in one_line(e)


def test_truncated_geotiff_header_ok_pixels_cut(fx):
    info = geo.inspect_raster(fx["truncated"])  # the header still reads
    assert (info.width, info.height, info.count) == (64, 64, 3)
    with pytest.raises(RasterError) as e:
        geo.read_image(fx["truncated"])
    assert "truncated or corrupt" in one_line(e)


def test_huge_header_is_small_on_disk_and_never_allocated(fx):
    path = fx["huge_header"]
    assert path.stat().st_size < 64 * 1024
    info = geo.inspect_raster(path)
    assert (info.width, info.height) == (200_000, 200_000)
    assert info.gsd == pytest.approx(0.5)
    start = time.perf_counter()
    with pytest.raises(RasterError) as e:
        geo.read_image(path)
    message = one_line(e)
    assert time.perf_counter() - start < 2.0
    assert "200,000 × 200,000" in message and "window" in message and "overview" in message
    # A window of it is fine (blocks were never written: GDAL fills them with zeros).
    tile = geo.read_image(path, window=(100_000, 100_000, 32, 32))
    assert tile.data.shape == (1, 32, 32)
    assert tile.transform.c == pytest.approx(500_000 + 100_000 * 0.5)


def test_window_bigger_than_max_pixels_is_refused(fx):
    with pytest.raises(RasterError, match="max_pixels"):
        geo.read_image(fx["rgb_uint8"], max_pixels=100)
    with pytest.raises(RasterError, match="the window is 20 × 20"):
        geo.read_image(fx["rgb_uint8"], window=(0, 0, 20, 20), max_pixels=399)
    # ...but the same raster as a small overview fits.
    small = geo.read_image(fx["rgb_uint8"], max_pixels=200, overview_size=16)
    assert small.height * small.width <= 200


def test_all_nodata(fx):
    with pytest.raises(RasterError) as e:
        geo.read_image(fx["all_nodata"])
    assert "nodata" in one_line(e)
    empty = geo.read_image(fx["all_nodata"], allow_empty=True)
    assert not empty.valid.any()
    with pytest.raises(RasterError, match="window"):
        geo.read_image(fx["nodata_edge"], window=(0, 0, 8, 8))


def test_preset_with_wrong_band_count(fx):
    with pytest.raises(RasterError) as e:
        geo.read_image(fx["rgb_uint8"], bands="sentinel2-l1c")
    assert "13" in one_line(e) and "has 3" in str(e.value)
    with pytest.raises(RasterError, match="7-11"):
        geo.read_image(fx["rgbn_uint16"], bands="landsat9")
    with pytest.raises(RasterError, match="unknown band preset"):
        geo.read_image(fx["rgb_uint8"], bands="hyperion")
    with pytest.raises(RasterError, match="1..3"):
        geo.read_image(fx["rgb_uint8"], bands=[1, 4])


def test_bad_windows(fx):
    with pytest.raises(RasterError, match="outside"):
        geo.read_image(fx["rgb_uint8"], window=(1000, 1000, 10, 10))
    with pytest.raises(RasterError, match="no area"):
        geo.read_image(fx["rgb_uint8"], window=(0, 0, 0, 10))
    with pytest.raises(RasterError, match="col_off"):
        geo.read_image(fx["rgb_uint8"], window=(0, 0, 10))
    clipped = geo.read_image(fx["rgb_uint8"], window=(60, 40, 10, 10))
    assert clipped.data.shape == (3, 8, 4) and any("clipped" in w for w in clipped.warnings)
    with pytest.raises(RasterError, match="overview_size"):
        geo.read_image(fx["rgb_uint8"], overview_size=0)
