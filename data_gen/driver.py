"""The data-generation driver: plan tiles, split by spatial block, run the task families in shards, write parquet.

    build_dataset(GenConfig(image=..., labels=..., out="out/ds")) -> Path("out/ds")

Layout of ``cfg.out``::

    data/{split}-NNNNN.parquet   one shard = a fixed list of tiles; its existence marks it finished (resume)
    stats/{split}-NNNNN.json     per-shard statistics (written before the parquet), read by the dataset card
    plan.json                    the shard plan; a re-run with a different plan into the same folder is refused
    README.md, task_mix.png      the dataset card (``data_gen.card``)

Parallelism: a ``multiprocessing`` pool over shards (``imap_unordered``). One job writes one shard file as a side
effect and returns a small stats dict, so ``datasets.Dataset.map(num_proc=...)`` would add nothing but an Arrow
cache of those dicts and dill-pickling of the config; the pool gives a per-shard tqdm bar and clean resume. The
output is still a Hugging Face ``datasets`` parquet dataset (features stored in the parquet metadata).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import multiprocessing
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image as PILImage
from tqdm.auto import tqdm

from data_gen.config import GenConfig, TileRef
from data_gen.tasks import regions, run_tasks
from data_gen.tasks.builder import tile_rasters
from data_gen.tile import Sample, Tile
from rsvlm.atomic import atomic_path

log = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
# Used to turn cfg.shard_size (samples) into tiles per shard: roughly 2.5 samples per family per tile.
SAMPLES_PER_FAMILY = 2.5

Planner = Callable[[GenConfig], list[TileRef]]
Loader = Callable[[GenConfig, TileRef], "Tile | None"]


def features():
    """The dataset schema as ``datasets.Features`` (images and masks decode to PIL images when loaded)."""
    from datasets import Features, Image, List, Value

    return Features(
        {
            "id": Value("string"),
            "images": List(Image()),  # 1 or 2 RGB PNGs (two dates for change)
            "conversations": List({"role": Value("string"), "content": Value("string")}),
            "masks": List(Image()),  # 1-bit PNGs in [SEG] order
            "ref_masks": List(Image()),  # masks behind <box>/<obb> answers without a [SEG]
            "rasters": List(Image()),  # label rasters the facts refer to (8/16-bit PNG)
            "raster_names": List(Value("string")),  # "labels", "labels2", "change"
            "task": Value("string"),
            "source": Value("string"),
            "license": Value("string"),
            "weak": Value("bool"),
            "crs": Value("string"),
            "transform": List(Value("float64")),
            "gsd": Value("float64"),
            "split": Value("string"),
            "block": Value("string"),
            "tile_id": Value("string"),
            "meta": Value("string"),  # JSON: question types and the facts validate re-checks
        }
    )


# ------------------------------------------------------------------------------------------------ PNG


def encode_png(array: np.ndarray) -> bytes:
    """Lossless PNG: bool -> 1-bit, uint8 [H, W] -> L, larger ints -> 16-bit, [H, W, 3] -> RGB."""
    a = np.asarray(array)
    if a.dtype == bool:
        img = PILImage.fromarray(a)
    elif a.ndim == 2 and a.max(initial=0) < 256 and a.min(initial=0) >= 0:
        img = PILImage.fromarray(a.astype(np.uint8))
    elif a.ndim == 2:
        if a.min(initial=0) < 0 or a.max(initial=0) > 65535:
            raise ValueError(f"label values {a.min()}..{a.max()} do not fit a 16-bit PNG")
        img = PILImage.fromarray(a.astype(np.uint16))
    else:
        img = PILImage.fromarray(a.astype(np.uint8))
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def decode_png(data: bytes | dict) -> np.ndarray:
    if isinstance(data, dict):
        data = data["bytes"]
    img = PILImage.open(io.BytesIO(data))
    arr = np.asarray(img)
    return arr.astype(bool) if img.mode == "1" else arr


def _png_entry(array: np.ndarray) -> dict[str, Any]:
    return {"bytes": encode_png(array), "path": None}


# ------------------------------------------------------------------------------------------------ rows


def _json_default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def sample_rows(tile: Tile, samples: list[Sample], split: str) -> list[dict[str, Any]]:
    """Parquet rows for one tile's samples (the tile's images and rasters are PNG-encoded once)."""
    if not samples:
        return []
    images = [_png_entry(tile.image)]
    pair = [*images, _png_entry(tile.image2)] if tile.image2 is not None else None
    rasters = {name: _png_entry(arr) for name, arr in tile_rasters(tile).items()}
    rows = []
    for s in samples:
        meta = dict(s.meta)
        ref_masks = meta.pop("_ref_masks", [])
        names = list(meta.get("rasters", []))
        rows.append(
            {
                "id": s.id,
                "images": pair if s.task == "change" and pair is not None else images,
                "conversations": s.conversations,
                "masks": [_png_entry(np.asarray(m, dtype=bool)) for m in s.masks],
                "ref_masks": [_png_entry(np.asarray(m, dtype=bool)) for m in ref_masks],
                "rasters": [rasters[n] for n in names],
                "raster_names": names,
                "task": s.task,
                "source": tile.source,
                "license": tile.license,
                "weak": bool(tile.weak),
                "crs": tile.crs,
                "transform": list(tile.transform) if tile.transform is not None else None,
                "gsd": tile.gsd,
                "split": split,
                "block": tile.block,
                "tile_id": tile.id,
                "meta": json.dumps(meta, default=_json_default),
            }
        )
    return rows


# ------------------------------------------------------------------------------------------------ plan


@dataclass
class Shard:
    split: str
    index: int
    refs: list[TileRef]

    @property
    def name(self) -> str:
        return f"{self.split}-{self.index:05d}"


def assign_splits(blocks: list[str], fractions: tuple[float, float, float], seed: int) -> dict[str, str]:
    """Blocks -> split, shuffled by the seed and cut by the fractions (each split with a share gets >= 1 block
    when there are enough blocks), so all tiles of one place land in one split."""
    if len(fractions) != 3 or any(f < 0 for f in fractions) or sum(fractions) <= 0:
        raise ValueError(f"split_fractions must be three non-negative numbers, got {fractions}")
    order = sorted(set(blocks))
    random.Random(f"split:{seed}").shuffle(order)
    total = sum(fractions)
    n = len(order)
    counts = [math.floor(n * f / total) for f in fractions]
    for i in range(3):  # give empty splits with a share one block, taken from the largest
        if fractions[i] > 0 and counts[i] == 0 and n >= sum(f > 0 for f in fractions):
            counts[counts.index(max(counts))] -= 1
            counts[i] = 1
    counts[0] += n - sum(counts)
    out, start = {}, 0
    for split, c in zip(SPLITS, counts):
        for b in order[start : start + c]:
            out[b] = split
        start += c
    return out


def plan_shards(cfg: GenConfig, refs: list[TileRef]) -> list[Shard]:
    if cfg.max_tiles is not None:
        refs = refs[: cfg.max_tiles]
    split_of = assign_splits([r.block for r in refs], cfg.split_fractions, cfg.seed)
    per_shard = int(
        cfg.extra.get("tiles_per_shard")
        or max(1, round(cfg.shard_size / (SAMPLES_PER_FAMILY * len(cfg.tasks))))
    )
    shards = []
    for split in SPLITS:
        mine = [r for r in refs if split_of[r.block] == split]
        for i in range(0, len(mine), per_shard):
            shards.append(Shard(split, i // per_shard, mine[i : i + per_shard]))
    return shards


def _fingerprint(cfg: GenConfig, shards: list[Shard]) -> dict[str, Any]:
    plan = [[s.name, [r.id for r in s.refs]] for s in shards]
    digest = hashlib.sha256(json.dumps([plan, list(cfg.tasks), cfg.seed]).encode()).hexdigest()
    return {"sha256": digest, "tasks": list(cfg.tasks), "seed": cfg.seed, "shards": len(shards)}


# ------------------------------------------------------------------------------------------------ run


def _atomic_write(path: Path, write: Callable[[str], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        write(str(tmp))


def _write_json(path: Path, obj: Any) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=1, sort_keys=True, default=_json_default)

    _atomic_write(path, write)


def run_shard(cfg: GenConfig, shard: Shard, loader: Loader) -> dict[str, Any]:
    """Load, generate and write one shard; returns its stats. Pure of global state, so it runs in any worker."""
    from datasets import Dataset

    out = Path(cfg.out)
    rows: list[dict[str, Any]] = []
    stats: dict[str, Any] = {
        "shard": shard.name,
        "split": shard.split,
        "tiles": 0,
        "tiles_empty": 0,
        "samples": 0,
        "tasks": Counter(),
        "types": Counter(),
        "class_pixels": Counter(),
        "unknown_values": Counter(),
        "ignored_pixels": 0,
        "weak_samples": 0,
        "blocks": sorted({r.block for r in shard.refs}),
    }
    for ref in shard.refs:
        stats["tiles"] += 1
        tile = loader(cfg, ref)
        if tile is None:
            stats["tiles_empty"] += 1
            continue
        tile.block = tile.block or ref.block
        for v, n in tile.unknown_values.items():  # read_labels already mapped them to ignore
            stats["unknown_values"][str(v)] += n
        samples = run_tasks(tile, cfg.tasks, cfg.seed)
        if cfg.paraphrase and samples:
            from data_gen.paraphrase import paraphrase_samples

            samples = paraphrase_samples(samples, seed=cfg.seed)
        if not samples:
            stats["tiles_empty"] += 1
            continue
        a = regions.analyse(tile)
        for c in a.cover:
            stats["class_pixels"][c.info.name] += c.pixels
        for v, n in a.unknown.items():
            stats["unknown_values"][str(v)] += n
        stats["ignored_pixels"] += a.ignored
        for s in samples:
            stats["tasks"][s.task] += 1
            for t in s.meta.get("types", []):
                stats["types"][t] += 1
        stats["weak_samples"] += len(samples) if tile.weak else 0
        rows.extend(sample_rows(tile, samples, shard.split))
    stats["samples"] = len(rows)
    _write_json(out / "stats" / f"{shard.name}.json", stats)
    ds = Dataset.from_list(rows, features=features()) if rows else Dataset.from_dict({}, features=features())
    _atomic_write(out / "data" / f"{shard.name}.parquet", lambda tmp: ds.to_parquet(tmp))
    return stats


def _run_shard_job(job: tuple[GenConfig, Shard, Loader]) -> dict[str, Any]:
    return run_shard(*job)


def with_default_sources(planner: Planner | None, loader: Loader | None) -> tuple[Planner, Loader]:
    """Fill a missing planner/loader with ``data_gen.sources`` (imported only then: it pulls in rasterio, osmium)."""
    if planner is None or loader is None:
        from data_gen import sources

        planner, loader = planner or sources.plan_tiles, loader or sources.load_tile
    return planner, loader


def shards_to_run(cfg: GenConfig, planner: Planner) -> tuple[list[Shard], list[Shard]]:
    """Plan the shards and check them against ``plan.json``; returns (all shards, those without a parquet file).

    Both executors (the pool here, Ray in ``data_gen.ray_driver``) start from this, so they cut the same shards,
    refuse the same foreign folders and skip the same finished files.
    """
    out = Path(cfg.out)
    refs = planner(cfg)
    if not refs:
        raise ValueError("no tiles to generate from: check --image/--labels (the planner found nothing)")
    shards = plan_shards(cfg, refs)
    fingerprint = _fingerprint(cfg, shards)
    plan_path = out / "plan.json"
    if plan_path.exists():
        old = json.loads(plan_path.read_text())
        if old.get("sha256") != fingerprint["sha256"]:
            raise ValueError(
                f"{out} holds a dataset from a different plan (tiles, tasks or seed); use a new --out"
            )
    else:
        _write_json(plan_path, fingerprint)
    todo = [s for s in shards if not (out / "data" / f"{s.name}.parquet").exists()]
    log.info("%d tiles in %d shards; %d already done", len(refs), len(shards), len(shards) - len(todo))
    return shards, todo


def build_dataset(cfg: GenConfig, planner: Planner | None = None, loader: Loader | None = None) -> Path:
    """Generate the dataset described by ``cfg`` under ``cfg.out``; finished shards are skipped (resume).

    ``planner``/``loader`` default to ``data_gen.sources.plan_tiles``/``load_tile``; tests pass their own.
    """
    planner, loader = with_default_sources(planner, loader)
    shards, todo = shards_to_run(cfg, planner)
    jobs = [(cfg, s, loader) for s in todo]
    bar = tqdm(total=len(shards), initial=len(shards) - len(todo), desc="shards", unit="shard")
    if cfg.num_proc > 1 and len(jobs) > 1:
        with multiprocessing.get_context().Pool(min(cfg.num_proc, len(jobs))) as pool:
            for _ in pool.imap_unordered(_run_shard_job, jobs):
                bar.update(1)
    else:
        for job in jobs:
            _run_shard_job(job)
            bar.update(1)
    bar.close()
    from data_gen.card import write_card

    write_card(cfg.out, cfg)
    return Path(cfg.out)


def config_dict(cfg: GenConfig) -> dict[str, Any]:
    return {k: v for k, v in asdict(cfg).items() if k != "extra"}
