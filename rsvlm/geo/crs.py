"""CRS and transform arguments as rasterio/pyproj objects, and cached transformers to and from EPSG:4326.

Every file of ``rsvlm.geo`` takes a CRS as a rasterio ``CRS``, a string or an EPSG code and a transform as an
``Affine`` or 6 numbers; they pass through ``as_crs`` / ``as_affine`` so that a bad one is a ``RasterError``.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

from affine import Affine
from pyproj import CRS as ProjCRS
from pyproj import Transformer
from rasterio.crs import CRS

from rsvlm.bands import RasterError

WGS84 = CRS.from_epsg(4326)


@lru_cache(maxsize=64)
def transformer(src_wkt: str, dst_wkt: str) -> Transformer:
    return Transformer.from_crs(ProjCRS.from_wkt(src_wkt), ProjCRS.from_wkt(dst_wkt), always_xy=True)


def to_wgs84(crs: CRS) -> Transformer:
    return transformer(crs.to_wkt(), WGS84.to_wkt())


def from_wgs84(crs: CRS) -> Transformer:
    return transformer(WGS84.to_wkt(), crs.to_wkt())


def as_crs(crs: CRS | str | int | None) -> CRS | None:
    if crs is None or isinstance(crs, CRS):
        return crs
    try:
        return CRS.from_user_input(crs)
    except Exception as e:
        raise RasterError(f"not a CRS: {crs!r}") from e


def as_affine(transform: Affine | Sequence[float]) -> Affine:
    if isinstance(transform, Affine):
        return transform
    values = list(transform)
    if len(values) not in (6, 9):
        raise RasterError(f"a transform needs 6 numbers (a, b, c, d, e, f), got {values!r}")
    return Affine(*values[:6])
