"""rsvlm.geo.align: a second date read or warped onto the first one's grid, and pairs that do not overlap."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import rasterio.warp
from make_fixtures import ORIGIN_UTM, UTM18, from_origin, utm_field
from pyproj import Transformer

from rsvlm import geo
from rsvlm.geo import RasterError
from tests.geo.helpers import NAIP_2009, NAIP_2020, one_line, shared


def _expected_field(image: geo.GeoImage) -> np.ndarray:
    """The fixtures' linear UTM field at the pixel centres of ``image``'s grid."""
    cols, rows = np.meshgrid(np.arange(image.width) + 0.5, np.arange(image.height) + 0.5)
    xs, ys = image.transform @ (cols, rows)
    if image.crs.to_epsg() != 32618:
        xs, ys = Transformer.from_crs(image.crs, UTM18, always_xy=True).transform(xs, ys)
    return utm_field(np.asarray(xs), np.asarray(ys))


def _best_shift(reference: np.ndarray, moving: np.ndarray, radius: int = 3) -> tuple[int, int]:
    a = reference[8:-8, 8:-8].ravel()
    scores = {
        (dy, dx): np.corrcoef(a, np.roll(moving, (dy, dx), axis=(0, 1))[8:-8, 8:-8].ravel())[0, 1]
        for dy in range(-radius, radius + 1)
        for dx in range(-radius, radius + 1)
    }
    return max(scores, key=scores.get)


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


def test_pairs_that_do_not_overlap(fx):
    with pytest.raises(RasterError) as e:
        geo.align_pair(fx["pair_a"], fx["pair_b_far"])
    message = one_line(e)
    assert "do not overlap" in message and "lon" in message
