"""Scenes: what ``GenConfig`` paths expand to, matched file to file, cut into tile windows with spatial blocks.

A scene is one image (a multi-band file, or a folder of band files) with its optional labels, second date,
labels of the second date and change mask, all checked to be alignable with the image grid. When only an OSM
extract is given (``cfg.osm`` without ``cfg.image``) the scene is a UTM grid over the extract's bounding box
and its image is *rendered* from the rasterised OSM classes (``Tile.source == "osm-render"``): that is for
testing the OSM path and for label-only pretraining, never a stand-in for real imagery.
"""

from __future__ import annotations

import glob
import logging
import math
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import shapely
from pyproj import Transformer
from rasterio.crs import CRS
from rasterio.transform import Affine

from data_gen.config import GenConfig, TileRef

from .errors import SourceError
from .image import band_key
from .osm import osm_bounds, read_osm, utm_crs
from .raster import Grid, check_alignable, grid_of, open_raster
from .taxonomy import load_taxonomy
from .vectors import read_vectors

log = logging.getLogger(__name__)

RASTER_EXT = {".tif", ".tiff", ".png", ".jpg", ".jpeg", ".jp2", ".img", ".vrt", ".bmp"}


@dataclass(frozen=True)
class Scene:
    key: str  # unique, filename-safe: used in tile ids and block ids
    image: tuple[str, ...] | None  # one file, or the band files of a stack; None for an OSM-only scene
    grid: Grid
    image2: tuple[str, ...] | None = None
    labels: str | None = None
    labels2: str | None = None
    change_mask: str | None = None
    dates: tuple[str, str] | None = None

    @property
    def name(self) -> str:
        if self.image is None:
            return f"OSM render {self.key}"
        return self.image[0] if len(self.image) == 1 else str(Path(self.image[0]).parent)

    @property
    def rendered(self) -> bool:
        return self.image is None


def expand(spec: str | None, what: str) -> list[tuple[str, ...]]:
    """A path, folder or glob -> sorted scene items; band files (``*_B02.tif``...) of one prefix form one item."""
    if not spec:
        return []
    p = Path(spec).expanduser()
    if p.is_file():
        return [(str(p),)]
    if p.is_dir():
        files = sorted(str(f) for f in p.iterdir() if f.is_file() and f.suffix.lower() in RASTER_EXT)
    elif any(ch in spec for ch in "*?["):
        files = sorted(f for f in glob.glob(str(p), recursive=True) if Path(f).is_file())
    else:
        raise SourceError(f"{what} {spec!r} does not exist")
    if not files:
        raise SourceError(f"{what} {spec!r} contains no raster files ({', '.join(sorted(RASTER_EXT))})")
    stacks: dict[tuple[str, str], list[str]] = defaultdict(list)
    singles: list[tuple[str, ...]] = []
    for f in files:
        m = re.match(r"^(.*?)[_-]?B(?:0?\d{1,2}|8A)\.\w+$", Path(f).name, re.IGNORECASE)
        if m and band_key(f):
            stacks[(str(Path(f).parent), m.group(1))].append(f)
        else:
            singles.append((f,))
    items = list(singles)
    for group in stacks.values():
        keys = {band_key(f) for f in group}
        if len(group) >= 3 and {"B2", "B3", "B4"} <= keys:
            items.append(tuple(sorted(group, key=lambda f: (len(band_key(f) or ""), band_key(f)))))
        else:
            items.extend((f,) for f in group)
    return sorted(items)


def _stem(item: tuple[str, ...]) -> str:
    if len(item) > 1:
        return Path(item[0]).parent.name
    name = Path(item[0]).name
    return name.split(".")[0]


