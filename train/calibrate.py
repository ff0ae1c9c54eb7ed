"""Calibrate what a mask's size means for "is there any X?": the share of valid pixels above which X is there.

    python -m train.calibrate --model out/default-a2 --corpus out/corpus            # prints, and writes it into
                                                                                    # the checkpoint's config.json

The assistant answers presence questions from the decoder's mask of the subject (``rsvlm.presence``). A decoder
leaves a few stray pixels on tiles without the thing, so "any pixel" says yes too often; the threshold is chosen on
the **validation** split (never the test split the report scores): for every class target of every validation
tile, the predicted share of valid pixels, against the truth as data_gen's presence answers define it (yes: at
least ``min_component_pixels`` of the class; no: not one pixel). The share that maximises the balanced accuracy is
written as ``presence_min_share`` into the checkpoint's ``config.json``, and for each concept with at least
``--min-per-concept`` yes and as many no targets (``rsvlm.presence.CONCEPTS``: a decoder leaves more stray road
pixels than stray water pixels) its own share, as ``presence_min_share_by_concept``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import yaml

from rsvlm.atomic import write_text_atomic
from train.corpus import DEFAULT_RECIPE
from train.heads import build_model, cap_per_source, scored_predictions
from train.heads_data import collect_tiles, encode_items

CANDIDATES = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.08)


def predicted_shares(model, corpus: Path, recipe: dict, split: str, cap: int, seed: int):
    """``(predicted share, truth yes, concept)`` per class target of the split's tiles (targets between yes and no
    left out)."""
    from data_gen.tasks.regions import min_component_pixels

    tiles = cap_per_source(collect_tiles(corpus, recipe, {split}), cap, seed)
    items = encode_items(model, tiles, 1, seed)
    out = []
    for _, target, truth, pred in scored_predictions(model, items, tiles):
        positives = int(truth.sum())
        if truth.numel() == 0 or 0 < positives < min_component_pixels(*target.mask.shape):
            continue
        out.append((float(pred.float().mean()), positives > 0, target.concept))
    return out


def best_share(pairs: list[tuple]) -> tuple[float, dict[float, float]]:
    shares = np.array([p[0] for p in pairs])
    truth = np.array([p[1] for p in pairs])
    scores = {}
    for c in CANDIDATES:
        said = shares > c
        tpr = said[truth].mean() if truth.any() else 0.0
        tnr = (~said[~truth]).mean() if (~truth).any() else 0.0
        scores[c] = float((tpr + tnr) / 2)
    return max(scores, key=scores.get), scores


def shares_by_concept(pairs: list[tuple], min_each: int) -> dict[str, tuple[float, dict[float, float]]]:
    """``best_share`` per concept that has at least ``min_each`` yes and ``min_each`` no targets."""
    out = {}
    for concept in sorted({p[2] for p in pairs}):
        group = [p for p in pairs if p[2] == concept]
        yes = sum(p[1] for p in group)
        if yes >= min_each and len(group) - yes >= min_each:
            out[concept] = best_share(group)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.calibrate", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="an rsvlm checkpoint folder (its config.json is updated)")
    p.add_argument("--corpus", default="out/corpus")
    p.add_argument("--recipe", default=str(DEFAULT_RECIPE))
    p.add_argument("--split", default="validation")
    p.add_argument("--cap", type=int, default=60, help="tiles per source")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--min-per-concept", type=int, default=15, help="yes and no targets a concept needs")
    p.add_argument("--dry-run", action="store_true", help="print the scores, change nothing")
    args = p.parse_args(argv)
    try:
        torch.set_num_threads(2)
        model = build_model(args.model)
        pairs = predicted_shares(model, Path(args.corpus), yaml.safe_load(open(args.recipe)), args.split,
                                 args.cap, args.seed)  # fmt: skip
        if not pairs:
            raise ValueError(f"no class targets in the {args.split} split of {args.corpus}")
        share, scores = best_share(pairs)
        per_concept = shares_by_concept(pairs, args.min_per_concept)
    except (OSError, ValueError) as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    yes = sum(p[1] for p in pairs)
    print(f"{len(pairs)} targets ({yes} yes, {len(pairs) - yes} no) in the {args.split} split")
    for c, s in scores.items():
        print(f"  share > {c:<7} balanced accuracy {s:.3f}{'  <- chosen' if c == share else ''}")
    for concept, (c_share, c_scores) in per_concept.items():
        print(f"  {concept:<9} share > {c_share:<7} balanced accuracy {c_scores[c_share]:.3f} "
              f"(the global share: {c_scores[share]:.3f})")  # fmt: skip
    if not args.dry_run:
        path = Path(args.model) / "config.json"
        config = json.loads(path.read_text())
        config["presence_min_share"] = share
        config["presence_min_share_by_concept"] = {c: v[0] for c, v in per_concept.items()}
        write_text_atomic(path, json.dumps(config, indent=2) + "\n")
        print(f"presence_min_share = {share} written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
