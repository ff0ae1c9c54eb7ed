"""One-instance referring expressions resolved on the decoder's class mask.

"Segment the second largest patch of bare land in the bottom left next to the road": the phrase-prompted decoder
segments a class well, but neither the 135M LLM nor a phrase embedding ranks patches by size or reads "in the
bottom left", so the mask of such a phrase comes back as most of the class. The assistant therefore parses the
expression (``parse``: its rank, its class noun, its cell of a 3 x 3 grid), decodes the noun's mask, and keeps
the one patch the expression names (``select``):

- patches are 8-connected, largest first, specks left out (as counts leave them out, ``answer_facts``), so
  "the largest" is patch 0 and "the smallest" the last;
- the cell is the one holding the patch's centroid, as data_gen words it ("along the top", "in the centre");
- when the patch at the named rank is not in the named cell (the predicted patches split or merge differently
  from the labels'), the patch in that cell nearest in rank is taken; with no rank, the largest in the cell.

Only expressions with a rank or a cell are resolved: "the water" or "all the buildings" keep the whole mask.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from rsvlm.grounding import normalise_phrase

_ORDINALS = (
    "",
    "second ",
    "third ",
    "fourth ",
    "fifth ",
    "sixth ",
    "seventh ",
    "eighth ",
    "ninth ",
    "tenth ",
)
_RANKS = {f"{o}{w}": k for k, o in enumerate(_ORDINALS) for w in ("largest", "biggest")}
_CELLS = {
    "in the top left": "top left",
    "in the top right": "top right",
    "in the bottom left": "bottom left",
    "in the bottom right": "bottom right",
    "along the top": "top",
    "at the top": "top",
    "along the bottom": "bottom",
    "at the bottom": "bottom",
    "on the left": "left",
    "on the right": "right",
    "in the centre": "centre",
    "in the center": "centre",
    "in the middle": "centre",
}
_CELL_NAMES = (
    ("top left", "top", "top right"),
    ("left", "centre", "right"),
    ("bottom left", "bottom", "bottom right"),
)
_RANK = "|".join(sorted(map(re.escape, [*_RANKS, "smallest"]), key=len, reverse=True))
_CELL = "|".join(sorted(map(re.escape, _CELLS), key=len, reverse=True))
_EXPRESSION = re.compile(
    rf"\bthe\s+(?:(?P<rank>{_RANK})\s+)?(?P<noun>[a-z][a-z' -]*?)(?:\s+named\s+[^,.?!]+?)?"
    rf"(?:\s+(?P<cell>{_CELL}))?(?=\s+next to\b|\s+with\b|\s+and\b|\s+in this\b|[\s,.?!]*$|[,.?!])",
    re.IGNORECASE,
)
_PATCH = re.compile(r"^(?:patch|patches|area|areas|stretch|region) of\s+", re.IGNORECASE)


@dataclass(frozen=True)
class Reference:
    noun: str  # the class to decode: "bare land", "building"
    rank: int | None  # 0 for "the largest"; None when the expression gives none
    smallest: bool
    cell: str | None  # "top left", "centre", ...


def parse(text: str) -> Reference | None:
    """The first one-instance expression with a rank or a cell in ``text``, or None."""
    for match in _EXPRESSION.finditer(text):
        rank, cell = (match.group("rank") or "").lower(), (match.group("cell") or "").lower()
        if not rank and not cell:
            continue
        noun = normalise_phrase(_PATCH.sub("", match.group("noun").strip()))
        if not noun or noun in {"image", "scene", "tile", "picture", "photo"}:
            continue
        return Reference(
            noun=noun,
            rank=_RANKS.get(rank),
            smallest=rank == "smallest",
            cell=_CELLS.get(cell),
        )
    return None


def cell_of(fx: float, fy: float) -> str:
    """The 3 x 3 cell of a point given as fractions of the image's width and height."""
    return _CELL_NAMES[min(2, max(0, int(3 * fy)))][min(2, max(0, int(3 * fx)))]


def select(
    mask: np.ndarray, reference: Reference, fraction: Callable[[float, float], tuple[float, float]]
) -> np.ndarray | None:
    """The patch of ``mask`` that ``reference`` names, or None when the mask has no patch. ``fraction`` maps a
    mask pixel (x, y) to fractions of the source image (the model grid may be padded)."""
    from scipy import ndimage

    labels, n = ndimage.label(mask, structure=np.ones((3, 3), bool))
    if n == 0:
        return None
    sizes = np.bincount(labels.ravel())[1:]
    speck = max(4, int(round(0.0002 * mask.size)))
    order = [int(k) for k in np.argsort(-sizes, kind="stable") if sizes[k] >= speck]
    if not order:
        return None
    target = len(order) - 1 if reference.smallest else reference.rank
    chosen = min(target if target is not None else 0, len(order) - 1)
    if reference.cell is not None:
        centres = ndimage.center_of_mass(mask, labels, [k + 1 for k in order])
        in_cell = [
            i
            for i, (cy, cx) in enumerate(centres)
            if cell_of(*fraction(cx + 0.5, cy + 0.5)) == reference.cell
        ]
        if in_cell:
            chosen = in_cell[0] if target is None else min(in_cell, key=lambda i: (abs(i - target), i))
    return labels == order[chosen] + 1
