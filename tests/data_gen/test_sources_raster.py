"""Planning tiles and reading labels onto the image grid: same grid, other resolution, other CRS, no CRS, and
the bad inputs of the issue (labels off the grid, unknown values, empty tiles)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import rasterio
from rasterio.transform import Affine
from rasterio.warp import Resampling, calculate_default_transform, reproject

from data_gen.config import GenConfig
from data_gen.sources import SourceError, load_tile, plan_tiles, tile_windows
from tests.data_gen.source_fixtures import (
    CRS,
    TRANSFORM,
    X0,
    Y0,
    H,
    W,
    base_labels,
    write_raster,
    write_scene,
)


def _cfg(**kw) -> GenConfig:
    return GenConfig(**{"tile_size": 32, "weak_labels": "off", **kw})


def _all(cfg):
    return [(r, load_tile(cfg, r)) for r in plan_tiles(cfg)]


def test_tile_windows_cover_the_scene_with_full_tiles():
    wins = tile_windows(100, 70, 32, 8)
    cols = sorted({w[0] for w in wins})
    rows = sorted({w[1] for w in wins})
    assert cols == [0, 24, 48, 68] and rows == [0, 24, 38]
    assert all(w[2] == 32 and w[3] == 32 for w in wins)
    assert tile_windows(20, 10, 32, 0) == [(0, 0, 20, 10, 0, 0)]
    with pytest.raises(SourceError, match="overlap"):
        tile_windows(100, 100, 32, 32)


def test_plan_ids_blocks_and_max_tiles(tmp_path):
    paths = write_scene(tmp_path)
    cfg = _cfg(image=str(paths["image"]), labels=str(paths["labels"]), block_size=2)
    refs = plan_tiles(cfg)
    assert len(refs) == 3 * 3  # 96 x 80 at 32 px: columns 0, 32, 64; rows 0, 32, 48
    assert len({r.id for r in refs}) == len(refs)
    assert {r.block for r in refs} == {"image/b0_0", "image/b0_1", "image/b1_0", "image/b1_1"}
    assert refs[0].window == (0, 0, 32, 32)
    assert len(plan_tiles(_cfg(image=str(paths["image"]), max_tiles=4))) == 4


def test_same_grid_labels_are_read_exactly(tmp_path):
    paths = write_scene(tmp_path)
    cfg = _cfg(image=str(paths["image"]), labels=str(paths["labels"]))
    lab = base_labels()
    for ref, tile in _all(cfg):
        c, r, w, h = ref.window
        np.testing.assert_array_equal(tile.labels, lab[r : r + h, c : c + w])
        assert tile.image.shape == (32, 32, 3) and tile.image.dtype == np.uint8
        assert tile.crs == CRS and tile.gsd == pytest.approx(1.0)
        assert tile.transform == (1.0, 0.0, X0 + c, 0.0, -1.0, Y0 - r)
        assert tile.block == ref.block and tile.taxonomy.name == "landcover.ai"


def test_labels_on_a_coarser_shifted_grid_are_reprojected(tmp_path):
    paths = write_scene(tmp_path)
    # 2 m labels whose origin is 3 m east and 5 m north of the image origin.
    coarse = (np.arange(60 * 60).reshape(60, 60) % 5).astype(np.uint8)
    write_raster(tmp_path / "coarse.tif", coarse, transform=Affine(2.0, 0, X0 - 3, 0, -2.0, Y0 + 5))
    cfg = _cfg(image=str(paths["image"]), labels=str(tmp_path / "coarse.tif"))
    for ref, tile in _all(cfg):
        c, r, w, h = ref.window
        # Centre of image pixel (col, row) in metres from the coarse origin -> coarse pixel index.
        cols = ((np.arange(c, c + w) + 0.5 + 3) // 2).astype(int)
        rows = ((np.arange(r, r + h) + 0.5 + 5) // 2).astype(int)
        np.testing.assert_array_equal(tile.labels, coarse[np.ix_(rows, cols)])


def test_labels_in_another_crs_are_reprojected(tmp_path):
    paths = write_scene(tmp_path)
    lab = base_labels()
    dst_crs = "EPSG:4326"
    with rasterio.open(paths["labels"]) as src:
        tr, w, h = calculate_default_transform(
            src.crs, dst_crs, src.width, src.height, *src.bounds, resolution=3e-6
        )
    out = np.full((h, w), 255, np.uint8)
    reproject(lab, out, src_transform=TRANSFORM, src_crs=CRS, dst_transform=tr, dst_crs=dst_crs,
              resampling=Resampling.nearest, dst_nodata=255)  # fmt: skip
    write_raster(tmp_path / "ll.tif", out, crs=dst_crs, transform=tr, nodata=255)
    cfg = _cfg(image=str(paths["image"]), labels=str(tmp_path / "ll.tif"))
    agree = total = 0
    for ref, tile in _all(cfg):
        c, r, w_, h_ = ref.window
        agree += int((tile.labels == lab[r : r + h_, c : c + w_]).sum())
        total += w_ * h_
    assert agree / total > 0.97  # only class boundaries may move by a pixel after two reprojections


def test_labels_without_crs_need_the_same_size(tmp_path):
    paths = write_scene(tmp_path)
    write_raster(tmp_path / "plain.png", base_labels(), crs=None, driver="PNG")
    tile = load_tile(_cfg(image=str(paths["image"]), labels=str(tmp_path / "plain.png")),
                     plan_tiles(_cfg(image=str(paths["image"])))[4])  # fmt: skip
    np.testing.assert_array_equal(tile.labels, base_labels()[32:64, 32:64])
    write_raster(tmp_path / "small.png", base_labels()[:40, :40], crs=None, driver="PNG")
    with pytest.raises(SourceError, match="cannot be aligned") as e:
        plan_tiles(_cfg(image=str(paths["image"]), labels=str(tmp_path / "small.png")))
    assert "40x40" in str(e.value) and "96x80" in str(e.value)


def test_labels_that_do_not_overlap_are_an_error(tmp_path):
    paths = write_scene(tmp_path)
    write_raster(tmp_path / "far.tif", base_labels(), transform=Affine(1, 0, X0 + 10_000, 0, -1, Y0))
    with pytest.raises(SourceError, match="does not overlap"):
        plan_tiles(_cfg(image=str(paths["image"]), labels=str(tmp_path / "far.tif")))


def test_unknown_label_values_warn_once_with_counts(tmp_path, caplog):
    paths = write_scene(tmp_path)
    lab = base_labels()
    lab[0:3, 0:4] = 9  # 12 pixels of a value landcover.ai does not have
    write_raster(tmp_path / "odd.tif", lab)
    cfg = _cfg(image=str(paths["image"]), labels=str(tmp_path / "odd.tif"))
    with caplog.at_level(logging.WARNING, logger="data_gen.sources"):
        tiles = _all(cfg)
    warnings = [r.getMessage() for r in caplog.records if "not in taxonomy" in r.getMessage()]
    assert len(warnings) == 1 and "9: 12 px" in warnings[0]
    assert (tiles[0][1].labels[0:3, 0:4] == 255).all()  # treated as ignore


def test_empty_tiles_are_none(tmp_path):
    paths = write_scene(tmp_path, nodata_rows=32)  # bottom 32 rows are nodata (0 in all bands)
    cfg = _cfg(image=str(paths["image"]), labels=str(paths["labels"]))
    results = _all(cfg)
    empty = [ref.window for ref, t in results if t is None]
    assert empty == [(0, 48, 32, 32), (32, 48, 32, 32), (64, 48, 32, 32)]
    partial = next(t for ref, t in results if ref.window == (0, 32, 32, 32))
    assert (partial.labels[16:] == 255).all() and (partial.labels[:16] != 255).all()
    # Labels that are all ignore make a tile empty too.
    write_raster(tmp_path / "ign.tif", np.full((H, W), 255, np.uint8))
    cfg = _cfg(image=str(paths["image"]), labels=str(tmp_path / "ign.tif"))
    assert all(t is None for _, t in _all(cfg))


def test_bad_config_messages(tmp_path):
    paths = write_scene(tmp_path)
    with pytest.raises(SourceError, match="no imagery"):
        plan_tiles(GenConfig())
    with pytest.raises(SourceError, match="does not exist"):
        plan_tiles(_cfg(image=str(tmp_path / "missing.tif")))
    (tmp_path / "imgs").mkdir()
    (tmp_path / "lbls").mkdir()
    for n in range(2):
        write_raster(tmp_path / "imgs" / f"a{n}.tif", np.zeros((3, 8, 8), np.uint8))
    write_raster(tmp_path / "lbls" / "zzz.tif", np.zeros((8, 8), np.uint8))
    with pytest.raises(SourceError, match="2 image scene"):
        plan_tiles(_cfg(image=str(tmp_path / "imgs"), labels=str(tmp_path / "lbls")))
    with pytest.raises(SourceError, match="labels2 given without labels"):
        plan_tiles(_cfg(image=str(paths["image"]), labels2=str(paths["labels"])))
    with pytest.raises(ValueError, match="unknown taxonomy"):
        plan_tiles(_cfg(image=str(paths["image"]), taxonomy="nope"))


def test_folder_and_glob_match_by_stem(tmp_path):
    for n in (2, 1):  # written out of order; matching is by name
        write_raster(tmp_path / "img" / f"s{n}.tif", np.full((3, 16, 16), 100, np.uint8))
        write_raster(tmp_path / "ann" / f"s{n}.tif", np.full((16, 16), n, np.uint8))
    cfg = _cfg(image=str(tmp_path / "img" / "*.tif"), labels=str(tmp_path / "ann"), tile_size=16)
    tiles = [t for _, t in _all(cfg)]
    assert [t.id for t in tiles] == ["s1_r0_c0", "s2_r0_c0"]
    assert [int(t.labels[0, 0]) for t in tiles] == [1, 2]


def test_uint16_is_stretched_and_band_files_are_stacked(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "s2"
    for b, scale in (("B02", 800), ("B03", 1000), ("B04", 1200), ("B08", 3000)):
        arr = (rng.random((40, 40)) * scale + 500).astype(np.uint16)
        write_raster(folder / f"T33_20200101_{b}.tif", arr)
    cfg = _cfg(image=str(folder), tile_size=40, weak_labels="on")
    refs = plan_tiles(cfg)
    assert len(refs) == 1  # four band files are one scene
    tile = load_tile(cfg, refs[0])
    assert tile.image.dtype == np.uint8 and tile.image.min() == 0 and tile.image.max() == 255
    frac_clipped = (tile.image == 255).mean()
    assert 0.01 < frac_clipped < 0.05  # the 98th percentile maps to 255
    assert tile.weak and tile.taxonomy.name == "weak-ndvi-ndwi"  # B08 is NIR