def match(images: list[tuple[str, ...]], others: list[tuple[str, ...]], what: str) -> list:
    """Pair each image with one of ``others``: by identical stem, else by sorted order when counts agree."""
    if not others:
        return [None] * len(images)
    by_stem = {_stem(o): o for o in others}
    if len(by_stem) == len(others) and all(_stem(i) in by_stem for i in images):
        return [by_stem[_stem(i)] for i in images]
    if len(others) == len(images):
        return list(others)
    missing = next((_stem(i) for i in images if _stem(i) not in by_stem), "?")
    raise SourceError(
        f"{len(images)} image scene(s) but {len(others)} {what} file(s), and their names do not match "
        f"(no {what} file named like {missing!r}); give one {what} file per image, same name or same order"
    )


def _single(item: tuple[str, ...] | None, what: str) -> str | None:
    if item is None:
        return None
    if len(item) != 1:
        raise SourceError(f"{what} must be single files, got a band stack in {Path(item[0]).parent}")
    return item[0]


_NAME_DATE = re.compile(r"(?<!\d)((?:19|20)\d\d)(0[1-9]|1[0-2])(0[1-9]|[12]\d|3[01])(?!\d)")


def _date_in_name(path: str) -> str | None:
    """``m_4709963_se_14_1_20090818.tif`` -> ``2009-08-18`` (one unambiguous YYYYMMDD in the file name)."""
    found = _NAME_DATE.findall(Path(path).stem)
    return "-".join(found[0]) if len(found) == 1 else None


def _read_dates(
    item: tuple[str, ...], default: tuple[str, str], item2: tuple[str, ...] | None = None
) -> tuple[str, str]:
    """OSCD keeps ``dates.txt`` (``date_1: 20161130``) next to the image folders; use it when present, else the
    acquisition dates in the two file names (NAIP ``..._20090818.tif``) when both have one and they differ."""
    if tuple(default) != ("date 1", "date 2"):
        return tuple(default)  # type: ignore[return-value]
    if item2 is not None and len(item) == 1 and len(item2) == 1:
        d1, d2 = _date_in_name(item[0]), _date_in_name(item2[0])
        if d1 and d2 and d1 != d2:
            return d1, d2
    for folder in (Path(item[0]).parent, Path(item[0]).parent.parent):
        f = folder / "dates.txt"
        if f.is_file():
            found = dict(re.findall(r"(date_[12])\s*:\s*(\d{8})", f.read_text()))
            if len(found) == 2:
                fmt = [f"{d[:4]}-{d[4:6]}-{d[6:]}" for d in (found["date_1"], found["date_2"])]
                return fmt[0], fmt[1]
    return tuple(default)  # type: ignore[return-value]


def _image_grid(item: tuple[str, ...]) -> Grid:
    if len(item) == 1:
        path = item[0]
    else:
        from .image import stack_roles

        path = stack_roles(item)["red"]
    with open_raster(path) as ds:
        return grid_of(ds)


def _check(path: str | None, grid: Grid, scene_name: str, what: str) -> None:
    if path is None:
        return
    with open_raster(path) as ds:
        check_alignable(grid_of(ds), grid, f"{what} {path}", f"image {scene_name}")


def _unique_keys(items: list[tuple[str, ...]]) -> list[str]:
    stems = [re.sub(r"[^A-Za-z0-9_.-]+", "_", _stem(i)) for i in items]
    dup = {s for s in stems if stems.count(s) > 1}
    return [f"{s}-{n}" if s in dup else s for n, s in enumerate(stems)]


def osm_render_grid(osm_path: str, gsd: float) -> Grid:
    """A north-up UTM grid (zone of the extract's centre) over the bounding box of the extract's features."""
    w, s, e, n = osm_bounds(read_osm(osm_path), osm_path)
    crs = utm_crs((w + e) / 2, (s + n) / 2)
    tr = Transformer.from_crs("EPSG:4326", crs, always_xy=True)
    xs, ys = tr.transform([w, e, w, e], [s, s, n, n])
    x0, y1 = math.floor(min(xs) / gsd) * gsd, math.ceil(max(ys) / gsd) * gsd
    width = max(1, math.ceil((max(xs) - x0) / gsd))
    height = max(1, math.ceil((y1 - min(ys)) / gsd))
    return Grid(CRS.from_user_input(crs.to_wkt()), Affine(gsd, 0, x0, 0, -gsd, y1), width, height)


