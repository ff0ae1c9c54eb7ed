"""Change tasks, the six ChangeChat types: change captioning, binary change, from->to semantic change,
quantification (count of changed components and area), localisation (3x3 grid words and a change mask) and a
multi-turn dialogue that chains them.

Change comes from the tile's change mask, or from two label maps (then from->to classes are known). The user turn
introduces both dates with ``format_two_date_prompt``; every quoted number is a fact over the stored rasters.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import numpy as np

from data_gen.tasks import phrasing, regions
from data_gen.tasks.builder import SampleBuilder, Where, change_mask
from data_gen.tile import Sample, Tile

CHANGE: Where = [{"raster": "change", "values": [1]}]
ALL: Where = []


def change_samples(tile: Tile, rng: random.Random) -> list[Sample]:
    if tile.image2 is None:
        return []
    change = change_mask(tile)
    if change is None:
        return []
    ctx = _Context(tile, change)
    out = [_single(ctx, rng, "change_caption", 0)]
    kinds = ["change_binary", "change_quantify", "change_localise"]
    if ctx.semantic:
        kinds.append("change_semantic")
    out.append(_single(ctx, rng, rng.choice(kinds), 1))
    out.append(_dialogue(ctx, rng, 2))
    return out


class _Context:
    def __init__(self, tile: Tile, change: np.ndarray) -> None:
        self.tile = tile
        self.change = change
        self.min_pixels = regions.min_component_pixels(tile.height, tile.width)
        self.changed = int(change.sum()) >= self.min_pixels
        self.semantic = tile.labels is not None and tile.labels2 is not None and tile.taxonomy is not None

    def transitions(self, top: int = 3) -> list[tuple[int, int, int]]:
        """(from value, to value, pixels) of the largest class transitions inside the change mask."""
        tax = self.tile.taxonomy
        a = self.tile.labels[self.change]  # type: ignore[index]
        b = self.tile.labels2[self.change]  # type: ignore[index]
        if a.size == 0:
            return []
        pairs, counts = np.unique(np.stack([a, b], axis=1), axis=0, return_counts=True)
        out = []
        for (f, t), n in sorted(zip(pairs.tolist(), counts.tolist()), key=lambda p: -p[1]):
            if f != t and f in tax.classes and t in tax.classes and n >= self.min_pixels:  # type: ignore[union-attr]
                out.append((int(f), int(t), int(n)))
        return out[:top]

    def name(self, value: int) -> str:
        return self.tile.taxonomy.classes[value].name  # type: ignore[union-attr]


def _binary(b: SampleBuilder, rng: random.Random, ctx: _Context) -> None:
    b.user(phrasing.pick(rng, "change_binary"), "change_binary")
    b.facts.append(
        {
            "kind": "presence",
            "turn": len(b.turns),
            "answer": "yes" if ctx.changed else "no",
            "where": CHANGE,
            "min_pixels": ctx.min_pixels,
        }
    )
    if ctx.changed:
        b.assistant(rng.choice(("Yes.", "Yes, parts of the area changed.", "Yes, there are changes.")))
    else:
        ctx_no = ("No.", "No, the area looks the same.", "No, I see no change.")
        b.assistant(rng.choice(ctx_no) if not ctx.change.any() else "No, nothing beyond a few stray pixels.")


def _quantify(b: SampleBuilder, rng: random.Random, ctx: _Context) -> None:
    b.user(phrasing.pick(rng, "change_quantify"), "change_quantify")
    n, quote = b.count_components(CHANGE, ctx.min_pixels)
    area = b.area(CHANGE)
    share = b.share(CHANGE, ALL)
    noun = "changed area" if n == 1 else "changed areas"
    b.assistant(f"There {'is' if n == 1 else 'are'} {quote} {noun}, {area} in total, {share} of the scene.")


def _localise(b: SampleBuilder, rng: random.Random, ctx: _Context) -> None:
    b.user(phrasing.pick(rng, "change_localise"), "change_localise")
    if not ctx.changed:
        b.facts.append({"kind": "none", "turn": len(b.turns), "rule": "no change"})
        b.assistant("None here: nothing changed between the two dates.")
        return
    cells = regions.cells_covering(ctx.change)
    b.facts.append(
        {"kind": "cells", "turn": len(b.turns), "quote": phrasing.join_words(cells), "where": CHANGE}
    )
    seg = b.seg("the changed areas", ctx.change, where=CHANGE, exact=True)
    b.assistant(f"The changes are {regions.where_text(cells)}: {seg}.")


def _semantic(b: SampleBuilder, rng: random.Random, ctx: _Context) -> None:
    b.user(phrasing.pick(rng, "change_semantic"), "change_semantic")
    trans = ctx.transitions()
    if not trans:
        b.facts.append({"kind": "none", "turn": len(b.turns), "rule": "no transition"})
        b.assistant("None here: no class changed into another between the two dates.")
        return
    parts = []
    for f, t, _ in trans:
        where = [{"raster": "labels", "values": [f]}, {"raster": "labels2", "values": [t]}, *CHANGE]
        parts.append(f"{ctx.name(f)} became {ctx.name(t)} on {b.share(where, ALL)} of the scene")
    b.assistant(phrasing.capitalise(phrasing.join_words(parts)) + ".")


def _caption(b: SampleBuilder, rng: random.Random, ctx: _Context) -> None:
    b.user(phrasing.pick(rng, "change_caption"), "change_caption")
    d1, d2 = ctx.tile.dates or ("date 1", "date 2")
    if not ctx.changed:
        b.facts.append(
            {
                "kind": "presence",
                "turn": len(b.turns),
                "answer": "no",
                "where": CHANGE,
                "min_pixels": ctx.min_pixels,
            }
        )
        b.assistant(f"The scene is unchanged between {d1} and {d2}.")
        return
    share = b.share(CHANGE, ALL)
    where = regions.where_text(regions.cells_covering(ctx.change))
    text = f"Between {d1} and {d2}, {share} of the area changed, {where}."
    if ctx.semantic:
        trans = ctx.transitions(top=2)
        if trans:
            f, t, _ = trans[0]
            where = [{"raster": "labels", "values": [f]}, {"raster": "labels2", "values": [t]}, *CHANGE]
            text += f" The main change is {ctx.name(f)} turning into {ctx.name(t)} ({b.share(where, ALL)} of the scene)."
    else:
        n, quote = b.count_components(CHANGE, ctx.min_pixels)
        text += (
            f" There {'is' if n == 1 else 'are'} {quote} separate changed {'area' if n == 1 else 'areas'}."
        )
    b.assistant(text)


_KINDS: dict[str, Callable[[SampleBuilder, random.Random, _Context], None]] = {
    "change_caption": _caption,
    "change_binary": _binary,
    "change_semantic": _semantic,
    "change_quantify": _quantify,
    "change_localise": _localise,
}


def _single(ctx: _Context, rng: random.Random, kind: str, index: int) -> Sample:
    b = SampleBuilder(ctx.tile, "change", index)
    _KINDS[kind](b, rng, ctx)
    return b.build()


def _dialogue(ctx: _Context, rng: random.Random, index: int) -> Sample:
    """Multi-turn: did it change? where? how much? (and into what, when labels say)."""
    b = SampleBuilder(ctx.tile, "change", index)
    _binary(b, rng, ctx)
    if ctx.changed:
        _localise(b, rng, ctx)
        _quantify(b, rng, ctx)
        if ctx.semantic:
            _semantic(b, rng, ctx)
    return b.build(dialogue=True)
