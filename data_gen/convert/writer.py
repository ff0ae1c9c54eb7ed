"""Drafts of converted rows -> the ``rsvlm gen`` schema, written as parquet shards ``out/data/{split}-NNNNN.parquet``.

A reader yields ``Draft`` rows: text already on the rsvlm protocol, image *paths* and mask *geometries* in source
pixels. ``ShardWriter.add`` finds and decodes the images, rasterises the geometries on the image grid (pixels whose
centre lies inside, as ``rsvlm gen`` does), checks that ``<image>`` and ``[SEG]`` counts match, and counts any row
it cannot keep under one reason in the ``Report``. Shards are written atomically, so a killed conversion leaves
only whole shards behind.
"""

from __future__ import annotations

import json
import logging
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from data_gen.convert.report import BAD_POLYGON, MISSING_IMAGE, UNREADABLE_IMAGE, Report
from rsvlm.grounding import IMAGE_TOKEN, SEG_TOKEN

logger = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
SPLIT_ALIASES = {"train": "train", "trainval": "train", "val": "validation", "valid": "validation",
                 "validation": "validation", "test": "test"}  # fmt: skip


@dataclass
class Draft:
    """One row as a reader sees it. ``skip`` set: the reader already knows the row cannot be kept, and why."""

    id: str
    task: str
    conversations: list[dict[str, str]] = field(default_factory=list)
    # As written in the source (or a list of candidate paths); the writer finds them.
    images: list[str | list[str]] = field(default_factory=list)
    masks: list[Any] = field(default_factory=list)  # shapely geometries in source pixel-edge coordinates
    split: str = "train"
    meta: dict[str, Any] = field(default_factory=dict)
    skip: str | None = None


def split_name(value: str | None, default: str = "train") -> str:
    """A source's split word (``val``, ``trainval`` ...) as one of ``train`` / ``validation`` / ``test``."""
    return SPLIT_ALIASES.get(str(value or default).strip().lower(), default)


def find_image(name: str, roots: list[Path]) -> Path | None:
    """``name`` as written (absolute, or under each root), then by file name under each root."""
    path = Path(name)
    if path.is_absolute() and path.is_file():
        return path
    for root in roots:
        for candidate in (root / path, root / path.name):
            if candidate.is_file():
                return candidate
    return None


