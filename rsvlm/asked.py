"""What a question asks the answer to contain (a mask, boxes, oriented boxes), and those shapes cut from a mask.

The 135M LLM often answers "Segment the fifth largest building" with a sentence and no ``[SEG]``, or "give it an
oriented box" with a horizontal box. When the element asked for is missing, the assistant asks the model only for
the phrase (an answer forced to open with ``<p>``), decodes its mask, and cuts what was asked from the mask:
the mask itself, the boxes of its patches, or their minimum-area rectangles. So "Box all the buildings" always
comes back with boxes, and every box is a patch the decoder found, measured like any other region.
"""

from __future__ import annotations

import math
import re

import numpy as np

from rsvlm.answer_facts import mask_pixels

_OBB = re.compile(r"\b(?:rotated|oriented|minimum[- ]area|min[- ]area|obb|rotation)\b", re.IGNORECASE)
# "Locate the largest pond." / "Locate all buildings." ask for boxes, as data_gen's box questions use the verb
# (visual grounding answers with a box); "Locate the changes" and "Locate the water in terms of image regions" do not.
_BOX = re.compile(
    r"\b(?:box|boxes|bounding|locali[sz]e|detect)\b|\blocate\b(?!.*\b(?:chang\w*|regions?)\b)", re.IGNORECASE
)
_MASK = re.compile(
    r"\b(?:segment|segmented|segmentation|mask|masks|outline|outlines|delineate|highlight|pixels|contour|contours|"
    r"grounded)\b",
    re.IGNORECASE,
)
# Questions that ask for a place: any region answers them (a box too); without one, a mask is cut.
_PLACE = re.compile(
    r"\b(?:locate|point out|mark|find (?:all|every|each)|which (?:parts?|areas?|places?|regions?)|"
    r"show (?:me|all|every|each|the|where)|how much|take up|takes up|"
    # an area asked for ("What is the area of water?", "How big is the bare land area?"): measured on a mask
    r"how big|how large|area of|area (?:covered|occupied)|what area|surface area|extent of|hectares?|"
    r"square (?:met(?:re|er)s|kilomet(?:re|er)s))\b"
    # "Where is the water?", "where could a plane land?" ask for a place; "where was this taken?" does not
    r"|\bwhere\b(?!\s+(?:was|were)\s+(?:this|these|it)\b)",
    re.IGNORECASE,
)
# "How many square metres of water?" asks for an area, not a count.
_COUNT = re.compile(
    r"\b(?:how many|count|number of)\b(?!\s+(?:square|hectares?|acres?|met(?:re|er)s|kilomet))", re.IGNORECASE
)
_EVERY = re.compile(r"\b(?:all|each|every|boxes|rectangles|masks)\b", re.IGNORECASE)

# The phrase a change mask is asked for by: what ``train.heads --change`` trains the change path on.
CHANGE_PHRASE = "the changed areas"

MAX_BOXES = 10  # as many as the training answers list ("the 10 largest are at ...")


def element(question: str) -> str | None:
    """``"obb"``, ``"box"``, ``"mask"``, ``"place"`` (any region: "where is the water?") or None: the element
    the question names (an oriented box is also a box)."""
    if _OBB.search(question):
        return "obb"
    if _BOX.search(question):
        return "box"
    if _MASK.search(question):
        return "mask"
    if _PLACE.search(question):
        return "place"
    return None


_CAPTION = re.compile(r"\b(?:caption|description|describe|conversation)\b", re.IGNORECASE)

# What a grounded description is made of when the model's own has no mask: common land-cover phrases, each decoded,
# kept when it covers at least ``GROUNDED_MIN_SHARE`` of the image (data_gen's GCG answers keep classes from 2 %).
VOCABULARY = ("water", "buildings", "roads", "trees", "vegetation", "bare land", "agriculture")
GROUNDED_MIN_SHARE = 0.02
GROUNDED_MAX = 5


# "Describe this image.", "Write a paragraph describing this image.", "Summarise what covers the ground here."
_DESCRIPTION = re.compile(
    r"\b(?:describ\w*|description|caption|summari[sz]e|tell me about|explain what|characteri[sz]e)\b"
    r"|\bwhat does (?:this|the) (?:[\w-]+ )?(?:image|scene|picture|photo|tile) show\b",
    re.IGNORECASE,
)


