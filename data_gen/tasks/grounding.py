"""Referring and grounding: one object picked out by class, size rank, position and a neighbour, answered with a
``<box>``, an ``<obb>`` (minimum-area rectangle, long-side convention) or ``<p>…</p> [SEG]``; and "all X" answers
(one mask for the class, or one box per object).

Objects are source instances (OSM, vector footprints) when the tile has them, else connected components of a
class. The size rank is only used when it is unambiguous (no tie with the neighbouring ranks).
"""

from __future__ import annotations

import random

import numpy as np

from data_gen.tasks import phrasing, regions
from data_gen.tasks.builder import SampleBuilder, cls_where
from data_gen.tile import Sample, Tile
from rsvlm.affordances import near

MAX_BOXES = 10
_RANKS = ("largest", "second largest", "third largest", "fourth largest", "fifth largest")


def grounding_samples(tile: Tile, rng: random.Random) -> list[Sample]:
    a = regions.analyse(tile)
    groups = _Groups(a)
    if not groups.keys:
        return []
    out = []
    for index in range(2):
        key = groups.pick(rng)
        if key is None:
            return out
        out.append(_refer(tile, rng, a, groups[key], index))
    key = groups.pick(rng)
    if key is not None:
        out.append(_all(tile, rng, a, key, groups[key], 2))
    return out


class _Groups:
    """Referable objects by (label, class value or None for instances), labelled only when a group is picked."""

    def __init__(self, a: regions.Analysis) -> None:
        self.a = a
        self.keys: list[tuple[str, int | None]] = [(label, None) for label in sorted(a.instances)]
        self.keys += [(c.info.name, c.info.value) for c in a.cover if c.pixels >= a.min_pixels]
        self.big = max(a.min_pixels, int(0.01 * a.height * a.width))

    def __getitem__(self, key: tuple[str, int | None]) -> list[regions.Component]:
        label, value = key
        if value is None:
            return self.a.instances[label]
        comps = self.a.components(value)
        return (
            comps if self.a.tile.taxonomy.classes[value].thing else [c for c in comps if c.pixels >= self.big]
        )  # type: ignore[union-attr]

    def pick(self, rng: random.Random) -> tuple[str, int | None] | None:
        while self.keys:
            key = rng.choice(self.keys)
            if self[key]:
                return key
            self.keys.remove(key)
        return None


def _noun(a: regions.Analysis, label: str, value: int | None) -> tuple[str, str]:
    """(singular, plural) object nouns: 'building'/'buildings' or 'patch of forest'/'patches of forest'."""
    if value is not None and not a.tile.taxonomy.classes[value].thing:  # type: ignore[union-attr]
        return f"patch of {label}", f"patches of {label}"
    return label, phrasing.plural(label)


def _neighbour(a: regions.Analysis, comp: regions.Component) -> str | None:
    """The class that most of the object's surroundings belong to, if it is not the object's own class."""
    if a.tile.labels is None:
        return None
    x1, y1, x2, y2 = regions.tight_pixel_box(comp.mask)
    m = 4
    r0, r1, c0, c1 = max(0, y1 - m), min(a.height, y2 + m), max(0, x1 - m), min(a.width, x2 + m)
    crop = comp.mask[r0:r1, c0:c1]
    ring = near(crop, 3) & ~crop
    values = a.tile.labels[r0:r1, c0:c1][ring]
    if values.size == 0:
        return None
    vals, counts = np.unique(values, return_counts=True)
    best = int(vals[np.argmax(counts)])
    tax = a.tile.taxonomy
    if tax is None or best not in tax.classes or best == comp.value or best in tax.ignore_values:
        return None
    name = tax.classes[best].name
    return None if name == comp.label else name


def describe(a: regions.Analysis, comps: list[regions.Component], k: int, value: int | None) -> str:
    """A referring expression for ``comps[k]`` (comps sorted largest first)."""
    comp = comps[k]
    singular, _ = _noun(a, comp.label, value)
    complete = len(comps) < 64 and (value is None or a.tile.taxonomy.classes[value].thing)  # type: ignore[union-attr]
    if len(comps) == 1:
        head = f"the {singular}"
    else:
        distinct = (k == 0 or comps[k - 1].pixels != comp.pixels) and (
            k + 1 >= len(comps) or comps[k + 1].pixels != comp.pixels
        )
        if distinct and k < len(_RANKS):
            head = f"the {_RANKS[k]} {singular}"
        elif distinct and complete and k == len(comps) - 1:
            head = f"the smallest {singular}"
        else:
            head = f"the {singular}"
    parts = [head]
    if comp.name:
        parts.append(f"named {comp.name}")
    parts.append(regions.CELL_PHRASE[regions.position_name(comp.mask)])
    neighbour = _neighbour(a, comp)
    if neighbour:
        parts.append(f"next to the {neighbour}")
    return " ".join(parts)


def _refer(tile: Tile, rng: random.Random, a: regions.Analysis, comps, index: int) -> Sample:
    b = SampleBuilder(tile, "grounding", index)
    k = rng.randrange(min(len(comps), len(_RANKS)))
    if len(comps) > 1 and rng.random() < 0.25:
        k = len(comps) - 1
    comp = comps[k]
    ref = describe(a, comps, k, comp.value)
    qtype = rng.choice(("refer_seg", "refer_box", "refer_obb"))
    b.user(phrasing.pick(rng, qtype, ref=ref), qtype)
    where = cls_where(comp.value) if comp.value is not None else None
    if qtype == "refer_seg":
        seg_index = len(b.masks)
        answer = b.seg(ref, comp.mask, where=where)
        if rng.random() < 0.5:
            answer += " " + b.box(comp.mask, seg_index)
        b.assistant(f"Here it is: {answer}." if rng.random() < 0.5 else answer)
    elif qtype == "refer_box":
        b.assistant(f"{phrasing.capitalise(ref)} is at {b.box(comp.mask)}.")
    else:
        b.assistant(f"{phrasing.capitalise(ref)}: {b.obb(comp.mask)}.")
    return b.build(referent={"label": comp.label, "rank": k, "pixels": comp.pixels})


def _all(tile: Tile, rng: random.Random, a: regions.Analysis, key, comps, index: int) -> Sample:
    label, value = key
    singular, plural = _noun(a, label, value)
    b = SampleBuilder(tile, "grounding", index)
    qtype = rng.choice(("all_seg", "all_box"))
    b.user(phrasing.pick(rng, qtype, singular=singular, plural=plural), qtype)
    if qtype == "all_seg":
        if value is not None:
            thing = a.tile.taxonomy.classes[value].thing  # type: ignore[union-attr]
            phrase = f"all {phrasing.plural(label)}" if thing else f"all the {label}"
            answer = b.seg(phrase, a.class_mask(value), where=cls_where(value), exact=True)
        else:
            union = np.logical_or.reduce([c.mask for c in comps])
            answer = b.seg(f"all {plural}", union)
        b.assistant(f"Here they are: {answer}." if rng.random() < 0.5 else answer)
        return b.build()
    if value is not None:
        comps = a.components(value)
        n, quote = b.count_components(cls_where(value), a.min_pixels)
    else:
        n, quote = b.count_instances([c.pixels for c in comps])
    shown = comps[:MAX_BOXES]
    boxes = ", ".join(b.box(c.mask) for c in shown)
    noun = singular if n == 1 else plural
    if n > len(shown):
        b.assistant(f"There are {quote} {noun}; the {len(shown)} largest are at {boxes}.")
    else:
        b.assistant(f"There {'is' if n == 1 else 'are'} {quote} {noun}: {boxes}.")
    return b.build()
