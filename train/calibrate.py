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
  (``rsvlm.decided.Turn.shows``), so "outline the trees" and "are there trees?" agree;
- for the same concepts, a logistic presence model ``presence_model_by_concept`` on what a mask's probabilities
  look like (``rsvlm.presence.presence_features``: shares above nine levels, their logarithms, the top
  probabilities' means), class-balanced, its L2 strength chosen by 5-fold cross-validation on the split, kept where
  its cross-validated balanced accuracy beats the share rule's (its share chosen on the same folds). One share of
  one threshold cannot tell a tile's few true trees from another tile's stray pixels; the shape of the whole
  distribution can. Where a concept has a presence model the assistant decides "there" by it (the share stays the
  rule for masks decoded without their probabilities).
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
from train.heads_data import collect_pairs, collect_tiles, encode_items

STRENGTHS = (0.0003, 0.001, 0.003, 0.01, 0.03, 0.1)  # C of the presence model: 1 / L2 weight, per sample
CANDIDATES = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.08)
# A change map covers more of a pair than a class mask's strays cover of a tile: its shares reach further.
CHANGE_CANDIDATES = (*CANDIDATES, 0.12, 0.16, 0.2, 0.25, 0.3, 0.4)
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


def scored_targets(
    model, corpus: Path, recipe: dict, split: str, cap: int, seed: int, change: bool = False
) -> list[Scored]:
    """Every class target of the split's tiles (targets between yes and no left out), or with ``change`` the change
    path's "the changed areas" on every two-date tile, one target a pair."""
    from data_gen.tasks.regions import min_component_pixels

    tiles = cap_per_source((collect_pairs if change else collect_tiles)(corpus, recipe, {split}), cap, seed)
    items = encode_items(model, tiles, 1, seed)
    out = []
    for _, target, truth, logits in scored_predictions(model, items, tiles, logits=True, calibrated=False):
        positives = int(truth.sum())
        if truth.numel() == 0 or (not change and 0 < positives < min_component_pixels(*target.mask.shape)):
            continue
        out.append(Scored(torch.sigmoid(logits).numpy(), truth.numpy(), target.concept))
    return out


def calibrate_change(targets: list[Scored]) -> tuple[float, dict[float, float], float]:
    """The share of the change mask that best tells changed pairs from unchanged ones (balanced accuracy), every
    candidate's accuracy, and the share rule's 5-fold cross-validated accuracy (what to expect on new pairs)."""
    share, scores = best_share(targets, candidates=CHANGE_CANDIDATES)
    return share, scores, cross_validated_share_rule(targets, 0.5, candidates=CHANGE_CANDIDATES)


def balanced_accuracy(shares: np.ndarray, truth: np.ndarray, share: float) -> float:
    said = shares > share
    tpr = said[truth].mean() if truth.any() else 0.0
    tnr = (~said[~truth]).mean() if (~truth).any() else 0.0
    return float((tpr + tnr) / 2)


def best_share(
    targets: list[Scored], threshold: float = 0.5, candidates: tuple[float, ...] = CANDIDATES
) -> tuple[float, dict[float, float]]:
    """The share (of the mask at ``threshold``) with the best balanced presence accuracy, and every candidate's."""
    shares = np.array([(t.probability > threshold).mean() for t in targets])
    truth = np.array([t.yes for t in targets])
    scores = {c: balanced_accuracy(shares, truth, c) for c in candidates}
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


def fit_logistic(x: np.ndarray, y: np.ndarray, strength: float) -> dict:
    """Class-balanced logistic regression on standardised ``x`` with L2 ``1 / (2 C n)``, by L-BFGS (float64)."""
    mean, scale = x.mean(0), x.std(0) + 1e-6
    xs = torch.tensor((x - mean) / scale)
    ys = torch.tensor(y, dtype=torch.float64)
    positive = ys.mean().clamp(1e-3, 1 - 1e-3)
    weights = torch.where(ys > 0, 0.5 / positive, 0.5 / (1 - positive))
    w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=500, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        bce = torch.nn.functional.binary_cross_entropy_with_logits(xs @ w + b, ys, reduction="none")
        loss = (weights * bce).mean() + (w @ w) / (2 * strength * len(ys))
        loss.backward()
        return loss

    opt.step(closure)

    def rounded(values) -> list[float]:  # six digits keep every decision and config.json readable
        return [float(f"{v:.6g}") for v in np.asarray(values).ravel()]

    return {
        "mean": rounded(mean),
        "scale": rounded(scale),
        "weight": rounded(w.detach()),
        "bias": rounded(b.detach())[0],
    }


def calibrated_probability(probability: np.ndarray, threshold: float) -> np.ndarray:
    """Probabilities shifted so that ``threshold`` becomes 0.5, as ``rsvlm.presence.calibrated_logits`` does."""
    p = np.clip(probability.astype(np.float64), 1e-7, 1 - 1e-7)
    return 1 / (1 + np.exp(-(np.log(p / (1 - p)) - np.log(threshold / (1 - threshold)))))


