"""GeoPixelD grounded captions -> rsvlm ``gcg`` rows: the human caption on rsvlm's protocol, one mask per ``[SEG]``.

Reads what ``rsvlm gen --vectors`` reads (``data_gen/sources/geopixeld.py`` parses it): the index
``GeoPixelD.json`` (LLaVA-style ``conversations`` + a ``polygons`` file per entry, looked up as written, then by
name next to the index, then under ``--images``), a per-image file ``{img, gcg_description, polygons}``, or a
folder of per-image files. ``<p> tennis court-1 </p> [SEG]`` becomes ``<p>tennis court</p> [SEG]`` (the instance
number dropped, as ``rsvlm gen`` does) and each polygon set is rasterised on the image as ``rsvlm gen`` rasterises
it (boundary-pixel rings grown by half a pixel). Unlike ``rsvlm gen`` the caption is kept on the whole image: no
tiling, so "at right" stays true.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterator
from pathlib import Path

from data_gen.convert.report import BAD_POLYGON, MALFORMED, FormatError, require_keys
from data_gen.convert.writer import Draft
from data_gen.sources.errors import SourceError
from data_gen.sources.geopixeld import (
    PHRASE,
    _human_question,
    is_geopixeld,
    is_geopixeld_index,
    phrase_label,
    pixel_geometry,
)
from data_gen.tasks import phrasing
from rsvlm.grounding import IMAGE_TOKEN, format_phrase

INDEX_KEYS = ("conversations", "polygons", "image")
FILE_KEYS = ("gcg_description", "polygons")


def rewrite_caption(caption: str) -> str:
    """GeoPixelD's ``<p> name-1 </p> [SEG] ,`` -> rsvlm's ``<p>name</p> [SEG],``."""
    text = PHRASE.sub(lambda m: format_phrase(phrase_label(m.group(1))), caption)
    return " ".join(re.sub(r"\s+([,.;:!?])", r"\1", text).split())


def file_draft(obj: dict, where: str, question: str | None, image: str | None = None) -> Draft:
    """One per-image annotation -> a gcg draft (``skip`` set when its polygons or phrases do not pair up)."""
    image = image or str(obj.get("img") or obj.get("image") or "")
    rid = f"{Path(image).stem}:{obj.get('id', 0)}"
    draft = Draft(id=rid, task="gcg", meta={"format": "geopixeld", "source_id": rid})
    caption = str(obj["gcg_description"])
    polygons = obj["polygons"]
    if not image or not isinstance(polygons, list):
        draft.skip = MALFORMED
        return draft
    if len(PHRASE.findall(caption)) != len(polygons):
        draft.skip = "[SEG] count differs from the polygons"
        return draft
    try:
        draft.masks = [pixel_geometry(rings, f"{where} phrase {k}") for k, rings in enumerate(polygons)]
    except (SourceError, ValueError):
        draft.skip = BAD_POLYGON
        return draft
    question = question or phrasing.pick(random.Random(rid), "gcg")
    draft.conversations = [
        {"role": "user", "content": f"{IMAGE_TOKEN}\n{question}"},
        {"role": "assistant", "content": rewrite_caption(caption)},
    ]
    draft.images = [image]
    return draft


def _load(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise FormatError(f"{path.name}: not JSON ({error})") from None


def read(src: Path, images: Path | None) -> Iterator[Draft]:
    if src.is_dir():
        for path in sorted(src.glob("*.json")):
            obj = _load(path)
            if is_geopixeld(obj):
                yield file_draft(obj, path.name, None)
        return
    obj = _load(src)
    if is_geopixeld(obj):
        yield file_draft(obj, src.name, None)
        return
    if not is_geopixeld_index(obj):
        first = obj[0] if isinstance(obj, list) and obj else obj
        keys = INDEX_KEYS if isinstance(first, dict) and "conversations" in first else FILE_KEYS
        require_keys(first, keys, "GeoPixelD", src.name)
        raise FormatError(f"{src.name}: not GeoPixelD (an index entry lacks 'conversations' or 'polygons')")
    roots = [src.parent] + ([images] if images else [])
    for index, entry in enumerate(obj):
        ref = Path(str(entry["polygons"]))
        found = next((c for c in [ref, *(r / ref for r in roots), *(r / ref.name for r in roots)]
                      if c.is_file()), None)  # fmt: skip
        if found is None:
            yield Draft(id=str(entry.get("id", index)), task="gcg", skip="missing polygon file")
            continue
        per_image = _load(found)
        if not is_geopixeld(per_image):
            yield Draft(id=str(entry.get("id", index)), task="gcg", skip=MALFORMED)
            continue
        image = str(entry.get("image") or per_image.get("img") or "")
        yield file_draft(per_image, found.name, _human_question(entry), image)
