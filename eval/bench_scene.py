"""Whole-scene questions on large GeoTIFFs: wall time, windows read, peak RSS, and the ratio to a warm 256 px turn.

    python -m eval.bench_scene                                   # 1,000² ... 10,000², synthetic and real
    python -m eval.bench_scene --sizes 1000 2500 --sources synthetic koeln --time-budget 0

Each scene runs in its own process, so its peak RSS is its own, and that process also times one warm 256 px turn
(the same forced answer on ``rsvlm/samples/naip_2020_256.tif``) for the ratio. Scenes are written by windows
(tiled, deflate, internal overviews): ``synthetic`` is a field/road/roof pattern; ``koeln`` (OpenEarthMap Köln,
0.5 m RGB) and ``naip`` (NAIP 2020, 5 m RGBN) are the real GeoTIFFs of ``../shared/data`` repeated to the size.

The overview answer is forced to ``The <p>buildings</p> [SEG].`` through the real generation loop
(``rsvlm.testing.forcing_logits``): an untrained default says anything, and the cost being measured is that of
one [SEG] decoded over the scene. Targets (issue 8): 1,000² <= 15 s warm, 10,000² <= 120 s, peak RSS <= 2.5 GB,
time no faster-growing than the windows read.
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

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "rsvlm" / "samples" / "naip_2020_256.tif"
REAL = {
    "koeln": ROOT.parent / "shared" / "data" / "caption_vqa" / "oem_koeln_50.tif",
    "naip": ROOT.parent / "shared" / "data" / "change" / "m_4709963_se_14_1_20200831.tif",
}
ANSWER = "The <p>buildings</p> [SEG]."


def _synthetic_block(row: int, col: int, h: int, w: int, rng) -> np.ndarray:
    yy, xx = np.mgrid[row : row + h, col : col + w]
    fields = ((xx // 300 + yy // 300) % 3).astype(np.uint8)  # a patchwork of fields
    tile = np.stack([60 + 40 * fields, 90 + 30 * fields, 50 + 10 * fields]).astype(np.uint8)
    road = (np.abs(yy % 1500 - 750) < 6) | (np.abs(xx % 2000 - 1000) < 6)
    tile[:, road] = 170
    roofs = ((xx % 97) < 12) & ((yy % 89) < 10) & (fields == 1)
    tile[:, roofs] = np.array([190, 80, 70], np.uint8)[:, None]
    noise = rng.integers(-8, 8, tile.shape)
    return np.clip(tile.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def write_scene(path: Path, size: int, source: str, block: int = 1024) -> None:
    """A ``size``² 3-band GeoTIFF of ``source``, written block by block (never held whole)."""
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    crs, res, real = "EPSG:32633", 0.5, None
    if source != "synthetic":
        with rasterio.open(REAL[source]) as src:
            real = src.read([1, 2, 3])  # [3, h, w]
            crs, res = src.crs, src.res[0]
    profile = {
        "driver": "GTiff", "width": size, "height": size, "count": 3, "dtype": "uint8", "crs": crs,
        "transform": from_origin(500_000, 5_000_000, res, res), "tiled": True, "blockxsize": 256,
        "blockysize": 256, "compress": "deflate",
    }  # fmt: skip
    rng = np.random.default_rng(0)
    with rasterio.open(path, "w", **profile) as dst:
        for row in range(0, size, block):
            for col in range(0, size, block):
                h, w = min(block, size - row), min(block, size - col)
                if real is None:
                    tile = _synthetic_block(row, col, h, w, rng)
                else:  # the real scene repeated
                    rows = np.arange(row, row + h) % real.shape[1]
                    cols = np.arange(col, col + w) % real.shape[2]
                    tile = real[:, rows[:, None], cols[None, :]]
                dst.write(tile, window=Window(col, row, w, h))
        factors = [f for f in (2, 4, 8, 16, 32, 64) if size // f >= 256]
        dst.build_overviews(factors, Resampling.average)


def forced_answer(assistant):
    """A function that makes the next generation say ``ANSWER`` (then end the turn) through the real loop."""
    from rsvlm.testing import forcing_logits

    model, tokenizer = assistant.model, assistant.processor.tokenizer
    before, after = ANSWER.split(" [SEG]")
    script = [
        *tokenizer(before, add_special_tokens=False)["input_ids"],
        model.config.seg_token_id,
        *tokenizer(after, add_special_tokens=False)["input_ids"],
        tokenizer.convert_tokens_to_ids("<|im_end|>"),
    ]
    original = model.compute_logits

    def force() -> None:
        model.compute_logits = original
        model.compute_logits = forcing_logits(model, script)

    def release() -> None:
        model.compute_logits = original

    return force, release


def window_costs(assistant, question: str, new_tokens: int = 8) -> dict:
    """Seconds per 256 px window: the tower, the mask decoder on one prompt, and a capped generation (how boxes
    would come from per-window generation instead of from the stitched masks' components)."""
    from rsvlm import geo
    from rsvlm.grounding import format_single_image_prompt

    model, processor = assistant.model, assistant.processor
    pixels, _ = processor.preprocess_image(geo.read_image(SAMPLE).rgb())
    inputs = processor.prompt_for_generation(
        [{"role": "user", "content": format_single_image_prompt(question)}]
    )
    with assistant.inference():
        start = time.perf_counter()
        features = model.encode_images(pixels[None])
        tower_s = time.perf_counter() - start
        start = time.perf_counter()
        model.decode_masks(None, [0], features, ["buildings"])
        decoder_s = time.perf_counter() - start
        start = time.perf_counter()
        model.generate(**inputs, image_features=features, max_new_tokens=new_tokens)
        generation_s = time.perf_counter() - start
    return {"tower_s": tower_s, "decoder_s": decoder_s, f"generate_{new_tokens}_tokens_s": generation_s}


def run_one(size: int, source: str, args) -> dict:
    from rsvlm.assistant import Assistant

    with tempfile.TemporaryDirectory() as tmp:
        scene = Path(tmp) / f"scene_{source}_{size}.tif"
        start = time.perf_counter()
        write_scene(scene, size, source)
        write_s = time.perf_counter() - start
        assistant = Assistant.from_pretrained(
            "default",
            max_tiles=args.max_windows,
            time_budget_s=args.time_budget or None,
            coarse_to_fine={"auto": None, "on": True, "off": False}[args.coarse_to_fine],
        )
        force, release = forced_answer(assistant)
        for _ in range(2):  # the first turn warms the kernels up; the second is the warm 256 px turn
            force()
            start = time.perf_counter()
            assistant.session().ask(args.question, images=[SAMPLE], max_new_tokens=24)
            turn_s = time.perf_counter() - start
        force()
        session = assistant.session()
        start = time.perf_counter()
        answer = session.ask(args.question, images=[scene], max_new_tokens=24)
        wall = time.perf_counter() - start
        release()
        costs = window_costs(assistant, args.question)
    not_read = next((w for w in answer.warnings if "not read at full resolution" in w), "")
    return {
        "size": size,
        "source": source,
        "write_s": write_s,
        "wall_s": wall,
        "rest_s": wall - answer.timings.get("windows_s", 0.0),  # overview answer, outlines, facts
        "windows_read": answer.tiles,
        "windows": answer.windows,
        "turn_256_s": turn_s,
        "ratio": wall / turn_s,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "not_read": not_read,
        **costs,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 2500, 5000, 10000])
    parser.add_argument("--sources", nargs="+", default=["synthetic", "koeln", "naip"])
    parser.add_argument("--max-windows", type=int, default=None)
    parser.add_argument("--time-budget", type=float, default=60.0, help="seconds for the windows; 0: none")
    parser.add_argument("--coarse-to-fine", choices=["auto", "on", "off"], default="auto")
    parser.add_argument("--question", default="Outline the buildings.")
    parser.add_argument("--one", nargs=2, help=argparse.SUPPRESS)  # internal: SIZE SOURCE in this process
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(run_one(int(args.one[0]), args.one[1], args)))
        return 0
    print(
        f"{'scene':>13} {'source':>9} {'wall s':>7} {'rest s':>10} {'windows read':>14} {'peak RSS GB':>11} "
        f"{'256px turn s':>12} {'ratio':>6}"
    )
    passthrough = ["--time-budget", str(args.time_budget), "--coarse-to-fine", args.coarse_to_fine,
                   "--question", args.question]  # fmt: skip
    if args.max_windows is not None:
        passthrough += ["--max-windows", str(args.max_windows)]
    for size in args.sizes:
        for source in args.sources:
            cmd = [sys.executable, "-m", "eval.bench_scene", "--one", str(size), source, *passthrough]
            out = (
                subprocess.run(cmd, capture_output=True, text=True, check=True)
                .stdout.strip()
                .splitlines()[-1]
            )
            r = json.loads(out)
            read = f"{r['windows_read']:,}/{r['windows']:,}"
            print(
                f"{size:>6}×{size:<6} {source:>9} {r['wall_s']:>7.1f} {r['rest_s']:>10.1f} {read:>14} "
                f"{r['peak_rss_gb']:>11.2f} {r['turn_256_s']:>12.2f} {r['ratio']:>6.1f}",
                flush=True,
            )
            print(
                f"{'':>14} per window: tower {r['tower_s']:.2f} s, mask decoder {r['decoder_s'] * 1000:.0f} ms, "
                f"capped generation (8 tokens) {r['generate_8_tokens_s']:.2f} s",
                flush=True,
            )
            if r["not_read"]:
                print(f"{'':>14} {r['not_read']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
