"""Build one Sample turn by turn while recording the facts ``validate`` re-checks.

Every number a task quotes and every box it draws goes through this builder, which writes the text (with the
``rsvlm.grounding`` formatters) and a fact in ``Sample.meta["facts"]`` saying how it was computed:

- ``{"kind": "share", "turn", "quote", "where", "total_where", "window", "pixels", "total"}``
- ``{"kind": "area", "turn", "quote", "where", "pixels", "gsd"}``
- ``{"kind": "count", "turn", "quote", "count", "method": "components", "where", "min_pixels"}`` or
  ``{"method": "instances", "instance_pixels": [...]}`` for source instances (OSM, vectors)
- ``{"kind": "box" | "obb", "turn", "quote", "mask", "list": "masks" | "ref_masks"}``
- ``{"kind": "mask", "mask", "pixels", "where", "exact"}``: a ``[SEG]`` mask, equal to (exact) or inside ``where``

``where`` is a conjunction of ``{"raster": name, "values": [...]}`` over the label rasters the sample carries
(``meta["rasters"]``: "labels", "labels2", "change"); the driver stores those rasters with the sample.
Masks that back a ``<box>``/``<obb>`` with no ``[SEG]`` go to ``meta["_ref_masks"]`` (the driver moves them to
the ``ref_masks`` column) so ``masks`` stays exactly in ``[SEG]`` order.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from data_gen.tasks import regions
from data_gen.tile import Sample, Tile
from rsvlm.grounding import (
    format_box,
    format_obb,
    format_phrase,
    format_single_image_prompt,
    format_two_date_prompt,
)

Where = list[dict[str, Any]]


def change_mask(tile: Tile) -> np.ndarray | None:
    """The tile's change: the given mask, else where two label maps differ (both valid), else None."""
    if tile.change is not None:
        return np.asarray(tile.change, dtype=bool)
    if tile.labels is not None and tile.labels2 is not None:
        ignore = tile.taxonomy.ignore_values if tile.taxonomy is not None else ()
        valid = ~np.isin(tile.labels, ignore) & ~np.isin(tile.labels2, ignore)
        return (tile.labels != tile.labels2) & valid
    return None


def tile_rasters(tile: Tile) -> dict[str, np.ndarray]:
    """The label rasters of a tile by name, as stored with its samples."""
    out: dict[str, np.ndarray] = {}
    if tile.labels is not None:
        out["labels"] = np.asarray(tile.labels)
    if tile.labels2 is not None:
        out["labels2"] = np.asarray(tile.labels2)
    change = change_mask(tile)
    if change is not None and tile.image2 is not None:
        out["change"] = change.astype(np.uint8)
    return out


def eval_where(
    rasters: dict[str, np.ndarray], where: Where, shape: tuple[int, int], window=None
) -> np.ndarray:
    """The boolean mask a ``where`` conjunction selects (optionally cut to a window r0, r1, c0, c1)."""
    r0, r1, c0, c1 = window if window is not None else (0, shape[0], 0, shape[1])
    mask = np.ones((r1 - r0, c1 - c0), dtype=bool)
    for term in where:
        raster = rasters[term["raster"]][r0:r1, c0:c1]  # crop first: windows are a ninth of the tile
        values = term["values"]
        mask &= raster == values[0] if len(values) == 1 else np.isin(raster, values)
    return mask


