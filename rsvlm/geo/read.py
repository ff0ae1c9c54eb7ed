"""Reading rasters: header facts (``inspect_raster``) and pixels (``read_image``: bands, windows, overviews,
nodata, alpha, palettes) into a ``GeoImage``.

A raster bigger than ``max_pixels`` is never read whole: the error names its size and suggests a window or an
overview read. Nothing is allocated from what a header claims before that check.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from affine import Affine
from rasterio._err import CPLE_BaseError
from rasterio.crs import CRS
from rasterio.enums import ColorInterp, Resampling
from rasterio.errors import RasterioError
from rasterio.windows import Window

from rsvlm.bands import PRESETS, RasterError, resolve_bands
from rsvlm.geo.gdal import crs_of, gdal_message, open_raster, quiet_warnings
from rsvlm.geo.image import GeoImage
from rsvlm.geo.measure import ground_sample_distance

logger = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS = 64 * 1024 * 1024  # 64 Mpx: a 13-band float32 read of this size is ~3.5 GB
_SUPPORTED_KINDS = "uif"  # unsigned, signed, float; complex and others are refused


@dataclass
class RasterInfo:
    """What a raster's header says (no pixels read). ``gsd`` is metres per pixel, None without a CRS;
    ``overviews`` are the decimation factors of band 1's internal or external overviews."""

    path: str
    driver: str
    width: int
    height: int
    count: int
    dtypes: tuple[str, ...]
    crs: CRS | None
    transform: Affine
    nodata: float | None
    band_descriptions: tuple[str | None, ...]
    colorinterp: tuple[str, ...]
    gsd: float | None
    overviews: list[int]
    bounds: tuple[float, float, float, float]  # (left, bottom, right, top) in CRS units (pixels without CRS)

    @property
    def pixels(self) -> int:
        return self.width * self.height

    @property
    def shape(self) -> tuple[int, int]:
        return (self.height, self.width)


def inspect_raster(path: str | os.PathLike) -> RasterInfo:
    """Header facts of a raster without reading pixels (cheap even for a 200,000² file)."""
    with open_raster(path) as src:
        crs = crs_of(src)
        return RasterInfo(
            path=str(path),
            driver=src.driver,
            width=src.width,
            height=src.height,
            count=src.count,
            dtypes=tuple(src.dtypes),
            crs=crs,
            transform=src.transform if crs is not None else Affine.identity(),
            nodata=src.nodata,
            band_descriptions=tuple(src.descriptions),
            colorinterp=tuple(c.name for c in src.colorinterp),
            gsd=ground_sample_distance(src.transform, crs, src.width, src.height),
            overviews=list(src.overviews(1)) if src.count else [],
            bounds=tuple(src.bounds) if crs is not None else (0.0, float(src.height), float(src.width), 0.0),
        )


def _as_window(window: Any, width: int, height: int, name: str, notes: list[str]) -> Window:
    """Validate a (col_off, row_off, width, height) window; clip it to the raster (with a note) if it spills."""
    if window is None:
        return Window(0, 0, width, height)
    if isinstance(window, Window):
        values = [window.col_off, window.row_off, window.width, window.height]
    else:
        try:
            values = [float(v) for v in window]
        except (TypeError, ValueError):
            values = []
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise RasterError(f"window must be (col_off, row_off, width, height), got {window!r}")
    col, row, w, h = (int(round(v)) for v in values)
    if w <= 0 or h <= 0:
        raise RasterError(f"window {tuple(values)} has no area")
    c0, r0, c1, r1 = max(col, 0), max(row, 0), min(col + w, width), min(row + h, height)
    if c1 <= c0 or r1 <= r0:
        raise RasterError(f"window {(col, row, w, h)} lies outside {name} ({width} × {height} pixels)")
    if (c0, r0, c1, r1) != (col, row, col + w, row + h):
        notes.append(f"window {(col, row, w, h)} clipped to the raster: {(c0, r0, c1 - c0, r1 - r0)}")
    return Window(c0, r0, c1 - c0, r1 - r0)


