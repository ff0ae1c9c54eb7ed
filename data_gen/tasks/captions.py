"""Captions: ChatEarthNet-style land-cover descriptions and sentences about OSM-named features.

A land-cover caption lists the classes in order of cover with a proportion word tied to its number ("about a third
(34 %)"), then walks the regions of the tile (a 3x3 grid or the four corners and the centre) saying what dominates
each. A named-feature caption says where each named instance lies and, for long thin ones, which way it runs.
"""

from __future__ import annotations

import random

from data_gen.tasks import phrasing, regions
from data_gen.tasks.builder import SampleBuilder, cls_where, valid_where
from data_gen.tile import Sample, Tile

# "Mostly" and "dominated" only when the first class really covers half the tile.
_LEAD_MAJORITY = (
    "This image is mostly covered by {first}.",
    "The scene is dominated by {first}.",
    "Most of this tile is {first}.",
)
_LEAD_PLURALITY = (
    "{First} covers the largest part of this image.",
    "The largest class in the image is {first}.",
    "No class covers half of this image; the largest is {first}.",
)
_REST = (" It also contains {rest}.", " The rest is {rest}.", " Other classes are {rest}.")
# {where} is the cell's phrase ("in the top left", "along the top", "on the right").
_REGION = (
    "The {region} part is mainly {cls}, {quote}.",
    "{Where}, {cls} dominates with {quote}.",
    "{cls_cap} takes up {quote} of the {region} part.",
)
_REGION_ALL = (
    "{cls_cap} takes up {quote} of the {region} part.",
    "{Where}, {cls} covers {quote} of the ground.",
)


def caption_samples(tile: Tile, rng: random.Random) -> list[Sample]:
    out: list[Sample] = []
    a = regions.analyse(tile)
    if a.has_labels:
        out.append(_landcover_caption(tile, rng, a))
    named = [c for comps in a.instances.values() for c in comps if c.name]
    if named:
        out.append(_named_caption(tile, rng, named))
    return out


def _landcover_caption(tile: Tile, rng: random.Random, a: regions.Analysis) -> Sample:
    b = SampleBuilder(tile, "caption", 0)
    b.user(phrasing.pick(rng, "caption"), "caption")
    valid = valid_where(a.valid_values)
    parts = []
    for cover in a.cover[:5]:
        quote = b.share(cls_where(cover.info.value), valid)
        parts.append(f"{cover.info.name} at {quote}")
    first, rest = parts[0], parts[1:]
    lead = _LEAD_MAJORITY if 2 * a.cover[0].pixels >= a.total else _LEAD_PLURALITY
    text = rng.choice(lead).format(first=first, First=phrasing.capitalise(first))
    if rest:
        text += rng.choice(_REST).format(rest=phrasing.join_words(rest))
    use_grid = rng.random() < 0.5
    windows = (
        regions.grid_windows(a.height, a.width) if use_grid else regions.corner_windows(a.height, a.width)
    )
    region_sentences = []
    for name, window in windows:
        r0, r1, c0, c1 = window
        labels = tile.labels[r0:r1, c0:c1]  # type: ignore[index]
        best, best_n = None, 0
        for cover in a.cover:
            n = int((labels == cover.info.value).sum())
            if n > best_n:
                best, best_n = cover.info, n
        if best is None:
            continue
        quote = b.share(cls_where(best.value), valid, window)
        total = b.pixel_count(valid, window)
        template = rng.choice(_REGION_ALL if best_n >= 0.95 * total else _REGION)  # not "mainly ..., all"
        where = regions.CELL_PHRASE[name]
        region_sentences.append(
            template.format(
                region=name,
                Where=phrasing.capitalise(where),
                cls=best.name,
                cls_cap=phrasing.capitalise(best.name),
                quote=quote,
            )
        )
    b.assistant(text + " " + " ".join(region_sentences))
    return b.build(layout="3x3" if use_grid else "corners+centre")


def _named_caption(tile: Tile, rng: random.Random, named: list[regions.Component]) -> Sample:
    b = SampleBuilder(tile, "caption", 1)
    b.user(phrasing.pick(rng, "caption_named"), "caption_named")
    compass = regions.is_north_up(tile)
    sentences = []
    for comp in named[:6]:
        where = regions.CELL_PHRASE[regions.position_name(comp.mask)]
        label = comp.attributes.get(
            "building_type", comp.label
        )  # "a church named ..." rather than "building"
        obb = regions.grid_obb(comp.mask)
        if obb.h > 0 and obb.w / max(obb.h, 1e-6) >= 3:
            sentences.append(
                f"{phrasing.capitalise(phrasing.article(label))} {label} named {comp.name} runs {_run_direction(obb.angle, compass)} {where}."
            )
        else:
            sentences.append(
                f"{phrasing.capitalise(phrasing.article(label))} {label} named {comp.name} lies {where}."
            )
    b.assistant(" ".join(sentences))
    return b.build()


def _run_direction(angle: float, compass: bool) -> str:
    """Which way a long feature runs from its oriented box angle (image y points down)."""
    a = abs(angle)
    if compass:
        if a < 22.5:
            return "east-west"
        if a > 67.5:
            return "north-south"
        return "north-west to south-east" if angle > 0 else "south-west to north-east"
    if a < 22.5:
        return "left to right"
    if a > 67.5:
        return "top to bottom"
    return (
        "diagonally from top left to bottom right"
        if angle > 0
        else "diagonally from bottom left to top right"
    )
