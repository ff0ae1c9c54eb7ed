"""The trivial answers every report scores next to the model, so a figure can be read against chance.

    answers = baseline_answers(records)          # {"centre box": {id: Answer}, "empty mask": {...}, ...}

- ``centre box``: the middle half of the image (``[W/4, H/4, 3W/4, 3H/4]``), for boxes and oriented boxes;
- ``whole-image mask`` and ``empty mask``: for referring segmentation and change masks;
- ``majority answer``: the most common reference answer of the set, for every text task (VQA, yes/no,
  counting, captions).

Each baseline is an ``Answer`` scored by the same ``score_answer`` as the model, so they share every convention.
A record whose image cannot be read gets no geometric baseline (its size is unknown).

The model itself answers one more baseline when asked (``rsvlm eval --blank-baseline``): every record again,
on ``blanked_image`` inputs, so a figure can be read against what the model says without looking.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence

import numpy as np

from eval.readers import Record
from rsvlm import geo
from rsvlm.assistant import Answer
from rsvlm.grounding import Region

BOX_TASKS = ("grounding", "obb", "obb_multi")
MASK_TASKS = ("refseg", "change_mask")
TEXT_TASKS = ("vqa", "change_binary", "count", "caption", "change_caption")


def _shape(record: Record) -> tuple[int, int] | None:
    try:
        info = geo.inspect_raster(record.images[0])
    except (ValueError, FileNotFoundError, OSError):
        return None
    return info.height, info.width


def centre_box(shape: tuple[int, int]) -> tuple[float, float, float, float]:
    height, width = shape
    return width / 4, height / 4, 3 * width / 4, 3 * height / 4


def _majority(records: Sequence[Record], task: str) -> str:
    counts = Counter(t for r in records if r.task == task for t in r.texts[:1])
    if task == "change_binary":
        counts = Counter("yes" if r.answer else "no" for r in records if r.task == task)
    if task == "count":
        counts = Counter(f"{r.number:g}" for r in records if r.task == task and r.number is not None)
    return counts.most_common(1)[0][0] if counts else ""


def baseline_answers(records: Sequence[Record]) -> dict[str, dict[str, Answer]]:
    """Baseline name -> record id -> its answer, for the records each baseline applies to."""
    out: dict[str, dict[str, Answer]] = {
        "centre box": {},
        "whole-image mask": {},
        "empty mask": {},
        "majority answer": {},
    }
    majority = {task: _majority(records, task) for task in TEXT_TASKS}
    for record in records:
        if record.task in TEXT_TASKS:
            out["majority answer"][record.id] = Answer(text=majority[record.task])
            continue
        if record.task not in BOX_TASKS + MASK_TASKS:
            continue
        shape = _shape(record)
        if shape is None:
            continue
        if record.task in BOX_TASKS:
            x1, y1, x2, y2 = centre_box(shape)
            region = Region(pixel_box=(x1, y1, x2, y2))
            if record.task in ("obb", "obb_multi"):
                region.pixel_polygon = [(x1, y1), (x2, y1), (x2, y2), (x1, y2)]
            out["centre box"][record.id] = Answer(text="", regions=[region], image_shape=shape)
        else:
            for name, fill in (("whole-image mask", True), ("empty mask", False)):
                mask = np.full(shape, fill, bool)
                out[name][record.id] = Answer(text="", regions=[Region(mask=mask)], image_shape=shape)
    return {name: answers for name, answers in out.items() if answers}


def blanked_image(path: str) -> geo.GeoImage:
    """The image at ``path`` with every band set to its own mean: the same size, bands, georeference and overall
    brightness, and nothing to see. Read whole (a large scene too); no path is kept, so nothing can read the real
    pixels back from it."""
    image = geo.read_image(path)
    flat = np.broadcast_to(image.data.mean(axis=(1, 2), keepdims=True), image.data.shape).astype(np.float32)
    return dataclasses.replace(image, data=flat.copy(), valid=np.ones_like(image.valid), path=None)
