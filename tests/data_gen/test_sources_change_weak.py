"""Change from label maps and masks, the synthetic second date, and NDVI/NDWI weak labels."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from rasterio.transform import Affine

from data_gen.config import GenConfig
from data_gen.sources import load_taxonomy, load_tile, plan_tiles, synthesize_second_date, weak_labels
from data_gen.sources.weak import otsu_threshold
from data_gen.tile import Tile
from tests.data_gen.source_fixtures import X0, Y0, H, W, base_labels, base_rgbn, write_raster, write_scene


def test_change_from_two_label_maps(tmp_path):
    paths = write_scene(tmp_path)
    lab2 = base_labels()
    lab2[60:70, 5:15] = 0  # woodland cleared
    lab2[0:2, 0:2] = 255  # ignore on date 2: never counted as change
    write_raster(tmp_path / "labels2.tif", lab2)
    cfg = GenConfig(image=str(paths["image"]), image2=str(paths["image"]), labels=str(paths["labels"]),
                    labels2=str(tmp_path / "labels2.tif"), tile_size=128)  # fmt: skip
    tile = load_tile(cfg, plan_tiles(cfg)[0])
    expected = np.zeros((H, W), bool)
    expected[60:70, 5:15] = True
    np.testing.assert_array_equal(tile.change, expected)
    assert tile.dates == ("date 1", "date 2") and tile.image2.shape == tile.image.shape


@pytest.mark.parametrize("values, change_values", [((0, 255), ()), ((0, 1), ()), ((1, 2), (2,))])
def test_binary_change_masks(tmp_path, values, change_values):
    paths = write_scene(tmp_path)
    m = np.full((H, W), values[0], np.uint8)
    m[5:9, 7:20] = values[1]
    write_raster(tmp_path / "cm.png", m, crs=None, driver="PNG")  # no CRS, same size: same grid
    cfg = GenConfig(image=str(paths["image"]), change_mask=str(tmp_path / "cm.png"), change_values=change_values,
                    tile_size=128)  # fmt: skip
    tile = load_tile(cfg, plan_tiles(cfg)[0])
    assert tile.change.sum() == 4 * 13 and tile.change[5:9, 7:20].all()


def test_oscd_style_mask_without_change_values_warns(tmp_path, caplog):
    paths = write_scene(tmp_path)
    write_raster(tmp_path / "cm.tif", np.ones((H, W), np.uint8) + (np.arange(W) > 50), crs=None)
    cfg = GenConfig(image=str(paths["image"]), change_mask=str(tmp_path / "cm.tif"), tile_size=128)
    with caplog.at_level(logging.WARNING, logger="data_gen.sources"):
        load_tile(cfg, plan_tiles(cfg)[0])
    assert any("change_values" in r.getMessage() for r in caplog.records)


def _tile() -> Tile:
    return Tile(id="t", image=np.moveaxis(base_rgbn()[:3], 0, -1).copy(), labels=base_labels(),
                taxonomy=load_taxonomy("landcover.ai"), gsd=0.5)  # fmt: skip


def test_synthetic_second_date_labels_are_exact():
    tax = load_taxonomy("landcover.ai")
    kinds = set()
    for seed in range(12):
        t = synthesize_second_date(_tile(), np.random.default_rng(seed))
        assert t.image2 is not None and t.image2.dtype == np.uint8 and t.image2.shape == t.image.shape
        np.testing.assert_array_equal(t.change, t.labels != t.labels2)
        assert t.change.any() and set(np.unique(t.labels2)) <= set(tax.classes)
        # Pixels outside the change mask keep their class; the image changes where labels changed.
        assert np.abs(t.image2.astype(int) - t.image.astype(int)).sum(-1)[t.change].mean() > 10
        before, after = t.labels[t.change], t.labels2[t.change]
        kinds |= {(int(a), int(b)) for a, b in zip(before, after)}
        assert t.source.endswith("synthetic-change") and t.dates[1].endswith("(synthetic)")
    assert (1, 0) in kinds or (1, 4) in kinds  # a building removed
    assert (0, 1) in kinds  # a building added on bare ground
    assert (2, 0) in kinds  # woodland cleared
    assert any(b == 3 and a != 3 for a, b in kinds)  # flooded
    a = synthesize_second_date(_tile(), np.random.default_rng(3))
    b = synthesize_second_date(_tile(), np.random.default_rng(3))
    np.testing.assert_array_equal(a.image2, b.image2)  # deterministic for a seed


def test_synthetic_second_date_without_labels_is_a_no_op():
    t = Tile(id="x", image=np.zeros((8, 8, 3), np.uint8))
    assert synthesize_second_date(t, np.random.default_rng(0)) is t


def test_weak_labels_from_ndvi_and_ndwi(tmp_path):
    paths = write_scene(tmp_path)
    cfg = GenConfig(image=str(paths["image"]), tile_size=128)  # RGBN, no labels -> weak labels (auto)
    tile = load_tile(cfg, plan_tiles(cfg)[0])
    assert tile.weak and tile.taxonomy.name == "weak-ndvi-ndwi"
    lab = base_labels()
    assert (tile.labels[lab == 2] == 1).all()  # woodland -> vegetation (NDVI 0.67)
    assert (tile.labels[lab == 3] == 2).all()  # water -> water (NDWI 0.5)
    assert (tile.labels[(lab == 0) | (lab == 1)] == 0).all()  # soil and roofs -> other
    off = GenConfig(image=str(paths["image"]), tile_size=128, weak_labels="off")
    assert load_tile(off, plan_tiles(off)[0]).labels is None


def test_weak_labels_need_nir(tmp_path):
    write_raster(tmp_path / "rgb.tif", base_rgbn()[:3])
    cfg = GenConfig(image=str(tmp_path / "rgb.tif"), tile_size=128, weak_labels="on")
    with pytest.raises(ValueError, match="needs a NIR band"):
        load_tile(cfg, plan_tiles(cfg)[0])


def test_otsu_threshold_splits_two_modes():
    rng = np.random.default_rng(0)
    vals = np.concatenate([rng.normal(-0.2, 0.05, 500), rng.normal(0.6, 0.05, 500)])
    assert 0.0 < otsu_threshold(vals) < 0.4
    red, nir = np.full((4, 4), 50.0), np.full((4, 4), 150.0)  # left half vegetation (NDVI 0.5)
    red[:, 2:], nir[:, 2:] = 100.0, 110.0  # right half soil (NDVI 0.05)
    labels, t = weak_labels(red, red + 20, nir, method="otsu")
    assert 0.1 <= t["ndvi"] <= 0.5 and (labels[:, :2] == 1).all() and (labels[:, 2:] == 0).all()


def test_second_date_on_a_shifted_grid_is_reprojected(tmp_path):
    paths = write_scene(tmp_path)
    img2 = base_rgbn()
    write_raster(tmp_path / "img2.tif", img2, transform=Affine(1, 0, X0 + 1, 0, -1, Y0))  # 1 m east
    cfg = GenConfig(
        image=str(paths["image"]), image2=str(tmp_path / "img2.tif"), tile_size=128, weak_labels="off"
    )
    tile = load_tile(cfg, plan_tiles(cfg)[0])
    np.testing.assert_array_equal(tile.image2[:, 1:, :], np.moveaxis(img2[:3], 0, -1)[:, :-1, :])
    assert (tile.image2[:, 0] == 0).all()  # off the second date's raster


def test_load_tile_adds_a_synthetic_second_date_when_asked(tmp_path):
    paths = write_scene(tmp_path)
    cfg = GenConfig(image=str(paths["image"]), labels=str(paths["labels"]), tile_size=128, seed=5)
    a = load_tile(cfg, plan_tiles(cfg)[0])
    b = load_tile(cfg, plan_tiles(cfg)[0])
    assert a.image2 is not None and a.source.endswith("+synthetic-change")
    np.testing.assert_array_equal(a.change, a.labels != a.labels2)
    np.testing.assert_array_equal(a.image2, b.image2)  # same seed and tile -> same edits
    assert synthesize_second_date(a, np.random.default_rng(0)) is a  # already two dates: no-op
    for off in (GenConfig(image=str(paths["image"]), labels=str(paths["labels"]), tile_size=128,
                          synthetic_change=False),
                GenConfig(image=str(paths["image"]), labels=str(paths["labels"]), tile_size=128,
                          tasks=("caption",))):  # fmt: skip
        t = load_tile(off, plan_tiles(off)[0])
        assert t.image2 is None and t.change is None
