"""Every bad input to rsvlm.geo gives a RasterError with a one-line message, never a GDAL traceback."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from make_fixtures import from_origin, write_all

from rsvlm import geo
from rsvlm.geo import RasterError


@pytest.fixture(scope="module")
def fx(tmp_path_factory) -> dict[str, Path]:
    return write_all(tmp_path_factory.mktemp("geo_bad"))


def _one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message and message, message
    assert isinstance(error.value, ValueError)
    return message


def test_missing_file(tmp_path):
    with pytest.raises(RasterError) as e:
        geo.read_image(tmp_path / "nope.tif")
    assert "no such file" in _one_line(e) and "nope.tif" in str(e.value)
    with pytest.raises(RasterError):
        geo.inspect_raster(tmp_path / "nope.tif")


def test_folder_instead_of_file(tmp_path):
    with pytest.raises(RasterError, match="folder"):
        geo.read_image(tmp_path)


def test_zero_byte_file(fx):
    with pytest.raises(RasterError) as e:
        geo.read_image(fx["empty"])
    assert "0 bytes" in _one_line(e)


def test_text_file_named_tif(fx):
    for fn in (geo.read_image, geo.inspect_raster):
        with pytest.raises(RasterError) as e:
            fn(fx["text_as_tif"])
        assert "not a raster" in _one_line(e)


def test_truncated_geotiff_header_ok_pixels_cut(fx):
    info = geo.inspect_raster(fx["truncated"])  # the header still reads
    assert (info.width, info.height, info.count) == (64, 64, 3)
    with pytest.raises(RasterError) as e:
        geo.read_image(fx["truncated"])
    assert "truncated or corrupt" in _one_line(e)


def test_huge_header_is_small_on_disk_and_never_allocated(fx):
    path = fx["huge_header"]
    assert path.stat().st_size < 64 * 1024
    info = geo.inspect_raster(path)
    assert (info.width, info.height) == (200_000, 200_000)
    assert info.gsd == pytest.approx(0.5)
    start = time.perf_counter()
    with pytest.raises(RasterError) as e:
        geo.read_image(path)
    message = _one_line(e)
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
    assert "nodata" in _one_line(e)
    empty = geo.read_image(fx["all_nodata"], allow_empty=True)
    assert not empty.valid.any()
    with pytest.raises(RasterError, match="window"):
        geo.read_image(fx["nodata_edge"], window=(0, 0, 8, 8))


def test_preset_with_wrong_band_count(fx):
    with pytest.raises(RasterError) as e:
        geo.read_image(fx["rgb_uint8"], bands="sentinel2-l1c")
    assert "13" in _one_line(e) and "has 3" in str(e.value)
    with pytest.raises(RasterError, match="7-11"):
        geo.read_image(fx["rgbn_uint16"], bands="landsat9")
    with pytest.raises(RasterError, match="unknown band preset"):
        geo.read_image(fx["rgb_uint8"], bands="hyperion")
    with pytest.raises(RasterError, match="1..3"):
        geo.read_image(fx["rgb_uint8"], bands=[1, 4])


def test_composite_needs_its_bands(fx):
    image = geo.read_image(fx["rgb_uint8"])
    with pytest.raises(RasterError, match="nir"):
        image.composite("ndvi")
    with pytest.raises(RasterError, match="nir"):
        image.composite("false-colour")
    with pytest.raises(RasterError, match="unknown composite"):
        image.composite("thermal")
    with pytest.raises(RasterError, match="expects 5 bands"):
        image.bands_for_model(5)


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


def test_pairs_that_do_not_overlap(fx):
    with pytest.raises(RasterError) as e:
        geo.align_pair(fx["pair_a"], fx["pair_b_far"])
    message = _one_line(e)
    assert "do not overlap" in message and "lon" in message


def test_output_folder_missing_writes_nothing(tmp_path):
    missing = tmp_path / "no_such_dir"
    transform = from_origin(500_000, 4_100_000, 10, 10)
    with pytest.raises(RasterError) as e:
        geo.write_mask_geotiff(missing / "mask.tif", np.ones((4, 4), bool), transform, "EPSG:32618")
    assert str(missing) in _one_line(e) and "does not exist" in str(e.value)
    with pytest.raises(RasterError, match="does not exist"):
        geo.write_geojson(missing / "out.geojson", [])
    assert not missing.exists()
    assert list(tmp_path.iterdir()) == []


def test_failed_write_leaves_no_temp_file(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError), geo.atomic_write(target) as tmp:
        tmp.write_text("partial")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_geojson_rejects_projected_coordinates(tmp_path):
    utm_square = {
        "type": "Polygon",
        "coordinates": [[[500000, 4100000], [500100, 4100000], [500100, 4100100]]],
    }
    with pytest.raises(RasterError, match="EPSG:4326"):
        geo.write_geojson(tmp_path / "x.geojson", [utm_square])
    with pytest.raises(RasterError, match="lon/lat"):
        geo.area_m2(utm_square)
    assert not (tmp_path / "x.geojson").exists()


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
