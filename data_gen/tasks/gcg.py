"""Grounded conversation generation (GeoPixelD-style): a caption whose every noun phrase carries a ``[SEG]``.

Classes covering at least 2 % of the tile are described in order of cover; each phrase's mask is the class mask
(``exact`` so ``validate`` can re-derive it from the labels), followed by its share and where it lies. Named
instances (OSM) are added as their own phrases with their instance masks; on a tile with instances but no label
raster (GeoPixelD polygons, footprints), each instance class is one phrase with its count and union mask.

A human-written caption that came with the instances (GeoPixelD's ``gcg_description``, attached by the source
only when the tile is the whole annotated image) is emitted as a second sample: its ``<p> phrase </p> [SEG]``
marks are rewritten onto our protocol (``<p>tennis court</p> [SEG]``) with the instance masks in ``[SEG]`` order.
"""

from __future__ import annotations

import random
import re

import numpy as np

from data_gen.sources.geopixeld import PHRASE, phrase_label
from data_gen.tasks import phrasing, regions
from data_gen.tasks.builder import SampleBuilder, cls_where, valid_where
from data_gen.tile import Instance, Sample, Tile

MIN_SHARE = 0.02
MAX_PHRASES = 5

_OPENERS = (
    "The image shows",
    "This scene contains",
    "In this image we see",
    "The tile is made up of",
    "We can see",
)
_PIECE = (
    "{seg} covering {quote} of the scene, {where}",
    "{seg}, {quote} of the scene, {where}",
    "{seg}, {quote}, {where}",
)


def gcg_samples(tile: Tile, rng: random.Random) -> list[Sample]:
    out = _templated(tile, rng)
    out += _human_captions(tile, rng, len(out))
    return out


def _templated(tile: Tile, rng: random.Random) -> list[Sample]:
    a = regions.analyse(tile)
    if not a.has_labels and not a.instances:
        return []
    b = SampleBuilder(tile, "gcg", 0)
    b.user(phrasing.pick(rng, "gcg"), "gcg")
    pieces = []
    if a.has_labels:
        valid = valid_where(a.valid_values)
        for cover in [c for c in a.cover if c.pixels >= MIN_SHARE * a.total][:MAX_PHRASES]:
            info = cover.info
            mask = a.class_mask(info.value)
            n_obj = len(a.components(info.value)) if info.thing else 1
            if n_obj > 1:
                phrase = f"{'a few' if n_obj < 5 else 'many'} {phrasing.plural(info.name)}"
            else:
                phrase = info.name
            seg = b.seg(phrase, mask, where=cls_where(info.value), exact=True)
            quote = b.share(cls_where(info.value), valid)
            where = regions.where_text(regions.cells_covering(mask))
            pieces.append(rng.choice(_PIECE).format(seg=seg, quote=quote, where=where))
    for comp in [c for cs in a.instances.values() for c in cs if c.name][:3]:
        seg = b.seg(f"the {comp.label} {comp.name}", comp.mask)
        pieces.append(f"{seg} {regions.CELL_PHRASE[regions.position_name(comp.mask)]}")
    if not a.has_labels:
        # Instance classes (largest total first), one phrase each: "4 tennis courts [SEG] on the right".
        groups = sorted(a.instances.items(), key=lambda kv: (-sum(c.pixels for c in kv[1]), kv[0]))
        for label, comps in groups[:MAX_PHRASES]:
            if len(comps) == 1:
                phrase = f"{phrasing.article(label)} {label}"
            else:
                _, quote = b.count_instances([c.pixels for c in comps])
                phrase = f"{quote} {phrasing.plural(label)}"
            mask = np.logical_or.reduce([c.mask for c in comps])
            where = regions.where_text(regions.cells_covering(mask))
            pieces.append(f"{b.seg(phrase, mask)} {where}")
    if not pieces:
        return []
    # Pieces carry their own commas ("<p>forest</p> [SEG], about half (52 %), mostly ..."): semicolons between.
    joined = pieces[0] if len(pieces) == 1 else "; ".join(pieces[:-1]) + "; and " + pieces[-1]
    b.assistant(f"{rng.choice(_OPENERS)} {joined}.")
    return [b.build()]


def _human_captions(tile: Tile, rng: random.Random, start: int) -> list[Sample]:
    """The source's own grounded captions, when every one of their phrases has its instance on this tile."""
    by_caption: dict[str, dict[int, Instance]] = {}
    for inst in tile.instances:
        at = inst.attributes
        if at.get("gcg_caption") and at.get("caption_id") is not None and inst.mask.any():
            by_caption.setdefault(str(at["caption_id"]), {})[int(at["seg"])] = inst
    out = []
    for k, caption_id in enumerate(sorted(by_caption)):
        insts = by_caption[caption_id]
        first = next(iter(insts.values())).attributes
        if sorted(insts) != list(range(int(first["segs"]))):
            continue  # a phrase without its mask: the caption would ground nothing
        b = SampleBuilder(tile, "gcg", start + k)
        if first.get("gcg_question"):
            b.user(str(first["gcg_question"]), "gcg_source")
        else:
            b.user(phrasing.pick(rng, "gcg"), "gcg")
        text = _rewrite(str(first["gcg_caption"]), b, [insts[i].mask for i in sorted(insts)])
        text = re.sub(r"\s+([,.;:!?])", r"\1", text)  # GeoPixelD writes "[SEG] , <p>"
        b.assistant(text)
        out.append(b.build(human_caption=True, caption_id=caption_id))
    return out


def _rewrite(caption: str, b: SampleBuilder, masks: list[np.ndarray]) -> str:
    """``<p> tennis court-1 </p> [SEG]`` -> ``<p>tennis court</p> [SEG]``, recording the k-th mask for the k-th."""
    pieces, end = [], 0
    for m, mask in zip(PHRASE.finditer(caption), masks, strict=True):
        pieces += [caption[end : m.start()], b.seg(phrase_label(m.group(1)), mask)]
        end = m.end()
    return "".join([*pieces, caption[end:]])
