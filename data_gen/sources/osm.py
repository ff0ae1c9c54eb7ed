"""OpenStreetMap extracts (``.osm.pbf``, ``.osm``, ``.osm.bz2``) -> georeferenced features with human names.

Buildings, landuse / natural / leisure areas and water are polygons; roads, railways and waterways are lines
buffered to a width that depends on their class (a motorway ~12 m, a residential road ~6 m, a footway ~2 m, or
``lanes`` × 3.5 m). Each feature keeps its tags, its ``name`` and a coarse ``category`` (building, road, water,
forest, grassland, farmland, built-up area, ...) that is matched to the taxonomy's classes by name/synonym.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import osmium
import shapely
from pyproj import CRS, Transformer
from tqdm import tqdm

from .errors import SourceError

log = logging.getLogger(__name__)

ROAD_WIDTH_M = {
    "motorway": 12.0, "trunk": 10.0, "primary": 9.0, "secondary": 8.0, "tertiary": 7.0, "residential": 6.0,
    "unclassified": 5.0, "living_street": 5.0, "service": 4.0, "pedestrian": 4.0, "track": 3.0,
    "footway": 2.0, "path": 2.0, "cycleway": 2.0, "bridleway": 2.0, "steps": 2.0,
}  # fmt: skip
ROAD_NAME = {
    "motorway": "motorway", "trunk": "trunk road", "primary": "primary road", "secondary": "secondary road",
    "tertiary": "tertiary road", "residential": "residential road", "unclassified": "minor road",
    "living_street": "living street", "service": "service road", "pedestrian": "pedestrian street",
    "track": "track", "footway": "footpath", "path": "path", "cycleway": "cycle path", "bridleway": "bridleway",
    "steps": "steps",
}  # fmt: skip
WATERWAY = {"river": (20.0, "river"), "canal": (10.0, "canal"), "stream": (3.0, "stream"),
            "ditch": (2.0, "ditch"), "drain": (2.0, "drain"), "brook": (2.0, "brook")}  # fmt: skip
RAILWAY = {"rail": (4.0, "railway"), "light_rail": (4.0, "light railway"), "narrow_gauge": (3.0, "narrow-gauge railway"),
           "tram": (3.0, "tram line"), "subway": (4.0, "subway line")}  # fmt: skip
# (key, value) -> (human name, category); value None matches any value of the key.
AREA = {
    ("landuse", "farmland"): ("farmland", "farmland"), ("landuse", "farmyard"): ("farmyard", "farmland"),
    ("landuse", "orchard"): ("orchard", "farmland"), ("landuse", "vineyard"): ("vineyard", "farmland"),
    ("landuse", "allotments"): ("allotments", "farmland"), ("landuse", "meadow"): ("meadow", "grassland"),
    ("landuse", "grass"): ("grass", "grassland"), ("landuse", "village_green"): ("village green", "grassland"),
    ("landuse", "recreation_ground"): ("recreation ground", "grassland"),
    ("landuse", "cemetery"): ("cemetery", "grassland"), ("landuse", "forest"): ("forest", "forest"),
    ("landuse", "residential"): ("residential area", "built-up area"),
    ("landuse", "commercial"): ("commercial area", "built-up area"),
    ("landuse", "industrial"): ("industrial area", "built-up area"),
    ("landuse", "retail"): ("retail area", "built-up area"),
    ("landuse", "construction"): ("construction site", "bare ground"),
    ("landuse", "railway"): ("railway land", "built-up area"), ("landuse", "garages"): ("garages", "built-up area"),
    ("landuse", "brownfield"): ("brownfield", "bare ground"), ("landuse", "quarry"): ("quarry", "bare ground"),
    ("landuse", "reservoir"): ("reservoir", "water"), ("landuse", "basin"): ("basin", "water"),
    ("natural", "wood"): ("woodland", "forest"), ("natural", "scrub"): ("scrub", "scrub"),
    ("natural", "heath"): ("heath", "scrub"), ("natural", "grassland"): ("grassland", "grassland"),
    ("natural", "wetland"): ("wetland", "wetland"), ("natural", "bare_rock"): ("bare rock", "bare ground"),
    ("natural", "scree"): ("scree", "bare ground"), ("natural", "sand"): ("sand", "bare ground"),
    ("natural", "beach"): ("beach", "bare ground"), ("natural", "glacier"): ("glacier", "snow and ice"),
    ("natural", "water"): ("water body", "water"), ("waterway", "riverbank"): ("river", "water"),
    ("leisure", "park"): ("park", "grassland"), ("leisure", "garden"): ("garden", "grassland"),
    ("leisure", "pitch"): ("sports pitch", "grassland"), ("leisure", "golf_course"): ("golf course", "grassland"),
    ("leisure", "playground"): ("playground", "grassland"), ("leisure", "swimming_pool"): ("swimming pool", "water"),
    ("leisure", "stadium"): ("stadium", "built-up area"), ("leisure", "track"): ("running track", "paved area"),
    ("amenity", "parking"): ("car park", "paved area"),
}  # fmt: skip
WATER_NAME = {"lake": "lake", "pond": "pond", "river": "river", "reservoir": "reservoir", "canal": "canal",
              "basin": "basin", "lagoon": "lagoon", "oxbow": "oxbow lake", "stream": "stream"}  # fmt: skip
BUILDING_NAME = {"yes": "building", "house": "house", "detached": "house", "residential": "residential building",
                 "apartments": "apartment building", "garage": "garage", "garages": "garages", "shed": "shed",
                 "church": "church", "school": "school", "commercial": "commercial building", "retail": "shop",
                 "industrial": "industrial building", "farm_auxiliary": "farm building", "barn": "barn",
                 "warehouse": "warehouse", "hut": "hut", "roof": "roof", "terrace": "terraced houses"}  # fmt: skip
# Category -> taxonomy class names to try, in order (the taxonomy's synonyms are searched too).
CATEGORY_CLASSES = {
    "building": ("building",),
    "road": ("road", "impervious surfaces", "developed space", "built-up", "built area"),
    "railway": ("railway", "developed space", "built-up", "built area"),
    "water": ("water", "permanent water bodies"),
    "forest": ("forest", "woodland", "tree cover", "trees", "tree"),
    "scrub": ("shrubland", "shrub and scrub", "scrub", "grassland", "low vegetation", "rangeland"),
    "grassland": ("grassland", "grass", "low vegetation", "rangeland"),
    "farmland": ("farmland", "agriculture", "cropland", "crops", "agriculture land"),
    "built-up area": ("built-up area", "built-up", "built area", "developed space"),
    "paved area": ("impervious surfaces", "developed space", "paved area", "built-up area", "built-up"),
    "bare ground": ("bare ground", "barren", "bareland", "bare / sparse vegetation"),
    "wetland": ("wetland", "herbaceous wetland", "flooded vegetation"),
    "snow and ice": ("snow and ice", "glacier"),
}
# Burn order (later wins): broad areas, then water, then lines, then buildings.
LAYER = {"built-up area": 0, "farmland": 0, "grassland": 1, "scrub": 1, "forest": 1, "bare ground": 1,
         "wetland": 1, "snow and ice": 1, "paved area": 2, "water": 3, "railway": 4, "road": 5, "building": 6}  # fmt: skip
KEEP_TAGS = ("name", "building", "highway", "railway", "waterway", "water", "landuse", "natural", "leisure",
             "amenity", "lanes", "width", "surface", "bridge", "tunnel", "layer", "building:levels", "height")  # fmt: skip


@dataclass
class OsmFeature:
    """One OSM object: geometry in lon/lat (lines not yet buffered), human label, category and tags."""

    geom: shapely.Geometry
    label: str
    category: str
    kind: str  # the OSM key that made it a feature (building, highway, landuse...)
    tags: dict[str, str]
    osm_id: str
    width_m: float = 0.0  # > 0 for lines: buffered to this width in metres
    name: str | None = None
    extra: dict = field(default_factory=dict)


def _width(tags: dict[str, str], default: float) -> float:
    for key, scale in (("width", 1.0), ("lanes", 3.5)):
        try:
            return max(1.0, float(tags[key].split()[0].replace(",", ".")) * scale)
        except (KeyError, ValueError, IndexError):
            continue
    return default


def classify_area(tags: dict[str, str]) -> tuple[str, str, str] | None:
    """(label, category, kind) for an area's tags, or None when it is not a feature we draw."""
    b = tags.get("building")
    if b and b != "no":
        return BUILDING_NAME.get(b, "building"), "building", "building"
    if tags.get("natural") == "water" or tags.get("water"):
        w = tags.get("water")
        return WATER_NAME.get(w or "", "water body"), "water", "natural"
    for key in ("landuse", "natural", "leisure", "waterway", "amenity"):
        v = tags.get(key)
        if v and (key, v) in AREA:
            label, cat = AREA[(key, v)]
            return label, cat, key
    return None


