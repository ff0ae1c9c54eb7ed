"""DOTA ``labelTxt`` (v1.0 / v1.5 / v2.0): oriented boxes per image, read as class-level questions.

    records = read_benchmark("dota", "path/to/DOTA", split="val")   # <root>/val/images, <root>/val/labelTxt

Layout (the DOTA devkit's): ``images/P0706.png`` beside ``labelTxt/P0706.txt``, optionally one folder per split
(``train/``, ``val/``). A label file may open with ``imagesource:…`` and ``gsd:…`` lines; every other line is
``x1 y1 x2 y2 x3 y3 x4 y4 class difficult`` in image pixels.

DOTA labels every object of its classes, so a class is a complete answer on its image, and each (image, class)
becomes two records:
- "Give the oriented boxes of all the ships." -> ``obb_multi`` (one object: ``obb``), scored as GeoChat-Bench's
  several-object lines are (one-to-one matches at IoU > 0.5, over the target boxes);
- "How many ships are there?" -> ``count``.

Objects flagged ``difficult`` are left out of both and counted (the DOTA devkit's ``voc_eval`` ignores them: they
are neither a hit nor a miss there). Here a predicted box on a difficult object lowers ``precision@0.5`` a
little, which the report's skipped counts let a reader judge. Lines that are not ten fields, or whose corners do
not enclose an area, are left out and counted too.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from data_gen.tasks.phrasing import plural
from eval.geochat_bench import BROKEN_GEOMETRY, valid_corners
from eval.layout import files, find_image
from eval.record import BenchmarkError, Record, Records

DIFFICULT = "difficult object (ignored, as the DOTA devkit does)"
MALFORMED = "malformed label line"
_HEADERS = ("imagesource:", "gsd:")


def _label_folder(path: Path, split: str | None) -> tuple[Path, Path | None]:
    """(labelTxt folder or file, images folder or None) for a DOTA root, a split folder or a label folder."""
    if split:
        if not (path / split).is_dir():
            raise BenchmarkError(f"{path} has no {split}/ folder (DOTA keeps each split in its own folder)")
        path = path / split
    if path.is_dir() and (path / "labelTxt").is_dir():
        return path / "labelTxt", path / "images" if (path / "images").is_dir() else None
    if path.is_dir() and not any(path.glob("*.txt")):
        raise BenchmarkError(f"{path} is not a DOTA folder: no labelTxt/ and no *.txt label files")
    parent = path.parent if path.is_file() else path
    images = parent.parent / "images"
    return path, images if images.is_dir() else None


def read_dota(path: str | Path, images: str | Path | None = None, split: str | None = None) -> Records:
    labels, found_images = _label_folder(Path(path), split)
    image_dir = Path(images) if images else found_images
    records = Records()
    for label_file in files(labels, "*.txt"):
        image = str(find_image(image_dir or label_file.parent, f"{label_file.stem}.png"))
        by_class: dict[str, list[list[list[float]]]] = defaultdict(list)
        for line in label_file.read_text().splitlines():
            fields = line.split()
            if not fields or line.startswith(_HEADERS):
                continue
            if len(fields) != 10:
                records.skipped[MALFORMED] += 1
                continue
            try:
                numbers = [float(v) for v in fields[:8]]
            except ValueError:
                records.skipped[MALFORMED] += 1
                continue
            corners = valid_corners([numbers[k : k + 2] for k in range(0, 8, 2)])
            if corners is None:
                records.skipped[BROKEN_GEOMETRY] += 1
            elif fields[9] == "1":
                records.skipped[DIFFICULT] += 1
            else:
                by_class[fields[8]].append(corners)
        for name, boxes in sorted(by_class.items()):
            things = plural(name.replace("-", " "))
            rid = f"{label_file.stem}#{name}"
            if len(boxes) == 1:
                question = f"Give the oriented box of the {name.replace('-', ' ')}."
                records.append(Record(rid, "obb", [image], question, obb=boxes[0], texts=[name]))
            else:
                question = f"Give the oriented boxes of all the {things}."
                records.append(Record(rid, "obb_multi", [image], question, obbs=boxes, texts=[things]))
            records.append(
                Record(f"{rid}#count", "count", [image], f"How many {things} are there?", number=len(boxes))
            )
    if not records:
        raise BenchmarkError(f"{labels}: no DOTA objects read")
    return records
