"""Pixels -> CRS -> EPSG:4326: boxes, polygons and masks as GeoJSON (RFC 7946), and lon/lat back to pixels.

Pixel coordinates are (x = column, y = row) with (0, 0) the top-left corner of the top-left pixel. Output
polygons follow the right-hand rule (exterior CCW, holes CW) and are never invalid or empty.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import rasterio.features
import shapely
from affine import Affine
from rasterio.crs import CRS
from shapely.geometry import MultiPolygon, Polygon, mapping, shape
from shapely.geometry.polygon import orient
from shapely.ops import unary_union

from rsvlm.bands import RasterError
from rsvlm.geo.crs import as_affine, as_crs, from_wgs84, to_wgs84

logger = logging.getLogger(__name__)


def map_coords(func: Any, geom: Any) -> Any:
    """Apply ``func(xs, ys) -> (xs, ys)`` (a pyproj ``Transformer.transform`` or an affine map) to every vertex."""
    return shapely.transform(geom, func, interleaved=False)


def _geojson(geom: Any) -> dict:
    """A shapely geometry -> a GeoJSON dict with lists (not tuples), so it equals its own JSON round trip."""
    return json.loads(json.dumps(mapping(geom)))


def pixel_polygon_to_geometry(
    points: Sequence[Sequence[float]] | np.ndarray, transform: Affine | Sequence[float], crs: CRS | str | None
) -> dict | None:
    """A pixel ring [(x, y), ...] in the frame of ``transform`` -> GeoJSON Polygon in EPSG:4326 (CCW exterior,
    RFC 7946). None when there is no CRS (the caller keeps the pixel polygon and warns)."""
    crs = as_crs(crs)
    if crs is None:
        return None
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) < 3 or not np.isfinite(pts).all():
        raise RasterError(f"a pixel polygon needs at least 3 finite (x, y) points, got shape {pts.shape}")
    xs, ys = as_affine(transform) @ (pts[:, 0], pts[:, 1])
    lon, lat = to_wgs84(crs).transform(np.asarray(xs), np.asarray(ys))
    poly = Polygon(np.stack([lon, lat], axis=1))
    if not poly.is_valid:
        poly = shapely.make_valid(poly)
    return _geojson(_orient(poly))


def pixel_box_to_geometry(
    box_xyxy: Sequence[float], transform: Affine | Sequence[float], crs: CRS | str | None
) -> dict | None:
    """A pixel box (x1, y1, x2, y2) in the frame of ``transform`` -> GeoJSON Polygon in EPSG:4326."""
    values = [float(v) for v in box_xyxy]
    if len(values) != 4:
        raise RasterError(f"a box needs 4 numbers (x1, y1, x2, y2), got {values!r}")
    x1, x2 = sorted(values[0::2])
    y1, y2 = sorted(values[1::2])
    return pixel_polygon_to_geometry([(x1, y1), (x2, y1), (x2, y2), (x1, y2)], transform, crs)


def _orient(geom: Any) -> Any:
    """Right-hand rule (exterior CCW, holes CW) for polygons and multipolygons; other types pass through."""
    if geom.geom_type == "Polygon":
        return orient(geom, 1.0)
    if geom.geom_type in ("MultiPolygon", "GeometryCollection"):
        return type(geom)([_orient(g) for g in geom.geoms])
    return geom


def check_lonlat(geom: Any, what: str = "geometry") -> None:
    minx, miny, maxx, maxy = geom.bounds
    if not (-180.0001 <= minx and maxx <= 180.0001 and -90.0001 <= miny and maxy <= 90.0001):
        raise RasterError(
            f"{what} has coordinates outside lon/lat range ({minx:.1f}, {miny:.1f}, {maxx:.1f}, {maxy:.1f}); "
            "GeoJSON must be EPSG:4326 (pass crs= for projected coordinates)"
        )


def geometry_to_pixels(
    geometry: dict | Any, transform: Affine | Sequence[float], crs: CRS | str | None
) -> dict:
    """The inverse: a GeoJSON geometry in EPSG:4326 -> the same geometry type in pixel coordinates (x, y) of
    ``transform``."""
    crs = as_crs(crs)
    if crs is None:
        raise RasterError("cannot map lon/lat to pixels for an image without a CRS")
    geom = shape(geometry) if isinstance(geometry, dict) else geometry
    check_lonlat(geom)
    inverse = ~as_affine(transform)
    to_crs = from_wgs84(crs)

    def to_pixels(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cx, cy = to_crs.transform(np.asarray(x), np.asarray(y))
        px, py = inverse @ (np.asarray(cx), np.asarray(cy))
        return np.asarray(px), np.asarray(py)

    return _geojson(map_coords(to_pixels, geom))


def mask_shapes(mask: np.ndarray, transform: Affine) -> list[Any]:
    """Polygons (shapely, in ``transform``'s units) of the True pixels of a 2-D mask, 4-connected."""
    m = np.asarray(mask)
    if m.ndim != 2:
        raise RasterError(f"a mask must be 2-D [H, W], got shape {m.shape}")
    m = m.astype(bool)
    if not m.any():
        return []
    return [shape(g) for g, _ in rasterio.features.shapes(m.astype(np.uint8), mask=m, transform=transform)]


def simplify_and_filter(
    polys: list[Any], transform: Affine, simplify_px: float, min_area_px: float
) -> list[Any]:
    pixel_area = abs(transform.determinant)
    tolerance = simplify_px * math.sqrt(pixel_area)
    out = []
    for poly in polys:
        if poly.area < min_area_px * pixel_area:
            continue
        if tolerance > 0:
            poly = poly.simplify(tolerance, preserve_topology=True)
        if not poly.is_empty and poly.area > 0:
            out.append(poly)
    out.sort(key=lambda p: -p.area)
    return out


def mask_to_polygons(
    mask: np.ndarray,
    transform: Affine | Sequence[float],
    crs: CRS | str | None,
    simplify_px: float = 0.5,
    min_area_px: float = 4,
) -> list[dict]:
    """A boolean mask [H, W] on the grid of ``transform`` -> GeoJSON Polygons in EPSG:4326, largest first.

    Polygons are traced on pixel edges (``rasterio.features.shapes``) in pixel coordinates, parts under
    ``min_area_px`` pixels are dropped, the rest simplified by ``simplify_px`` pixels (topology preserved, so
    never invalid or empty), then mapped through ``transform``, projected and oriented (right-hand rule).
    Without a CRS there is no geometry: an empty list (see ``mask_to_pixel_polygons``).
    """
    crs = as_crs(crs)
    if crs is None:
        logger.warning("mask has no CRS: no GeoJSON polygons (use mask_to_pixel_polygons)")
        return []
    identity = Affine.identity()
    polys = simplify_and_filter(mask_shapes(mask, identity), identity, simplify_px, min_area_px)
    return pixel_shapes_to_geometries(polys, transform, crs)


def pixel_shapes_to_geometries(
    polygons: Iterable[Any], transform: Affine | Sequence[float], crs: CRS | str | None
) -> list[dict]:
    """Shapely polygons in pixel coordinates of ``transform`` -> GeoJSON Polygons in EPSG:4326 (RFC 7946:
    exterior CCW, holes CW). A part the projection bends invalid is repaired; nothing empty is returned."""
    crs = as_crs(crs)
    if crs is None:
        return []
    affine = as_affine(transform)
    to_wgs = to_wgs84(crs)

    def to_lonlat(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cx, cy = affine @ (np.asarray(x), np.asarray(y))
        lon, lat = to_wgs.transform(np.asarray(cx), np.asarray(cy))
        return np.asarray(lon), np.asarray(lat)

    out = []
    for poly in polygons:
        mapped = map_coords(to_lonlat, poly)
        for part in polygonal_parts(mapped if mapped.is_valid else shapely.make_valid(mapped)):
            out.append(_geojson(_orient(part)))
    return out


def polygonal_parts(geom: Any) -> list[Any]:
    """The non-empty Polygons of any geometry (make_valid and unions may add lines or points)."""
    if geom.is_empty:
        return []
    if geom.geom_type == "Polygon":
        return [geom] if geom.area > 0 else []
    if geom.geom_type in ("MultiPolygon", "GeometryCollection"):
        return [p for g in geom.geoms for p in polygonal_parts(g)]
    return []


def union_geometries(geometries: Iterable[dict | Any]) -> dict | None:
    """The union of GeoJSON (EPSG:4326) polygons as one Polygon or MultiPolygon, oriented per RFC 7946.

    GEOS returns unions with clockwise shells; a reader that trusts the right-hand rule would take them for
    holes, so every union is re-oriented here. None when nothing polygonal is left.
    """
    shapes = [shape(g) if isinstance(g, dict) else g for g in geometries]
    parts = polygonal_parts(unary_union(shapes)) if shapes else []
    if not parts:
        return None
    merged = parts[0] if len(parts) == 1 else MultiPolygon(parts)
    return _geojson(_orient(merged))


def mask_to_pixel_polygons(
    mask: np.ndarray, simplify_px: float = 0.5, min_area_px: float = 4
) -> list[list[tuple[float, float]]]:
    """Exterior rings [(x, y), ...] in pixel coordinates of a mask's parts, largest first (``Region.pixel_polygon``
    for images with or without a CRS)."""
    polys = simplify_and_filter(
        mask_shapes(mask, Affine.identity()), Affine.identity(), simplify_px, min_area_px
    )
    return [[(float(x), float(y)) for x, y in p.exterior.coords] for p in polys]
