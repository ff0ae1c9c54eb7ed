"""Implicit questions ("where could a boat be launched?") answered from class masks by an affordance table.

A reasoning question names no class: its answer is a function of the land covers ("water that touches a road or
open ground"). The 135M LLM rarely names the class such a question needs (it answers "the area", or a made-up
word), so the assistant reads the question against this table (``asked_for``), decodes the concepts the
affordance uses, and builds its mask from theirs (``Affordance.select``). data_gen writes its reasoning answers
from the same mask functions, so what the model is trained on and what the assistant returns agree.

    affordance = asked_for("Where is there natural shade?")   # shade: needs trees
    mask = affordance.select({"tree": tree_mask}, px_per_m)    # -> the trees

Masks are bool ``[H, W]`` on one grid; ``px_per_m`` is 0 when the pixel size is unknown (distances then fall back
to a fixed number of pixels, as data_gen's do).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from rsvlm.asked import min_area_rect

# The decoder's phrase for each concept an affordance uses.
CONCEPT_PHRASES = {
    "water": "water",
    "building": "buildings",
    "road": "roads",
    "tree": "trees",
    "agriculture": "agriculture",
    "grass": "grass",
    "barren": "bare land",
}
_EIGHT = np.ones((3, 3), bool)

Masks = dict[str, np.ndarray]


def _pixels(px_per_m: float, metres: float, default_px: int) -> int:
    return max(1, int(round(metres * px_per_m))) if px_per_m > 0 else default_px


def near(mask: np.ndarray, distance: int) -> np.ndarray:
    """Pixels within ``distance`` (chessboard) of ``mask``."""
    if distance <= 0 or not mask.any():
        return mask.copy()
    return ndimage.distance_transform_cdt(~mask, metric="chessboard") <= distance


def union(masks: Masks, *names: str) -> np.ndarray:
    """The masks of ``names`` that are there, joined (all False when none is)."""
    out = np.zeros(next(iter(masks.values())).shape, dtype=bool)
    for name in names:
        if name in masks:
            out |= masks[name]
    return out


def _components_touching(mask: np.ndarray, region: np.ndarray) -> np.ndarray:
    """The 8-connected components of ``mask`` that have a pixel in ``region``."""
    labels, _ = ndimage.label(mask, structure=_EIGHT)
    hit = np.unique(labels[region & mask])
    return np.isin(labels, hit[hit > 0])


def boat_launch(m: Masks, px_per_m: float) -> np.ndarray:
    """Water within about 3 m of a road or open ground."""
    return m["water"] & near(union(m, "road", "barren", "grass"), _pixels(px_per_m, 3.0, 4))


def flood_fields(m: Masks, px_per_m: float) -> np.ndarray:
    """Fields with a pixel within about 30 m of water."""
    return _components_touching(m["agriculture"], near(m["water"], _pixels(px_per_m, 30.0, 20)))


def buildings_at_risk(m: Masks, px_per_m: float) -> np.ndarray:
    """Buildings with a pixel within about 20 m of water."""
    return _components_touching(m["building"], near(m["water"], _pixels(px_per_m, 20.0, 15)))


def shade(m: Masks, px_per_m: float) -> np.ndarray:
    return m["tree"].copy()


def heat(m: Masks, px_per_m: float) -> np.ndarray:
    return union(m, "building", "road")


def airstrip(m: Masks, px_per_m: float) -> np.ndarray:
    """Open components whose minimum-area rectangle is long (at least 40 % of the image's width), well filled
    (60 %) and at least four times as long as wide: a straight strip."""
    open_ground = union(m, "road", "barren", "grass")
    h, w = open_ground.shape
    labels, n = ndimage.label(open_ground, structure=_EIGHT)
    out = np.zeros_like(open_ground)
    if n == 0:
        return out
    counts = np.bincount(labels.ravel())[1:]
    for k in np.argsort(-counts, kind="stable")[:12]:
        if counts[k] < max(16, h * w // 2000):
            break
        component = labels == k + 1
        _, _, long, short, _ = min_area_rect(component)
        if long >= 0.4 * w and counts[k] >= 0.6 * long * short and long >= 4 * short:
            out |= component
    return out


def build_homes(m: Masks, px_per_m: float) -> np.ndarray:
    """Open ground more than about 30 m from water."""
    open_ground = union(m, "barren", "grass")
    water = m.get("water", np.zeros_like(open_ground))
    return open_ground & ~near(water, _pixels(px_per_m, 30.0, 20))


@dataclass(frozen=True)
class Affordance:
    name: str
    needs: tuple[tuple[str, ...], ...]  # each entry: at least one of these concepts must be there
    select: Callable[[Masks, float], np.ndarray]  # concept masks, pixels per metre -> the answer's mask
    phrase: str  # what the answer's mask is called
    because: str  # why, for the answer's text
    cue: re.Pattern  # the words of a question that ask for it

    @property
    def concepts(self) -> list[str]:
        """Every concept the affordance reads, each once, in the order of its needs."""
        return list(dict.fromkeys(c for group in self.needs for c in group))

    def missing(self, there: Masks) -> list[tuple[str, ...]]:
        """The needs none of whose concepts is in ``there``."""
        return [group for group in self.needs if not any(c in there for c in group)]


def _cue(*patterns: str) -> re.Pattern:
    """A question matches when it has every pattern (each a regex of alternatives)."""
    return re.compile("".join(f"(?=.*\\b(?:{p}))" for p in patterns), re.IGNORECASE | re.DOTALL)


# Ordered: the first match wins ("shade on a hot day" is shade, not heat). Object words alone are not a cue:
# "outline the planes" and "the boats in the harbour" ask for objects, not for where one could land or launch.
AFFORDANCES: tuple[Affordance, ...] = (
    Affordance(
        "flood_fields",
        (("agriculture",), ("water",)),
        flood_fields,
        "the fields near the water",
        "these fields lie within about 30 m of water",
        _cue(
            r"flood\w*|water level|water rises|river rises",
            r"fields?|farm\w*|crops?|agricultur\w*|cultivated",
        ),
    ),
    Affordance(
        "buildings_at_risk",
        (("building",), ("water",)),
        buildings_at_risk,
        "the buildings close to the water",
        "these buildings stand within about 20 m of water",
        _cue(r"flood\w*|evacuat\w*|water rises", r"buildings?|houses?|structures?|homes?"),
    ),
    Affordance(
        "boat_launch",
        (("water",), ("road", "barren", "grass")),
        boat_launch,
        "the water's edge next to accessible land",
        "it is water that touches a road or open ground",
        _cue(r"boats?|canoes?|kayaks?|dinghy|rowboats?", r"launch\w*|into the water|access\w*|reach\w*"),
    ),
    Affordance(
        "airstrip",
        (("road", "barren", "grass"),),
        airstrip,
        "the long straight open strip",
        "it is open ground, long and straight",
        _cue(
            r"planes?|aircraft|microlight|pilot|airstrip|landing strip|emergency landing",
            r"land|landing|touch down|put down|airstrip|landing strip",
        ),
    ),
    Affordance(
        "shade",
        (("tree",),),
        shade,
        "the trees",
        "trees give shade",
        _cue(r"shade|shady|shelter from|coolest|cool place"),
    ),
    Affordance(
        "heat",
        (("building", "road"),),
        heat,
        "the roofs and paved surfaces",
        "roofs and pavement absorb and store heat",
        _cue(r"heat\w*|hottest|hot spots?"),
    ),
    Affordance(
        "build_homes",
        (("barren", "grass"),),
        build_homes,
        "the open land away from the water",
        "it is open ground more than about 30 m from water",
        _cue(
            r"be built|(?:could|would|can|should)\b.*\bbuild\b|for (?:new )?(?:homes|houses|buildings|construction)|developers?"
        ),
    ),
)


def asked_for(question: str) -> Affordance | None:
    """The affordance a question asks for, or None."""
    return next((a for a in AFFORDANCES if a.cue.search(question)), None)
