"""Windowed decoding of a large scene against the labels: guided by the overview vs each window on its own.

    python -m eval.bench_windows                          # 3 held-out test tiles per source, at 2x
    python -m eval.bench_windows --per-source 10 --scale 2 --report out/windows.json

Each spatially held-out test tile of the corpus (``python -m train.corpus``) is upsampled ``--scale`` times into a
scene larger than the model input, and every class target of the tile is decoded on it from its phrase, five ways:

- ``guided``: 256 px windows decoded as the assistant decodes a large scene (``rsvlm.scene``, guided by the
  scene's overview), stitched;
- ``unguided``: the same windows, each decoder pass attending over its own window only;
- ``overview``: the model on the tile itself at its input size (what the windows should at least match);
- ``one pass``: the whole scene through the tower and decoder at once (a model of the scene's size), guided.

It prints gIoU against the labels per concept, and the IoU of the stitched windows with the one-pass mask (issue
8's seam check, target >= 0.95). Upsampling adds no detail, so ``overview`` is the ceiling a window can reach here.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
WAYS = ("guided", "unguided", "overview", "one pass")


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return 1.0 if union == 0 else float((a & b).sum() / union)


def pick_tiles(corpus: Path, recipe_path: Path, per_source: int, seed: int):
    import yaml

    from train.heads_data import collect_tiles

    recipe = yaml.safe_load(open(recipe_path))
    by_source = defaultdict(list)
    for tile in collect_tiles(corpus, recipe, {"test"}):
        by_source[tile.source].append(tile)
    rng = random.Random(seed)
    chosen = []
    for _, tiles in sorted(by_source.items()):
        rng.shuffle(tiles)
        chosen.extend(tiles[:per_source])
    return chosen


def decode_ways(model, whole, pixels: torch.Tensor, phrase: str, overlap: float) -> dict[str, np.ndarray]:
    """The masks of ``phrase`` on the scene ``pixels`` ``[3, H, W]`` by each of ``WAYS``."""
    from rsvlm import scene
    from rsvlm.tiling import plan_windows

    _, height, width = pixels.shape
    processor = model.get_processor()
    overview, meta = processor.preprocess_image(pixels)
    features = model.encode_images(overview[None])
    prompts = scene.ScenePrompts([phrase], scene.mask_prompts(model, None, [phrase]), [True])
    guide = scene.scene_guide(model, features.contexts[0], features.pixels[0], prompts)

    windows = plan_windows(width, height, model.config.image_size, overlap)
    read, read_whole = (
        scene.tensor_reader(pixels, processor),
        scene.tensor_reader(pixels, whole.get_processor()),
    )
    shape = (height, width)
    masks = {
        "guided": scene.decode_scene(model, read, windows, prompts, shape, guide=guide),
        "unguided": scene.decode_scene(model, read, windows, prompts, shape),
        "one pass": scene.decode_scene(
            whole, read_whole, [(0, 0, width, height)], prompts, shape, guide=guide
        ),
    }
    masks = {way: decoded.masks[0].to_dense() for way, decoded in masks.items()}
    logits = model.mask_decoder(features.contexts, [0], prompts.vectors)[0]
    masks["overview"] = meta.mask_to_source(logits > 0)
    return masks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="default")
    parser.add_argument("--corpus", default=str(ROOT / "out" / "corpus"))
    parser.add_argument("--recipe", default=str(ROOT / "train" / "corpora" / "default.yaml"))
    parser.add_argument("--per-source", type=int, default=3)
    parser.add_argument("--scale", type=int, default=2, help="upsampling of each tile into a scene")
    parser.add_argument(
        "--overlap", type=float, default=0.25, help="window overlap (the assistant's default)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--report", help="also write the figures as JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from rsvlm.assistant import DEFAULT_CHECKPOINT
    from rsvlm.modeling_rsvlm import RSVLMForConditionalGeneration

    path = DEFAULT_CHECKPOINT if args.model == "default" else Path(args.model)
    model = RSVLMForConditionalGeneration.from_pretrained(path).eval()
    size = model.config.image_size
    tiles = [
        t for t in pick_tiles(Path(args.corpus), Path(args.recipe), args.per_source, args.seed)
        if max(t.image.shape[:2]) * args.scale > size
    ]  # fmt: skip
    wholes: dict[tuple[int, int], RSVLMForConditionalGeneration] = {}
    scores: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    start = time.perf_counter()
    for tile in tqdm(tiles, desc="tiles", unit="tile"):
        image = torch.as_tensor(np.array(tile.image)).permute(2, 0, 1).float()[None] / 255
        pixels = F.interpolate(image, scale_factor=args.scale, mode="bilinear")[0]  # [3, H, W]
        side = max(pixels.shape[-2:])
        if side not in wholes:  # one model per scene side: reads the whole scene in one pass
            wholes[side] = RSVLMForConditionalGeneration.from_pretrained(path, image_size=side).eval()
        for target in tile.targets:
            up = lambda m: np.kron(m, np.ones((args.scale, args.scale), bool))  # noqa: E731
            truth = up(target.mask)
            keep = np.ones_like(truth) if target.ignore is None else ~up(target.ignore)
            with torch.no_grad():
                masks = decode_ways(model, wholes[side], pixels, target.phrases[0], args.overlap)
            for way in WAYS:
                scores[target.concept][way].append(iou(masks[way] & keep, truth & keep))
            for way in ("guided", "unguided"):
                scores[target.concept][f"{way} vs one pass"].append(iou(masks[way], masks["one pass"]))
    report = {
        concept: {way: float(np.mean(v)) for way, v in ways.items()} | {"targets": len(ways["guided"])}
        for concept, ways in sorted(scores.items())
    }
    columns = [*WAYS, "guided vs one pass", "unguided vs one pass"]
    print(f"{len(tiles)} tiles at {args.scale}x, {time.perf_counter() - start:.0f} s")
    print(f"{'concept':>9} {'targets':>7} " + " ".join(f"{c:>20}" for c in columns))
    pooled = {c: [x for ways in scores.values() for x in ways[c]] for c in columns}
    pooled_row = {c: float(np.mean(v)) for c, v in pooled.items()} | {"targets": len(pooled["guided"])}
    rows = [*report.items(), ("all", pooled_row)]
    for concept, row in rows:
        print(f"{concept:>9} {row['targets']:>7} " + " ".join(f"{row[c]:>20.3f}" for c in columns))
    if args.report:
        from rsvlm.atomic import write_text_atomic

        write_text_atomic(Path(args.report), json.dumps(dict(rows), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
