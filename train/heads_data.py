"""Stage A data: (image, phrase, mask) triples from ``rsvlm gen`` datasets, augmented, with cached tower maps.

Flow: corpus folders -> ``collect_tiles`` (one ``TileTargets`` per tile: the tile image, and per class a mask, an
ignore mask and its phrases) -> ``render_variants`` (the tile as the held-out world may show it: identity, a flip or
turn, panchromatic, colour-jittered at a coarser GSD) -> ``encode_items`` (the frozen tower once per variant,
kept as bf16 maps) -> ``HeadItems``, which the stage A loop samples from.

Targets come from two places, so every source counts:
- a dense ``labels`` raster (label-raster and weak NDVI/NDWI sources): every class of the source's taxonomy is a
  positive where it covers pixels, and a *negative* (an empty mask) where it is absent from the tile, so the decoder
  learns that "water" on a tile without water is nothing; the taxonomy's ignore values (and padding) are not scored;
- ``<p>phrase</p> [SEG]`` answers of single-image samples (vector sources: xBD, OSM buildings, GeoPixelD, boxes)
  with their masks: positives only, since their labels are not exhaustive for other classes.

Change pairs (``collect_pairs``, for ``train.heads --change``) are the same ``TileTargets`` with a two-date image
``[2, H, W, 3]`` and one target, the ``change`` raster (an empty one is a negative: "nothing changed here").
"""

from __future__ import annotations

import io
import json
import logging
import random
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from rsvlm.asked import CHANGE_PHRASE
from rsvlm.presence import concept_of

logger = logging.getLogger(__name__)

_PHRASE_SEG = re.compile(r"<p>(.*?)</p>\s*\[SEG\]")


@dataclass
class Target:
    """One class on one tile: ``mask`` (bool ``[H, W]``, all False for a negative), ``ignore`` (pixels not
    scored, or None), ``phrases`` to prompt with (one is drawn per use), ``concept`` for the metrics."""

    mask: np.ndarray
    phrases: list[str]
    concept: str
    ignore: np.ndarray | None = None

    @property
    def positive(self) -> bool:
        return bool(self.mask.any())


@dataclass
class TileTargets:
    tile_id: str
    source: str
    split: str
    image: np.ndarray  # uint8 [H, W, 3], or [2, H, W, 3] for a change pair (date 1, date 2)
    targets: list[Target] = field(default_factory=list)


def _png(value) -> np.ndarray:
    if isinstance(value, Image.Image):
        return np.asarray(value)
    data = value["bytes"] if isinstance(value, dict) else value
    return np.asarray(Image.open(io.BytesIO(data)))


def source_taxonomy(gen: dict) -> str | None:
    """The taxonomy a source's ``labels`` raster is written in (None: the source has no dense labels)."""
    if gen.get("labels"):
        return gen.get("taxonomy", "landcover.ai")
    if gen.get("weak_labels") == "on" or (gen.get("image2") and not gen.get("change_mask")):
        return "weak-ndvi-ndwi"
    return None