class SampleBuilder:
    def __init__(self, tile: Tile, task: str, index: int) -> None:
        self.tile = tile
        self.task = task
        self.id = f"{tile.id}-{task}-{index}"
        self.turns: list[dict[str, str]] = []
        self.masks: list[np.ndarray] = []
        self.ref_masks: list[np.ndarray] = []
        self.facts: list[dict[str, Any]] = []
        self.types: list[str] = []
        self._rasters: dict[str, np.ndarray] | None = None
        self._counts: dict[tuple, int] = {}

    # -------------------------------------------------------------------------------------------- turns
    def user(self, text: str, qtype: str) -> None:
        if not self.turns:
            if self.task == "change":
                dates = self.tile.dates or ("date 1", "date 2")
                text = format_two_date_prompt(text, dates)
            else:
                text = format_single_image_prompt(text)
        self.turns.append({"role": "user", "content": text})
        self.types.append(qtype)

    def assistant(self, text: str) -> None:
        self.turns.append({"role": "assistant", "content": " ".join(text.split())})

    @property
    def _turn(self) -> int:
        return len(self.turns)

    @property
    def rasters(self) -> dict[str, np.ndarray]:
        if self._rasters is None:
            self._rasters = tile_rasters(self.tile)
        return self._rasters

    def where_mask(self, where: Where) -> np.ndarray:
        return eval_where(self.rasters, where, (self.tile.height, self.tile.width))

    # -------------------------------------------------------------------------------------------- grounding
    def seg(self, phrase: str, mask: np.ndarray, where: Where | None = None, exact: bool = False) -> str:
        """``<p>phrase</p> [SEG]`` with its mask recorded (and, with ``where``, how to re-derive it)."""
        mask = np.asarray(mask, dtype=bool)
        self.facts.append(
            {
                "kind": "mask",
                "mask": len(self.masks),
                "pixels": int(mask.sum()),
                "where": where,
                "exact": exact,
            }
        )
        self.masks.append(mask)
        return format_phrase(phrase)

    def _shape_fact(self, kind: str, quote: str, mask: np.ndarray, seg_index: int | None) -> None:
        if seg_index is None:
            self.ref_masks.append(mask)
            ref = {"mask": len(self.ref_masks) - 1, "list": "ref_masks"}
        else:
            ref = {"mask": seg_index, "list": "masks"}
        self.facts.append({"kind": kind, "turn": self._turn, "quote": quote, **ref})

    def box(self, mask: np.ndarray, seg_index: int | None = None) -> str:
        """``<box>`` of the mask's tight box; ``seg_index`` names the ``[SEG]`` mask it belongs to, if any."""
        quote = format_box(regions.grid_box(mask))
        self._shape_fact("box", quote, np.asarray(mask, dtype=bool), seg_index)
        return quote

    def obb(self, mask: np.ndarray, seg_index: int | None = None) -> str:
        quote = format_obb(regions.grid_obb(mask))
        self._shape_fact("obb", quote, np.asarray(mask, dtype=bool), seg_index)
        return quote

    # -------------------------------------------------------------------------------------------- numbers
    def pixel_count(self, where: Where, window=None) -> int:
        """Pixels selected by ``where`` (in ``window``), memoised: captions reuse the same totals many times."""
        key = (json.dumps(where), tuple(window) if window is not None else None)
        if key not in self._counts:
            shape = (self.tile.height, self.tile.width)
            self._counts[key] = int(eval_where(self.rasters, where, shape, window).sum())
        return self._counts[key]

    def share(self, where: Where, total_where: Where, window=None) -> str:
        pixels = self.pixel_count(where, window)
        total = self.pixel_count(total_where, window)
        quote = regions.share_quote(pixels, total)
        self.facts.append(
            {
                "kind": "share",
                "turn": self._turn,
                "quote": quote,
                "where": where,
                "total_where": total_where,
                "window": list(window) if window is not None else None,
                "pixels": pixels,
                "total": total,
            }
        )
        return quote

    def area(self, where: Where) -> str:
        pixels = self.pixel_count(where)
        quote = regions.area_quote(pixels, self.tile.gsd)
        self.facts.append(
            {
                "kind": "area",
                "turn": self._turn,
                "quote": quote,
                "where": where,
                "pixels": pixels,
                "gsd": self.tile.gsd,
            }
        )
        return quote

    def count_components(self, where: Where, min_pixels: int) -> tuple[int, str]:
        n = regions.count_components(self.where_mask(where), min_pixels)
        quote = regions.count_quote(n)
        self.facts.append(
            {
                "kind": "count",
                "turn": self._turn,
                "quote": quote,
                "count": n,
                "method": "components",
                "connectivity": 8,
                "where": where,
                "min_pixels": min_pixels,
            }
        )
        return n, quote

    def count_instances(self, pixel_counts: list[int]) -> tuple[int, str]:
        n = len(pixel_counts)
        quote = regions.count_quote(n)
        self.facts.append(
            {
                "kind": "count",
                "turn": self._turn,
                "quote": quote,
                "count": n,
                "method": "instances",
                "instance_pixels": [int(p) for p in pixel_counts],
            }
        )
        return n, quote

    # -------------------------------------------------------------------------------------------- result
    def build(self, **meta: Any) -> Sample:
        out_meta: dict[str, Any] = {
            "types": self.types,
            "facts": self.facts,
            "rasters": sorted(self.rasters) if self._needs_rasters() else [],
            "tile_id": self.tile.id,
            "block": self.tile.block,
            **meta,
        }
        if self.ref_masks:
            out_meta["_ref_masks"] = self.ref_masks
        return Sample(id=self.id, task=self.task, conversations=self.turns, masks=self.masks, meta=out_meta)

    def _needs_rasters(self) -> bool:
        """Does validate re-read a raster for any fact (areas, counts, relations, comparisons, class lists)?"""
        keys = ("where", "total_where", "raster", "a", "b", "more", "less")
        return any(f.get(key) for f in self.facts for key in keys)


def cls_where(value: int, raster: str = "labels") -> Where:
    return [{"raster": raster, "values": [int(value)]}]


def valid_where(values: list[int], raster: str = "labels") -> Where:
    return [{"raster": raster, "values": [int(v) for v in values]}]
