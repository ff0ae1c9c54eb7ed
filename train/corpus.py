"""The training corpus of the embedded default, rebuilt from the repo: one ``rsvlm gen`` dataset per source.

    python -m train.corpus --recipe train/corpora/default.yaml --out out/corpus [--only loveda,dubai]

Flow: the recipe's ``sources`` -> (optional ``prepare``: a format data_gen does not read -> one it does, under
``out/prepared/<source>/``) -> ``GenConfig`` (recipe ``defaults`` + the source's ``gen``, paths relative to the
data root) -> ``data_gen.driver.build_dataset`` into ``out/<source>/`` (which resumes shard by shard) ->
``out/corpus.json``: samples per source, split and task, and every source that failed with its one-line reason.
A source that fails never stops the others.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from rsvlm.atomic import atomic_path, write_text_atomic

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent
DEFAULT_RECIPE = REPO / "train" / "corpora" / "default.yaml"
WEB_MERCATOR_HALF = 20037508.342789244  # metres from the origin to the edge of EPSG:3857


def default_data_root() -> Path:
    return Path(os.environ.get("RSVLM_SHARED_DATA", REPO.parent / "shared" / "data"))


# ----------------------------------------------------------------------------------------------------- prepare


def prepare_colour_masks(spec: dict[str, Any], root: Path, out: Path) -> None:
    """RGB colour masks -> index PNGs (``colours``: ``"#RRGGBB": value``; any other colour becomes 0)."""
    from PIL import Image

    table = {tuple(int(h[i : i + 2], 16) for i in (1, 3, 5)): int(v) for h, v in spec["colours"].items()}
    target = out / "labels"
    target.mkdir(parents=True, exist_ok=True)
    for path in sorted((root / spec["masks"]).glob("*.png")):
        dest = target / f"{path.stem}.png"
        if dest.is_file():
            continue
        rgb = np.asarray(Image.open(path).convert("RGB")).astype(np.int32)
        packed = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
        labels = np.zeros(packed.shape, np.uint8)
        for (r, g, b), value in table.items():
            labels[packed == ((r << 16) | (g << 8) | b)] = value
        with atomic_path(dest) as tmp:
            Image.fromarray(labels).save(tmp, format="PNG")


def prepare_xyz_chips(spec: dict[str, Any], root: Path, out: Path) -> None:
    """Chips named ``<prefix>-<x>-<y>-<z>.png`` (XYZ Web-Mercator tiles) -> RGB GeoTIFFs in EPSG:3857."""
    import rasterio
    from PIL import Image
    from rasterio.transform import from_bounds

    target = out / "images"
    target.mkdir(parents=True, exist_ok=True)
    pattern = re.compile(r"-(\d+)-(\d+)-(\d+)$")
    for path in sorted((root / spec["chips"]).glob("*.png")):
        m = pattern.search(path.stem)
        dest = target / f"{path.stem}.tif"
        if m is None or dest.is_file():
            continue
        x, y, z = (int(v) for v in m.groups())
        size = 2 * WEB_MERCATOR_HALF / 2**z
        west, north = -WEB_MERCATOR_HALF + x * size, WEB_MERCATOR_HALF - y * size
        rgba = np.asarray(Image.open(path).convert("RGBA"))
        rgb = np.moveaxis(rgba[..., :3], -1, 0)
        h, w = rgb.shape[1:]
        profile = dict(driver="GTiff", width=w, height=h, count=3, dtype="uint8", crs="EPSG:3857",
                       transform=from_bounds(west, north - size, west + size, north, w, h))  # fmt: skip
        with atomic_path(dest) as tmp:
            with rasterio.open(tmp, "w", **profile) as ds:
                ds.write(rgb)


def prepare_gpkg_geojson(spec: dict[str, Any], root: Path, out: Path) -> None:
    """A GeoPackage's features -> an EPSG:4326 GeoJSON (``labels.geojson``), read with sqlite3 and shapely.

    A GeoPackage geometry is a small header (magic ``GP``, flags, SRS id, an optional envelope) before plain WKB;
    the SRS id names an EPSG code in ``gpkg_spatial_ref_sys``.
    """
    import sqlite3
    import struct

    import shapely
    from pyproj import Transformer

    dest = out / "labels.geojson"
    if dest.is_file():
        return
    features = []
    for gpkg in spec["files"]:
        con = sqlite3.connect(f"file:{root / gpkg}?mode=ro", uri=True)
        table, column = con.execute("SELECT table_name, column_name FROM gpkg_geometry_columns").fetchone()
        for (blob,) in con.execute(f'SELECT "{column}" FROM "{table}"'):
            if blob is None or blob[:2] != b"GP":
                continue
            flags = blob[3]
            srs_id = struct.unpack("<i" if flags & 1 else ">i", blob[4:8])[0]
            envelope = {0: 0, 1: 32, 2: 48, 3: 48, 4: 64}.get((flags >> 1) & 7, 0)
            geom = shapely.from_wkb(bytes(blob[8 + envelope :]))
            epsg = con.execute(
                "SELECT organization_coordsys_id FROM gpkg_spatial_ref_sys WHERE srs_id = ?", (srs_id,)
            ).fetchone()[0]
            to_wgs84 = Transformer.from_crs(f"EPSG:{epsg}", "EPSG:4326", always_xy=True)
            geom = shapely.transform(
                geom, lambda xy, t=to_wgs84: np.column_stack(t.transform(xy[:, 0], xy[:, 1]))
            )
            features.append({"type": "Feature", "geometry": shapely.geometry.mapping(geom), "properties": {}})
        con.close()
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(dest, json.dumps({"type": "FeatureCollection", "features": features}))


def prepare_select_files(spec: dict[str, Any], root: Path, out: Path) -> None:
    """Links to the files matching ``glob`` in ``out/files/`` (a folder holding one kind of file, when the source
    folder mixes them: xBD keeps pre- and post-disaster labels side by side)."""
    target = out / "files"
    target.mkdir(parents=True, exist_ok=True)
    for path in sorted(root.glob(spec["glob"])):
        link = target / path.name
        if not link.exists():
            link.symlink_to(path)


XBD_CHANGED = ("minor-damage", "major-damage", "destroyed")


def prepare_xbd_pairs(spec: dict[str, Any], root: Path, out: Path) -> None:
    """An xBD folder (``<scene>_pre_disaster.png/.json`` beside ``<scene>_post_disaster.png/.json``) -> ``pre/``,
    ``post/`` and ``outlines/`` (links: the pre-event images, the post-event images and the pre-event building
    outlines) and ``change/<scene>_pre_disaster.png``: 255 on the buildings the post-event labels call damaged
    (minor, major or destroyed), 0 elsewhere, so a pair whose buildings are all intact is a labelled "no change"
    pair even where flood, season or light make the two dates look different."""
    from PIL import Image
    from rasterio.transform import Affine

    from data_gen.sources.raster import Grid
    from data_gen.sources.vectors import rasterize_geoms, read_vectors

    folder = root / spec["folder"]
    pres = sorted(folder.glob("*_pre_disaster.png"))
    if not pres:
        raise ValueError(f"{folder}: no *_pre_disaster.png images (an xBD folder holds pre/post pairs)")
    for sub in ("pre", "post", "outlines", "change"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    for pre in pres:
        scene = pre.name.removesuffix("_pre_disaster.png")
        files = {
            "pre": pre,
            "post": folder / f"{scene}_post_disaster.png",
            "outlines": folder / f"{scene}_pre_disaster.json",
        }
        post_labels = folder / f"{scene}_post_disaster.json"
        missing = [p.name for p in (*files.values(), post_labels) if not p.is_file()]
        if missing:
            raise ValueError(f"xBD scene {scene}: missing {', '.join(missing)}")
        for sub, path in files.items():
            link = out / sub / path.name
            if not link.exists():
                link.symlink_to(path)
        dest = out / "change" / f"{scene}_pre_disaster.png"
        if dest.is_file():
            continue
        with Image.open(pre) as im:
            width, height = im.size
        layer = read_vectors(str(post_labels))
        damaged = [f.geom for f in layer.features if (f.props.get("subtype") or "") in XBD_CHANGED]
        change = np.zeros((height, width), np.uint8)
        for mask in rasterize_geoms(damaged, Grid(None, Affine.identity(), width, height)):
            change[mask] = 255
        with atomic_path(dest) as tmp:
            Image.fromarray(change).save(tmp, format="PNG")


PREPARE = {
    "select_files": prepare_select_files,
    "xbd_pairs": prepare_xbd_pairs,
    "colour_masks": prepare_colour_masks,
    "xyz_chips": prepare_xyz_chips,
    "gpkg_geojson": prepare_gpkg_geojson,
}


# ----------------------------------------------------------------------------------------------------- build


def load_recipe(path: str | Path) -> dict[str, Any]:
    with open(path) as f:
        recipe = yaml.safe_load(f) or {}
    if not isinstance(recipe.get("sources"), dict) or not recipe["sources"]:
        raise ValueError(f"{path}: a corpus recipe needs a non-empty 'sources' mapping")
    return recipe


def source_config(name: str, source: dict[str, Any], defaults: dict[str, Any], root: Path, out: Path):
    """The ``GenConfig`` of one source: defaults + its ``gen`` mapping, paths made absolute."""
    from data_gen.config import GenConfig

    prepared = out / "prepared" / name
    values = {**defaults, **source.get("gen", {})}
    for key in ("image", "image2", "labels", "labels2", "change_mask", "osm", "vectors"):
        if values.get(key):
            text = str(values[key]).replace("{prepared}", str(prepared))
            values[key] = text if Path(text).is_absolute() else str(root / text)
    values.update(source_name=name, license=source.get("license", ""), out=str(out / name))
    return GenConfig.from_dict(values, where=f"source {name}")


def build_corpus(recipe: dict[str, Any], out: Path, root: Path, only: set[str] | None = None) -> dict:
    from datasets import load_dataset

    from data_gen.driver import build_dataset

    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"data_root": str(root), "sources": {}, "failed": {}}
    if only and (out / "corpus.json").is_file():  # a partial rebuild keeps the other sources' entries
        summary = json.loads((out / "corpus.json").read_text())
    for name, source in recipe["sources"].items():
        if only and name not in only:
            continue
        try:
            if "prepare" in source:
                kind = source["prepare"].get("kind")
                if kind not in PREPARE:
                    raise ValueError(f"unknown prepare kind {kind!r} (known: {', '.join(PREPARE)})")
                PREPARE[kind](source["prepare"], root, out / "prepared" / name)
            cfg = source_config(name, source, recipe.get("defaults", {}), root, out)
            build_dataset(cfg)
            summary["failed"].pop(name, None)
            rows = load_dataset("parquet", data_files=str(out / name / "data" / "*.parquet"), split="train")
            counts = Counter(zip(rows["split"], rows["task"]))
            summary["sources"][name] = {
                "license": cfg.license,
                "samples": len(rows),
                "by_split_task": {f"{s}/{t}": n for (s, t), n in sorted(counts.items())},
            }
            logger.info("%s: %d samples", name, len(rows))
        except Exception as exc:  # one bad source is reported, never stops the corpus
            reason = " ".join(str(exc).split()) or type(exc).__name__
            summary["failed"][name] = reason
            summary["sources"].pop(name, None)
            logger.error("%s failed: %s", name, reason)
    write_text_atomic(out / "corpus.json", json.dumps(summary, indent=1))
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.corpus", description=__doc__.split("\n\n")[0])
    p.add_argument("--recipe", default=str(DEFAULT_RECIPE))
    p.add_argument("--out", default="out/corpus")
    p.add_argument("--data-root", default=None, help="default: $RSVLM_SHARED_DATA or ../shared/data")
    p.add_argument("--only", default=None, help="comma-separated source names")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    root = Path(args.data_root) if args.data_root else default_data_root()
    if not root.is_dir():
        print(f"error: data root {root} is not a folder (pass --data-root)", file=sys.stderr)
        return 2
    try:
        recipe = load_recipe(args.recipe)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    only = {s.strip() for s in args.only.split(",")} if args.only else None
    summary = build_corpus(recipe, Path(args.out).resolve(), root, only)
    total = sum(s["samples"] for s in summary["sources"].values())
    print(f"{total:,} samples from {len(summary['sources'])} sources; failed: {summary['failed'] or 'none'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