def collect_tiles(
    corpus: Path, recipe: dict, splits: set[str], sources: set[str] | None = None, cores: bool = False
) -> list[TileTargets]:
    """Every single-image tile of the corpus's datasets in ``splits``, with its targets (``cores``: and, beside
    each building target, its ``core_target``)."""
    import pyarrow.parquet as pq

    from data_gen.sources.taxonomy import load_taxonomy
    from rsvlm.grounding import normalise_phrase

    tiles: list[TileTargets] = []
    for name, source in recipe["sources"].items():
        if sources is not None and name not in sources:
            continue
        files = sorted((corpus / name / "data").glob("*.parquet"))
        files = [f for f in files if f.name.split("-")[0] in splits]
        if not files:
            continue
        tax_name = source_taxonomy(source.get("gen", {}))
        taxonomy = load_taxonomy(tax_name) if tax_name else None
        columns = ["images", "conversations", "masks", "rasters", "raster_names", "split", "tile_id"]
        rows = [
            r for f in files for r in pq.read_table(f, columns=columns).to_pylist()
        ]  # PNG bytes, not decoded
        by_tile: dict[str, TileTargets] = {}
        seen: dict[str, set[str]] = defaultdict(set)
        for row in tqdm(rows, desc=f"targets {name}", unit="row", leave=False):
            if len(row["images"]) != 1:
                continue  # change pairs are not stage A's
            tile_id = row["tile_id"]
            tile = by_tile.get(tile_id)
            if tile is None:
                image = _png(row["images"][0])
                if image.ndim == 2:
                    image = np.repeat(image[..., None], 3, axis=-1)
                tile = TileTargets(tile_id, name, row["split"], np.ascontiguousarray(image[..., :3]))
                by_tile[tile_id] = tile
                if taxonomy is not None and "labels" in row["raster_names"]:
                    labels = _png(row["rasters"][row["raster_names"].index("labels")]).astype(np.int64)
                    tile.targets.extend(_dense_targets(labels, taxonomy))
                    seen[tile_id].update("dense:" + t.phrases[0] for t in tile.targets)
            if taxonomy is not None:
                continue  # dense labels already give every class of this tile
            phrases = [p for turn in row["conversations"] if turn["role"] == "assistant"
                       for p in _PHRASE_SEG.findall(turn["content"])]  # fmt: skip
            for phrase, mask in zip(phrases, row["masks"]):
                key = normalise_phrase(phrase)
                # Class phrases only ("all the buildings", "trees"): a mean-of-embeddings prompt cannot carry
                # "the second largest building in the top left", which is the LLM's job, not the decoder's.
                if key in seen[tile_id] or len(key.split()) > 3:
                    continue
                seen[tile_id].add(key)
                m = _png(mask).astype(bool)
                if m.shape == tile.image.shape[:2]:
                    tile.targets.append(Target(m, [phrase], concept_of([phrase])))
        kept = [t for t in by_tile.values() if t.targets]
        if cores:
            for tile in kept:
                tile.targets.extend([core_target(t) for t in tile.targets if t.concept == "building"])
        logger.info("%s: %d tiles with targets", name, len(kept))
        tiles.extend(kept)
    return tiles


CORE_PHRASE = "the middle of each building"


def core_target(target: Target) -> Target:
    """The middle of each object of a building target: the pixels of each 8-connected patch at least half as far
    from its edge as its innermost pixel, so objects that do not touch keep one core each and a count of cores is a
    count of patches (data_gen's count of a label raster) even where the decoder's outline merges neighbours."""
    from scipy import ndimage

    mask = target.mask
    core = np.zeros_like(mask)
    if mask.any():
        objects, n = ndimage.label(mask, structure=np.ones((3, 3), bool))
        depth = ndimage.distance_transform_edt(mask)
        innermost = ndimage.maximum(depth, objects, index=np.arange(n + 1))
        core = mask & (depth >= 0.5 * np.asarray(innermost)[objects])
    return Target(core, [CORE_PHRASE], "building_core", target.ignore)


CHANGE_PHRASES = [CHANGE_PHRASE, "changes", "the changed area", "what changed", "change"]


def collect_pairs(
    corpus: Path, recipe: dict, splits: set[str], sources: set[str] | None = None
) -> list[TileTargets]:
    """Every two-date tile of the corpus's datasets in ``splits`` with a ``change`` raster, as one change target."""
    import pyarrow.parquet as pq

    tiles: list[TileTargets] = []
    for name in recipe["sources"]:
        if sources is not None and name not in sources:
            continue
        files = [
            f for f in sorted((corpus / name / "data").glob("*.parquet")) if f.name.split("-")[0] in splits
        ]
        by_tile: dict[str, TileTargets] = {}
        for f in files:
            for row in pq.read_table(
                f, columns=["images", "rasters", "raster_names", "split", "tile_id"]
            ).to_pylist():
                if (
                    len(row["images"]) != 2
                    or "change" not in row["raster_names"]
                    or row["tile_id"] in by_tile
                ):
                    continue
                dates = [_png(v) for v in row["images"]]
                dates = [np.repeat(d[..., None], 3, axis=-1) if d.ndim == 2 else d[..., :3] for d in dates]
                if dates[0].shape != dates[1].shape:
                    continue
                change = _png(row["rasters"][row["raster_names"].index("change")]) > 0
                tile = TileTargets(row["tile_id"], name, row["split"], np.ascontiguousarray(np.stack(dates)))
                tile.targets.append(Target(change, CHANGE_PHRASES, "change"))
                by_tile[row["tile_id"]] = tile
        if by_tile:
            logger.info("%s: %d change pairs", name, len(by_tile))
        tiles.extend(by_tile.values())
    return tiles


