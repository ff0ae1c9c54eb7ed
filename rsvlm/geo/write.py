"""Writing results: masks as uint8 GeoTIFFs (dense, or sparse block by block) and features as GeoJSON.

Writes go to a temporary file in the destination folder and are moved into place with ``os.replace``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio._err import CPLE_BaseError
from rasterio.crs import CRS
from rasterio.errors import RasterioError
from rasterio.windows import Window
from shapely.geometry import shape

from rsvlm.atomic import atomic_path
from rsvlm.bands import RasterError
from rsvlm.geo.crs import as_affine, as_crs
from rsvlm.geo.gdal import gdal_message, quiet_warnings
from rsvlm.geo.masks import SparseMask
from rsvlm.geo.vector import check_lonlat


@contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[Path]:
    """``rsvlm.atomic.atomic_path`` with the user's mistakes as ``RasterError``: a missing folder (named, nothing
    is written), a folder given as the output, a folder we cannot write in."""
    target = Path(path)
    folder = target.parent
    if not folder.is_dir():
        raise RasterError(f"output folder {folder} does not exist; create it first (nothing was written)")
    if target.is_dir():
        raise RasterError(f"output path {target} is a folder")
    if not os.access(folder, os.W_OK):
        raise RasterError(f"cannot write in {folder} (permission denied)")
    with atomic_path(target) as tmp:
        yield tmp


def _mask_profile(
    shape: tuple[int, int],
    transform: Affine | Sequence[float],
    crs: CRS | str | None,
    block: int = 256,
    **extra: Any,
) -> dict[str, Any]:
    """A single-band uint8 deflate GeoTIFF profile; tiled in ``block``² blocks when the grid holds one."""
    height, width = shape
    profile: dict[str, Any] = dict(
        driver="GTiff",
        height=height,
        width=width,
        count=1,
        dtype="uint8",
        crs=as_crs(crs),
        transform=as_affine(transform),
        compress="deflate",
        **extra,
    )
    if height >= block and width >= block and block % 16 == 0:
        profile.update(tiled=True, blockxsize=block, blockysize=block)
    return profile


def write_mask_geotiff(
    path: str | os.PathLike,
    mask: np.ndarray,
    transform: Affine | Sequence[float],
    crs: CRS | str | None,
    nodata: int | None = None,
) -> Path:
    """A mask [H, W] (bool, or integer labels 0-255) -> single-band uint8 deflate GeoTIFF with the given CRS and
    transform (pass the window's transform so it lands on the map where it was read). Atomic."""
    arr = np.asarray(mask)
    if arr.ndim != 2:
        raise RasterError(f"a mask must be 2-D [H, W], got shape {arr.shape}")
    if arr.dtype != bool and (
        arr.size and (arr.min() < 0 or arr.max() > 255 or not np.all(arr == np.round(arr)))
    ):
        raise RasterError("mask values must be booleans or integers in 0-255 to write a uint8 GeoTIFF")
    arr = arr.astype(np.uint8)
    profile = _mask_profile(arr.shape, transform, crs, nodata=nodata)
    with atomic_write(path) as tmp:
        try:
            with quiet_warnings(), rasterio.open(tmp, "w", **profile) as dst:
                dst.write(arr, 1)
        except (RasterioError, CPLE_BaseError) as e:
            raise RasterError(f"writing {path} failed ({gdal_message(e)})") from e
    return Path(path)


def write_masks_geotiff(
    path: str | os.PathLike,
    masks: Sequence[SparseMask | np.ndarray],
    transform: Affine | Sequence[float],
    crs: CRS | str | None,
) -> Path:
    """Masks on one grid -> one single-band uint8 GeoTIFF: value i+1 where the i-th mask is True (later masks
    win where they overlap, values stop at 255), 0 elsewhere.

    Written block by block as a tiled (256²), sparse, deflate GeoTIFF: blocks no mask touches are never written
    (GDAL reads them as 0), so a mask on a 10,000² or 200,000² scene costs the blocks it covers, in memory and
    on disk. Dense masks (small images) are accepted too. Atomic.
    """
    if not masks:
        raise RasterError("no masks to write")
    sparse = [m if isinstance(m, SparseMask) else SparseMask.from_dense(m) for m in masks]
    height, width = sparse[0].shape
    if any(m.shape != (height, width) or m.block != sparse[0].block for m in sparse):
        raise RasterError(f"masks are on different grids: {sorted({m.shape for m in sparse})}")
    profile = _mask_profile((height, width), transform, crs, block=sparse[0].block, sparse_ok=True)
    keys = sorted(set().union(*(m.blocks for m in sparse)))
    with atomic_write(path) as tmp:
        try:
            with quiet_warnings(), rasterio.open(tmp, "w", **profile) as dst:
                for key in keys:
                    col, row, w, h = sparse[0]._block_window(key)
                    out = np.zeros((h, w), np.uint8)  # [bh, bw]
                    for value, mask in enumerate(sparse, start=1):
                        part = mask.blocks.get(key)
                        if part is not None:
                            out[part] = min(value, 255)
                    dst.write(out, 1, window=Window(col, row, w, h))
        except (RasterioError, CPLE_BaseError) as e:
            raise RasterError(f"writing {path} failed ({gdal_message(e)})") from e
    return Path(path)


_GEOMETRY_TYPES = {"Point", "MultiPoint", "LineString", "MultiLineString", "Polygon", "MultiPolygon"}


def _as_feature(item: Any) -> dict:
    """A Feature dict, a bare geometry dict, a (geometry, properties) pair, or an object with ``geometry`` (such
    as ``rsvlm.grounding.Region``) -> a GeoJSON Feature."""
    if isinstance(item, dict) and item.get("type") == "Feature":
        feature = {
            "type": "Feature",
            "geometry": item.get("geometry"),
            "properties": item.get("properties") or {},
        }
    elif isinstance(item, dict) and item.get("type") in _GEOMETRY_TYPES | {"GeometryCollection"}:
        feature = {"type": "Feature", "geometry": item, "properties": {}}
    elif isinstance(item, tuple) and len(item) == 2:
        feature = {"type": "Feature", "geometry": item[0], "properties": dict(item[1] or {})}
    elif hasattr(item, "geometry"):
        props = {
            k: getattr(item, k) for k in ("label", "area_m2", "score") if getattr(item, k, None) is not None
        }
        feature = {"type": "Feature", "geometry": item.geometry, "properties": props}
    else:
        raise RasterError(f"cannot make a GeoJSON feature from {type(item).__name__}")
    if feature["geometry"] is not None:
        check_lonlat(shape(feature["geometry"]), "a feature geometry")
    return feature


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def write_geojson(path: str | os.PathLike, features: Iterable[Any]) -> Path:
    """Write a GeoJSON FeatureCollection (RFC 7946: EPSG:4326 lon/lat, no ``crs`` member) atomically."""
    collection = {"type": "FeatureCollection", "features": [_as_feature(f) for f in features]}
    try:
        text = json.dumps(collection, allow_nan=False, default=_json_default)
    except (TypeError, ValueError) as e:
        raise RasterError(f"features cannot be written as GeoJSON ({e})") from e
    with atomic_write(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)
