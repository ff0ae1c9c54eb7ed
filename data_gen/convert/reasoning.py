"""LISA / GRES-style reasoning segmentation (the layout EarthReason-style sets reuse) -> rsvlm ``reasoning`` rows.

One JSON per image:

    {"text": ["Locate the crane with ..."], "is_sentence": true,
     "shapes": [{"label": "target", "shape_type": "polygon", "image_name": "x.jpg", "points": [[x, y], ...]}, ...]}

Every query in ``text`` becomes a row whose answer is ``<p>{phrase}</p> [SEG]`` with one mask: the union of the
``target`` shapes (``ignore`` shapes are left out, as LISA does). The phrase is the shape label when it names
something, else "the target" (LISA's labels are only ``target`` / ``ignore``). Points are pixel indices of the
outline (LISA fills them with ``cv2.fillPoly``), so they are treated like GeoPixelD's rings: moved to pixel centres
and grown by half a pixel. A shape with fewer than three points or non-numeric points is a ``bad polygon``; a
file with no target shape is skipped as ``no target shape`` (a "none here" answer needs a mask-free protocol the
source does not define).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import shapely

from data_gen.convert.report import BAD_POLYGON, MALFORMED, FormatError, require_keys
from data_gen.convert.writer import Draft
from data_gen.sources.geopixeld import pixel_geometry
from rsvlm.grounding import IMAGE_TOKEN, format_phrase

KEYS = ("text", "shapes")
GENERIC_LABELS = {"target", "object", "foreground", ""}


def _target(shapes: list) -> shapely.Geometry | None:
    rings = []
    for shape in shapes:
        if not isinstance(shape, dict) or shape.get("label", "target") == "ignore":
            continue
        points = shape.get("points")
        if not isinstance(points, list) or len(points) < 3:
            raise ValueError("a shape with fewer than 3 points")
        if not all(isinstance(p, (list, tuple)) and len(p) == 2 for p in points):
            raise ValueError("a point that is not [x, y]")
        rings.append([[float(x), float(y)] for x, y in points])
    return pixel_geometry(rings, "shapes") if rings else None


def file_drafts(obj: dict, stem: str) -> Iterator[Draft]:
    texts = obj.get("text")
    texts = [texts] if isinstance(texts, str) else texts
    shapes = obj.get("shapes")
    if not isinstance(texts, list) or not texts or not isinstance(shapes, list):
        yield Draft(id=stem, task="reasoning", skip=MALFORMED)
        return
    named = [s for s in shapes if isinstance(s, dict) and s.get("image_name")]
    image = named[0]["image_name"] if named else f"{stem}.jpg"
    labels = {str(s.get("label", "")).strip() for s in shapes if isinstance(s, dict)} - {"ignore"}
    phrase = next(iter(labels)) if len(labels) == 1 and not labels & GENERIC_LABELS else "the target"
    try:
        target = _target(shapes)
        skip = None if target is not None else "no target shape"
    except (ValueError, TypeError):
        target, skip = None, BAD_POLYGON
    for k, text in enumerate(texts):
        rid = f"{stem}#{k}"
        draft = Draft(id=rid, task="reasoning", skip=skip,
                      meta={"format": "lisa", "source_id": rid, "is_sentence": bool(obj.get("is_sentence"))})  # fmt: skip
        if skip is None:
            draft.images = [image]
            draft.masks = [target]
            draft.conversations = [
                {"role": "user", "content": f"{IMAGE_TOKEN}\n{str(text).strip()} Please segment it."},
                {"role": "assistant", "content": f"It is {format_phrase(phrase)}."},
            ]
        yield draft


def read(src: Path) -> Iterator[Draft]:
    files = sorted(src.glob("*.json")) if src.is_dir() else [src]
    if not files:
        raise FormatError(f"{src}: no .json files")
    for path in files:
        try:
            obj = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise FormatError(f"{path.name}: not JSON ({error})") from None
        require_keys(obj, KEYS, "a LISA / GRES reasoning annotation", path.name)
        yield from file_drafts(obj, path.stem)
