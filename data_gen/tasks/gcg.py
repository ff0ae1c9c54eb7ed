"""Grounded conversation generation (GeoPixelD-style): a caption whose every noun phrase carries a ``[SEG]``.

Classes covering at least 2 % of the tile are described in order of cover; each phrase's mask is the class mask
(``exact`` so ``validate`` can re-derive it from the labels), followed by its share and where it lies. Named
instances (OSM) are added as their own phrases with their instance masks.
"""

from __future__ import annotations

import random

from data_gen.tasks import phrasing, regions
from data_gen.tasks.builder import SampleBuilder, cls_where, valid_where
from data_gen.tile import Sample, Tile

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
    "{seg} covering {quote} of the scene {where}",
    "{seg} ({quote}) {where}",
    "{seg}, {quote}, {where}",
)


def gcg_samples(tile: Tile, rng: random.Random) -> list[Sample]:
    a = regions.analyse(tile)
    if not a.has_labels and not any(c.name for cs in a.instances.values() for c in cs):
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
            where = phrasing.join_words([regions.CELL_PHRASE[c] for c in regions.cells_covering(mask)])
            pieces.append(rng.choice(_PIECE).format(seg=seg, quote=quote, where="mostly " + where))
    for comp in [c for cs in a.instances.values() for c in cs if c.name][:3]:
        seg = b.seg(f"the {comp.label} {comp.name}", comp.mask)
        pieces.append(f"{seg} {regions.CELL_PHRASE[regions.position_name(comp.mask)]}")
    if not pieces:
        return []
    b.assistant(f"{rng.choice(_OPENERS)} {phrasing.join_words(pieces)}.")
    return [b.build()]
