"""Calibrate what a mask means: per concept, the probability a pixel needs, and the share a mask needs to be "there".

    python -m train.calibrate --model out/default-a2 --corpus out/corpus            # prints, and writes it into
                                                                                    # the checkpoint's config.json

The assistant answers presence questions from the decoder's mask of the subject (``rsvlm.presence``). A decoder
leaves a few stray pixels on tiles without the thing, so "any pixel" says yes too often; and one trained on few
tree tiles is unsure of trees, so 0.5 is too high a bar for their pixels. Both are chosen on the **validation**
split (never the test split the report scores), from the decoder's probabilities for every class target of every
validation tile, against the truth as data_gen's presence answers define it (yes: at least
``min_component_pixels`` of the class; no: not one pixel):

- ``presence_min_share``: the share of valid pixels (of the mask at 0.5) that maximises the balanced presence
  accuracy over all targets, for phrases of no concept of their own;
- for each concept (``rsvlm.presence.CONCEPTS``) with at least ``--min-per-concept`` yes and as many no targets: its
  pixel threshold ``mask_threshold_by_concept``, the one whose masks best outline the class on the targets that
  have it (gIoU on positives), and at that threshold the share ``presence_min_share_by_concept`` with the best
  balanced presence accuracy. The assistant empties a mask of the concept under that share
  (``rsvlm.decided.Turn.shows``), so "outline the trees" and "are there trees?" agree.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml

from rsvlm.atomic import write_text_atomic
from rsvlm.presence import CONCEPTS
from train.corpus import DEFAULT_RECIPE
from train.heads import build_model, cap_per_source, scored_predictions
from train.heads_data import collect_tiles, encode_items

CANDIDATES = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.08)
THRESHOLDS = (0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6)


@dataclass
class Scored:
    """One class target: the decoder's probabilities and the truth on its scored pixels, and its concept."""

    probability: np.ndarray
    truth: np.ndarray
    concept: str

    @property
    def yes(self) -> bool:
        return bool(self.truth.any())


def scored_targets(model, corpus: Path, recipe: dict, split: str, cap: int, seed: int) -> list[Scored]:
    """Every class target of the split's tiles (targets between yes and no left out)."""
    from data_gen.tasks.regions import min_component_pixels

    tiles = cap_per_source(collect_tiles(corpus, recipe, {split}), cap, seed)
    items = encode_items(model, tiles, 1, seed)
    out = []
    for _, target, truth, logits in scored_predictions(model, items, tiles, logits=True, calibrated=False):
        positives = int(truth.sum())
        if truth.numel() == 0 or 0 < positives < min_component_pixels(*target.mask.shape):
            continue
        out.append(Scored(torch.sigmoid(logits).numpy(), truth.numpy(), target.concept))
    return out


def balanced_accuracy(shares: np.ndarray, truth: np.ndarray, share: float) -> float:
    said = shares > share
    tpr = said[truth].mean() if truth.any() else 0.0
    tnr = (~said[~truth]).mean() if (~truth).any() else 0.0
    return float((tpr + tnr) / 2)


def best_share(targets: list[Scored], threshold: float = 0.5) -> tuple[float, dict[float, float]]:
    """The share (of the mask at ``threshold``) with the best balanced presence accuracy, and every candidate's."""
    shares = np.array([(t.probability > threshold).mean() for t in targets])
    truth = np.array([t.yes for t in targets])
    scores = {c: balanced_accuracy(shares, truth, c) for c in CANDIDATES}
    return max(scores, key=scores.get), scores


def giou(targets: list[Scored], threshold: float, share: float) -> float:
    """Mean IoU of the masks at ``threshold``, a mask under ``share`` emptied (an empty target: 1 if empty too)."""
    ious = []
    for t in targets:
        mask = t.probability > threshold
        if mask.mean() <= share:
            mask = np.zeros_like(mask)
        union = (mask | t.truth).sum()
        ious.append(1.0 if union == 0 else (mask & t.truth).sum() / union)
    return float(np.mean(ious))


@dataclass
class ConceptCalibration:
    threshold: float
    share: float
    presence_accuracy: float  # balanced, at (threshold, share)
    giou: float
    giou_uncalibrated: float  # threshold 0.5, no share


def calibrate_concepts(targets: list[Scored], min_each: int) -> dict[str, ConceptCalibration]:
    """``ConceptCalibration`` per concept of ``CONCEPTS`` with at least ``min_each`` yes and ``min_each`` no
    targets."""
    out = {}
    for concept in sorted(CONCEPTS):
        group = [t for t in targets if t.concept == concept]
        yes = sum(t.yes for t in group)
        if yes < min_each or len(group) - yes < min_each:
            continue
        # The threshold that outlines the thing best where it is there; then the share that says best whether it is.
        positives = [t for t in group if t.yes]
        # A tie keeps the threshold nearest 0.5.
        threshold = max(THRESHOLDS, key=lambda th: (giou(positives, th, 0.0), -abs(th - 0.5)))
        share, scores = best_share(group, threshold)
        out[concept] = ConceptCalibration(
            threshold, share, scores[share], giou(group, threshold, share), giou(group, 0.5, 0.0)
        )
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.calibrate", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="an rsvlm checkpoint folder (its config.json is updated)")
    p.add_argument("--corpus", default="out/corpus")
    p.add_argument("--recipe", default=str(DEFAULT_RECIPE))
    p.add_argument("--split", default="validation")
    p.add_argument("--cap", type=int, default=150, help="tiles per source")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--min-per-concept", type=int, default=15, help="yes and no targets a concept needs")
    p.add_argument("--dry-run", action="store_true", help="print the scores, change nothing")
    args = p.parse_args(argv)
    try:
        torch.set_num_threads(2)
        model = build_model(args.model)
        targets = scored_targets(model, Path(args.corpus), yaml.safe_load(open(args.recipe)), args.split,
                                 args.cap, args.seed)  # fmt: skip
        if not targets:
            raise ValueError(f"no class targets in the {args.split} split of {args.corpus}")
        share, scores = best_share(targets)
        per_concept = calibrate_concepts(targets, args.min_per_concept)
    except (OSError, ValueError) as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    yes = sum(t.yes for t in targets)
    print(f"{len(targets)} targets ({yes} yes, {len(targets) - yes} no) in the {args.split} split")
    for c, s in scores.items():
        print(f"  share > {c:<7} balanced accuracy {s:.3f}{'  <- chosen' if c == share else ''}")
    for concept, cal in per_concept.items():
        print(f"  {concept:<9} pixels > {cal.threshold:<4} share > {cal.share:<7} balanced accuracy "
              f"{cal.presence_accuracy:.3f}, gIoU {cal.giou:.3f} (at 0.5 with no share: {cal.giou_uncalibrated:.3f})")  # fmt: skip
    if not args.dry_run:
        path = Path(args.model) / "config.json"
        config = json.loads(path.read_text())
        config["presence_min_share"] = share
        config["presence_min_share_by_concept"] = {c: cal.share for c, cal in per_concept.items()}
        config["mask_threshold_by_concept"] = {c: cal.threshold for c, cal in per_concept.items()}
        write_text_atomic(path, json.dumps(config, indent=2) + "\n")
        print(f"presence_min_share = {share} and {len(per_concept)} concepts' thresholds written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
