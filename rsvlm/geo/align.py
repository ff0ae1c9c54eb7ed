"""Two dates: the second image read (or warped) onto the first one's pixel grid, with overlap checks."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio.warp
from affine import Affine
from rasterio._err import CPLE_BaseError
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import RasterioError

from rsvlm.bands import RasterError, get_preset
from rsvlm.geo.crs import WGS84
from rsvlm.geo.gdal import crs_of, gdal_message, open_raster
from rsvlm.geo.image import GeoImage
from rsvlm.geo.read import read_image, read_opened


def align_pair(
    first: GeoImage | str | os.PathLike,
    second_path: str | os.PathLike | GeoImage,
    bands: str | Sequence[int] | None = None,
    max_pixels: int | None = None,
) -> GeoImage:
    """Read the second date onto the first's pixel grid.

    Same CRS and pixel grid: a plain window read. Different CRS, resolution or origin: the second is read around
    the first's footprint and resampled with ``rasterio.warp.reproject`` (bilinear); pixels the second does not
    cover are invalid. Neither has a CRS: the second is resized onto the first (same footprint assumed). Raises
    ``RasterError`` when the footprints do not overlap. The result carries the first's ``crs``, ``transform``,
    ``window``, ``source_shape`` and ``scale`` (it lives on the first's grid); ``path`` is the second file.
    ``bands`` defaults to the first image's preset when the second has a fitting band count.

    The second may also be a ``GeoImage`` already read (its array is warped or rescaled as it is; reading from
    the file is better when the second was decimated more than the first).
    """
    if not isinstance(first, GeoImage):
        first = read_image(first, max_pixels=max_pixels)
    if isinstance(second_path, GeoImage):
        image = _align_in_memory(first, second_path)
        name = second_path._name
    else:
        image, name = _align_from_file(first, Path(second_path), bands, max_pixels), Path(second_path).name
    if image.band_names != first.band_names:
        image.warnings.append(
            f"band sets differ: {first._name} has {first.band_names}, {name} has {image.band_names}"
        )
    return image


def _align_from_file(first: GeoImage, second: Path, bands: Any, max_pixels: int | None) -> GeoImage:
    with open_raster(second) as src:
        if bands is None and first.preset and get_preset(first.preset).accepts(src.count):
            bands = first.preset
        crs2 = crs_of(src)
        if first.crs is None or crs2 is None:
            image = _align_by_resize(first, src, second, bands, max_pixels)
        else:
            image = _align_by_crs(first, src, second, crs2, bands, max_pixels)
    return image


def _align_by_resize(first: GeoImage, src: Any, path: Path, bands: Any, max_pixels: int | None) -> GeoImage:
    notes = []
    if (first.crs is None) != (crs_of(src) is None):
        notes.append("only one of the two images has a CRS; assumed they cover the same ground")
    sh, sw = first.source_shape  # type: ignore[misc]
    if (src.height, src.width) != (sh, sw):
        notes.append(
            f"{path.name} is {src.width} × {src.height} and the first is {sw} × {sh}; resized, assuming the "
            f"same footprint"
        )
    fx, fy = src.width / sw, src.height / sh
    c, r, w, h = first.window  # type: ignore[misc]
    window = (c * fx, r * fy, w * fx, h * fy)
    image = read_opened(
        src, path, bands, window, max_pixels, None, (first.height, first.width), allow_empty=True
    )
    image.transform, image.crs = first.transform, first.crs
    image.window, image.source_shape, image.scale = first.window, first.source_shape, first.scale
    image.warnings.extend(notes)
    if not image.valid.any():
        raise RasterError(f"every pixel of {path.name} under the first image is nodata")
    return image


def _footprint_4326(bounds: Sequence[float], crs: CRS) -> str:
    w, s, e, n = rasterio.warp.transform_bounds(crs, WGS84, *bounds, densify_pts=21)
    return f"lon {w:.5f}..{e:.5f}, lat {s:.5f}..{n:.5f}"


def _check_overlap(first: GeoImage, crs2: CRS, bounds2: Sequence[float], name: str) -> None:
    """Raise when the first image's footprint and ``bounds2`` (in ``crs2``) do not intersect."""
    try:
        left, bottom, right, top = rasterio.warp.transform_bounds(
            first.crs, crs2, *first.bounds, densify_pts=21
        )
    except (RasterioError, CPLE_BaseError) as e:
        raise RasterError(
            f"cannot transform {first._name}'s footprint into {name}'s CRS ({gdal_message(e)})"
        ) from e
    sl, sb, sr, st = bounds2
    if min(right, sr) <= max(left, sl) or min(top, st) <= max(bottom, sb):
        raise RasterError(
            f"{first._name} and {name} do not overlap: the first covers {_footprint_4326(first.bounds, first.crs)}, "
            f"the second {_footprint_4326(bounds2, crs2)}"
        )


def _align_by_crs(
    first: GeoImage, src: Any, path: Path, crs2: CRS, bands: Any, max_pixels: int | None
) -> GeoImage:
    name = path.name
    first_bounds = first.bounds
    try:
        left, bottom, right, top = rasterio.warp.transform_bounds(
            first.crs, crs2, *first_bounds, densify_pts=21
        )
    except (RasterioError, CPLE_BaseError) as e:
        raise RasterError(
            f"cannot transform {first._name}'s footprint into {name}'s CRS ({gdal_message(e)})"
        ) from e
    _check_overlap(first, crs2, tuple(src.bounds), name)

    # Same grid: the first's array pixels are whole pixels (or a uniform decimation) of the second -> plain read.
    rel = ~src.transform @ first.transform
    if (
        crs2 == first.crs
        and abs(rel.b) < 1e-9
        and abs(rel.d) < 1e-9
        and rel.a > 0
        and rel.e > 0
        and abs(rel.c - round(rel.c)) < 1e-6
        and abs(rel.f - round(rel.f)) < 1e-6
        and abs(rel.a * first.width - round(rel.a * first.width)) < 1e-6
        and abs(rel.e * first.height - round(rel.e * first.height)) < 1e-6
    ):
        window = (round(rel.c), round(rel.f), round(rel.a * first.width), round(rel.e * first.height))
        inside = window[0] >= 0 and window[1] >= 0
        inside = inside and window[0] + window[2] <= src.width and window[1] + window[3] <= src.height
        if inside:
            image = read_opened(src, path, bands, window, max_pixels, None, (first.height, first.width), True)
            if not image.valid.any():
                raise RasterError(f"every pixel of {name} under {first._name} is nodata")
            # It lives on the first's grid: window, source shape and scale are the first's (the second may be
            # far larger, and its own window offsets would put boxes in the wrong file's pixels).
            return _on_first_grid(first, image, image.data, image.valid, image.warnings)

    # Different grid: read the second around the first's footprint (2-pixel margin), at most ~2× finer than the
    # first's grid, then warp it onto the first's grid.
    corners_x, corners_y = ~src.transform @ (
        np.array([left, right, left, right]),
        np.array([top, top, bottom, bottom]),
    )
    col0, row0 = math.floor(float(np.min(corners_x))) - 2, math.floor(float(np.min(corners_y))) - 2
    col1, row1 = math.ceil(float(np.max(corners_x))) + 2, math.ceil(float(np.max(corners_y))) + 2
    col0, row0, col1, row1 = max(col0, 0), max(row0, 0), min(col1, src.width), min(row1, src.height)
    w2, h2 = col1 - col0, row1 - row0
    factor = max(1.0, min(w2 / first.width, h2 / first.height) / 2)
    out_shape = (max(1, round(h2 / factor)), max(1, round(w2 / factor)))
    part = read_opened(src, path, bands, (col0, row0, w2, h2), max_pixels, None, out_shape, allow_empty=True)

    return _warp_onto(first, part, part.transform, crs2, first.transform, first.crs)


def _warp_onto(
    first: GeoImage,
    part: GeoImage,
    src_transform: Affine,
    src_crs: CRS,
    dst_transform: Affine,
    dst_crs: CRS,
) -> GeoImage:
    """Resample ``part`` (bilinear, nodata-aware) onto the first image's array grid."""
    name = part._name
    source = np.where(part.valid[None], part.data, np.nan).astype(np.float32)  # [C, h, w]
    dest = np.full((part.count, first.height, first.width), np.nan, dtype=np.float32)  # [C, H, W]
    try:
        rasterio.warp.reproject(
            source=source,
            destination=dest,
            src_transform=src_transform,
            src_crs=src_crs,
            dst_transform=dst_transform,
            dst_crs=dst_crs,
            resampling=Resampling.bilinear,
            src_nodata=np.nan,
            dst_nodata=np.nan,
        )
    except (RasterioError, CPLE_BaseError) as e:
        raise RasterError(f"resampling {name} onto {first._name}'s grid failed ({gdal_message(e)})") from e
    valid = np.isfinite(dest).all(axis=0)  # [H, W]
    if not valid.any():
        raise RasterError(f"{first._name} and {name} do not overlap on any valid pixel")
    dest[:, ~valid] = 0
    notes = [*part.warnings, f"{name} resampled (bilinear) onto the grid of {first._name}"]
    coverage = valid.mean()
    if coverage < 0.99:
        notes.append(f"{name} covers {coverage:.0%} of {first._name}; the rest is marked invalid")
    return _on_first_grid(first, part, dest, valid, notes)


def _on_first_grid(
    first: GeoImage, part: GeoImage, data: np.ndarray, valid: np.ndarray, notes: list[str]
) -> GeoImage:
    return GeoImage(
        data=data,
        valid=valid,
        band_names=list(part.band_names),
        crs=first.crs,
        transform=first.transform,
        path=part.path,
        window=first.window,
        source_shape=first.source_shape,
        scale=first.scale,
        preset=part.preset,
        nodata=part.nodata,
        warnings=notes,
    )


# Both sides of a pixel-space warp get this CRS, so GDAL resamples without reprojecting.
_PIXEL_CRS = CRS.from_epsg(3857)


def _align_in_memory(first: GeoImage, second: GeoImage) -> GeoImage:
    """Align an already-read second image: warp its array (CRS known on both) or rescale it in source pixels."""
    name = second._name
    if first.crs is not None and second.crs is not None:
        _check_overlap(first, second.crs, second.bounds, name)
        if second.crs == first.crs and second.data.shape[1:] == first.data.shape[1:]:
            if second.transform.almost_equals(first.transform, precision=1e-9):
                return _on_first_grid(
                    first, second, second.data.copy(), second.valid.copy(), list(second.warnings)
                )
        return _warp_onto(first, second, second.transform, second.crs, first.transform, first.crs)
    notes = list(second.warnings)
    if (first.crs is None) != (second.crs is None):
        notes.append("only one of the two images has a CRS; assumed they cover the same ground")
    (fh, fw), (sh, sw) = first.source_shape, second.source_shape  # type: ignore[misc]
    if (fh, fw) != (sh, sw):
        notes.append(
            f"{name} is {sw} × {sh} and the first is {fw} × {fh}; resized, assuming the same footprint"
        )
    # Second's array -> its source pixels -> the first's source pixels (same footprint assumed).
    src_transform = Affine.scale(fw / sw, fh / sh) @ second.pixel_transform
    if second.data.shape[1:] == first.data.shape[1:] and src_transform.almost_equals(
        first.pixel_transform, precision=1e-9
    ):
        return _on_first_grid(first, second, second.data.copy(), second.valid.copy(), notes)
    image = _warp_onto(first, second, src_transform, _PIXEL_CRS, first.pixel_transform, _PIXEL_CRS)
    image.warnings[: len(second.warnings)] = []
    image.warnings = [*notes, *image.warnings]
    return image
