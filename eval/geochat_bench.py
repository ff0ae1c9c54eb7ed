"""GeoChat-Bench referring and region-captioning files -> ``obb`` and ``caption`` records.

    records = read_geochat_bench("GeoChat-Bench", images="geochat_images/", split="referring")
    records = read_geochat_bench("GeoChat-Bench/region_captioning.jsonl", images="geochat_images/")

Both files (``MBZUAI/GeoChat-Bench``) are JSON Lines of ``{"question_id", "image_id", "question",
"ground_truth", "type", "dataset", "obj_ids", "size_group"}``; the image is ``{image_id}.png`` (GeoChat's
``batch_geochat_*.py``). What a line is follows from its ``ground_truth``:

- **referring** (``referring.jsonl``; GeoChat asks ``[refer] Give me the location of <p> {question} </p>``):
  ``ground_truth`` is a list of oriented boxes, four ``[x, y]`` corners each in image pixels (TEOChat's GeoChat-Bench
  scorer reads them as polygons against predictions scaled to the image). A question with one box is an ``obb``
  record; a question naming several objects has several boxes and is an ``obb_multi`` record, scored as TEOChat's
  GeoChat-Bench scorer does (every target box matched one to one at IoU > 0.5; Acc@0.5 = matches / boxes). Boxes
  that are not four finite corners enclosing an area are left out and counted.
- **region captioning** (``region_captioning.jsonl``; GeoChat asks ``[identify] What is the object present at
  {question}``): ``question`` is a GeoChat box ``{<x1><y1><x2><y2>|<θ>}`` on 0-100, rewritten on rsvlm's protocol by
  the converter's own ``geochat`` box convention (``data_gen/convert/boxes.py``); ``ground_truth`` is the reference
  caption -> a ``caption`` record.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from shapely.geometry import Polygon

from data_gen.convert.boxes import PRESETS, BoxRangeError
from eval.layout import find_image, load_jsonl
from eval.record import BenchmarkError, Record, Records

BROKEN_GEOMETRY = "broken geometry"
KEYS = ("question_id", "image_id", "question", "ground_truth")


def valid_corners(box: Any) -> list[list[float]] | None:
    """Four finite [x, y] corners enclosing a positive area without crossing itself, else None."""
    if not (isinstance(box, list) and len(box) == 4):
        return None
    if not all(isinstance(p, list) and len(p) == 2 for p in box):
        return None
    try:
        corners = [[float(x), float(y)] for x, y in box]
    except (TypeError, ValueError):
        return None
    if not all(math.isfinite(v) for p in corners for v in p):
        return None
    polygon = Polygon(corners)
    return corners if polygon.is_valid and polygon.area > 0 else None


def _bench_file(path: Path, split: str | None) -> Path:
    if path.is_dir():
        if not split:
            raise BenchmarkError(
                f"{path}: give --split referring or --split region_captioning (the file's name)"
            )
        path = path / f"{split}.jsonl"
        if not path.is_file():
            raise BenchmarkError(f"{path.parent} is not a GeoChat-Bench folder: missing {path.name}")
    elif split:
        raise BenchmarkError(f"--split {split} needs the GeoChat-Bench folder, not one file")
    return path


def read_geochat_bench(
    path: str | Path, images: str | Path | None = None, split: str | None = None
) -> Records:
    """``path`` is ``referring.jsonl`` / ``region_captioning.jsonl``, or their folder with ``split`` naming one.
    Images are looked up in ``images`` (default: an ``images/`` folder next to the file, else the file's folder)."""
    file = _bench_file(Path(path), split)
    rows = load_jsonl(file)
    folder = (
        Path(images)
        if images
        else next((d for d in (file.parent / "images", file.parent) if d.is_dir()), file.parent)
    )
    records = Records()
    for number, row in enumerate(rows, 1):
        if not isinstance(row, dict) or not all(k in row for k in KEYS):
            raise BenchmarkError(f"{file.name} line {number}: not GeoChat-Bench (needs {', '.join(KEYS)})")
        rid = str(row["question_id"])
        image = str(find_image(folder, f"{row['image_id']}.png"))
        truth = row["ground_truth"]
        if isinstance(truth, str) or (
            isinstance(truth, list) and truth and all(isinstance(t, str) for t in truth)
        ):
            try:
                region, count = PRESETS["geochat"].rewrite(str(row["question"]))
            except BoxRangeError:
                count = 0
            if count != 1:
                records.skipped[BROKEN_GEOMETRY] += 1
                continue
            captions = [truth] if isinstance(truth, str) else truth
            question = f"What is the object present at {region.strip()}? Describe it briefly."
            records.append(Record(rid, "caption", [image], question, texts=[c.strip() for c in captions]))
            continue
        boxes = truth if isinstance(truth, list) else []
        corners = [valid_corners(b) for b in boxes]
        if not corners or any(c is None for c in corners):
            records.skipped[BROKEN_GEOMETRY] += 1
            continue
        expression = " ".join(str(row["question"]).split())
        if len(corners) > 1:
            question = f"Give the oriented boxes of {expression}."
            records.append(Record(rid, "obb_multi", [image], question, obbs=corners, texts=[expression]))
            continue
        question = f"Give the oriented box of {expression}."
        records.append(Record(rid, "obb", [image], question, obb=corners[0], texts=[expression]))
    return records
