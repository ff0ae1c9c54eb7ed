"""Regions from the model's grid to the source raster: pixels of the read image, then CRS geometry and area.

A region the model (or a cut mask) gives is on the 0-1000 grid (boxes, oriented boxes) or the model-input pixels
(masks); ``to_source`` maps it through the read's ``ImageMeta`` onto the pixels of the image read, computes its
geometry and area in the image's CRS, and reports pixel coordinates in the source raster (a window or an overview
read is offset and scaled).
"""

from __future__ import annotations

import numpy as np

from rsvlm import geo
from rsvlm.grounding import Region


def to_source(region: Region, image: geo.GeoImage, meta, warnings: list[str]) -> Region:
    """Grid / model-input coordinates -> pixels of the read image -> CRS geometry and area; pixel
    coordinates are then reported in the source raster (a window or overview read is offset and scaled)."""
    geometries = []
    if region.box is not None:
        x1, y1 = meta.grid_to_source(region.box.x1, region.box.y1)
        x2, y2 = meta.grid_to_source(region.box.x2, region.box.y2)
        region.pixel_box = (x1, y1, x2, y2)
    if region.obb is not None:
        corners = [meta.grid_to_source(float(x), float(y)) for x, y in region.obb.corners()]
        region.pixel_polygon = [(float(x), float(y)) for x, y in corners]
    if region.mask is not None:
        region.mask = np.asarray(meta.mask_to_source(region.mask)).astype(bool)
        if image.valid is not None:
            region.mask &= image.valid
        if region.pixel_box is None and region.mask.any():
            rows, cols = np.nonzero(region.mask)
            region.pixel_box = (
                float(cols.min()),
                float(rows.min()),
                float(cols.max() + 1),
                float(rows.max() + 1),
            )
    if image.crs is None:
        if "the image has no CRS: regions are in pixels only" not in warnings:
            warnings.append("the image has no CRS: regions are in pixels only")
    else:
        has_mask = region.mask is not None and region.mask.any()
        if has_mask:
            geometries = geo.mask_to_polygons(region.mask, image.transform, image.crs)
        elif region.pixel_polygon is not None:
            geometries = [geo.pixel_polygon_to_geometry(region.pixel_polygon, image.transform, image.crs)]
        elif region.pixel_box is not None:
            geometries = [geo.pixel_box_to_geometry(region.pixel_box, image.transform, image.crs)]
        if geometries:
            region.geometry = merge_geometries(geometries)
        if has_mask:  # the pixels themselves, not their simplified outline
            region.area_m2 = geo.mask_area_m2(region.mask, image.transform, image.crs)
        elif region.geometry is not None:
            region.area_m2 = float(geo.area_m2(region.geometry))
    region.pixel_box = _to_raster_pixels_box(region.pixel_box, image)
    if region.pixel_polygon is not None:
        region.pixel_polygon = [_to_raster_pixels(x, y, image) for x, y in region.pixel_polygon]
    return region


def merge_geometries(geometries: list[dict]) -> dict | None:
    return geometries[0] if len(geometries) == 1 else geo.union_geometries(geometries)


def _to_raster_pixels(x: float, y: float, image: geo.GeoImage) -> tuple[float, float]:
    sx, sy = image.to_source_pixels(np.array([[x, y]]))[0]
    return (float(sx), float(sy))


def _to_raster_pixels_box(box, image: geo.GeoImage):
    if box is None:
        return None
    x1, y1 = _to_raster_pixels(box[0], box[1], image)
    x2, y2 = _to_raster_pixels(box[2], box[3], image)
    return (x1, y1, x2, y2)