def _folds(n: int, folds: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(kept, held)`` index pairs of a fixed shuffle, the same for every rule compared."""
    order = np.random.default_rng(0).permutation(n)
    return [(np.setdiff1d(order, order[k::folds]), order[k::folds]) for k in range(folds)]


def cross_validated_share_rule(
    targets: list[Scored], threshold: float, folds: int = 5, candidates: tuple[float, ...] = CANDIDATES
) -> float:
    """The share rule's balanced accuracy when its share is chosen on the other folds (the fair comparison with a
    presence model, whose strength is chosen the same way)."""
    shares = np.array([(t.probability > threshold).mean() for t in targets])
    y = np.array([t.yes for t in targets])
    said = np.zeros(len(y), bool)
    for kept, held in _folds(len(y), folds):
        share = max(candidates, key=lambda c: balanced_accuracy(shares[kept], y[kept], c))
        said[held] = shares[held] > share
    return balanced_accuracy(said.astype(float), y, 0.5)


def fit_presence_model(targets: list[Scored], threshold: float, folds: int = 5) -> tuple[dict, float, float]:
    """The concept's presence model (``rsvlm.presence.model_says_present``), the strength chosen by cross-validated
    balanced accuracy, and that accuracy."""
    from rsvlm.presence import presence_features, presence_score

    shifted = [calibrated_probability(t.probability, threshold) for t in targets]
    x = np.stack([presence_features(p) for p in shifted])
    y = np.array([t.yes for t in targets])
    cv = {}
    for strength in STRENGTHS:
        said = np.zeros(len(y), bool)
        for kept, held in _folds(len(y), folds):
            said[held] = presence_score(x[held], fit_logistic(x[kept], y[kept], strength)) > 0
        said &= np.array([(p > 0.5).any() for p in shifted])  # no pixel above threshold: never there
        cv[strength] = float((said[y].mean() + (~said[~y]).mean()) / 2)
    strength = max(cv, key=cv.get)
    model = fit_logistic(x, y, strength)
    return model, strength, cv[strength]


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
    p.add_argument("--change", action="store_true", help="calibrate the change path's yes / no instead")
    args = p.parse_args(argv)
    if args.change:
        return main_change(args)
    try:
        torch.set_num_threads(2)
        model = build_model(args.model)
        targets = scored_targets(model, Path(args.corpus), yaml.safe_load(open(args.recipe)), args.split,
                                 args.cap, args.seed)  # fmt: skip
        if not targets:
            raise ValueError(f"no class targets in the {args.split} split of {args.corpus}")
        share, scores = best_share(targets)
        per_concept = calibrate_concepts(targets, args.min_per_concept)
        models, share_rule = {}, {}
        for concept, cal in per_concept.items():
            group = [t for t in targets if t.concept == concept]
            models[concept] = fit_presence_model(group, cal.threshold)
            share_rule[concept] = cross_validated_share_rule(group, cal.threshold)
        # A concept keeps its presence model only where it beats the share rule, both cross-validated.
        kept = {c: m for c, (m, _, accuracy) in models.items() if accuracy > share_rule[c]}
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
        _, strength, accuracy = models[concept]
        print(
            f"  {'':<9} cross-validated balanced accuracy: presence model (C {strength}) {accuracy:.3f}, share "
            f"rule {share_rule[concept]:.3f} -> {'presence model' if concept in kept else 'share rule'}"
        )
    if not args.dry_run:
        path = Path(args.model) / "config.json"
        config = json.loads(path.read_text())
        config["presence_min_share"] = share
        config["presence_min_share_by_concept"] = {c: cal.share for c, cal in per_concept.items()}
        config["mask_threshold_by_concept"] = {c: cal.threshold for c, cal in per_concept.items()}
        config["presence_model_by_concept"] = kept
        write_text_atomic(path, json.dumps(config, indent=2) + "\n")
        print(f"presence_min_share = {share} and {len(per_concept)} concepts' thresholds written to {path}")
    return 0


def main_change(args) -> int:
    """``--change``: ``change_presence_min_share``, the share of "the changed areas" above which two dates changed
    (``rsvlm.decided`` answers "did it change?" with it; without it the model's own yes or no stands)."""
    try:
        torch.set_num_threads(2)
        model = build_model(args.model)
        recipe = yaml.safe_load(open(args.recipe))
        targets = scored_targets(
            model, Path(args.corpus), recipe, args.split, args.cap, args.seed, change=True
        )
        yes = sum(t.yes for t in targets)
        if min(yes, len(targets) - yes) < 2:
            raise ValueError(
                f"the {args.split} split needs changed and unchanged pairs; it has {yes} of {len(targets)}"
            )
        share, scores, cross_validated = calibrate_change(targets)
    except (OSError, ValueError) as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    print(
        f"{len(targets)} two-date pairs ({yes} changed, {len(targets) - yes} unchanged) in the {args.split} split"
    )
    for c, s in scores.items():
        print(f"  change share > {c:<7} balanced accuracy {s:.3f}{'  <- chosen' if c == share else ''}")
    print(f"  cross-validated balanced accuracy of the share rule: {cross_validated:.3f}")
    if not args.dry_run:
        path = Path(args.model) / "config.json"
        config = json.loads(path.read_text())
        config["change_presence_min_share"] = share
        write_text_atomic(path, json.dumps(config, indent=2) + "\n")
        print(f"change_presence_min_share = {share} written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
