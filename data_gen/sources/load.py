"""``load_tile``: one tile window of a scene -> a :class:`~data_gen.tile.Tile` with everything on its grid.

Data flow: image bands (RGB composite + NIR) -> labels (aligned, unknown values -> ignore) -> second date,
labels2, change mask -> OSM / vector instances (burnt into the label map when the tile has no label raster)
-> weak NDVI/NDWI labels when nothing else labels an RGBN tile (both dates of an RGBN pair, whose difference is
the change) -> the rendered image for OSM-only scenes.
Open datasets and parsed vector files are cached per process, so each worker opens a file once.
"""

from __future__ import annotations

import logging
import os
import zlib
from pathlib import Path

import numpy as np
from rasterio._err import CPLE_BaseError
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.transform import Affine

from data_gen.config import GenConfig, TileRef
from data_gen.tile import Instance, Taxonomy, Tile
from rsvlm.geo.gdal import gdal_message

from .change import change_from_labels, change_from_mask, synthesize_second_date
from .errors import SourceError
from .image import ImageReader
from .osm import CATEGORY_CLASSES, LAYER, project_features, read_osm
from .raster import Grid, crs_string, gsd_of, open_raster, read_onto
from .scene import Scene, scenes_for
from .taxonomy import find_class, label_dtype, load_taxonomy
from .vectors import rasterize_geoms, read_vectors
from .weak import weak_labels, weak_taxonomy

log = logging.getLogger(__name__)

OSM_LICENSE = "ODbL 1.0 (© OpenStreetMap contributors)"
_READERS: dict[tuple[int, tuple[str, ...]], ImageReader] = {}
_DATASETS: dict[tuple[int, str], object] = {}
_PROJECTED: dict[tuple[str, str, int], tuple] = {}
_WARNED: set[tuple[str, str]] = set()
# Vector properties that are text about the whole image (GeoPixelD captions): kept only on a whole-image tile.
IMAGE_TEXT = ("gcg_caption", "gcg_question", "caption_id")


def _reader(files: tuple[str, ...], extra: dict) -> ImageReader:
    key = (os.getpid(), files)
    if key not in _READERS:
        _READERS[key] = ImageReader(files, extra)
    return _READERS[key]


def _dataset(path: str):
    key = (os.getpid(), path)
    if key not in _DATASETS:
        _DATASETS[key] = open_raster(path)
    return _DATASETS[key]


def _warn_once(scene: Scene, path: str, msg: str, *args) -> None:
    if (scene.key, path) not in _WARNED:
        _WARNED.add((scene.key, path))
        log.warning(msg, *args)


def read_labels(
    path: str,
    grid: Grid,
    scene: Scene,
    tax: Taxonomy,
    tile_id: str,
    unknown_counts: dict[int | float, int] | None = None,
) -> np.ndarray:
    """Label values on ``grid`` in the taxonomy's ``label_dtype``; pixels off the raster, nodata (the raster's own
    tag, NaN) and values the taxonomy does not know become the ignore value (unknown values are logged once per
    file and added to ``unknown_counts``).

    Any integer or float raster works. Values are compared as numbers, never cast to the raster's dtype, so an
    ignore value that dtype cannot hold (``ignore: [-99999]`` on uint8 labels) is still honoured.
    A float value is a label only when it is a whole number; NaN is nodata.
    """
    ds = _dataset(path)
    ignore = tax.ignore_values[0]
    floating = _label_kind(ds, path) == "f"
    try:
        raw = read_onto(ds, [1], grid, scene.grid, Resampling.nearest, fill=np.nan if floating else ignore,
                        dtype="float64" if floating else "int64")[0]  # [H, W]  # fmt: skip
    except (RasterioError, CPLE_BaseError) as e:
        raise SourceError(
            f"cannot read labels from {path}, truncated or corrupt ({gdal_message(e)})"
        ) from None
    if floating:
        whole = np.isfinite(raw) & (raw == np.round(raw)) & (np.abs(raw) < 2**62)
        values = np.where(whole, raw, 0).astype(np.int64)
        nodata = ~np.isfinite(raw)
    else:
        whole, values, nodata = np.ones(raw.shape, bool), raw, np.zeros(raw.shape, bool)
    if ds.nodata is not None and not np.isnan(ds.nodata):
        nodata |= raw == ds.nodata
    is_class = whole & np.isin(values, np.array(sorted(tax.classes)))
    unknown = ~is_class & ~nodata & ~(whole & np.isin(values, np.array(tax.ignore_values)))
    if unknown.any():
        vals, counts = np.unique(raw[unknown], return_counts=True)
        vals = [int(v) if float(v).is_integer() else float(v) for v in vals.tolist()]
        if unknown_counts is not None:
            for v, c in zip(vals, counts.tolist()):
                unknown_counts[v] = unknown_counts.get(v, 0) + int(c)
        report = ", ".join(f"{v}: {c} px" for v, c in zip(vals[:20], counts[:20].tolist()))
        _warn_once(scene, path, "%s has label values not in taxonomy %s (first seen in tile %s): {%s}; "
                   "treated as ignore (%d)", path, tax.name, tile_id, report, ignore)  # fmt: skip
    # Every ignore value (-99999 too) is written as the first, which fits the unsigned label map (PNG in the
    # dataset). A nodata tag that is also a class value keeps the class, as a taxonomy that names it asks.
    out = np.full(raw.shape, ignore, dtype=label_dtype(tax))
    out[is_class] = values[is_class]
    return out