def _dense_targets(labels: np.ndarray, taxonomy) -> list[Target]:
    ignore_values = list(taxonomy.ignore_values)
    ignore = np.isin(labels, ignore_values) if ignore_values else None
    targets = []
    for info in taxonomy.classes.values():
        if info.name in ("background", "other", "clutter", "land", "unlabeled"):
            continue  # "the background" is not a thing anyone asks to outline
        phrases = [info.name, *info.synonyms]
        targets.append(Target(labels == info.value, phrases, concept_of(phrases), ignore))
    return targets


# ----------------------------------------------------------------------------------------------- augmentation


def _luma(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)


def render_variants(tile: TileTargets, rng: random.Random, count: int) -> list[tuple[np.ndarray, int, int]]:
    """Up to ``count`` renderings ``(image uint8 [H, W, 3], turns, flip)`` of a tile: identity first, then a turn or
    flip, a panchromatic copy, and a colour-jittered copy at half the resolution (scale jitter).

    A change pair (``[2, H, W, 3]``) is turned and flipped as one, its dates swapped at random in the turned copy
    ("what changed" is the same either way), and each date jittered on its own: two dates never share a sensor
    calibration, and that difference is not change."""
    img = tile.image
    out = [(img, 0, 0)]
    turns, flip = rng.randrange(1, 4), rng.randrange(2)
    geo = np.rot90(img[..., ::-1, :] if flip else img, turns, axes=(-3, -2))
    if img.ndim == 4 and rng.random() < 0.5:
        geo = geo[::-1]
    out.append((np.ascontiguousarray(geo), turns, flip))
    pan = np.repeat(np.clip(_luma(img), 0, 255).astype(np.uint8)[..., None], 3, axis=-1)
    out.append((pan, 0, 0))
    dates = img if img.ndim == 4 else img[None]
    jittered = np.stack([_jitter_coarser(d, rng) for d in dates])
    out.append((jittered if img.ndim == 4 else jittered[0], 0, 0))
    return out[:count]


