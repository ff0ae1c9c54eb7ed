"""The text protocol shared by data, model, parser and evaluation.

- Horizontal box: ``<box>[x1, y1, x2, y2]</box>``, integers on a 0-1000 grid of the model input image.
- Oriented box: ``<obb>[cx, cy, w, h, angle]</obb>``, 0-1000 grid, angle in degrees, long-side convention
  (-90, 90]: ``w >= h`` and the angle is that of the long side, measured from the x axis towards y (image rows).
- Mask: ``<p>phrase</p> [SEG]``, one ``[SEG]`` per mask, in order.
- Two dates: ``Image 1 (<label>): <image>\\nImage 2 (<label>): <image>`` in the user turn.

Formatting and parsing are pure functions. ``parse_answer`` never raises: whatever it cannot read is dropped and
named in ``ParsedAnswer.warnings``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

GRID = 1000
IMAGE_TOKEN = "<image>"
SEG_TOKEN = "[SEG]"
# Tokens the model adds to the LLM's vocabulary (each gets a trainable embedding row).
SPECIAL_TOKENS = (IMAGE_TOKEN, SEG_TOKEN)


@dataclass
class Box:
    """Horizontal box on the 0-1000 grid (floats allowed before formatting)."""

    x1: float
    y1: float
    x2: float
    y2: float

    def as_list(self) -> list[float]:
        return [self.x1, self.y1, self.x2, self.y2]


@dataclass
class OrientedBox:
    """Oriented box on the 0-1000 grid; long-side convention, angle in degrees in (-90, 90]."""

    cx: float
    cy: float
    w: float
    h: float
    angle: float

    def as_list(self) -> list[float]:
        return [self.cx, self.cy, self.w, self.h, self.angle]

    def corners(self) -> np.ndarray:
        """The four corners [4, 2] (x, y) in grid units, in order around the box."""
        theta = math.radians(self.angle)
        c, s = math.cos(theta), math.sin(theta)
        dx = np.array([c, s]) * self.w / 2
        dy = np.array([-s, c]) * self.h / 2
        centre = np.array([self.cx, self.cy])
        return np.stack([centre - dx - dy, centre + dx - dy, centre + dx + dy, centre - dx + dy])


@dataclass
class Region:
    """One grounded thing in an answer.

    ``box``/``obb`` are on the 0-1000 grid of the model input; ``mask`` is a boolean array in source pixels once
    the assistant has mapped it back. ``pixel_box`` is in source pixels (x1, y1, x2, y2); ``geometry`` is a
    GeoJSON geometry in EPSG:4326 when the source has a CRS; ``area_m2`` comes from the CRS, never from degrees.
    """

    label: str = ""
    box: Box | None = None
    obb: OrientedBox | None = None
    mask: np.ndarray | None = None
    seg_index: int | None = None
    pixel_box: tuple[float, float, float, float] | None = None
    pixel_polygon: list[tuple[float, float]] | None = None
    geometry: dict[str, Any] | None = None
    area_m2: float | None = None
    score: float | None = None


@dataclass
class ParsedAnswer:
    """What the parser read from model text: display text, regions in order, and what it dropped."""

    text: str
    regions: list[Region] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def num_seg(self) -> int:
        return sum(r.seg_index is not None for r in self.regions)


# ----------------------------------------------------------------------------------------------------------------
# Formatting


def _grid_int(v: float) -> int:
    return int(min(GRID, max(0, round(v))))


def normalize_obb(cx: float, cy: float, w: float, h: float, angle: float) -> OrientedBox:
    """Bring an oriented box into the long-side convention: w >= h and angle in (-90, 90]."""
    if h > w:
        w, h = h, w
        angle += 90.0
    angle = math.fmod(angle, 180.0)
    if angle <= -90.0:
        angle += 180.0
    elif angle > 90.0:
        angle -= 180.0
    return OrientedBox(cx, cy, w, h, angle)


def format_box(box: Box | list[float] | tuple[float, ...]) -> str:
    """``<box>[x1, y1, x2, y2]</box>`` with coordinates rounded and clipped to the 0-1000 grid."""
    x1, y1, x2, y2 = box.as_list() if isinstance(box, Box) else box
    x1, x2 = sorted((_grid_int(x1), _grid_int(x2)))
    y1, y2 = sorted((_grid_int(y1), _grid_int(y2)))
    return f"<box>[{x1}, {y1}, {x2}, {y2}]</box>"


def format_obb(obb: OrientedBox | list[float] | tuple[float, ...]) -> str:
    """``<obb>[cx, cy, w, h, angle]</obb>``: integers on the grid, angle an integer in (-90, 90]."""
    values = obb.as_list() if isinstance(obb, OrientedBox) else list(obb)
    o = normalize_obb(*values)
    angle = int(round(o.angle))
    if angle == -90:
        angle = 90
    return f"<obb>[{_grid_int(o.cx)}, {_grid_int(o.cy)}, {_grid_int(o.w)}, {_grid_int(o.h)}, {angle}]</obb>"


def format_phrase(phrase: str) -> str:
    """``<p>phrase</p> [SEG]``; tag characters inside the phrase are removed so the result always parses."""
    return f"<p>{clean_phrase(phrase)}</p> {SEG_TOKEN}"


def clean_phrase(phrase: str) -> str:
    cleaned = re.sub(r"</?(?:p|box|obb)>|\[SEG\]|<image>", " ", phrase)
    return " ".join(cleaned.split())


_LAST_PHRASE = re.compile(r"<p>((?:(?!</?p>).)*)</p>\s*$", re.DOTALL)
_LEADING_DETERMINERS = re.compile(r"^(?:(?:all|every|each|of|the|a|an|any)\s+)+")


def last_phrase(text_before_seg: str) -> str:
    """The phrase of the ``<p>…</p>`` that ends ``text_before_seg`` (the text up to a ``[SEG]``), else ``""``."""
    m = _LAST_PHRASE.search(text_before_seg)
    return clean_phrase(m.group(1)) if m else ""


def normalise_phrase(phrase: str) -> str:
    """The form a phrase is embedded in for the mask prompt: lower case, no leading determiners ("all the
    buildings" -> "buildings"), single spaces; the same in training and at inference."""
    words = " ".join(clean_phrase(phrase).lower().split())
    return _LEADING_DETERMINERS.sub("", words).strip()


def format_two_date_prompt(question: str, labels: tuple[str, str] = ("date 1", "date 2")) -> str:
    """The user turn for two dates: both images introduced by their labels, then the question."""
    first, second = (clean_phrase(x).replace("(", "").replace(")", "") for x in labels)
    return f"Image 1 ({first}): {IMAGE_TOKEN}\nImage 2 ({second}): {IMAGE_TOKEN}\n{question}"


def format_single_image_prompt(question: str) -> str:
    return f"{IMAGE_TOKEN}\n{question}"


def pixel_box_to_grid(box: tuple[float, float, float, float], width: int, height: int) -> Box:
    """A box in model-input pixels -> the 0-1000 grid (no rounding; ``format_box`` rounds)."""
    x1, y1, x2, y2 = box
    return Box(x1 * GRID / width, y1 * GRID / height, x2 * GRID / width, y2 * GRID / height)


def grid_box_to_pixels(box: Box, width: int, height: int) -> tuple[float, float, float, float]:
    return (box.x1 * width / GRID, box.y1 * height / GRID, box.x2 * width / GRID, box.y2 * height / GRID)


# ----------------------------------------------------------------------------------------------------------------
# Parsing

_NUMBER = r"-?\d+(?:\.\d+)?"
_TAG = re.compile(
    r"<box>\s*\[(?P<box>[^\]<>]*)\]\s*</box>"
    r"|<obb>\s*\[(?P<obb>[^\]<>]*)\]\s*</obb>"
    r"|<p>(?P<phrase>[^<>]*?)</p>(?P<seg>\s*\[SEG\])?"
    r"|(?P<bare_seg>\[SEG\])"
)
_STRAY_TAG = re.compile(r"</?(?:box|obb|p)>")


def _numbers(raw: str) -> list[float] | None:
    parts = [p.strip() for p in raw.split(",")]
    if not all(re.fullmatch(_NUMBER, p) for p in parts):
        return None
    return [float(p) for p in parts]


def _in_grid(values: list[float]) -> bool:
    return all(0 <= v <= GRID for v in values)


def parse_answer(text: str) -> ParsedAnswer:
    """Read boxes, oriented boxes and ``<p>…</p> [SEG]`` phrases from model text, in order.

    A box or oriented box that follows a phrase is attached to that phrase's region; otherwise it becomes its own
    region labelled with the words just before it. Each ``[SEG]`` gets the next mask index. Never raises.
    """
    if not isinstance(text, str):
        return ParsedAnswer(text="", warnings=[f"model output is not text ({type(text).__name__}); dropped"])
    regions: list[Region] = []
    warnings: list[str] = []
    pieces: list[str] = []
    seg_count = 0
    last_end = 0
    pending: Region | None = None  # a phrase region a following box may attach to

    for m in _TAG.finditer(text):
        between = text[last_end : m.start()]
        pieces.append(between)
        if between.strip():
            pending = None
        previous_end, last_end = last_end, m.end()
        if m.group("box") is not None:
            values = _numbers(m.group("box"))
            if values is None or len(values) != 4:
                warnings.append(f"dropped malformed box {m.group(0)!r}")
                continue
            if not _in_grid(values):
                warnings.append(f"dropped box outside the 0-{GRID} grid {m.group(0)!r}")
                continue
            x1, y1, x2, y2 = values
            if x2 < x1 or y2 < y1:
                warnings.append(f"dropped box with inverted corners {m.group(0)!r}")
                continue
            box = Box(x1, y1, x2, y2)
            if pending is not None and pending.box is None:
                pending.box = box
            else:
                regions.append(Region(label=_label_before(text, m.start(), previous_end), box=box))
        elif m.group("obb") is not None:
            values = _numbers(m.group("obb"))
            if values is None or len(values) != 5:
                warnings.append(f"dropped malformed oriented box {m.group(0)!r}")
                continue
            cx, cy, w, h, angle = values
            if not _in_grid([cx, cy, w, h]) or not -90 < angle <= 90:
                warnings.append(f"dropped oriented box out of range {m.group(0)!r}")
                continue
            obb = OrientedBox(cx, cy, w, h, angle)
            if pending is not None and pending.obb is None:
                pending.obb = obb
            else:
                regions.append(Region(label=_label_before(text, m.start(), previous_end), obb=obb))
        elif m.group("phrase") is not None:
            phrase = " ".join(m.group("phrase").split())
            pieces.append(phrase)
            region = Region(label=phrase)
            if m.group("seg"):
                region.seg_index = seg_count
                seg_count += 1
            else:
                warnings.append(f"phrase {phrase!r} has no [SEG]; no mask for it")
            regions.append(region)
            pending = region
        else:  # a [SEG] without a phrase still consumes a mask, so later masks stay in order
            regions.append(Region(label="", seg_index=seg_count))
            seg_count += 1
            warnings.append("a [SEG] without a <p>phrase</p>; kept with an empty label")
    pieces.append(text[last_end:])

    display = "".join(pieces)
    if _STRAY_TAG.search(display):
        warnings.append("dropped unbalanced or unreadable tags")
        display = _STRAY_TAG.sub("", display)
    display = re.sub(r"[ \t]+", " ", display).strip()
    display = re.sub(r" ([.,;:!?])", r"\1", display)
    return ParsedAnswer(text=display, regions=regions, warnings=warnings)


_LABEL_STOP = {
    "the", "a", "an", "is", "are", "at", "in", "of", "and", "there", "here", "it", "located", "found", "on", "near",
    "by", "with", "which", "that", "some", "its", "their",
}  # fmt: skip
_ARTICLES = {"the", "a", "an", "some", "its", "their"}


def _label_before(text: str, position: int, start: int = 0) -> str:
    """The words naming a box that no phrase names: the last clause between ``start`` (the end of the previous
    tag) and the box, without the function words around it ("The field is at <box>" -> "The field")."""
    before = _STRAY_TAG.sub(" ", _TAG.sub(" ", text[start:position]))
    clause = re.split(r"[.!?\n:;,]", before)[-1]
    words = re.findall(r"[A-Za-z][A-Za-z\-']*", clause)
    while words and words[-1].lower() in _LABEL_STOP:
        words.pop()
    words = words[-4:]
    while words and words[0].lower() in _LABEL_STOP - _ARTICLES:  # "and a barn" -> "a barn"; articles stay
        words.pop(0)
    return " ".join(words)


def attach_masks(parsed: ParsedAnswer, masks: list[Any]) -> ParsedAnswer:
    """Give each ``[SEG]`` region its mask, in order; extra or missing masks become warnings."""
    for region in parsed.regions:
        if region.seg_index is None:
            continue
        if region.seg_index < len(masks):
            region.mask = masks[region.seg_index]
        else:
            parsed.warnings.append(f"no mask for [SEG] #{region.seg_index + 1} ({region.label!r})")
    if len(masks) > parsed.num_seg:
        parsed.warnings.append(
            f"{len(masks) - parsed.num_seg} mask(s) without a [SEG] in the text were dropped"
        )
    return parsed