def _label_kind(ds, path: str) -> str:
    """The numpy kind of a label raster's first band ("u", "i" or "f"); anything else is a one-line error."""
    dtype = np.dtype(ds.dtypes[0])
    if dtype.kind not in "uif":
        raise SourceError(
            f"label raster {path} has pixel type {dtype.name}; labels must be integers or floats"
        )
    return dtype.kind


def _instances_osm(cfg: GenConfig, grid: Grid) -> list[tuple[np.ndarray, Instance, str]]:
    feats = read_osm(cfg.osm)
    key = (cfg.osm, grid.crs.to_wkt(), id(feats))
    if key not in _PROJECTED:
        _PROJECTED[key] = project_features(feats, grid.crs)
    geoms, tree = _PROJECTED[key]
    import shapely

    idx = tree.query(shapely.box(*grid.bounds), predicate="intersects")
    idx = sorted(idx.tolist(), key=lambda i: (LAYER.get(feats[i].category, 0), i))
    out = []
    for i, mask in zip(idx, rasterize_geoms([geoms[i] for i in idx], grid)):
        if not mask.any():
            continue
        f = feats[i]
        attrs = {
            "osm": dict(f.tags),
            "osm_id": f.osm_id,
            "kind": f.kind,
            "category": f.category,
            "source": "osm",
        }
        if f.width_m:
            attrs["width_m"] = f.width_m
        label = f.label
        if f.category == "building":
            # One label for every building, so "how many buildings / houses" counts all 30 footprints and not
            # the one tagged building=house; the tagged type stays for named captions ("a church named ...").
            attrs["building_type"] = f.label
            label = "building"
        out.append((mask, Instance(mask=mask, label=label, name=f.name, attributes=attrs), f.category))
    return out


def _instances_vectors(cfg: GenConfig, grid: Grid, scene: Scene, col: int, row: int):
    layer = read_vectors(cfg.vectors)
    import shapely

    whole = (col, row, grid.width, grid.height) == (0, 0, scene.grid.width, scene.grid.height)

    if layer.pixel:
        stem = Path(scene.image[0]).stem if scene.image else ""
        feats = [f for f in layer.features if not f.image or Path(f.image).stem == stem]
        pgrid = Grid(None, Affine.translation(col, row), grid.width, grid.height)
        geoms = [f.geom for f in feats]
        target = pgrid
    else:
        if grid.crs is None:
            raise SourceError(f"vectors {cfg.vectors} are georeferenced but {scene.name} has no CRS")
        key = (cfg.vectors, grid.crs.to_wkt(), id(layer))
        if key not in _PROJECTED:
            from pyproj import Transformer

            tr = Transformer.from_crs(layer.crs, grid.crs, always_xy=True)
            g = np.array([f.geom for f in layer.features], dtype=object)
            g = shapely.transform(g, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))
            g = shapely.make_valid(g)
            _PROJECTED[key] = (g, shapely.STRtree(g))
        allg, tree = _PROJECTED[key]
        idx = sorted(tree.query(shapely.box(*grid.bounds), predicate="intersects").tolist())
        feats = [layer.features[i] for i in idx]
        geoms = [allg[i] for i in idx]
        target = grid
    out = []
    for f, mask in zip(feats, rasterize_geoms(geoms, target)):
        if not mask.any():
            continue
        if cfg.vector_label_field:
            if cfg.vector_label_field not in f.props:
                raise SourceError(f"vectors {cfg.vectors}: a feature has no field {cfg.vector_label_field!r} "
                                  f"(fields: {', '.join(sorted(f.props)) or 'none'})")  # fmt: skip
            label = str(f.props[cfg.vector_label_field])
        else:
            label = f.label or cfg.vector_label
        attrs = {k: v for k, v in f.props.items() if isinstance(v, (str, int, float, bool)) or v is None}
        attrs["source"] = "vectors"
        if not whole:
            for (
                key
            ) in IMAGE_TEXT:  # written about the whole image: its positions and phrases may not hold here
                attrs.pop(key, None)
        inst = Instance(mask=mask, label=label, name=f.props.get("name") or None, attributes=attrs)
        out.append((mask, inst, label))
    return out