def _overview_shape(win: Window, overview_size: int | None) -> tuple[int, int]:
    h, w = int(win.height), int(win.width)
    if overview_size is None:
        return h, w
    if int(overview_size) <= 0:
        raise RasterError(f"overview_size must be a positive number of pixels, got {overview_size}")
    factor = max(w, h) / int(overview_size)
    if factor <= 1:
        return h, w
    return max(1, round(h / factor)), max(1, round(w / factor))


def read_image(
    path: str | os.PathLike,
    bands: str | Sequence[int] | None = None,
    window: tuple[int, int, int, int] | Window | None = None,
    max_pixels: int | None = None,
    overview_size: int | None = None,
    allow_empty: bool = False,
) -> GeoImage:
    """Read a raster (or a window of it, optionally decimated) into a ``GeoImage``.

    ``bands``: a preset name (``rgb``, ``rgbn``/``naip``, ``bgrn``, ``sentinel2-l1c``, ``sentinel2-l2a``,
    ``landsat8``/``landsat9``, ``grey``), 1-based band indexes, or None to guess. ``window``: (col_off, row_off,
    width, height) in source pixels. ``overview_size``: the long side of a decimated read (internal overviews are
    used when present; the transform is scaled to match). ``max_pixels`` (default 64 Mpx) bounds the pixels
    allocated; a bigger request is refused with its size named. ``allow_empty`` returns an all-invalid window
    instead of raising (for tiling a scene with nodata borders).
    """
    with open_raster(path) as src:
        return read_opened(src, Path(path), bands, window, max_pixels, overview_size, None, allow_empty)


