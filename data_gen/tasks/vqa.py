"""Visual question answering: presence (with true negatives), counting, area, position, relation, comparison and
multi-label classification, each answered from the tile's labels and recorded as a fact ``validate`` re-checks.

A true negative is a taxonomy class with zero pixels in the tile; classes with only a few stray pixels are never
asked about, so a "no" is never contradicted by label noise and a "yes" is never about a speck.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from data_gen.tasks import phrasing, regions
from data_gen.tasks.builder import SampleBuilder, cls_where, valid_where
from data_gen.tile import ClassInfo, Sample, Tile

SAMPLES_PER_TILE = 2
TURNS_PER_SAMPLE = 3


def vqa_samples(tile: Tile, rng: random.Random) -> list[Sample]:
    a = regions.analyse(tile)
    if not a.has_labels and not a.instances:
        return []
    out: list[Sample] = []
    for index in range(SAMPLES_PER_TILE):
        b = SampleBuilder(tile, "vqa", index)
        kinds = list(_QUESTIONS)
        rng.shuffle(kinds)
        for kind in kinds:
            if len(b.types) >= TURNS_PER_SAMPLE:
                break
            _QUESTIONS[kind](b, rng, a)
        if b.turns:
            out.append(b.build())
    return out


def _present(a: regions.Analysis) -> list[ClassInfo]:
    return [c.info for c in a.cover if c.pixels >= a.min_pixels]


def _names(info: ClassInfo) -> tuple[str, str]:
    """(singular, plural) for counting: things by name, stuff by patch."""
    if info.thing:
        return info.name, phrasing.plural(info.name)
    return f"patch of {info.name}", f"patches of {info.name}"


def _presence(b: SampleBuilder, rng: random.Random, a: regions.Analysis) -> None:
    present, absent = _present(a), a.absent
    if not present and not absent:
        return
    positive = bool(present) and (not absent or rng.random() < 0.5)
    info = rng.choice(present if positive else absent)
    b.user(phrasing.pick(rng, "presence", cls=info.name), "presence")
    b.facts.append(
        {
            "kind": "presence",
            "turn": len(b.turns),
            "answer": "yes" if positive else "no",
            "where": cls_where(info.value),
            # "yes": at least min_pixels; "no": a true negative, not a single pixel of the class.
            "min_pixels": a.min_pixels if positive else 1,
        }
    )
    b.assistant(phrasing.pick(rng, "yes" if positive else "no", cls=info.name))


def _count(b: SampleBuilder, rng: random.Random, a: regions.Analysis) -> None:
    if a.instances and rng.random() < 0.5 or not a.has_labels:
        if not a.instances:
            return
        label = rng.choice(sorted(a.instances))
        comps = a.instances[label]
        singular, plural = label, phrasing.plural(label)
        b.user(phrasing.pick(rng, "count", singular=singular, plural=plural), "count")
        n, quote = b.count_instances([c.pixels for c in comps])
    else:
        candidates = [c for c in a.cover if c.info.thing] or a.cover
        info = rng.choice(candidates).info
        singular, plural = _names(info)
        b.user(phrasing.pick(rng, "count", singular=singular, plural=plural), "count")
        n, quote = b.count_components(cls_where(info.value), a.min_pixels)
    noun = singular if n == 1 else plural
    verb = "is" if n == 1 else "are"
    template = rng.choice(("There {verb} {q} {noun}.", "{q} {noun}.", "I count {q} {noun}."))
    b.assistant(phrasing.capitalise(template.format(verb=verb, q=quote, noun=noun)))


def _area(b: SampleBuilder, rng: random.Random, a: regions.Analysis) -> None:
    present = _present(a)
    if not present:
        return
    info = rng.choice(present)
    b.user(phrasing.pick(rng, "area", cls=info.name), "area")
    area = b.area(cls_where(info.value))
    share = b.share(cls_where(info.value), valid_where(a.valid_values))
    subject = (
        f"{phrasing.plural(info.name)} cover" if info.thing else f"{info.name} covers"
    )  # "Buildings cover"
    b.assistant(f"{phrasing.capitalise(subject)} {area}, {share} of the tile.")


def _position(b: SampleBuilder, rng: random.Random, a: regions.Analysis) -> None:
    present = [i for i in _present(a) if a.share(i) < 0.9 * a.total]
    if not present:
        return
    info = rng.choice(present)
    cells = regions.cells_covering(a.class_mask(info.value))
    b.user(phrasing.pick(rng, "position", cls=info.name), "position")
    b.facts.append(
        {
            "kind": "cells",
            "turn": len(b.turns),
            "quote": phrasing.join_words(cells),
            "where": cls_where(info.value),
        }
    )
    # "The buildings are ..." for a class of objects, "The forest is ..." for a surface.
    subject = f"The {phrasing.plural(info.name)} are" if info.thing else f"The {info.name} is"
    b.assistant(f"{subject} {regions.where_text(cells)}.")


def _relation(b: SampleBuilder, rng: random.Random, a: regions.Analysis) -> None:
    present = _present(a)
    if len(present) < 2:
        return
    x, y = rng.sample(present, 2)
    cx, cy = a.components(x.value), a.components(y.value)
    if not cx or not cy:
        return
    compass = regions.is_north_up(b.tile)
    word = regions.direction(cx[0].centre, cy[0].centre, compass)
    na, nb = (
        f"largest {_names(x)[0] if x.thing else x.name + ' area'}",
        f"largest {_names(y)[0] if y.thing else y.name + ' area'}",
    )
    b.user(phrasing.pick(rng, "relation", a=na, b=nb), "relation")
    b.facts.append(
        {
            "kind": "relation",
            "turn": len(b.turns),
            "quote": word,
            "a": cls_where(x.value),
            "b": cls_where(y.value),
            "min_pixels": a.min_pixels,
            "compass": compass,
        }
    )
    b.assistant(f"The {na} lies {word} the {nb}.")


def _comparison(b: SampleBuilder, rng: random.Random, a: regions.Analysis) -> None:
    present = _present(a)
    if len(present) < 2:
        return
    x, y = rng.sample(present, 2)
    if a.share(x) == a.share(y):
        return
    b.user(phrasing.pick(rng, "comparison", a=x.name, b=y.name), "comparison")
    valid = valid_where(a.valid_values)
    qx, qy = b.share(cls_where(x.value), valid), b.share(cls_where(y.value), valid)
    big, small, qb, qs = (x, y, qx, qy) if a.share(x) > a.share(y) else (y, x, qy, qx)
    b.facts.append(
        {"kind": "order", "turn": len(b.turns), "more": cls_where(big.value), "less": cls_where(small.value)}
    )
    b.assistant(f"{phrasing.capitalise(big.name)} covers more: {qb}, against {qs} for {small.name}.")


def _multilabel(b: SampleBuilder, rng: random.Random, a: regions.Analysis) -> None:
    present = _present(a)
    if not present or a.tile.known_values is not None:
        return  # "what does it contain?" needs labels of every class, not only of the vectors' ones
    b.user(phrasing.pick(rng, "multilabel"), "multilabel")
    b.facts.append(
        {
            "kind": "classes",
            "turn": len(b.turns),
            "raster": "labels",
            "values": sorted(i.value for i in present),
            "candidates": a.valid_values,
            "min_pixels": a.min_pixels,
        }
    )
    names = sorted(i.name for i in present)
    b.assistant(f"The image contains {phrasing.join_words(names)}.")


_QUESTIONS: dict[str, Callable[[SampleBuilder, random.Random, regions.Analysis], None]] = {
    "presence": _presence,
    "count": _count,
    "area": _area,
    "position": _position,
    "relation": _relation,
    "comparison": _comparison,
    "multilabel": _multilabel,
}