def _burn(tax: Taxonomy, shape: tuple[int, int], items, categories: bool) -> np.ndarray | None:
    """A label map from instances whose class the taxonomy has; other pixels -> background class or ignore."""
    bg = find_class(tax, "background", "other", "unmapped land")
    labels = np.full(shape, bg.value if bg else tax.ignore_values[0], dtype=label_dtype(tax))
    hit = False
    for mask, _inst, cat in items:
        names = CATEGORY_CLASSES.get(cat, (cat,)) if categories else (cat, cat + "s", cat.rstrip("s"))
        c = find_class(tax, *names)
        if c is not None:
            labels[mask] = c.value
            hit = True
    return labels if hit else None


def known_classes(labels: np.ndarray, tax: Taxonomy) -> frozenset[int]:
    """The classes a map burnt from vectors speaks for: those it holds (the vectors' and the background)."""
    return frozenset(int(v) for v in np.unique(labels) if v not in tax.ignore_values)


def _render(labels: np.ndarray, tax: Taxonomy, tile_id: str) -> np.ndarray:
    """A neutral map-like image from class colours with a little texture (deterministic per tile)."""
    lut = np.zeros((int(labels.max()) + 1, 3), np.float32) + 128
    for v, c in tax.classes.items():
        if v < len(lut):
            lut[v] = c.colour
    img = lut[labels]  # [H, W, 3]
    rng = np.random.default_rng(zlib.crc32(tile_id.encode()))
    img += rng.normal(0, 4, labels.shape)[..., None]
    return np.clip(img, 0, 255).astype(np.uint8)


