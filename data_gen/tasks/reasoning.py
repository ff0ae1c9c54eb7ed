"""Reasoning segmentation: implicit questions answered through a function/affordance table.

Each rule names the concepts it needs (water, road, tree, ...), a few core questions, and how to build the answer
mask from the concept masks ("where could a boat be launched" -> water within a few metres of a road or open
ground). Taxonomy classes map to concepts by their names and synonyms, so the table works for any preset or custom
taxonomy. When a needed concept is absent, or the rule selects nothing, the answer says "none here" and why.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from data_gen.tasks import phrasing, regions
from data_gen.tasks.builder import SampleBuilder
from data_gen.tile import Sample, Tile

# Concept -> substrings of class names/synonyms; the first concept that matches a class wins.
CONCEPTS: dict[str, tuple[str, ...]] = {
    "water": ("water", "river", "lake", "sea", "pond", "canal", "stream", "reservoir"),
    "building": ("building", "house", "roof", "built-up"),
    "road": ("road", "street", "highway", "impervious", "pavement", "paved", "runway"),
    "tree": ("tree", "forest", "woodland", "wood", "canopy", "orchard", "mangrove"),
    "agriculture": ("agricultur", "crop", "farm", "cultivat", "paddy", "field"),
    "grass": ("grass", "low vegetation", "meadow", "pasture", "lawn", "rangeland", "shrub"),
    "barren": ("barren", "bare", "sand", "soil", "gravel"),
}


def concept_values(tile: Tile) -> dict[str, list[int]]:
    """Class values of the tile's taxonomy grouped by concept."""
    out: dict[str, list[int]] = {}
    if tile.taxonomy is None:
        return out
    for value, info in sorted(tile.taxonomy.classes.items()):
        if value in tile.taxonomy.ignore_values:
            continue
        words = " ".join((info.name, *info.synonyms)).lower()
        for concept, keys in CONCEPTS.items():
            if any(k in words for k in keys):
                out.setdefault(concept, []).append(value)
                break
    return out


# How a missing concept reads in "None here: the image shows no ...".
CONCEPT_WORDS = {
    "water": "water",
    "building": "buildings",
    "road": "roads",
    "tree": "trees",
    "agriculture": "farmland",
    "grass": "grassland",
    "barren": "bare ground",
}


def missing_text(missing: list[tuple[str, ...]]) -> str:
    """'the image shows no water, and no roads, bare ground or grassland' for the unmet needs of a rule."""
    groups = [phrasing.join_words([CONCEPT_WORDS[c] for c in g]).replace(" and ", " or ") for g in missing]
    return "the image shows no " + ", and no ".join(groups)


@dataclass
class Rule:
    name: str
    needs: tuple[tuple[str, ...], ...]  # each entry: at least one of these concepts must be present
    questions: tuple[str, ...]
    phrase: str  # what the answer mask is called
    select: Callable[[dict[str, np.ndarray], float], np.ndarray]  # concept masks, px per metre -> answer mask
    because: str  # why, for the answer text


def _union(masks: dict[str, np.ndarray], *names: str) -> np.ndarray:
    shape = next(iter(masks.values())).shape
    out = np.zeros(shape, dtype=bool)
    for n in names:
        if n in masks:
            out |= masks[n]
    return out


def _metres(px_per_m: float, metres: float, default_px: int) -> int:
    return max(1, int(round(metres * px_per_m))) if px_per_m > 0 else default_px


def _boat(m: dict[str, np.ndarray], ppm: float) -> np.ndarray:
    land = _union(m, "road", "barren", "grass")
    return m["water"] & regions.near(land, _metres(ppm, 3.0, 4))


def _flood(m: dict[str, np.ndarray], ppm: float) -> np.ndarray:
    lab, ids, _ = regions.components(m["agriculture"], 1)
    close = regions.near(m["water"], _metres(ppm, 30.0, 20))
    hit = np.unique(lab[close & m["agriculture"]])
    return np.isin(lab, hit[hit > 0])


def _buildings_at_risk(m: dict[str, np.ndarray], ppm: float) -> np.ndarray:
    lab, _, _ = regions.components(m["building"], 1)
    close = regions.near(m["water"], _metres(ppm, 20.0, 15))
    hit = np.unique(lab[close & m["building"]])
    return np.isin(lab, hit[hit > 0])


def _shade(m: dict[str, np.ndarray], ppm: float) -> np.ndarray:
    return m["tree"].copy()


def _heat(m: dict[str, np.ndarray], ppm: float) -> np.ndarray:
    return _union(m, "building", "road")