def build_scenes(cfg: GenConfig) -> list[Scene]:
    """Expand and match the config's paths and check every pairing is alignable (headers only)."""
    load_taxonomy(cfg.taxonomy)  # fail early on a bad taxonomy
    if not cfg.image:
        if cfg.osm:
            if cfg.image2 or cfg.labels or cfg.labels2 or cfg.change_mask:
                raise SourceError("image2 / labels / change_mask need an image; an OSM-only scene has none")
            gsd = float(cfg.extra.get("gsd", 1.0))
            if gsd <= 0:
                raise SourceError(f"extra.gsd must be > 0 metres per pixel, got {gsd}")
            key = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(cfg.osm).name.split(".")[0])
            return [Scene(key=f"osm-{key}", image=None, grid=osm_render_grid(cfg.osm, gsd))]
        raise SourceError(
            "no imagery: set image (a file, folder or glob), or osm alone for an OSM-only scene"
        )
    images = expand(cfg.image, "image")
    if cfg.labels2 and not cfg.labels:
        raise SourceError("labels2 given without labels: change from label maps needs both dates")
    pairs = {
        "image2": match(images, expand(cfg.image2, "image2"), "image2"),
        "labels": match(images, expand(cfg.labels, "labels"), "labels"),
        "labels2": match(images, expand(cfg.labels2, "labels2"), "labels2"),
        "change_mask": match(images, expand(cfg.change_mask, "change_mask"), "change_mask"),
    }
    scenes = []
    for n, (item, key) in enumerate(zip(images, _unique_keys(images))):
        grid = _image_grid(item)
        name = item[0] if len(item) == 1 else str(Path(item[0]).parent)
        labels = _single(pairs["labels"][n], "labels")
        labels2 = _single(pairs["labels2"][n], "labels2")
        mask = _single(pairs["change_mask"][n], "change_mask")
        image2 = pairs["image2"][n]
        for path, what in ((labels, "labels"), (labels2, "labels2"), (mask, "change_mask")):
            _check(path, grid, name, what)
        if image2 is not None:
            check_alignable(_image_grid(image2), grid, f"image2 {image2[0]}", f"image {name}")
        two_dates = image2 is not None or labels2 is not None or mask is not None
        dates = _read_dates(item, cfg.dates, image2) if two_dates else None
        scenes.append(Scene(key, item, grid, image2, labels, labels2, mask, dates))
    if cfg.osm:
        _check_footprints(scenes, read_osm(cfg.osm), cfg.osm, "OSM")
    if cfg.vectors:
        _check_vectors(scenes, cfg.vectors)
    return scenes


def _footprint_lonlat(scene: Scene) -> shapely.Geometry | None:
    b = scene.grid.bounds_lonlat()
    return shapely.box(*b) if b else None


def _check_footprints(scenes: list[Scene], feats, path: str, what: str) -> None:
    geoms = np.array([f.geom for f in feats], dtype=object)
    tree = shapely.STRtree(geoms) if len(geoms) else None
    hits = 0
    for s in scenes:
        fp = _footprint_lonlat(s)
        if fp is None:
            raise SourceError(f"{what} data {path} needs georeferenced imagery, but {s.name} has no CRS")
        n = len(tree.query(fp, predicate="intersects")) if tree is not None else 0
        if n == 0:
            msg = (
                f"no {what} feature falls inside {s.name}'s footprint (bbox lon/lat "
                f"{tuple(round(float(v), 5) for v in fp.bounds)}); {path} covers "
                f"{tuple(round(float(v), 5) for v in shapely.total_bounds(geoms)) if len(geoms) else 'nothing'}"
            )
            if len(scenes) == 1:
                raise SourceError(msg)
            log.warning(msg)
        hits += n
    if hits == 0:
        raise SourceError(
            f"no {what} feature of {path} falls inside any of the {len(scenes)} image footprints"
        )


