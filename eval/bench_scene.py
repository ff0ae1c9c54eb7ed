"""Whole-scene questions on large generated GeoTIFFs: tiles/s, wall time and peak RSS per scene size.

    python -m eval.bench_scene                      # 5,000² and 10,000² scenes, the embedded default
    python -m eval.bench_scene --sizes 2000 --max-tiles 4

Each size runs in its own process so its peak RSS is its own. The scene is written by windows (tiled, deflate,
EPSG:32633, 0.5 m) from a synthetic field/road/building pattern, so writing it never holds it in memory either.
Target (issue 3): peak RSS does not grow with scene size, and stays <= 2.5 GB.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def write_scene(path: Path, size: int, block: int = 1024) -> None:
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    profile = {
        "driver": "GTiff", "width": size, "height": size, "count": 3, "dtype": "uint8", "crs": "EPSG:32633",
        "transform": from_origin(500_000, 5_000_000, 0.5, 0.5), "tiled": True, "blockxsize": 256,
        "blockysize": 256, "compress": "deflate",
    }  # fmt: skip
    rng = np.random.default_rng(0)
    with rasterio.open(path, "w", **profile) as dst:
        for row in range(0, size, block):
            for col in range(0, size, block):
                h, w = min(block, size - row), min(block, size - col)
                yy, xx = np.mgrid[row : row + h, col : col + w]
                fields = ((xx // 300 + yy // 300) % 3).astype(np.uint8)  # a patchwork of fields
                tile = np.stack([60 + 40 * fields, 90 + 30 * fields, 50 + 10 * fields]).astype(np.uint8)
                road = (np.abs(yy % 1500 - 750) < 6) | (np.abs(xx % 2000 - 1000) < 6)
                tile[:, road] = 170
                roofs = ((xx % 97) < 12) & ((yy % 89) < 10) & (fields == 1)
                tile[:, roofs] = np.array([190, 80, 70], np.uint8)[:, None]
                tile = np.clip(tile.astype(np.int16) + rng.integers(-8, 8, tile.shape), 0, 255).astype(
                    np.uint8
                )
                dst.write(tile, window=Window(col, row, w, h))


def run_one(size: int, max_tiles: int, question: str) -> dict:
    from rsvlm.assistant import Assistant

    with tempfile.TemporaryDirectory() as tmp:
        scene = Path(tmp) / f"scene_{size}.tif"
        start = time.perf_counter()
        write_scene(scene, size)
        write_s = time.perf_counter() - start
        assistant = Assistant.from_pretrained("default", max_tiles=max_tiles)
        session = assistant.session()
        start = time.perf_counter()
        answer = session.ask(question, images=[scene], max_new_tokens=24)
        wall = time.perf_counter() - start
    return {
        "size": size,
        "write_s": write_s,
        "wall_s": wall,
        "tiles": answer.tiles,
        "tiles_per_s": answer.tiles / wall,
        "regions": len(answer.regions),
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[5000, 10000])
    parser.add_argument("--max-tiles", type=int, default=16)
    parser.add_argument("--question", default="Where are the buildings?")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: run one size in this process
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(run_one(args.one, args.max_tiles, args.question)))
        return 0
    print(f"{'scene':>12} {'write s':>8} {'answer s':>9} {'tiles':>6} {'tiles/s':>8} {'peak RSS GB':>12}")
    for size in args.sizes:
        cmd = [sys.executable, "-m", "eval.bench_scene", "--one", str(size), "--max-tiles", str(args.max_tiles),
               "--question", args.question]  # fmt: skip
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        r = json.loads(out)
        print(
            f"{size:>6}×{size:<5} {r['write_s']:>8.1f} {r['wall_s']:>9.1f} {r['tiles']:>6} "
            f"{r['tiles_per_s']:>8.2f} {r['peak_rss_gb']:>12.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