def _airstrip(m: dict[str, np.ndarray], ppm: float) -> np.ndarray:
    """Open components whose minimum-area rectangle is long (>= 40 % of the tile) and well filled (straight)."""
    open_ground = _union(m, "road", "barren", "grass")
    h, w = open_ground.shape
    lab, ids, counts = regions.components(open_ground, max(16, h * w // 2000))
    out = np.zeros_like(open_ground)
    for i, n in zip(ids[:12], counts[:12]):
        comp = lab == i
        obb = regions.grid_obb(comp)  # grid units, ~ tile fraction x 1000
        fill = n / max(obb.w * obb.h * h * w / 1e6, 1.0)
        if obb.w >= 400 and fill >= 0.6 and obb.w >= 4 * obb.h:
            out |= comp
    return out


def _build_homes(m: dict[str, np.ndarray], ppm: float) -> np.ndarray:
    open_ground = _union(m, "barren", "grass")
    return open_ground & ~regions.near(m.get("water", np.zeros_like(open_ground)), _metres(ppm, 30.0, 20))


RULES: tuple[Rule, ...] = (
    Rule(
        "boat_launch",
        (("water",), ("road", "barren", "grass")),
        (
            "Where could a boat be launched?",
            "Where would be a good place to put a small boat into the water?",
            "Which stretch of water can be reached from a road or open ground to launch a kayak?",
            "Where could someone carry a canoe into the water?",
            "Where is the water accessible from land for launching a boat?",
        ),
        "the water's edge next to accessible land",
        _boat,
        "it is water that touches a road or open ground",
    ),
    Rule(
        "flood_fields",
        (("agriculture",), ("water",)),
        (
            "Which fields could flood if the river rises?",
            "Which farmland is most exposed to flooding from the nearby water?",
            "Which crops would be at risk if the water level went up?",
            "Where could agricultural land be flooded?",
            "Which cultivated areas lie close enough to the water to flood?",
        ),
        "the fields near the water",
        _flood,
        "these fields lie within about 30 m of water",
    ),
    Rule(
        "buildings_at_risk",
        (("building",), ("water",)),
        (
            "Which buildings would be at risk in a flood?",
            "Which houses stand closest to the water and could get wet feet in a flood?",
            "Which buildings should be evacuated first if the water rises?",
            "Where are buildings exposed to flooding?",
            "Which structures are near enough to the water to be flooded?",
        ),
        "the buildings close to the water",
        _buildings_at_risk,
        "these buildings stand within about 20 m of water",
    ),
    Rule(
        "shade",
        (("tree",),),
        (
            "Where could I find shade on a hot day?",
            "Where would be a cool place to rest in the afternoon sun?",
            "Where is there natural shade?",
            "Where could a hiker shelter from the midday sun?",
            "Which areas would stay coolest on a sunny day?",
        ),
        "the trees",
        _shade,
        "trees give shade",
    ),
    Rule(
        "heat",
        (("building", "road"),),
        (
            "Which surfaces heat up the most in summer?",
            "Where is the urban heat island effect likely strongest?",
            "Which areas would feel hottest on a summer afternoon?",
            "Which surfaces store the most heat from the sun?",
            "Where would the ground be hottest on a sunny day?",
        ),
        "the roofs and paved surfaces",
        _heat,
        "roofs and pavement absorb and store heat",
    ),
    Rule(
        "airstrip",
        (("road", "barren", "grass"),),
        (
            "Where could a small plane land in an emergency?",
            "Is there a long straight open strip where a light aircraft could touch down?",
            "Where could a pilot put down a small plane safely?",
            "Which open area is long and straight enough for an emergency landing?",
            "Where could a microlight land here?",
        ),
        "the long straight open strip",
        _airstrip,
        "it is open ground, long and straight",
    ),
    Rule(
        "build_homes",
        (("barren", "grass"),),
        (
            "Where could new houses be built without clearing trees?",
            "Which open land could be used for new homes away from the water?",
            "Where would a developer build without cutting forest or risking floods?",
            "Which areas are free for construction?",
            "Where is there open land suitable for new buildings?",
        ),
        "the open land away from the water",
        _build_homes,
        "it is open ground more than about 30 m from water",
    ),
)


def reasoning_samples(tile: Tile, rng: random.Random) -> list[Sample]:
    a = regions.analyse(tile)
    if not a.has_labels:
        return []
    concepts = concept_values(tile)
    present = {c: vs for c, vs in concepts.items() if sum(a.share(tile.taxonomy.classes[v]) for v in vs) > 0}  # type: ignore[union-attr]
    # A rule is usable when the taxonomy can label everything it needs; otherwise "none here" could be false.
    usable = [r for r in RULES if all(any(c in concepts for c in group) for group in r.needs)]
    if not usable:
        return []
    ppm = 1.0 / tile.gsd if tile.gsd else 0.0
    masks = {c: np.isin(tile.labels, vs) for c, vs in present.items()}  # type: ignore[arg-type]
    out = []
    for index, rule in enumerate(rng.sample(usable, min(2, len(usable)))):
        b = SampleBuilder(tile, "reasoning", index)
        b.user(phrasing.frame_reasoning(rng, rng.choice(rule.questions)), rule.name)
        missing = [group for group in rule.needs if not any(c in present for c in group)]
        answer_mask = None if missing else rule.select(masks, ppm)
        if answer_mask is None or answer_mask.sum() < a.min_pixels:
            b.facts.append({"kind": "none", "turn": len(b.turns), "rule": rule.name})
            if missing:
                b.assistant(f"None here: {missing_text(missing)}.")
            else:
                b.assistant(f"None here: I find no {rule.phrase.removeprefix('the ')} in this image.")
        else:
            where = regions.where_text(regions.cells_covering(answer_mask))
            seg = b.seg(rule.phrase, answer_mask)
            b.assistant(f"{seg}, {where}: {rule.because}.")
        out.append(b.build(rule=rule.name))
    return out
