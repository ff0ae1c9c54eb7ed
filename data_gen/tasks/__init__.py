"""Task families: pure functions ``(tile, rng) -> list[Sample]``, one module each.

``run_tasks(tile, tasks, seed)`` runs the chosen families with a ``random.Random`` derived from the seed, the tile
id and the family name, so a tile's samples do not depend on which other tiles or families ran, or in which order.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable

from data_gen.tasks.captions import caption_samples
from data_gen.tasks.change import change_samples
from data_gen.tasks.gcg import gcg_samples
from data_gen.tasks.grounding import grounding_samples
from data_gen.tasks.reasoning import reasoning_samples
from data_gen.tasks.vqa import vqa_samples
from data_gen.tile import Sample, Tile

TaskFn = Callable[[Tile, random.Random], list[Sample]]

FAMILIES: dict[str, TaskFn] = {
    "caption": caption_samples,
    "vqa": vqa_samples,
    "grounding": grounding_samples,
    "reasoning": reasoning_samples,
    "gcg": gcg_samples,
    "change": change_samples,
}


def task_rng(seed: int, tile_id: str, family: str) -> random.Random:
    """A generator seeded from (seed, tile, family); str seeds hash with SHA-512, stable across processes."""
    return random.Random(f"{seed}:{tile_id}:{family}")


def run_tasks(tile: Tile, tasks: Iterable[str], seed: int = 0) -> list[Sample]:
    """All samples the chosen families make from one tile, in family order."""
    out: list[Sample] = []
    for family in tasks:
        if family not in FAMILIES:
            raise ValueError(f"unknown task family {family!r}; known: {', '.join(FAMILIES)}")
        out.extend(FAMILIES[family](tile, task_rng(seed, tile.id, family)))
    return out


__all__ = ["FAMILIES", "run_tasks", "task_rng"]
