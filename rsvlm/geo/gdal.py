"""Opening a raster with GDAL (through rasterio), every way it can fail turned into a one-line ``RasterError``."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import rasterio
from rasterio._err import CPLE_BaseError
from rasterio.crs import CRS
from rasterio.errors import NodataShadowWarning, NotGeoreferencedWarning, RasterioError

from rsvlm.bands import RasterError


def gdal_message(error: BaseException) -> str:
    """The useful part of a rasterio/GDAL error chain ("See previous exception" wrappers are skipped)."""
    parts: list[str] = []
    seen: set[int] = set()
    e: BaseException | None = error
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        text = " ".join(str(e).split())
        if text and "previous exception" not in text and text not in parts:
            parts.append(text)
        e = e.__cause__ or e.__context__
    message = "; ".join(parts) or type(error).__name__
    return message[:240]


@contextmanager
def quiet_warnings() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        warnings.simplefilter("ignore", NodataShadowWarning)
        yield


@contextmanager
def open_raster(path: str | os.PathLike) -> Iterator[Any]:
    """Open a raster for reading, turning every way it can fail into a one-line ``RasterError``."""
    p = Path(path)
    if not p.exists():
        raise RasterError(f"no such file: {p}")
    if p.is_dir():
        raise RasterError(f"{p} is a folder, not a raster file")
    if p.stat().st_size == 0:
        raise RasterError(f"{p} is empty (0 bytes)")
    try:
        with quiet_warnings():
            src = rasterio.open(p)
    except (RasterioError, CPLE_BaseError) as e:
        raise RasterError(f"{p} is not a raster that GDAL can read ({gdal_message(e)})") from e
    with src:
        yield src


def crs_of(src: Any) -> CRS | None:
    crs = src.crs
    if crs is None or not crs.to_wkt():
        return None
    return crs
