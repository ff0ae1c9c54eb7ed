"""Weighted mixing of several instruction sets: ``rsvlm train --data a/ b/ --mix 0.7,0.3``.

    plan = plan_epoch(data, global_batch=8, seed=0, epoch=0, mix=[0.7, 0.3])   # [[row, ...], ...]
    counts = samples_per_source(data, 8, seed=0, micro_batches=40, mix=[0.7, 0.3])

An epoch keeps its unmixed length (all usable rows // global batch, so schedules and epochs mean the same with and
without ``--mix``); its slots are shared out by the weights (largest remainder, so 0.7 / 0.3 of 100 slots is
exactly 70 / 30) and shuffled. A source fills its slots from successive permutations of its rows, so a small
source with a large weight repeats (every row before any row twice) and a large one with a small weight is
subsampled. Everything is drawn from ``(seed, epoch)``, so a resumed run replays the same plan and the counts of
what was consumed are recomputed from the step, never stored state that could drift.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from train.data import DataError, SFTData, epoch_batches


class MixError(ValueError):
    """Mixing weights that do not fit the sources: the message says how many were given and expected."""


def parse_mix(value: str | Sequence[float] | None, num_sources: int) -> list[float] | None:
    """``"0.7,0.3"`` or ``[0.7, 0.3]`` -> weights, one per source, each >= 0, not all 0 (``None`` stays ``None``)."""
    if value is None:
        return None
    parts = [p for p in value.split(",") if p.strip()] if isinstance(value, str) else list(value)
    try:
        weights = [float(p) for p in parts]
    except (TypeError, ValueError):
        raise MixError(f"mix must be numbers separated by commas (got {value!r})") from None
    if len(weights) != num_sources:
        raise MixError(
            f"mix has {len(weights)} weight(s) for {num_sources} --data source(s); give one per source"
        )
    if any(not math.isfinite(w) or w < 0 for w in weights) or sum(weights) <= 0:
        raise MixError(f"mix weights must be >= 0 and not all 0 (got {weights})")
    return weights


def slot_counts(weights: Sequence[float], slots: int) -> list[int]:
    """``slots`` shared out in proportion to ``weights`` (largest remainder; ties to the earlier source)."""
    total = sum(weights)
    exact = [w / total * slots for w in weights]
    counts = [math.floor(x) for x in exact]
    by_remainder = sorted(range(len(weights)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in by_remainder[: slots - sum(counts)]:
        counts[i] += 1
    return counts


def mixed_epoch_batches(
    sources: np.ndarray, weights: Sequence[float], global_batch: int, seed: int, epoch: int
) -> list[list[int]]:
    """Row indices of each global batch of one epoch; ``sources[row]`` is the source index of a row."""
    num_rows = len(sources)
    if num_rows < global_batch:
        raise DataError(f"{num_rows} usable rows, fewer than one global batch ({global_batch})")
    batches = num_rows // global_batch
    counts = slot_counts(weights, batches * global_batch)
    rng = np.random.default_rng([seed, epoch])
    slot_source = rng.permutation(np.repeat(np.arange(len(weights)), counts))
    order = np.empty(len(slot_source), dtype=np.int64)
    for index, count in enumerate(counts):
        if not count:
            continue
        rows = np.flatnonzero(sources == index)
        if not len(rows):
            raise DataError(f"source {index + 1} has weight {weights[index]} but no usable rows")
        source_rng = np.random.default_rng([seed, epoch, index + 1])
        laps = [source_rng.permutation(rows) for _ in range(-(-count // len(rows)))]
        order[slot_source == index] = np.concatenate(laps)[:count]
    return [order[k * global_batch : (k + 1) * global_batch].tolist() for k in range(batches)]


def plan_epoch(
    data: SFTData, global_batch: int, seed: int, epoch: int, mix: Sequence[float] | None
) -> list[list[int]]:
    """The epoch's global batches: ``epoch_batches`` unmixed, ``mixed_epoch_batches`` with weights."""
    if mix is None:
        return epoch_batches(len(data), global_batch, seed, epoch)
    return mixed_epoch_batches(data.sources, mix, global_batch, seed, epoch)


def samples_per_source(
    data: SFTData, global_batch: int, seed: int, micro_batches: int, mix: Sequence[float] | None
) -> list[int]:
    """Samples each source gave to the first ``micro_batches`` global micro-batches of a run."""
    counts = np.zeros(len(data.source_names), dtype=np.int64)
    epoch, left = 0, micro_batches
    while left > 0:
        plan = plan_epoch(data, global_batch, seed, epoch, mix)
        taken = plan[: min(left, len(plan))]
        if taken:
            counts += np.bincount(data.sources[np.concatenate(taken)], minlength=len(counts))
        left -= len(taken)
        epoch += 1
    return counts.tolist()
