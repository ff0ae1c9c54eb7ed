"""Vector labels -> features: GeoJSON (json + shapely), shapefiles (pyshp), and pixel formats (Pascal VOC
xml, DeepForest CSV, xBD JSON with pixel WKT, GeoPixelD polygons with their grounded caption; one file, an index
or a folder of per-image GeoPixelD or xBD files; see ``geopixeld.py``). Also the one rasteriser every vector
source uses."""

from __future__ import annotations

import csv
import json
import logging
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from rasterio.crs import CRS
from rasterio.features import rasterize
from scipy import ndimage

from . import geopixeld
from .errors import SourceError
from .raster import Grid

log = logging.getLogger(__name__)


@dataclass
class VectorFeature:
    geom: shapely.Geometry
    props: dict
    label: str | None = None  # a class the format itself carries (VOC <name>, xBD feature_type)
    image: str | None = None  # the image file a pixel-coordinate feature belongs to


@dataclass
class VectorLayer:
    """Features with their CRS; ``crs is None`` means the coordinates are pixels of the named image."""

    path: str
    features: list[VectorFeature]
    crs: CRS | None
    pixel: bool = False
    meta: dict = field(default_factory=dict)


def read_vectors(path: str) -> VectorLayer:
    """Parsed once per process and file version (the cache key includes the modification time)."""
    p = Path(path)
    return _read_vectors_cached(str(p), p.stat().st_mtime if p.exists() else 0.0)


@lru_cache(maxsize=8)
def _read_vectors_cached(path: str, mtime: float) -> VectorLayer:
    p = Path(path)
    if not p.exists():
        raise SourceError(f"vector file {path} does not exist")
    suffix = p.suffix.lower()
    try:
        if p.is_dir():
            return _read_json_folder(p)
        if suffix in (".geojson", ".json"):
            return _read_json(p)
        if suffix == ".shp":
            return _read_shapefile(p)
        if suffix == ".xml":
            return _read_voc(p)
        if suffix == ".csv":
            return _read_box_csv(p)
    except (KeyError, ValueError, TypeError, ET.ParseError, shapely.errors.GEOSException) as e:
        if isinstance(e, SourceError):
            raise
        raise SourceError(f"cannot read vector file {path}: {type(e).__name__}: {e}") from None
    raise SourceError(
        f"vector file {path}: unsupported format {suffix!r} (GeoJSON, .shp, VOC .xml, box .csv, "
        "GeoPixelD or xBD .json, or a folder of per-image GeoPixelD or xBD .json)"
    )


def _geojson_crs(obj: dict) -> CRS:
    name = (((obj.get("crs") or {}).get("properties") or {}).get("name")) or "EPSG:4326"
    if "CRS84" in name.upper():
        return CRS.from_epsg(4326)
    try:
        return CRS.from_user_input(name)
    except Exception:
        raise SourceError(f"unknown CRS {name!r}") from None


def _geopixeld_layer(p: Path, feats: list[dict]) -> VectorLayer:
    out = [VectorFeature(f["geom"], f["props"], label=f["label"], image=f["image"]) for f in feats]
    return VectorLayer(str(p), out, None, pixel=True, meta={"format": "geopixeld"})


def _read_json_folder(p: Path) -> VectorLayer:
    """A folder of per-image annotation files: GeoPixelD's ``train/`` layout or xBD's ``labels/`` (one pixel-WKT
    JSON per image; each feature keeps its image's name, so a scene gets only its own outlines)."""
    files = sorted(f for f in p.glob("*.json") if f.is_file())
    if not files:
        raise SourceError(
            f"vector folder {p} holds no .json files (a folder is read as per-image GeoPixelD or xBD annotations)"
        )
    grounded: list[dict] = []
    outlines: list[VectorFeature] = []
    kinds = set()
    for f in files:
        try:
            obj = json.loads(f.read_text())
        except json.JSONDecodeError as e:
            raise SourceError(f"cannot read {f}: {e}") from None
        if geopixeld.is_geopixeld_index(obj):
            continue  # an index next to its per-image files would read them twice
        if _is_xbd(obj):
            kinds.add("xBD")
            outlines += _xbd_features(obj, default_image=f.with_suffix(".png").name)
        elif geopixeld.is_geopixeld(obj):
            kinds.add("GeoPixelD")
            grounded += geopixeld.read_geopixeld_file(f, obj)
    if len(kinds) > 1:
        raise SourceError(f"vector folder {p} mixes GeoPixelD and xBD annotations; give each its own folder")
    if kinds == {"xBD"}:
        return VectorLayer(str(p), outlines, None, pixel=True, meta={"format": "xbd"})
    if not grounded:
        raise SourceError(
            f"vector folder {p}: no per-image GeoPixelD or xBD annotation among its .json files"
        )
    return _geopixeld_layer(p, grounded)


def _is_xbd(obj: Any) -> bool:
    """xBD: ``features.xy`` holds pixel-WKT polygons of one image (``metadata.img_name``)."""
    return isinstance(obj, dict) and isinstance(obj.get("features"), dict) and "xy" in obj["features"]


