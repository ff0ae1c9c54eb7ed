"""GeoPixelD annotations -> pixel-coordinate vector features that keep their human-written grounded caption.

GeoPixelD (Shabbir et al. 2025, github.com/mbzuai-oryx/GeoPixel) ships, per image, a JSON of the form

    {"id": 0, "img": ".../P0224_0_800_0_800.png",
     "gcg_description": "... The <p> tennis court-1 </p> [SEG] at right is ... <p> tennis court-2 </p> [SEG] ...",
     "polygons": [[[[x, y], ...], ...], ...]}      # one entry per [SEG], each a list of rings in pixel indices

and an index (``GeoPixelD.json``) of LLaVA-style conversations that point at those files through ``"polygons"``.
Each phrase becomes one feature: its geometry the union of its rings, its label the phrase without the instance
number ("tennis court-1" -> "tennis court"), and its properties the phrase, its ``[SEG]`` index and the caption
(plus the human question when read through the index), so ``tasks/gcg.py`` can re-emit the caption on our
protocol. Ring vertices are pixel indices of boundary pixels (the mask's contour), so they are moved to pixel
centres and grown by half a pixel: the rasterised mask then includes the boundary pixels, as the source mask did.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import shapely
import shapely.affinity

from .errors import SourceError

PHRASE = re.compile(r"<p>\s*(.*?)\s*</p>\s*\[SEG\]", re.DOTALL)
_INSTANCE_NUMBER = re.compile(r"\s*-\s*\d+\s*$")


def is_geopixeld(obj: Any) -> bool:
    """A per-image GeoPixelD annotation (caption with [SEG] + one polygon set per [SEG])."""
    return isinstance(obj, dict) and "gcg_description" in obj and "polygons" in obj


def is_geopixeld_index(obj: Any) -> bool:
    """``GeoPixelD.json``: a list of conversations, each naming its per-image polygon file."""
    return (
        isinstance(obj, list)
        and bool(obj)
        and all(isinstance(e, dict) and "conversations" in e and "polygons" in e for e in obj)
    )


def phrase_label(phrase: str) -> str:
    """'tennis court-1' -> 'tennis court': GeoPixelD numbers instances inside the phrase."""
    label = _INSTANCE_NUMBER.sub("", phrase).strip()
    return label or phrase.strip()


def _ring(points: Any, where: str) -> shapely.Polygon:
    try:
        xy = [(float(p[0]), float(p[1])) for p in points]
    except (TypeError, ValueError, IndexError):
        raise SourceError(f"{where}: a polygon ring is not a list of [x, y] pixel points") from None
    if len(xy) == 1:
        return shapely.Point(xy[0])  # one pixel, grown below
    if len(xy) == 2:
        return shapely.LineString(xy)  # a one-pixel-wide sliver, grown below
    return shapely.make_valid(shapely.Polygon(xy))


def pixel_geometry(rings: list, where: str) -> shapely.Geometry:
    """Rings of boundary-pixel indices -> an area covering those pixels in pixel-edge coordinates."""
    if not isinstance(rings, list) or not rings:
        raise SourceError(f"{where}: expected a non-empty list of polygon rings")
    if rings and isinstance(rings[0], (list, tuple)) and rings[0] and isinstance(rings[0][0], (int, float)):
        rings = [rings]  # a single ring given without the outer list
    geom = shapely.union_all([_ring(r, where) for r in rings])
    geom = shapely.affinity.translate(geom, 0.5, 0.5)  # vertex (x, y) is the centre of pixel (x, y)
    return geom.buffer(0.5, cap_style="square", join_style="mitre")


def parse_caption(text: str) -> list[str]:
    """The phrases of a GeoPixelD caption in [SEG] order."""
    return [m.group(1) for m in PHRASE.finditer(text)]


def read_geopixeld_file(path: Path, obj: dict | None = None, question: str | None = None) -> list[dict]:
    """One per-image annotation -> feature dicts (geometry, label, props, image) in [SEG] order."""
    if obj is None:
        try:
            obj = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise SourceError(f"cannot read GeoPixelD annotation {path}: {e}") from None
    if not is_geopixeld(obj):
        raise SourceError(f"{path}: not a GeoPixelD annotation (needs 'gcg_description' and 'polygons')")
    caption = str(obj["gcg_description"])
    phrases = parse_caption(caption)
    polygons = obj["polygons"]
    if len(phrases) != len(polygons):
        raise SourceError(
            f"{path}: the caption has {len(phrases)} '<p> … </p> [SEG]' phrases but there are "
            f"{len(polygons)} polygon sets; they must pair up in order"
        )
    image = obj.get("img") or obj.get("image") or path.with_suffix(".png").name
    caption_id = f"{Path(image).stem}:{obj.get('id', 0)}"
    out = []
    for k, (phrase, rings) in enumerate(zip(phrases, polygons)):
        props: dict[str, Any] = {
            "phrase": phrase,
            "seg": k,
            "segs": len(phrases),
            "caption_id": caption_id,
            "gcg_caption": caption,
            "format": "geopixeld",
        }
        if question:
            props["gcg_question"] = question
        geom = pixel_geometry(rings, f"{path} phrase {k} ({phrase!r})")
        out.append({"geom": geom, "props": props, "label": phrase_label(phrase), "image": image})
    return out


def _human_question(entry: dict) -> str | None:
    for turn in entry.get("conversations") or []:
        if isinstance(turn, dict) and turn.get("from") in ("human", "user"):
            text = str(turn.get("value", ""))
            text = text.replace("<image>", "").strip()
            return text or None
    return None


def read_geopixeld_index(path: Path, entries: list[dict]) -> list[dict]:
    """``GeoPixelD.json``: resolve each entry's polygon file (as written, or by name next to the index)."""
    out = []
    for entry in entries:
        ref = Path(str(entry["polygons"]))
        candidates = [ref, path.parent / ref, path.parent / ref.name]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise SourceError(
                f"{path}: polygon file {ref} of entry {entry.get('id')} not found (looked next to the index too)"
            )
        out += read_geopixeld_file(found, question=_human_question(entry))
    return out


def read_geopixeld(path: Path, obj: Any) -> list[dict]:
    """A per-image file or an index, already parsed as ``obj``."""
    if is_geopixeld_index(obj):
        return read_geopixeld_index(path, obj)
    return read_geopixeld_file(path, obj)