def load_rgb(path: Path) -> np.ndarray:
    """Any PIL-readable image as ``[H, W, 3]`` uint8 (multi-band or 16-bit rasters through rasterio)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except Exception:  # PIL cannot read many GeoTIFFs (16-bit, > 4 bands): fall back to rasterio
        import rasterio

        with rasterio.open(path) as src:
            bands = src.read(list(range(1, min(3, src.count) + 1))).astype(np.float64)  # [C, H, W]
        if bands.shape[0] < 3:
            bands = np.repeat(bands[:1], 3, axis=0)
        lo, hi = np.percentile(bands, (2, 98))  # one stretch for all bands, so colours keep their balance
        scaled = (bands - lo) / max(hi - lo, 1e-9) * 255
        return scaled.clip(0, 255).astype(np.uint8).transpose(1, 2, 0)


def rasterise(geometry, height: int, width: int) -> np.ndarray:
    """A shapely geometry in pixel-edge coordinates -> ``[H, W]`` bool (pixel centres inside)."""
    from rasterio.features import rasterize

    if geometry is None or geometry.is_empty:
        return np.zeros((height, width), bool)
    return rasterize([(geometry, 1)], out_shape=(height, width), fill=0, dtype="uint8") > 0


class ShardWriter:
    """Collects rows and writes a shard per ``shard_size`` rows of a split; ``close()`` writes the rest."""

    def __init__(self, out: Path, report: Report, image_roots: list[Path], shard_size: int = 1000,
                 source: str = "", license: str = "") -> None:  # fmt: skip
        self.out = Path(out)
        self.data = self.out / "data"
        if self.data.is_dir() and any(self.data.glob("*.parquet")):
            raise FileExistsError(f"{self.data} already holds parquet shards: convert into an empty --out")
        self.data.mkdir(parents=True, exist_ok=True)
        self.report = report
        self.roots = image_roots
        self.shard_size = int(shard_size)
        self.source, self.license = source, license
        self.rows: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
        self.shards: dict[str, int] = dict.fromkeys(SPLITS, 0)
        self._png: OrderedDict[str, tuple[dict, tuple[int, int]]] = OrderedDict()  # path -> (png, (h, w))

    def _image(self, path: Path) -> tuple[dict[str, Any], tuple[int, int]]:
        """PNG entry and size of an image; the last few are kept, as instruction sets ask many questions of one."""
        key = str(path)
        if key in self._png:
            self._png.move_to_end(key)
            return self._png[key]
        from data_gen.driver import encode_png

        array = load_rgb(path)
        entry = ({"bytes": encode_png(array), "path": None}, array.shape[:2])
        self._png[key] = entry
        if len(self._png) > 16:
            self._png.popitem(last=False)
        return entry

    def add(self, draft: Draft) -> bool:
        """Write ``draft`` (True) or count why not (False)."""
        from data_gen.driver import encode_png

        self.report.read += 1
        if draft.skip:
            self.report.skip(draft.skip)
            return False
        paths = []
        for name in draft.images:
            candidates = name if isinstance(name, list) else [name]
            found = next((p for c in candidates if (p := find_image(c, self.roots)) is not None), None)
            if found is None:
                self.report.missing(candidates[0])
                self.report.skip(MISSING_IMAGE)
                return False
            paths.append(found)
        try:
            images = [self._image(p) for p in paths]
        except Exception as error:  # PIL and rasterio raise many types on a damaged file
            logger.debug("%s: %s", draft.id, error)
            self.report.skip(UNREADABLE_IMAGE)
            return False
        if len({size for _, size in images}) > 1:
            self.report.skip("two dates of different sizes")
            return False
        text = "".join(t["content"] for t in draft.conversations)
        if text.count(IMAGE_TOKEN) != len(images):
            self.report.skip("<image> count differs from the images")
            return False
        if text.count(SEG_TOKEN) != len(draft.masks):
            self.report.skip("[SEG] count differs from the masks")
            return False
        height, width = images[-1][1] if images else (0, 0)
        masks = [rasterise(g, height, width) for g in draft.masks]
        if any(not m.any() for m in masks):
            self.report.skip(BAD_POLYGON)  # a polygon with no pixel on the image (outside it, or degenerate)
            return False
        split = draft.split if draft.split in SPLITS else "train"
        self.rows[split].append(
            {
                "id": draft.id,
                "images": [entry for entry, _ in images],
                "conversations": draft.conversations,
                "masks": [{"bytes": encode_png(m), "path": None} for m in masks],
                "ref_masks": [],
                "rasters": [],
                "raster_names": [],
                "task": draft.task,
                "source": self.source,
                "license": self.license,
                "weak": False,
                "crs": "",
                "transform": None,
                "gsd": None,
                "split": split,
                "block": "",
                "tile_id": draft.id,
                "meta": json.dumps(draft.meta),
            }
        )
        self.report.wrote(split, draft.task)
        if len(self.rows[split]) >= self.shard_size:
            self._flush(split)
        return True

    def _flush(self, split: str) -> None:
        from datasets import Dataset
        from datasets.utils import logging as datasets_logging

        from data_gen.driver import features

        datasets_logging.disable_progress_bar()  # one bar per shard would bury the conversion's own

        rows, self.rows[split] = self.rows[split], []
        if not rows:
            return
        path = self.data / f"{split}-{self.shards[split]:05d}.parquet"
        self.shards[split] += 1
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        Dataset.from_list(rows, features=features()).to_parquet(str(tmp))
        os.replace(tmp, path)

    def close(self) -> None:
        for split in SPLITS:
            self._flush(split)
