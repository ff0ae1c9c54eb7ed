"""``SparseMask``: a boolean mask on a raster grid of any size, kept as the blocks that hold True pixels."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from affine import Affine
from rasterio.crs import CRS
from shapely.ops import unary_union

from rsvlm.bands import RasterError
from rsvlm.geo.crs import as_affine, as_crs
from rsvlm.geo.measure import mask_area_m2
from rsvlm.geo.read import DEFAULT_MAX_PIXELS
from rsvlm.geo.vector import mask_shapes, polygonal_parts, simplify_and_filter


class SparseMask:
    """A boolean mask on a raster grid of any size, held as the aligned ``block`` × ``block`` pieces that have
    any True pixel.

    Why: a large scene is answered window by window, and the mask of a merged region is the union of the masks
    of the windows that saw it. Allocating that union on the scene grid would cost the scene's size (100 Mpx for
    a 10,000² scene; 40 Gpx for a 200,000² one); kept as blocks it costs only what the windows read. Blocks are
    aligned to the tiling ``write_masks_geotiff`` writes, so an overlap of two windows is an OR in a block and
    the file is written block by block. Coordinates are source pixels of the grid: (col, row), (x, y).
    """

    def __init__(self, height: int, width: int, block: int = 256) -> None:
        if height <= 0 or width <= 0 or block <= 0:
            raise RasterError(f"a mask grid needs a positive size, got {width} × {height} (block {block})")
        self.height, self.width, self.block = int(height), int(width), int(block)
        self.blocks: dict[tuple[int, int], np.ndarray] = {}  # (block_row, block_col) -> bool [bh, bw]

    @property
    def shape(self) -> tuple[int, int]:
        return (self.height, self.width)

    @classmethod
    def from_dense(
        cls, mask: np.ndarray, col_off: int = 0, row_off: int = 0, shape: tuple[int, int] | None = None
    ) -> SparseMask:
        """A window's mask [h, w] placed at (col_off, row_off) of a grid of ``shape`` (default: the mask's)."""
        m = np.asarray(mask)
        if m.ndim != 2:
            raise RasterError(f"a mask must be 2-D [H, W], got shape {m.shape}")
        height, width = shape if shape is not None else m.shape
        return cls(height, width).add(m, col_off, row_off)

    def _block_window(self, key: tuple[int, int]) -> tuple[int, int, int, int]:
        """(col_off, row_off, width, height) of a block, clipped to the grid."""
        r0, c0 = key[0] * self.block, key[1] * self.block
        return c0, r0, min(self.block, self.width - c0), min(self.block, self.height - r0)

    def add(self, mask: np.ndarray, col_off: int = 0, row_off: int = 0) -> SparseMask:
        """OR a window's mask [h, w] into the grid at (col_off, row_off); the part outside the grid is dropped."""
        m = np.asarray(mask).astype(bool, copy=False)
        if m.ndim != 2:
            raise RasterError(f"a mask must be 2-D [H, W], got shape {m.shape}")
        col_off, row_off = int(col_off), int(row_off)
        c0, r0 = max(col_off, 0), max(row_off, 0)
        c1, r1 = min(col_off + m.shape[1], self.width), min(row_off + m.shape[0], self.height)
        if c1 <= c0 or r1 <= r0:
            return self
        b = self.block
        for br in range(r0 // b, (r1 - 1) // b + 1):
            for bc in range(c0 // b, (c1 - 1) // b + 1):
                bx, by, bw, bh = self._block_window((br, bc))
                x0, y0, x1, y1 = max(bx, c0), max(by, r0), min(bx + bw, c1), min(by + bh, r1)
                part = m[y0 - row_off : y1 - row_off, x0 - col_off : x1 - col_off]
                if not part.any():
                    continue
                target = self.blocks.get((br, bc))
                if target is None:
                    target = self.blocks[(br, bc)] = np.zeros((bh, bw), bool)
                target[y0 - by : y1 - by, x0 - bx : x1 - bx] |= part
        return self

    def union(self, other: SparseMask) -> SparseMask:
        """A new mask: this one OR ``other`` (same grid)."""
        if other.shape != self.shape or other.block != self.block:
            raise RasterError(f"cannot merge masks on different grids: {self.shape} and {other.shape}")
        out = SparseMask(self.height, self.width, self.block)
        for source in (self, other):
            for key, values in source.blocks.items():
                if key in out.blocks:
                    out.blocks[key] = out.blocks[key] | values
                else:
                    out.blocks[key] = values.copy()
        return out

    def any(self) -> bool:
        return any(v.any() for v in self.blocks.values())

    def count(self) -> int:
        """The number of True pixels (overlaps counted once)."""
        return int(sum(np.count_nonzero(v) for v in self.blocks.values()))

    @property
    def nbytes(self) -> int:
        return int(sum(v.nbytes for v in self.blocks.values()))

    def bbox(self) -> tuple[float, float, float, float] | None:
        """The pixel box (x1, y1, x2, y2) of the True pixels (x2, y2 exclusive), None when empty."""
        boxes = []
        for key, values in self.blocks.items():
            rows, cols = np.nonzero(values.any(axis=1))[0], np.nonzero(values.any(axis=0))[0]
            if rows.size:
                c0, r0, _, _ = self._block_window(key)
                boxes.append((c0 + cols[0], r0 + rows[0], c0 + cols[-1] + 1, r0 + rows[-1] + 1))
        if not boxes:
            return None
        return tuple(float(f(b[i] for b in boxes)) for i, f in enumerate((min, min, max, max)))  # type: ignore

    def read(self, window: tuple[int, int, int, int]) -> np.ndarray:
        """A dense bool [h, w] copy of a window (col_off, row_off, width, height) of the grid."""
        col, row, w, h = (int(v) for v in window)
        out = np.zeros((h, w), bool)
        for key, values in self.blocks.items():
            bx, by, bw, bh = self._block_window(key)
            x0, y0, x1, y1 = max(bx, col), max(by, row), min(bx + bw, col + w), min(by + bh, row + h)
            if x1 > x0 and y1 > y0:
                out[y0 - row : y1 - row, x0 - col : x1 - col] = values[y0 - by : y1 - by, x0 - bx : x1 - bx]
        return out

    def to_dense(self, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
        """The whole grid as bool [H, W]; refused past ``max_pixels`` (use ``read`` on windows instead)."""
        if self.height * self.width > max_pixels:
            raise RasterError(
                f"the mask grid is {self.width:,} × {self.height:,} pixels, more than max_pixels={max_pixels:,}; "
                "read it by windows (SparseMask.read) or write it with write_masks_geotiff"
            )
        return self.read((0, 0, self.width, self.height))

    def pixel_polygons(self, simplify_px: float = 0.5, min_area_px: float = 4) -> list[Any]:
        """Shapely polygons of the True pixels in grid pixel coordinates, largest first.

        Each block is traced on its own; the pieces share exact integer edges, so their union is seamless.
        """
        pieces = []
        for key, values in self.blocks.items():
            c0, r0, _, _ = self._block_window(key)
            pieces.extend(mask_shapes(values, Affine.translation(c0, r0)))
        if not pieces:
            return []
        identity = Affine.identity()
        return simplify_and_filter(polygonal_parts(unary_union(pieces)), identity, simplify_px, min_area_px)

    def area_m2(self, transform: Affine | Sequence[float], crs: CRS | str | None) -> float | None:
        """Ground area in m² of the True pixels on the grid of ``transform`` (None without a CRS)."""
        if as_crs(crs) is None:
            return None
        affine = as_affine(transform)
        total = 0.0
        for key, values in self.blocks.items():
            c0, r0, _, _ = self._block_window(key)
            total += mask_area_m2(values, affine @ Affine.translation(c0, r0), crs) or 0.0
        return total
