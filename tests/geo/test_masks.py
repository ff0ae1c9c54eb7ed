"""rsvlm.geo.masks: SparseMask on grids of any size costs only the blocks it holds."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import rasterio.warp
from make_fixtures import ORIGIN_UTM, UTM18, from_origin

from rsvlm import geo
from tests.geo.helpers import GRIDS


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