def classify_line(tags: dict[str, str]) -> tuple[str, str, str, float] | None:
    """(label, category, kind, width_m) for a way drawn as a line, or None."""
    if tags.get("area") == "yes":
        return None
    h = tags.get("highway")
    if h:
        base = h[: -len("_link")] if h.endswith("_link") else h
        if base in ROAD_WIDTH_M:
            label = ROAD_NAME[base] + (" slip road" if h.endswith("_link") else "")
            return label, "road", "highway", _width(tags, ROAD_WIDTH_M[base])
        return None
    w = tags.get("waterway")
    if w in WATERWAY:
        width, label = WATERWAY[w]
        return label, "water", "waterway", _width(tags, width)
    r = tags.get("railway")
    if r in RAILWAY:
        width, label = RAILWAY[r]
        return label, "railway", "railway", width
    return None


def read_osm(path: str) -> tuple[OsmFeature, ...]:
    """Parsed once per process and file version (the cache key includes the modification time)."""
    p = Path(path)
    return _read_osm_cached(str(p), p.stat().st_mtime if p.is_file() else 0.0)


@lru_cache(maxsize=8)
def _read_osm_cached(path: str, mtime: float) -> tuple[OsmFeature, ...]:
    """Parse an extract once per process. Uses pyosmium's area assembler for (multi)polygons."""
    if not Path(path).is_file():
        raise SourceError(f"OSM file {path} does not exist")
    wkb = osmium.geom.WKBFactory()
    feats: list[OsmFeature] = []
    keys = ("building", "highway", "railway", "waterway", "water", "landuse", "natural", "leisure", "amenity")
    try:
        big = None if Path(path).stat().st_size > 2_000_000 else True  # a bar only for big extracts
        fp = osmium.FileProcessor(path).with_areas().with_locations()
        for obj in tqdm(fp, desc=f"reading {Path(path).name}", unit=" objects", mininterval=2, disable=big):
            if obj.is_node() or obj.is_relation() or not any(k in obj.tags for k in keys):
                continue
            tags = {t.k: t.v for t in obj.tags if t.k in KEEP_TAGS}
            try:
                if obj.is_area():
                    cls = classify_area(tags)
                    if cls is None:
                        continue
                    geom = shapely.from_wkb(wkb.create_multipolygon(obj))
                    osm_id = f"{'way' if obj.from_way() else 'relation'}/{obj.orig_id()}"
                    feats.append(
                        OsmFeature(geom, cls[0], cls[1], cls[2], tags, osm_id, name=tags.get("name"))
                    )
                elif obj.is_way():
                    cls = classify_line(tags)
                    if cls is None:
                        continue
                    geom = shapely.from_wkb(wkb.create_linestring(obj))
                    feats.append(
                        OsmFeature(
                            geom, cls[0], cls[1], cls[2], tags, f"way/{obj.id}", cls[3], tags.get("name")
                        )
                    )
            except (RuntimeError, osmium.InvalidLocationError, shapely.errors.GEOSException):
                continue  # broken geometry (missing nodes at the extract's edge): skip it
    except RuntimeError as e:
        raise SourceError(f"cannot read OSM file {path}: {e}") from None
    log.info("%s: %d OSM features", path, len(feats))
    return tuple(feats)