def load_tile(cfg: GenConfig, ref: TileRef) -> Tile | None:
    """Read one planned tile; None when it has no valid pixels (all nodata, or labels all ignore)."""
    scene = scenes_for(cfg)[ref.scene]
    col, row, w, h = ref.window
    grid = scene.grid.window(col, row, w, h)
    tax = load_taxonomy(cfg.taxonomy)
    raw: dict[str, np.ndarray] = {}
    image = None
    valid = np.ones((h, w), bool)
    reader = None
    if not scene.rendered:
        reader = _reader(scene.image, cfg.extra)
        raw, valid = reader.read(grid, scene.grid)
        if not valid.any():
            return None
        image = reader.rgb(raw)  # [H, W, 3]
        image[~valid] = 0

    ignore = tax.ignore_values[0]
    labels = labels2 = change = None
    unknown: dict[int, int] = {}
    if scene.labels:
        labels = read_labels(scene.labels, grid, scene, tax, ref.id, unknown)
        labels[~valid] = ignore
    image2 = None
    raw2: dict[str, np.ndarray] = {}
    if scene.image2:
        r2 = _reader(scene.image2, cfg.extra)
        raw2, valid2 = r2.read(grid, scene.grid)  # NIR too: weak labels of the second date
        image2 = r2.rgb(raw2)
        image2[~valid2] = 0
        valid &= valid2
        if labels is not None:
            labels[~valid2] = ignore
    if scene.labels2:
        labels2 = read_labels(scene.labels2, grid, scene, tax, ref.id, unknown)
        labels2[~valid] = ignore
        change = change_from_labels(labels, labels2, tax)
    if scene.change_mask:
        ds = _dataset(scene.change_mask)
        m = read_onto(ds, [1], grid, scene.grid, Resampling.nearest, fill=0, dtype="int64")[0]
        if not cfg.change_values and m.min() >= 1 and set(np.unique(m).tolist()) <= {1, 2}:
            _warn_once(scene, scene.change_mask, "%s holds only 1 and 2 (like OSCD: 1 = no change, 2 = change); "
                       "set change_values: [2], or every pixel counts as change", scene.change_mask)  # fmt: skip
        change = change_from_mask(m, cfg.change_values) & valid

    items = []
    if cfg.osm:
        items += _instances_osm(cfg, grid)
    vec_items = _instances_vectors(cfg, grid, scene, col, row) if cfg.vectors else []
    weak = False
    known_values = None  # the labels speak for every class of the taxonomy
    if labels is None and (items or vec_items):
        labels = _burn(tax, (h, w), items, categories=True) if items else None
        vl = _burn(tax, (h, w), vec_items, categories=False) if vec_items else None
        if vl is not None:
            if labels is None:
                labels = vl
            else:
                bg = find_class(tax, "background", "other", "unmapped land")
                keep = vl != (bg.value if bg else ignore)
                labels[keep] = vl[keep]
        if labels is not None:
            labels[~valid] = ignore
        if vl is not None and labels is vl:
            # Burnt from the vectors alone: they speak for their own classes, not for water where none is drawn.
            known_values = known_classes(labels, tax)
    items += vec_items

    want_weak = cfg.weak_labels == "on" or (cfg.weak_labels == "auto" and labels is None and not items)
    if cfg.weak_labels not in ("auto", "on", "off"):
        raise SourceError(f"weak_labels must be auto, on or off, got {cfg.weak_labels!r}")
    if want_weak and labels is None:
        if reader is None or not reader.has_nir:
            if cfg.weak_labels == "on":
                raise SourceError(f"weak_labels: on needs a NIR band, but {scene.name} has none")
        else:
            method = str(cfg.extra.get("weak_method", "fixed"))
            labels, _ = weak_labels(raw["red"], raw["green"], raw["nir"], valid, method=method)
            tax, weak = weak_taxonomy(), True
            if image2 is not None and labels2 is None and change is None and "nir" in raw2:
                # Two RGBN dates and no labels: weak labels on both give a weak from->to change map.
                labels2, _ = weak_labels(raw2["red"], raw2["green"], raw2["nir"], valid, method=method)
                change = change_from_labels(labels, labels2, tax)

    if labels is not None and np.isin(labels, list(tax.ignore_values)).all() and not items:
        return None
    if scene.rendered:
        if labels is None:
            return None
        image = _render(labels, tax, ref.id)

    license_ = cfg.license
    if cfg.osm:
        license_ = f"{license_}; {OSM_LICENSE}" if license_ else OSM_LICENSE
    if scene.rendered:
        source = "osm-render"
    else:
        source = cfg.source_name or Path(scene.name).name
    gsd = gsd_of(grid)
    if gsd is None and cfg.extra.get("gsd"):
        gsd = float(cfg.extra["gsd"])
    tile = Tile(
        id=ref.id,
        image=image,
        image2=image2,
        labels=labels,
        labels2=labels2,
        change=change,
        taxonomy=tax,
        instances=[inst for _m, inst, _c in items],
        gsd=gsd,
        crs=crs_string(grid.crs),
        transform=tuple(float(v) for v in tuple(grid.transform)[:6]),
        dates=scene.dates,
        source=source,
        license=license_,
        weak=weak,
        block=ref.block,
        unknown_values=unknown,
        known_values=known_values,
    )
    if cfg.synthetic_change and "change" in cfg.tasks and tile.image2 is None and tile.change is None:
        # Seeded by the run's seed and the tile id, so a tile gets the same edits in any worker or rerun.
        rng = np.random.default_rng([cfg.seed, zlib.crc32(ref.id.encode())])
        tile = synthesize_second_date(tile, rng)
    return tile