def _jitter_coarser(image: np.ndarray, rng: random.Random) -> np.ndarray:
    x = image.astype(np.float32) / 255
    gains = np.array([rng.uniform(0.8, 1.2) for _ in range(3)], np.float32)
    x = np.clip((x * gains) ** rng.uniform(0.7, 1.4) * rng.uniform(0.8, 1.2), 0, 1)
    h, w = x.shape[:2]
    small = Image.fromarray((x * 255).astype(np.uint8)).resize(
        (max(1, w // 2), max(1, h // 2)), Image.BILINEAR
    )
    return np.asarray(small.resize((w, h), Image.BILINEAR))


def transform_mask(mask: np.ndarray, turns: int, flip: int) -> np.ndarray:
    return np.ascontiguousarray(np.rot90(mask[:, ::-1] if flip else mask, turns))


# ----------------------------------------------------------------------------------------------- encoded items


@dataclass
class HeadItems:
    """Encoded renderings: ``maps`` bf16 ``[N, D, h, w]``, ``pixels`` uint8 ``[N, 3, S, S]``, ``valid`` bool
    ``[N, S, S]`` (not padding), and per item its tile index, rendering and source. For change pairs ``maps`` is
    ``[N, 2, D, h, w]`` and ``pixels`` ``[N, 2, 3, S, S]`` (date 1, date 2)."""

    maps: torch.Tensor
    pixels: torch.Tensor
    valid: torch.Tensor
    tile_index: list[int]
    rendering: list[tuple[int, int]]
    sources: list[str]
    metas: list


def encode_items(model, tiles: list[TileTargets], variants: int, seed: int, batch: int = 8) -> HeadItems:
    """The frozen tower over every rendering of every tile, in bf16 autocast where the CPU does bf16 natively
    (about 10x faster than float32 on AMX), through the model's own processor (no train/inference skew)."""
    from rsvlm.assistant import cpu_has_native_bf16

    processor = model.get_processor()
    size = model.config.image_size
    jobs = []
    for index, tile in enumerate(tiles):
        rng = random.Random(f"{seed}:{tile.tile_id}:{tile.source}")
        for image, turns, flip in render_variants(tile, rng, variants):
            for date in image if image.ndim == 4 else image[None]:
                jobs.append((index, date, turns, flip))
    dates = 2 if tiles and tiles[0].image.ndim == 4 else 1
    n = len(jobs)
    maps = None
    pixels = torch.zeros(n, 3, size, size, dtype=torch.uint8)
    valid = torch.zeros(n, size, size, dtype=torch.bool)
    metas = []
    use_bf16 = cpu_has_native_bf16()
    for start in tqdm(range(0, n, batch), desc="encode", unit="batch"):
        chunk = jobs[start : start + batch]
        tensors = []
        for _, image, _, _ in chunk:
            tensor, meta = processor.preprocess_image(np.moveaxis(image, -1, 0).astype(np.float32) / 255)
            tensors.append(tensor)
            metas.append(meta)
        x = torch.stack(tensors)
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=use_bf16):
            m = model.vision(model.band_adapter(x))
        if maps is None:
            maps = torch.zeros(n, *m.shape[1:], dtype=torch.bfloat16)
        maps[start : start + len(chunk)] = m.to(torch.bfloat16)
        pixels[start : start + len(chunk)] = (x * 255).round().to(torch.uint8)
        for k, meta in enumerate(metas[start : start + len(chunk)]):
            valid[start + k, : meta.resized_height, : meta.resized_width] = True
    if dates == 2:  # the two dates of a rendering are consecutive jobs: fold them into one item
        maps = maps.unflatten(0, (n // 2, 2))
        pixels = pixels.unflatten(0, (n // 2, 2))
        valid = valid[0::2] & valid[1::2]
        jobs, metas = jobs[0::2], metas[0::2]
    return HeadItems(
        maps=maps,
        pixels=pixels,
        valid=valid,
        tile_index=[j[0] for j in jobs],
        rendering=[(j[2], j[3]) for j in jobs],
        sources=[tiles[j[0]].source for j in jobs],
        metas=metas,
    )


def item_target(items: HeadItems, tiles: list[TileTargets], processor, i: int, target: Target):
    """``(target [S, S] float, weight [S, S] float)`` of a target on item ``i`` (its rendering, resized, padded)."""
    turns, flip = items.rendering[i]
    meta = items.metas[i]
    mask = transform_mask(target.mask, turns, flip).astype(np.float32)
    weight = (
        np.ones_like(mask)
        if target.ignore is None
        else (~transform_mask(target.ignore, turns, flip)).astype(np.float32)
    )
    t = processor.preprocess_mask(mask, meta)
    w = processor.preprocess_mask(weight, meta)
    w = (w > 0.5).float() * items.valid[i].float()
    return t, w


def summary(tiles: list[TileTargets]) -> dict:
    counts: dict = defaultdict(lambda: defaultdict(int))
    for t in tiles:
        counts[t.source]["tiles"] += 1
        for target in t.targets:
            counts[t.source][f"{target.concept}{'+' if target.positive else '-'}"] += 1
    return json.loads(json.dumps(counts))