def asks_description(question: str) -> bool:
    """A request to describe the image in words, with no element asked for (a grounded caption asks a mask)."""
    return bool(_DESCRIPTION.search(question)) and element(question) is None and not asks_count(question)


def asks_grounded_caption(question: str) -> bool:
    """ "Provide a detailed caption with segmentation masks.": a description whose phrases carry masks."""
    return bool(_CAPTION.search(question)) and element(question) == "mask"


def grounded_sentence(phrases: list[str]) -> str:
    """ "This scene contains water, buildings and roads." """
    if not phrases:
        return "I find none of the common land covers here."
    return f"This scene contains {listed(phrases)}."


def listed(words: list[str], conjunction: str = "and") -> str:
    """ "water, buildings and roads" """
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} {conjunction} {words[-1]}"


def asks_count(question: str) -> bool:
    """ "How many buildings are there?": the count is the number of patches of the subject's mask, not the LLM's."""
    return bool(_COUNT.search(question))


def wants_every(question: str) -> bool:
    """ "Box all the buildings" -> every patch; "Box the building on the left" -> the largest patch."""
    return bool(_EVERY.search(question))


def has_element(regions, wanted: str, overview: bool = False) -> bool:
    if wanted == "obb":
        return any(r.obb is not None for r in regions)
    if wanted == "box":
        return any(r.box is not None or r.obb is not None for r in regions)
    if wanted == "place" and any(r.box is not None or r.obb is not None for r in regions):
        return True
    if overview:
        # On a large scene's overview a [SEG] counts even when its mask is empty: small things vanish there, and
        # the windows decoded at full resolution find them from that [SEG]'s prompt.
        return any(r.mask is not None or r.seg_index is not None for r in regions)
    return any(r.mask is not None and mask_pixels(r.mask) > 0 for r in regions)


_COUNT_SUBJECT = re.compile(
    r"\b(?:how many|count(?:\s+of)?|number of)\s+(?:the\s+|every\s+|all\s+(?:the\s+)?)?"
    r"(?:(?:separate|distinct|individual|different)\s+)?(?:(?:patch|patches|areas?) of\s+)?"
    r"(?P<noun>[a-z][a-z' -]*?)(?=\s+(?:are|is|do|does|can|could|in|there|visible|appear|shown|you|here|"
    r"that|which|on|at)\b|\s*[?.!,]|\s*$)",
    re.IGNORECASE,
)
# Words the subject's lazy match stops on at once when a count names no noun ("How many are there?").
_NOT_A_SUBJECT = set(
    "them it these those things objects are is were was do does can could there you".split()
) | {""}


_EVERY_SUBJECT = re.compile(
    r"\b(?:all|every|each)\s+(?:the\s+)?(?:(?:patch|patches|areas?|parts?)\s+of\s+)?"
    r"(?P<noun>[a-z][a-z' -]*?)(?=\s+(?:in|on|you|that|which|visible|shown|here|there|and|with|from|at|as|"
    r"using|into)\b|\s*[?.!,:;]|\s*$)",
    re.IGNORECASE,
)


# A whole question that only asks where a class is: "Outline the buildings.", "Segment all the water in this image",
# "Where are all the patches of water? Segment them.", "Can you mask all of the buildings?", "Show me the roads."
# (no rank, cell, count, box or relation: those go elsewhere).
_CLASS_REQUEST = re.compile(
    r"^\s*(?:please\s+)?(?:(?:can|could|would)\s+you\s+(?:please\s+)?)?"
    r"(?:(?:outline|segment|highlight|delineate|mask|mark|locate|find|show(?:\s+me)?|give(?:\s+me)?\s+(?:a\s+)?"
    r"masks?\s+(?:of|for))\s+|where\s+(?:is|are)\s+)"
    r"(?:(?:all|every|each|any)\s+(?:of\s+)?)?(?:the\s+)?(?:(?:patch|patches|areas?|parts?)\s+of\s+)?"
    r"(?P<noun>[a-z][a-z -]*?)"
    r"(?:\s+(?:in|on|across)\s+(?:this|the)\s+(?:image|scene|picture|photo|tile))?"
    r"(?:\s+(?:with|as)\s+(?:a\s+)?masks?)?(?:\s+please)?\s*[.!?]*"
    r"(?:\s*(?:and\s+)?(?:segment|outline|mask|highlight|mark)\s+(?:them|it)\s*[.!?]*)?\s*$",
    re.IGNORECASE,
)


