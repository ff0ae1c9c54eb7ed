"""The one shape every benchmark is read into: a ``Record`` (images, question, target, task).

Targets are kept in source pixels of the first image, as JSON-able values (boxes, corner polygons, mask
polygons, a COCO segmentation, a mask PNG path, reference texts), so a record can be written to the per-sample
log and a target mask is rasterised only when it is scored (``target_mask``), on the grid of the image read.

Tasks: ``grounding`` (box), ``obb`` (oriented box), ``refseg`` (one mask), ``gcg`` (grounded caption: text +
one mask per phrase), ``change_mask``, ``change_binary``, ``change_caption``, ``caption``, ``vqa``, ``count``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from pycocotools import mask as coco_mask
from shapely.geometry import Polygon

TASKS = (
    "grounding",
    "obb",
    "obb_multi",
    "refseg",
    "gcg",
    "change_mask",
    "change_binary",
    "change_caption",
    "caption",
    "vqa",
    "count",
)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


class BenchmarkError(ValueError):
    """A benchmark file or folder that cannot be read as the format asked for."""


@dataclass
class Record:
    """One question with its target, in the source pixels of ``images[0]``."""

    id: str
    task: str
    images: list[str]
    question: str
    box: list[float] | None = None  # [x1, y1, x2, y2]
    obb: list[list[float]] | None = None  # four corners [[x, y], ...]
    obbs: list[list[list[float]]] | None = None  # several objects' corners (``obb_multi``)
    polygons: list[list[list[list[float]]]] | None = None  # per target mask: rings [[x, y], ...]
    ignore_polygons: list[list[list[float]]] | None = None  # rings whose pixels are scored for neither side
    mask_paths: list[str] | None = None  # per target mask: a PNG (non-zero = target)
    # One target mask as COCO stores it (a list of flat polygons, or an RLE dict), decoded as REFER's getMask.
    coco_segmentation: list[list[float]] | dict[str, Any] | None = None
    texts: list[str] = field(default_factory=list)  # reference captions / answers
    number: float | None = None  # counting target
    answer: bool | None = None  # yes/no target (change_binary)
    question_type: str | None = None  # the benchmark's own question type (RSVQA: presence, comp, ...)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def num_masks(self) -> int:
        return len(self.mask_paths or self.polygons or []) + (self.coco_segmentation is not None)

    def target_masks(self, shape: tuple[int, int]) -> list[np.ndarray]:
        """The target masks [H, W] bool, rasterised on ``shape`` (the grid of the image read)."""
        height, width = shape
        masks = []
        for path in self.mask_paths or []:
            pixels = np.asarray(Image.open(path))
            # Change labels are 0 / 255 and read as BIT_CD does (``label // 255``): an anti-aliased 128 is no
            # change. Other masks (written by ``rsvlm gen``) are any non-zero value.
            mask = (
                pixels // 255 > 0 if self.task == "change_mask" and pixels.dtype == np.uint8 else pixels > 0
            )
            if mask.ndim == 3:
                mask = mask.any(-1)
            if mask.shape != (height, width):
                raise BenchmarkError(
                    f"{Path(path).name} is {mask.shape[::-1]} pixels, the image {(width, height)}"
                )
            masks.append(mask)
        if self.coco_segmentation is not None:
            masks.append(coco_target(self.coco_segmentation, shape))
        if self.ignore_polygons:
            return [self._lisa_masks(shape)[0]]
        for rings in self.polygons or []:
            canvas = Image.new("1", (width, height), 0)
            draw = ImageDraw.Draw(canvas)
            for ring in rings:
                if len(ring) >= 3:
                    draw.polygon([(float(x), float(y)) for x, y in ring], fill=1, outline=1)
            masks.append(np.asarray(canvas, dtype=bool))
        return masks

    def ignore_mask(self, shape: tuple[int, int]) -> np.ndarray | None:
        """Pixels scored for neither prediction nor target (LISA's 255), or None when there are none."""
        return self._lisa_masks(shape)[1] if self.ignore_polygons else None

    def _lisa_masks(self, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """LISA's ``get_mask_from_json``: every shape painted largest first, so a smaller shape inside a larger
        one wins its pixels; target shapes paint 1, ignore shapes 255."""
        height, width = shape
        shapes = [(1, r) for rings in self.polygons or [] for r in rings]
        shapes += [(255, r) for r in self.ignore_polygons or []]
        shapes = [(v, r) for v, r in shapes if len(r) >= 3]
        shapes.sort(key=lambda vr: -Polygon(vr[1]).area)
        canvas = Image.new("L", (width, height), 0)
        draw = ImageDraw.Draw(canvas)
        for value, ring in shapes:
            draw.polygon([(float(x), float(y)) for x, y in ring], fill=value, outline=value)
        labels = np.asarray(canvas)
        return labels == 1, labels == 255

    def target_mask(self, shape: tuple[int, int]) -> np.ndarray:
        """All target masks as one (the union): what a single-mask answer is scored against."""
        union = np.zeros(shape, bool)
        for mask in self.target_masks(shape):
            union |= mask
        return union


def coco_target(segmentation: list | dict[str, Any], shape: tuple[int, int]) -> np.ndarray:
    """A COCO segmentation [H, W] bool, decoded as REFER's ``getMask`` does (pycocotools; several polygons or
    RLE parts are one mask). Polygons (flat ``[x1, y1, x2, y2, ...]`` lists) are rasterised on ``shape``; an
    RLE (a dict, or a list of them) carries its own size, which must be the image's."""
    height, width = shape
    if isinstance(segmentation, dict):
        segmentation = [segmentation]
    if segmentation and all(isinstance(part, dict) for part in segmentation):
        decoded = np.zeros((height, width), bool)
        for part in segmentation:
            rle = dict(part)
            if tuple(rle["size"]) != (height, width):
                raise BenchmarkError(
                    f"an RLE mask of {tuple(rle['size'])} on an image of {(height, width)} pixels"
                )
            if isinstance(rle["counts"], list):  # uncompressed RLE
                rle = coco_mask.frPyObjects(rle, *rle["size"])
            elif isinstance(rle["counts"], str):
                rle["counts"] = rle["counts"].encode()
            decoded |= coco_mask.decode(rle) > 0
        return decoded
    decoded = coco_mask.decode(coco_mask.frPyObjects(segmentation, height, width))
    return decoded.sum(axis=2) > 0


class Records(list):
    """The records read from a benchmark, and how many of its entries were left out, by reason (a broken
    geometry, a question without an answer): the report lists them, so a smaller set is never silent."""

    def __init__(self, records=(), skipped: dict[str, int] | None = None):
        super().__init__(records)
        self.skipped: Counter[str] = Counter(skipped or {})
