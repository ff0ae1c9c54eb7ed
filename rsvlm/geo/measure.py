"""Metres on the ground: the pixel size (GSD) of a grid, and areas in m² of geometries and masks.

Lengths are measured on the WGS84 ellipsoid; areas in a Lambert azimuthal equal-area projection centred on what
is measured, never from degrees and never from Web Mercator units.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import shapely
from affine import Affine
from pyproj import CRS as ProjCRS
from pyproj import Geod
from rasterio.crs import CRS
from shapely.geometry import shape

from rsvlm.bands import RasterError
from rsvlm.geo.crs import WGS84, as_affine, as_crs, to_wgs84, transformer
from rsvlm.geo.vector import check_lonlat, map_coords

_GEOD = Geod(ellps="WGS84")


def ground_sample_distance(transform: Affine, crs: CRS | None, width: int, height: int) -> float | None:
    """Metres on the ground per pixel at the centre of the grid, None without a CRS.

    Measured on the ellipsoid (geodesic lengths of one pixel step east and south). A projected CRS whose
    nominal pixel size agrees within 1 % (UTM and other local projections: scale factor ~0.9996-1.001) reports
    the nominal size, which is what users know it by; one that does not (Web Mercator away from the equator:
    a "10 m" pixel is 5 m at 60° N) reports the ground size, which is what the GSD means to a model or a user.
    """
    if crs is None:
        return None
    step_x = math.hypot(transform.a, transform.d)
    step_y = math.hypot(transform.b, transform.e)
    nominal = None
    if crs.is_projected:
        try:
            nominal = (step_x + step_y) / 2 * float(crs.linear_units_factor[1])
        except Exception:  # unusual units: measure on the ellipsoid only
            nominal = None
    try:
        cx, cy = width / 2, height / 2
        xs, ys = zip(transform @ (cx, cy), transform @ (cx + 1, cy), transform @ (cx, cy + 1))
        lon, lat = to_wgs84(crs).transform(np.array(xs), np.array(ys))
        _, _, dx = _GEOD.inv(lon[0], lat[0], lon[1], lat[1])
        _, _, dy = _GEOD.inv(lon[0], lat[0], lon[2], lat[2])
        measured = float((dx + dy) / 2)
    except Exception:  # outside the projection's domain: the nominal size is all there is
        return nominal
    if not math.isfinite(measured) or measured <= 0:
        return nominal
    if nominal is not None and abs(measured / nominal - 1) < 0.01:
        return nominal
    return measured


def _equal_area_crs(lon: float, lat: float) -> ProjCRS:
    return ProjCRS.from_proj4(f"+proj=laea +lat_0={lat:.6f} +lon_0={lon:.6f} +ellps=WGS84 +units=m +no_defs")


def area_m2(geometry: dict | Any, crs: CRS | str | None = None) -> float:
    """Area in m² of a polygon geometry: GeoJSON/shapely in EPSG:4326, or shapely/GeoJSON in ``crs`` units.

    Computed in a Lambert azimuthal equal-area projection centred on the geometry (exact areas on the WGS84
    ellipsoid), after densifying edges so long ones follow the ground. Never from degrees or Mercator metres.
    """
    geom = shape(geometry) if isinstance(geometry, dict) else geometry
    if geom.is_empty:
        return 0.0
    crs = as_crs(crs)
    if crs is not None and crs != WGS84:
        geom = _densify(geom)
        geom = map_coords(to_wgs84(crs).transform, geom)
    else:
        check_lonlat(geom)
        geom = _densify(geom)
    centre = geom.envelope.centroid
    laea = transformer(WGS84.to_wkt(), _equal_area_crs(centre.x, centre.y).to_wkt())
    return float(map_coords(laea.transform, geom).area)


def _densify(geom: Any, pieces: int = 64) -> Any:
    minx, miny, maxx, maxy = geom.bounds
    extent = max(maxx - minx, maxy - miny)
    return shapely.segmentize(geom, extent / pieces) if extent > 0 else geom


def mask_area_m2(
    mask: np.ndarray, transform: Affine | Sequence[float], crs: CRS | str | None
) -> float | None:
    """Ground area in m² of the True pixels of a mask on the grid of ``transform`` (None without a CRS).

    Each row's pixel area is measured in an equal-area projection centred on the mask's grid, so geographic
    (degree) grids get the latitude right row by row.
    """
    crs = as_crs(crs)
    if crs is None:
        return None
    m = np.asarray(mask).astype(bool)
    if m.ndim != 2:
        raise RasterError(f"a mask must be 2-D [H, W], got shape {m.shape}")
    per_row = m.sum(axis=1)
    rows = np.nonzero(per_row)[0]
    if rows.size == 0:
        return 0.0
    affine = as_affine(transform)
    cx = float(np.nonzero(m.any(axis=0))[0].mean()) + 0.5
    corners_x = np.array([cx - 0.5, cx + 0.5, cx + 0.5, cx - 0.5])
    xs = np.tile(corners_x, (rows.size, 1))  # [R, 4]
    ys = rows[:, None] + np.array([0.0, 0.0, 1.0, 1.0])[None]  # [R, 4]
    wx, wy = affine @ (xs, ys)
    lon, lat = to_wgs84(crs).transform(np.asarray(wx), np.asarray(wy))
    laea = transformer(WGS84.to_wkt(), _equal_area_crs(float(np.mean(lon)), float(np.mean(lat))).to_wkt())
    ex, ey = laea.transform(lon, lat)
    ex, ey = np.asarray(ex), np.asarray(ey)
    areas = 0.5 * np.abs((ex * np.roll(ey, -1, axis=1) - np.roll(ex, -1, axis=1) * ey).sum(axis=1))  # [R]
    return float((areas * per_row[rows]).sum())