def osm_bounds(feats: tuple[OsmFeature, ...], path: str) -> tuple[float, float, float, float]:
    if not feats:
        raise SourceError(f"OSM file {path} has no buildings, roads, water or land-use features")
    b = shapely.total_bounds(np.array([f.geom for f in feats]))
    return tuple(float(v) for v in b)  # type: ignore[return-value]


def utm_crs(lon: float, lat: float) -> CRS:
    zone = int((lon + 180) // 6) % 60 + 1
    return CRS.from_epsg((32600 if lat >= 0 else 32700) + zone)


def project_features(feats: tuple[OsmFeature, ...], crs) -> tuple[np.ndarray, shapely.STRtree]:
    """Geometries in ``crs`` (lines buffered in metres) and an STR-tree over them for per-tile queries."""
    crs = CRS.from_user_input(crs.to_wkt() if hasattr(crs, "to_wkt") else crs)
    geoms = np.array([f.geom for f in feats], dtype=object)
    metric = crs
    if crs.is_geographic or not crs.is_projected:
        b = shapely.total_bounds(geoms)
        metric = utm_crs((b[0] + b[2]) / 2, (b[1] + b[3]) / 2)
    to_metric = Transformer.from_crs("EPSG:4326", metric, always_xy=True)
    out = shapely.transform(geoms, lambda xy: np.column_stack(to_metric.transform(xy[:, 0], xy[:, 1])))
    widths = np.array([f.width_m for f in feats])
    lines = widths > 0
    if lines.any():
        factor = metric.axis_info[0].unit_conversion_factor if metric.axis_info else 1.0
        out[lines] = shapely.buffer(out[lines], widths[lines] / 2 / factor, cap_style="flat")
    if metric != crs:
        back = Transformer.from_crs(metric, crs, always_xy=True)
        out = shapely.transform(out, lambda xy: np.column_stack(back.transform(xy[:, 0], xy[:, 1])))
    out = shapely.make_valid(out)
    return out, shapely.STRtree(out)