def read_opened(
    src: Any,
    path: Path,
    bands: str | Sequence[int] | None,
    window: Any,
    max_pixels: int | None,
    overview_size: int | None,
    out_shape: tuple[int, int] | None,
    allow_empty: bool,
) -> GeoImage:
    name = path.name
    notes: list[str] = []
    max_pixels = DEFAULT_MAX_PIXELS if max_pixels is None else int(max_pixels)
    crs = crs_of(src)
    if src.count == 0:
        raise RasterError(f"{name} has no bands")

    interps = [c.name for c in src.colorinterp]
    palette = bands is None and src.count == 1 and src.colorinterp[0] == ColorInterp.palette
    selection = resolve_bands(bands, src.count, src.descriptions, interps, source=name)
    notes.extend(selection.warnings)
    kinds = {np.dtype(src.dtypes[i - 1]).kind for i in selection.indexes}
    if not kinds <= set(_SUPPORTED_KINDS):
        raise RasterError(
            f"{name} has pixel type {src.dtypes[0]}, which is not supported (use integer or float)"
        )

    win = _as_window(window, src.width, src.height, name, notes)
    out_h, out_w = out_shape if out_shape is not None else _overview_shape(win, overview_size)
    if out_h * out_w > max_pixels:
        what = f"{name} is {src.width:,} × {src.height:,} pixels"
        if window is not None:
            what += f"; the window is {int(win.width):,} × {int(win.height):,}"
        if out_shape is not None or overview_size is not None:
            what += f"; the requested read is {out_w:,} × {out_h:,}"
        raise RasterError(
            f"{what} ({out_w * out_h / 1e6:,.0f} Mpx), more than max_pixels={max_pixels:,}; "
            f"read it by windows (window=(col_off, row_off, width, height)) or as an overview (overview_size=2048)"
        )
    decimated = (out_h, out_w) != (int(win.height), int(win.width))
    if decimated and not src.overviews(1) and win.width * win.height > 16 * max_pixels:
        logger.warning("%s has no overviews: a decimated read scans the whole window", name)

    resampling = Resampling.average if decimated else Resampling.nearest
    arr = _read_bands(src, name, selection.indexes, win, (out_h, out_w), resampling)  # [C, H, W] masked
    data = np.asarray(arr.data, dtype=np.float32)  # [C, H, W]
    masked = np.ma.getmaskarray(arr)
    names = selection.names
    if selection.alpha_index is not None:
        # Nearest, even for overviews: an averaged alpha edge is not 0/255 and would look like data.
        alpha = np.asarray(_read_bands(src, name, [selection.alpha_index], win, (out_h, out_w)).data[0])
        if np.isin(alpha, (0, alpha.max())).all():  # a real alpha band: a mask, not data
            masked = masked | (alpha == 0)[None]
        else:
            extra = _read_bands(src, name, [selection.alpha_index], win, (out_h, out_w), resampling)
            indexes = [*selection.indexes, selection.alpha_index]
            order = np.argsort(indexes)
            data = np.concatenate([data, np.asarray(extra.data, np.float32)])[order]
            masked = np.concatenate([masked, np.ma.getmaskarray(extra)])[order]
            names = resolve_bands(None, src.count, source=name).names
            notes.append(
                f"{name}: band {selection.alpha_index} is marked alpha but holds data; read it as data"
            )
    valid = ~masked.any(axis=0) & np.isfinite(data).all(axis=0)  # [H, W]
    if palette:
        data, names = _apply_palette(src, data), ["red", "green", "blue"]
        selection.preset = None
    data[:, ~valid] = 0
    if not valid.any() and not allow_empty:
        where = (
            f"window {(int(win.col_off), int(win.row_off), int(win.width), int(win.height))} of "
            if window
            else ""
        )
        raise RasterError(f"every pixel in {where}{name} is nodata (nodata={src.nodata}); nothing to show")

    sx, sy = win.width / out_w, win.height / out_h
    if crs is not None:
        transform = src.transform @ Affine.translation(win.col_off, win.row_off) @ Affine.scale(sx, sy)
    else:
        transform = Affine.translation(win.col_off, win.row_off) @ Affine.scale(sx, sy)
        notes.append(f"{name} has no CRS: outputs stay in pixel coordinates (no GeoJSON geometry, no area)")
    image = GeoImage(
        data=data,
        valid=valid,
        band_names=list(names),
        crs=crs,
        transform=transform,
        path=str(path),
        window=(int(win.col_off), int(win.row_off), int(win.width), int(win.height)),
        source_shape=(src.height, src.width),
        scale=float((sx + sy) / 2),
        preset=selection.preset,
        nodata=src.nodata,
        warnings=notes,
    )
    for note in notes:
        logger.debug("%s", note)
    return image


def _read_bands(
    src: Any,
    name: str,
    indexes: list[int],
    win: Window,
    shape: tuple[int, int],
    resampling: Resampling = Resampling.nearest,
) -> np.ma.MaskedArray:
    """``src.read`` with every GDAL failure (truncated strips, corrupt tiles) turned into a ``RasterError``."""
    try:
        with quiet_warnings():
            return src.read(
                indexes, window=win, out_shape=(len(indexes), *shape), resampling=resampling, masked=True
            )
    except (RasterioError, CPLE_BaseError, MemoryError) as e:
        raise RasterError(
            f"reading pixels of {name} failed; the file is truncated or corrupt ({gdal_message(e)})"
        ) from e


def _apply_palette(src: Any, index: np.ndarray) -> np.ndarray:
    """A paletted band [1, H, W] -> RGB values [3, H, W] through the file's colour map."""
    try:
        cmap = src.colormap(1)
    except ValueError:
        return np.repeat(index, 3, axis=0)
    lut = np.zeros((256, 3), dtype=np.float32)
    for k, rgba in cmap.items():
        if 0 <= k < 256:
            lut[k] = rgba[:3]
    return np.moveaxis(lut[np.clip(index[0], 0, 255).astype(np.int64)], 2, 0)


def preset_names() -> list[str]:
    """Band preset names accepted by ``read_image(bands=...)``."""
    return sorted(PRESETS)
