"""Timings of the geo I/O layer on a generated scene: header, windows, overviews, composites, polygons, alignment.

    python -m eval.bench_geo_read                 # 4096² 4-band uint16 scene in a temp folder
    python -m eval.bench_geo_read --size 8192 --json bench_geo.json

The scene is written by code (tiled, deflate, with and without internal overviews), so the numbers are
reproducible on any machine; nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine

from rsvlm import geo

logger = logging.getLogger("bench_geo_read")


def write_scene(path: Path, size: int, overviews: bool) -> Path:
    """A 4-band uint16 scene: smooth fields plus noise (compresses like imagery, not like random bytes)."""
    transform = Affine(5.0, 0.0, 500_000.0, 0.0, -5.0, 4_100_000.0)
    profile = dict(
        driver="GTiff",
        width=size,
        height=size,
        count=4,
        dtype="uint16",
        crs="EPSG:32618",
        transform=transform,
        tiled=True,
        blockxsize=512,
        blockysize=512,
        compress="deflate",
        nodata=0,
    )
    rng = np.random.default_rng(0)
    with rasterio.open(path, "w", **profile) as dst:
        step = 1024
        for row in range(0, size, step):
            rows = min(step, size - row)
            yy, xx = np.mgrid[row : row + rows, 0:size].astype(np.float32)
            base = 1500 + 800 * np.sin(xx / 180.0) * np.cos(yy / 230.0)
            block = np.stack([base + 60 * b + rng.normal(0, 40, base.shape) for b in range(4)])
            dst.write(block.clip(1, 65535).astype(np.uint16), window=((row, row + rows), (0, size)))
        if overviews:
            dst.build_overviews([2, 4, 8, 16])
    return path


def timed(label: str, fn: Callable[[], Any], repeat: int = 3) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    logger.info("%-44s %8.1f ms", label, best * 1000)
    return best, result


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096, help="scene side in pixels")
    parser.add_argument("--json", type=Path, help="write the timings (seconds) here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        plain = write_scene(Path(tmp) / "plain.tif", args.size, overviews=False)
        pyramid = write_scene(Path(tmp) / "pyramid.tif", args.size, overviews=True)
        logger.info("wrote two %d² scenes in %.1f s", args.size, time.perf_counter() - start)

        results["inspect"], _ = timed("inspect_raster", lambda: geo.inspect_raster(plain))
        results["window_512"], tile = timed(
            "read_image window 512²", lambda: geo.read_image(plain, window=(1000, 1000, 512, 512))
        )
        results["overview_1024_no_pyramid"], _ = timed(
            "read_image overview 1024 (no overviews)", lambda: geo.read_image(plain, overview_size=1024), 1
        )
        results["overview_1024_pyramid"], overview = timed(
            "read_image overview 1024 (internal overviews)",
            lambda: geo.read_image(pyramid, overview_size=1024),
        )
        results["full_2048_window"], big = timed(
            "read_image window 2048²", lambda: geo.read_image(plain, window=(0, 0, 2048, 2048)), 1
        )
        results["rgb_2048"], _ = timed("GeoImage.rgb() 2048²", big.rgb)
        results["ndvi_2048"], _ = timed("GeoImage.composite('ndvi') 2048²", lambda: big.composite("ndvi"))
        mask = tile.data[3] > np.median(tile.data[3])
        results["mask_to_polygons_512"], polygons = timed(
            "mask_to_polygons 512² (half the pixels)",
            lambda: geo.mask_to_polygons(mask, tile.transform, tile.crs),
        )
        results["mask_area_512"], _ = timed(
            "mask_area_m2 512²", lambda: geo.mask_area_m2(mask, tile.transform, tile.crs)
        )
        shifted = Affine(7.0, 0.0, 500_003.3, 0.0, -7.0, 4_099_998.1)
        first = geo.GeoImage(
            tile.data[:, :256, :256].copy(), tile.valid[:256, :256].copy(), tile.band_names, tile.crs, shifted
        )
        results["align_window_256"], _ = timed(
            "align_pair 256² (warp from file)", lambda: geo.align_pair(first, plain)
        )
        logger.info("%d polygons from the 512² mask; overview shape %s", len(polygons), overview.data.shape)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