def class_request(question: str) -> str | None:
    """The noun of a question that only asks to see where a class is, in its own words ("Outline the buildings."
    -> "buildings"), or None for anything more (a rank, a place in the image, a count, boxes, a yes/no)."""
    match = _CLASS_REQUEST.match(question)
    if match is None or element(question) not in ("mask", "place"):
        return None
    noun = match.group("noun").strip().lower()
    return None if noun in _NOT_A_SUBJECT else noun


def every_subject(question: str) -> str | None:
    """What a request for every instance of a class names, in its own words: "Mark every patch of bare ground
    with a mask." -> "bare ground", "Find all buildings and segment them." -> "buildings"."""
    match = _EVERY_SUBJECT.search(question)
    if match is None:
        return None
    noun = match.group("noun").strip().lower()
    return None if noun in {"", "them", "it", "these", "those", "things", "objects", "of them"} else noun


def count_subject(question: str) -> str | None:
    """What a counting question counts, in its own words: "How many separate patches of water are there?" ->
    "water" (the decoder is prompted with it, whatever phrase the model's answer names)."""
    match = _COUNT_SUBJECT.search(question)
    if match is None:
        return None
    noun = match.group("noun").strip().lower()
    return None if noun in _NOT_A_SUBJECT else noun


def count_text(n: int, phrase: str) -> str:
    """ "3 patches of water." / "1 patch of water." / "No water found." """
    if n == 0:
        return f"No {phrase} found."
    return f"{n:,} separate {'patch' if n == 1 else 'patches'} of {phrase}."


def patches(mask: np.ndarray, limit: int) -> list[np.ndarray]:
    """The 8-connected patches of a bool mask, largest first, at most ``limit``."""
    from scipy import ndimage

    labels, n = ndimage.label(mask, structure=np.ones((3, 3), bool))
    if n == 0:
        return []
    sizes = np.bincount(labels.ravel())[1:]
    order = np.argsort(-sizes, kind="stable")[:limit]
    return [labels == (k + 1) for k in order]


def pixel_box(mask: np.ndarray) -> tuple[float, float, float, float]:
    """(x1, y1, x2, y2) around a patch, in pixel edges."""
    rows, cols = np.nonzero(mask)
    return float(cols.min()), float(rows.min()), float(cols.max() + 1), float(rows.max() + 1)


def min_area_rect(mask: np.ndarray) -> tuple[float, float, float, float, float]:
    """(cx, cy, w, h, angle) of a patch's minimum-area rectangle in pixels: long side ``w``, angle in degrees in
    (-90, 90] measured from the x axis (the ``OrientedBox`` convention)."""
    from shapely.geometry import MultiPoint

    rows, cols = np.nonzero(mask)
    corners = np.concatenate([np.stack([cols + dx, rows + dy], 1) for dx in (0, 1) for dy in (0, 1)])
    rect = MultiPoint([tuple(p) for p in np.unique(corners, axis=0)]).minimum_rotated_rectangle
    xs, ys = rect.exterior.coords.xy
    p = np.stack([np.asarray(xs)[:4], np.asarray(ys)[:4]], 1)
    e1, e2 = p[1] - p[0], p[2] - p[1]
    long, short = (e1, e2) if np.hypot(*e1) >= np.hypot(*e2) else (e2, e1)
    angle = math.degrees(math.atan2(long[1], long[0]))
    angle = angle - 180 if angle > 90 else angle + 180 if angle <= -90 else angle
    cx, cy = p.mean(0)
    return float(cx), float(cy), float(np.hypot(*long)), float(np.hypot(*short)), float(angle)