def _check_vectors(scenes: list[Scene], path: str) -> None:
    layer = read_vectors(path)
    if not layer.features:
        raise SourceError(f"vector file {path} has no features")
    if layer.pixel:
        named = {Path(f.image).stem for f in layer.features if f.image}
        if named:
            ours = {Path(s.image[0]).stem for s in scenes if s.image}
            if not named & ours:
                raise SourceError(
                    f"vectors {path} are pixel boxes of image(s) {', '.join(sorted(named)[:3])}, "
                    f"none of which is among the imagery ({', '.join(sorted(ours)[:3])})"
                )
        return
    to_ll = Transformer.from_crs(layer.crs, "EPSG:4326", always_xy=True)
    geoms = np.array([f.geom for f in layer.features], dtype=object)
    if not layer.crs.to_epsg() == 4326:
        geoms = shapely.transform(geoms, lambda xy: np.column_stack(to_ll.transform(xy[:, 0], xy[:, 1])))
    fake = [type("F", (), {"geom": g}) for g in geoms]
    _check_footprints(scenes, fake, path, "vector")


_SCENES: dict[str, list[Scene]] = {}


def _cfg_key(cfg: GenConfig) -> str:
    keep = (
        "image",
        "image2",
        "labels",
        "labels2",
        "change_mask",
        "osm",
        "vectors",
        "taxonomy",
        "dates",
        "extra",
    )
    return repr({k: getattr(cfg, k) for k in keep})


def scenes_for(cfg: GenConfig) -> list[Scene]:
    """Scenes of ``cfg``, built once per process (workers call this through ``load_tile``)."""
    key = _cfg_key(cfg)
    if key not in _SCENES:
        _SCENES[key] = build_scenes(cfg)
    return _SCENES[key]


def tile_windows(
    width: int, height: int, tile: int, overlap: int
) -> list[tuple[int, int, int, int, int, int]]:
    """(col, row, w, h, i, j) windows of ``tile`` px with ``overlap``; the last row/column is shifted inwards so
    every tile is full size (a scene smaller than a tile is one smaller tile)."""
    if tile <= 0:
        raise SourceError(f"tile_size must be > 0, got {tile}")
    if not 0 <= overlap < tile:
        raise SourceError(f"overlap must be in [0, tile_size), got {overlap} for tile_size {tile}")
    stride = tile - overlap

    def starts(n: int) -> list[int]:
        if n <= tile:
            return [0]
        s = list(range(0, n - tile + 1, stride))
        if s[-1] + tile < n:
            s.append(n - tile)
        return s

    out = []
    for j, row in enumerate(starts(height)):
        for i, col in enumerate(starts(width)):
            out.append((col, row, min(tile, width), min(tile, height), i, j))
    return out


def plan_tiles(cfg: GenConfig) -> list[TileRef]:
    """Every tile window of every scene, with ids and spatial block ids, cut to ``cfg.max_tiles``."""
    if cfg.block_size <= 0:
        raise SourceError(f"block_size must be > 0, got {cfg.block_size}")
    refs: list[TileRef] = []
    for n, scene in enumerate(scenes_for(cfg)):
        for col, row, w, h, i, j in tile_windows(
            scene.grid.width, scene.grid.height, cfg.tile_size, cfg.overlap
        ):
            refs.append(
                TileRef(
                    id=f"{scene.key}_r{row}_c{col}",
                    scene=n,
                    window=(col, row, w, h),
                    block=f"{scene.key}/b{j // cfg.block_size}_{i // cfg.block_size}",
                    meta={"image": scene.name},
                )
            )
            if cfg.max_tiles is not None and len(refs) >= cfg.max_tiles:
                return refs
    if not refs:
        raise SourceError("no tiles: every scene is empty")
    return refs