def _xbd_features(obj: dict, default_image: str | None = None) -> list[VectorFeature]:
    img = (obj.get("metadata") or {}).get("img_name") or default_image
    return [
        VectorFeature(shapely.from_wkt(f["wkt"]), dict(f.get("properties", {})),
                      label=(f.get("properties") or {}).get("feature_type"), image=img)
        for f in obj["features"]["xy"]
    ]  # fmt: skip


def _read_json(p: Path) -> VectorLayer:
    obj = json.loads(p.read_text())
    if geopixeld.is_geopixeld(obj) or geopixeld.is_geopixeld_index(obj):
        return _geopixeld_layer(p, geopixeld.read_geopixeld(p, obj))
    if _is_xbd(obj):
        return VectorLayer(str(p), _xbd_features(obj), None, pixel=True, meta=obj.get("metadata") or {})
    feats = obj.get("features") if isinstance(obj, dict) else None
    if obj.get("type") == "Feature":
        feats = [obj]
    if not isinstance(feats, list):
        raise SourceError(f"{p}: not a GeoJSON FeatureCollection (no 'features' list)")
    out = []
    for f in feats:
        if not f.get("geometry"):
            continue
        out.append(VectorFeature(shapely.geometry.shape(f["geometry"]), dict(f.get("properties") or {})))
    return VectorLayer(str(p), out, _geojson_crs(obj))


def _read_shapefile(p: Path) -> VectorLayer:
    import shapefile  # pyshp

    prj = p.with_suffix(".prj")
    crs = CRS.from_wkt(prj.read_text()) if prj.is_file() else None
    if crs is None:
        log.warning("%s has no .prj; assuming EPSG:4326 coordinates", p)
        crs = CRS.from_epsg(4326)
    out = []
    with shapefile.Reader(str(p)) as r:
        for sr in r.iterShapeRecords():
            if sr.shape.shapeType == shapefile.NULL:
                continue
            out.append(VectorFeature(shapely.geometry.shape(sr.shape.__geo_interface__), sr.record.as_dict()))
    return VectorLayer(str(p), out, crs)


def _read_voc(p: Path) -> VectorLayer:
    root = ET.parse(p).getroot()
    img = root.findtext("filename")
    out = []
    for o in root.iter("object"):
        name = (o.findtext("name") or "").strip()
        bb, rb = o.find("bndbox"), o.find("robndbox")
        if bb is not None:
            x0, y0, x1, y1 = (float(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
            geom = shapely.box(x0, y0, x1, y1)
        elif rb is not None:  # DIOR-R / DOTA-style oriented box: four corners in pixel coordinates
            corners = ("left_top", "right_top", "right_bottom", "left_bottom")
            geom = shapely.Polygon(
                [(float(rb.findtext(f"x_{c}")), float(rb.findtext(f"y_{c}"))) for c in corners]
            )
        else:
            continue
        out.append(VectorFeature(geom, {"name": name}, label=name.lower() or None, image=img))
    return VectorLayer(str(p), out, None, pixel=True)


def _read_box_csv(p: Path) -> VectorLayer:
    """DeepForest-style CSV: image_path, xmin, xmax, ymin, ymax, label in pixel coordinates (any column order)."""
    out = []
    with open(p, newline="") as f:
        for row in csv.DictReader(f):
            x0, x1, y0, y1 = (float(row[k]) for k in ("xmin", "xmax", "ymin", "ymax"))
            label = (row.get("label") or "").strip()
            out.append(
                VectorFeature(shapely.box(x0, y0, x1, y1), dict(row),
                              label=label.lower() if label and not label.isdigit() else None,
                              image=row.get("image_path") or None)
            )  # fmt: skip
    return VectorLayer(str(p), out, None, pixel=True)


def rasterize_geoms(geoms: list[shapely.Geometry], grid: Grid) -> list[np.ndarray]:
    """One [H, W] bool mask per geometry on ``grid`` (pixels whose centre is inside).

    All geometries are burnt into one id map at once (fast); a geometry that a later one hides for more than
    half of its area (overlapping features) is burnt again on its own so it keeps its full mask.
    """
    shape = (grid.height, grid.width)
    if not geoms:
        return []
    ids = rasterize(((g, i + 1) for i, g in enumerate(geoms)), out_shape=shape, transform=grid.transform,
                    fill=0, dtype="int32")  # fmt: skip
    objs = ndimage.find_objects(ids, max_label=len(geoms))
    px = abs(grid.transform.a * grid.transform.e - grid.transform.b * grid.transform.d) or 1.0
    frame = shapely.box(*grid.bounds)
    masks = []
    for i, g in enumerate(geoms):
        m = np.zeros(shape, dtype=bool)
        sl = objs[i]
        if sl is not None:
            m[sl] = ids[sl] == i + 1
        expected = shapely.intersection(g, frame).area / px
        if m.sum() < 0.5 * expected:
            m = rasterize([(g, 1)], out_shape=shape, transform=grid.transform, fill=0, dtype="uint8") > 0
        masks.append(m)
    return masks
