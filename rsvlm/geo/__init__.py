"""Geo I/O: read rasters (windows, overviews, bands, nodata), align two dates, and map pixels to the world.

The data flow this package serves::

    GeoTIFF / PNG / JPEG --read_image--> GeoImage (raw float32 bands + valid mask + CRS + window transform)
    GeoImage --rgb()/composite()--> float32 [3, H, W] in [0, 1] for an RGB-trained vision tower
    pixels (box / polygon / mask) --transform--> CRS --pyproj--> GeoJSON in EPSG:4326 (RFC 7946), areas in m²

One concern per file (callers use ``from rsvlm import geo`` and the names re-exported here):

    gdal.py     opening a raster; GDAL failures as one-line errors
    read.py     header facts and pixel reads (bands, windows, overviews, nodata, palettes) -> GeoImage
    image.py    GeoImage: the pixels of one read, what a model sees, outputs on its grid
    align.py    a second date read or warped onto the first one's grid
    crs.py      CRS / transform arguments, cached transformers to and from EPSG:4326
    vector.py   pixels <-> EPSG:4326 GeoJSON: boxes, polygons, traced masks, unions
    measure.py  metres on the ground: GSD and areas in an equal-area projection
    masks.py    SparseMask: masks on grids of any size, kept by block
    write.py    mask GeoTIFFs and GeoJSON, written atomically

Conventions:

- Pixel coordinates are (x = column, y = row) with (0, 0) the top-left corner of the top-left pixel; a pixel box
  is (x1, y1, x2, y2) in that frame. ``GeoImage.transform`` maps pixels of the *array read* (after windowing and
  decimation) to CRS units; with no CRS it maps them to pixels of the source file instead, so a box always
  maps back to the source.
- Every bad input raises ``RasterError`` (a ``ValueError``) with a one-line message, never a GDAL traceback.
- A raster bigger than ``max_pixels`` is never read whole: the error names its size and suggests a window or an
  overview read. Nothing is allocated from what a header claims before that check.
- Areas come from an equal-area projection (Lambert azimuthal equal-area centred on the geometry), never from
  degrees and never from Web Mercator units.
- Writes go to a temporary file in the destination folder and are moved into place with ``os.replace``.
"""

from rsvlm.bands import RasterError
from rsvlm.geo.align import align_pair
from rsvlm.geo.crs import WGS84
from rsvlm.geo.image import GeoImage
from rsvlm.geo.masks import SparseMask
from rsvlm.geo.measure import area_m2, mask_area_m2
from rsvlm.geo.read import DEFAULT_MAX_PIXELS, RasterInfo, inspect_raster, preset_names, read_image
from rsvlm.geo.vector import (
    geometry_to_pixels,
    mask_to_pixel_polygons,
    mask_to_polygons,
    pixel_box_to_geometry,
    pixel_polygon_to_geometry,
    pixel_shapes_to_geometries,
    union_geometries,
)
from rsvlm.geo.write import atomic_write, write_geojson, write_mask_geotiff, write_masks_geotiff

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "WGS84",
    "GeoImage",
    "RasterError",
    "RasterInfo",
    "align_pair",
    "area_m2",
    "atomic_write",
    "geometry_to_pixels",
    "inspect_raster",
    "mask_area_m2",
    "mask_to_pixel_polygons",
    "mask_to_polygons",
    "SparseMask",
    "pixel_box_to_geometry",
    "pixel_polygon_to_geometry",
    "pixel_shapes_to_geometries",
    "preset_names",
    "union_geometries",
    "read_image",
    "write_geojson",
    "write_mask_geotiff",
    "write_masks_geotiff",
]
