"""Reasoning segmentation: implicit questions answered through a function/affordance table.

Each rule names the concepts it needs (water, road, tree, ...), a few core questions, and how to build the answer
mask from the concept masks ("where could a boat be launched" -> water within a few metres of a road or open
ground); the mask functions are ``rsvlm.affordances``', which the assistant answers such questions with. Taxonomy classes map to concepts by their names and synonyms, so the table works for any preset or custom
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
from rsvlm.affordances import (
    airstrip,
    boat_launch,
    build_homes,
    buildings_at_risk,
    flood_fields,
    heat,
    shade,
)

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
    """Class values of the tile's taxonomy grouped by concept (only those its labels cover, ``Tile.known_values``)."""
    out: dict[str, list[int]] = {}
    if tile.taxonomy is None:
        return out
    for value, info in sorted(tile.taxonomy.classes.items()):
        if value in tile.taxonomy.ignore_values or not tile.labels_say_absent(value):
            continue  # a class the labels do not cover cannot be said to be missing
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
        boat_launch,
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
        flood_fields,
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
        buildings_at_risk,
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
        shade,
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
        heat,
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
        airstrip,
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
        build_homes,
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
