"""Benchmark: samples/s per core for each task family on 512 px tiles, and the scaling from 1 to 2 processes.

    python -m data_gen.bench                 # 24 tiles per family
    python -m data_gen.bench --tiles 48 --size 512

Tiles are code-written LoveDA-like label maps (smooth land-cover patches, a river, roads, ~30 buildings, and a
second date with edits), so the figures do not depend on any data on disk. "all + encode" runs every family and
PNG-encodes the parquet rows as the driver does. Building the test tiles is not timed.
"""

from __future__ import annotations

import argparse
import multiprocessing
import time

import numpy as np
from scipy import ndimage

from data_gen.driver import sample_rows
from data_gen.tasks import FAMILIES, run_tasks
from data_gen.tile import ClassInfo, Taxonomy, Tile

TAXONOMY = Taxonomy(
    "loveda-like",
    {
        1: ClassInfo(1, "background"),
        2: ClassInfo(2, "building", thing=True),
        3: ClassInfo(3, "road"),
        4: ClassInfo(4, "water"),
        5: ClassInfo(5, "barren"),
        6: ClassInfo(6, "forest"),
        7: ClassInfo(7, "agriculture"),
    },
    ignore_values=(0,),
)


def bench_tile(i: int, size: int = 512) -> Tile:
    rng = np.random.default_rng(i)
    noise = ndimage.zoom(rng.random((6, 6)), size / 6, order=1)[:size, :size]
    lab = np.choose(np.digitize(noise, [0.3, 0.45, 0.7]), [7, 1, 6, 5]).astype(np.uint8)
    x = np.arange(size)
    river = np.abs(x[None, :] - (size / 2 + size / 5 * np.sin(x[:, None] / size * 6 + i))) < size / 40
    lab[river] = 4
    for _ in range(2):
        r = rng.integers(0, size - 8)
        lab[r : r + 6, :] = 3
    for _ in range(30):
        r, c = rng.integers(0, size - 20, 2)
        h, w = rng.integers(6, 20, 2)
        lab[r : r + h, c : c + w] = 2
    lab2 = lab.copy()
    r, c = rng.integers(0, size - 80, 2)
    lab2[r : r + 60, c : c + 80] = 2
    palette = rng.integers(0, 255, (8, 3))
    return Tile(
        id=f"bench-{i}",
        image=palette[lab].astype(np.uint8),
        image2=palette[lab2].astype(np.uint8),
        labels=lab,
        labels2=lab2,
        taxonomy=TAXONOMY,
        gsd=0.3,
        crs="EPSG:32633",
        transform=(0.3, 0.0, 0.0, 0.0, -0.3, 0.0),
        dates=("2018", "2022"),
        block=str(i),
    )


def _work(args: tuple[list[int], tuple[str, ...], int, bool]) -> tuple[int, float]:
    """Generate (and optionally encode) samples for some tiles; (sample count, seconds spent generating)."""
    indices, families, size, encode = args
    tiles = [bench_tile(i, size) for i in indices]  # building test tiles is not part of the measurement
    n = 0
    t0 = time.perf_counter()
    for tile in tiles:
        samples = run_tasks(tile, families, seed=0)
        if encode:
            sample_rows(tile, samples, "train")
        n += len(samples)
    return n, time.perf_counter() - t0


def _rate(families: tuple[str, ...], tiles: int, size: int, encode: bool, procs: int) -> tuple[float, int]:
    """(samples/s over all processes, samples): each worker's samples over the slowest worker's time."""
    chunks = [list(range(p, tiles, procs)) for p in range(procs)]
    if procs == 1:
        _work(([0], families, size, False))  # warm imports and caches
        n, seconds = _work((chunks[0], families, size, encode))
        return n / seconds, n
    with multiprocessing.get_context().Pool(procs) as pool:
        pool.map(_work, [([0], families, size, False)] * procs)  # warm the workers
        results = pool.map(_work, [(c, families, size, encode) for c in chunks])
    n = sum(r[0] for r in results)
    return n / max(r[1] for r in results), n


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiles", type=int, default=24)
    p.add_argument("--size", type=int, default=512)
    args = p.parse_args(argv)
    print(f"{args.tiles} tiles of {args.size} px, {multiprocessing.cpu_count()} CPUs visible")
    print(f"{'family':<16}{'samples':>9}{'samples/s (1 core)':>21}")
    for family in FAMILIES:
        rate, n = _rate((family,), args.tiles, args.size, False, 1)
        print(f"{family:<16}{n:>9}{rate:>21.1f}")
    all_families = tuple(FAMILIES)
    r1, n = _rate(all_families, args.tiles, args.size, True, 1)
    print(f"{'all + encode':<16}{n:>9}{r1:>21.1f}")
    r2, _ = _rate(all_families, args.tiles, args.size, True, 2)
    print(f"scaling 1 -> 2 processes (all + encode): {r1:.1f} -> {r2:.1f} samples/s (x{r2 / r1:.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
