"""Stage A of the embedded default: the mask decoder and phrase projector on cached tower maps, no LLM in the loop.

    python -m train.heads --corpus out/corpus --out out/heads                 # resumes from out/heads/checkpoints
    python -m train.heads --corpus out/corpus --out out/loso-dubai --exclude dubai   # leave one source out
    python -m train.heads --evaluate out/heads/best --corpus out/corpus --split test --report out/heads/test.json
    python -m train.heads --change --init out/heads/best --out out/change   # stage A2: the change path on pairs

Why a stage without the LLM: with ``phrase_prompt`` the decoder's prompt is the projected embedding of the phrase
a ``[SEG]`` closes, so (image, phrase, mask) triples train it directly, hundreds of masks a second on 2 cores,
against ~1 sample/s for an end-to-end step. The LLM's job (stage B, ``train.sft``) is then to say *what* to segment.

Loop: ``heads_data`` tiles (train split; each source capped, so Dubai's 1,900 tiles do not drown the rest) ->
renderings encoded once -> steps of ``batch`` renderings x ``prompts`` targets each (a concept drawn first, then a
source with positives of it by sqrt(tiles), so Dubai's vegetation is not crowded out; positives and negatives
mixed) -> BCE + Dice on scored pixels -> AdamW with warm-up and cosine -> every ``eval_every`` steps the
validation split's gIoU per concept; the best is kept as ``out/best`` (an rsvlm checkpoint). Checkpoints
(safetensors + JSON, ``train.checkpoint``) make a killed run resume where it stopped.

``--change`` (stage A2) runs the same loop on two-date tiles: both dates' maps are cached, and only the change
fusion and the decoder's pair fusion learn, so "the changed areas" is decoded from ``fuse(f1, f2, |f1 - f2|)`` by
the decoder stage A trained, whose single-image masks stay exactly as they were.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from safetensors.torch import load_file

from rsvlm import presence
from rsvlm.atomic import write_text_atomic
from rsvlm.presence import CONCEPTS
from train import checkpoint as ckpt
from train.combine import CHANGE_PREFIXES, HEAD_PREFIXES
from train.corpus import DEFAULT_RECIPE
from train.heads_data import (
    HeadItems,
    TileTargets,
    collect_pairs,
    collect_tiles,
    encode_items,
    item_target,
    summary,
)

logger = logging.getLogger(__name__)


def build_model(init: str | None):
    from rsvlm.configuration_rsvlm import RSVLMConfig
    from rsvlm.modeling_rsvlm import RSVLMForConditionalGeneration

    if init:
        return RSVLMForConditionalGeneration.from_pretrained(init)
    return RSVLMForConditionalGeneration(RSVLMConfig())


def cap_per_source(tiles: list[TileTargets], cap: int, seed: int) -> list[TileTargets]:
    by_source: dict[str, list[TileTargets]] = defaultdict(list)
    for t in tiles:
        by_source[t.source].append(t)
    kept = []
    for name, group in sorted(by_source.items()):
        random.Random(f"{seed}:{name}").shuffle(group)
        kept.extend(group[:cap])
    return kept


def trainable_parameters(model, change: bool = False) -> list[tuple[str, torch.nn.Parameter]]:
    names = CHANGE_PREFIXES if change else HEAD_PREFIXES
    named = [(n, p) for n, p in model.named_parameters() if n.startswith(names) and p.requires_grad]
    if not change:  # the pair fusion only ever sees pairs
        named = [(n, p) for n, p in named if not n.startswith(CHANGE_PREFIXES)]
    return named


def mask_loss(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """BCE over scored pixels + soft Dice (smoothed, so an empty target pushes the mask to empty)."""
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    bce = (bce * weight).sum((1, 2)) / weight.sum((1, 2)).clamp_min(1)
    prob = torch.sigmoid(logits) * weight
    inter = (prob * target * weight).sum((1, 2))
    dice = 1 - (2 * inter + 1) / (prob.sum((1, 2)) + (target * weight).sum((1, 2)) + 1)
    return (2 * bce + 0.5 * dice).mean()


def decode(model, items: HeadItems, indices: list[int], phrases: list[str]) -> torch.Tensor:
    """Mask logits ``[M, S, S]`` for prompt ``m`` = (item ``indices[m]``, ``phrases[m]``)."""
    unique = sorted(set(indices))
    where = {i: k for k, i in enumerate(unique)}
    contexts = [context(model, items, i) for i in unique]
    prompts = model.mask_prompts(None, phrases)
    return model.mask_decoder(contexts, [where[i] for i in indices], prompts)


def context(model, items: HeadItems, i: int) -> tuple[torch.Tensor, ...]:
    """The decoder's context of item ``i``, as ``encode_images`` builds it (a pair: the change map)."""
    if items.maps.ndim == 5:
        maps = items.maps[i].float()  # [2, D, h, w]
        change = model.change_fusion(maps[:1], maps[1:])[0]
        return model.mask_decoder.image_context(change, items.pixels[i].float() / 255)
    return model.mask_decoder.image_context(items.maps[i].float(), items.pixels[i : i + 1].float() / 255)


# ---------------------------------------------------------------------------------------------------- metrics


def scored_predictions(
    model,
    items: HeadItems,
    tiles: list[TileTargets],
    max_prompts: int | None = None,
    *,
    logits: bool = False,
    calibrated: bool = True,
):
    """``(item, target, truth, prediction)`` for every class target of every item, in batches of 32 prompts;
    ``truth`` and ``prediction`` are tensors over the target's scored pixels only (padding, ignore left out): the
    prediction is the bool mask, or with ``logits`` the float logits. ``calibrated``: each phrase's logits shifted
    to its concept's calibrated threshold, as the assistant reads them (``rsvlm.presence.calibrated_logits``; a
    checkpoint without calibration is unchanged)."""
    processor = model.get_processor()
    jobs = [(i, t) for i in range(len(items.tile_index)) for t in tiles[items.tile_index[i]].targets]
    jobs = jobs[:max_prompts]
    model.eval()
    with torch.no_grad():
        for start in range(0, len(jobs), 32):
            chunk = jobs[start : start + 32]
            phrases = [t.phrases[0] for _, t in chunk]
            out = decode(model, items, [i for i, _ in chunk], phrases).float()
            if calibrated:
                out = presence.calibrated_logits(out, phrases, model.config)
            for (i, target), lg in zip(chunk, out):
                tgt, w = item_target(items, tiles, processor, i, target)
                scored = w > 0
                yield i, target, tgt[scored] > 0.5, lg[scored] if logits else lg[scored] > 0


def evaluate(
    model, items: HeadItems, tiles: list[TileTargets], max_prompts: int = 4000, calibrated: bool = True
) -> dict:
    """gIoU per concept and source, with the whole-image and empty-mask baselines and mask-presence accuracy.

    Per target: IoU over scored pixels, an empty target scoring 1 when the prediction is empty too (GRES's
    convention); ``skill`` = (gIoU - gIoU of the whole-image mask) / (1 - that), over positive targets.
    ``calibrated`` scores masks as the assistant returns them: at the concept's calibrated threshold, and empty
    under its calibrated share (``rsvlm.decided.Turn.shows``), or where the concept has a presence model, empty
    when that model says it is not there; presence is then that decision's, else 0.2 %.
    """
    # (source, concept) -> [(positive, iou, iou_whole, present, pixel counts, predicted share)]
    rows = defaultdict(list)
    jobs = scored_predictions(model, items, tiles, max_prompts, logits=True, calibrated=calibrated)
    for i, target, truth, logit in jobs:
        pred = logit > 0
        predicted_share = pred.float().mean().item()  # before the presence rule: what a share rule reads
        share = presence.concept_min_share(target.phrases[0], model.config) if calibrated else None
        judge = presence.presence_model(target.phrases[0], model.config) if calibrated else None
        if judge is not None:
            present = presence.model_says_present(torch.sigmoid(logit).numpy(), judge)
        else:
            present = bool(pred.sum() > (0.002 if share is None else share) * pred.numel())
        if (share is not None or judge is not None) and not present:
            pred = torch.zeros_like(pred)
        union = (truth | pred).sum().item()
        iou = 1.0 if union == 0 else (truth & pred).sum().item() / union
        whole = truth.float().mean().item() if truth.any() else 0.0
        tp = (truth & pred).sum().item()
        counts = (tp, pred.sum().item() - tp, truth.sum().item() - tp, truth.numel())
        entry = (bool(truth.any()), iou, whole, present, counts, predicted_share)
        rows[(items.sources[i], target.concept)].append(entry)
    return summarise(rows)


def rank_auc(positives: list[float], negatives: list[float]) -> float:
    """ROC AUC as the Mann-Whitney statistic: the chance a positive scores above a negative, ties half."""
    pos, neg = np.asarray(positives, float)[:, None], np.asarray(negatives, float)[None, :]
    return float((pos > neg).mean() + 0.5 * (pos == neg).mean())


def summarise(rows: dict) -> dict:
    def stats(entries):
        pos = [e for e in entries if e[0]]
        neg = [e for e in entries if not e[0]]
        out = {"targets": len(entries), "positives": len(pos)}
        if entries:
            out["giou"] = float(np.mean([e[1] for e in entries]))
            out["presence_acc"] = float(np.mean([e[0] == e[3] for e in entries]))
        if pos:
            g, gw = float(np.mean([e[1] for e in pos])), float(np.mean([e[2] for e in pos]))
            out.update(giou_pos=g, giou_pos_whole=gw, skill=(g - gw) / (1 - gw) if gw < 1 else 0.0)
        if neg:
            out["empty_correct"] = float(np.mean([e[1] for e in neg]))
        if pos and neg:  # does the mask's share rank the targets that are there above those that are not?
            out["share_auc"] = rank_auc([e[5] for e in pos], [e[5] for e in neg])
        if entries:  # pooled over every scored pixel, as change detection reports F1 (BIT_CD)
            tp, fp, fn, n = (sum(e[4][k] for e in entries) for k in range(4))
            out["f1_pooled"] = 2 * tp / max(1, 2 * tp + fp + fn)
            # The whole-image mask predicts every scored pixel: tp + fn positives, fp = n - positives.
            out["f1_pooled_whole"] = 2 * (tp + fn) / max(1, (tp + fn) + n)
            out["pixels_tp_fp_fn_n"] = [tp, fp, fn, n]  # so groups of sources can be pooled afterwards
        return out

    by_concept = defaultdict(list)
    for (_, concept), entries in rows.items():
        by_concept[concept].extend(entries)
    report = {
        "by_concept": {c: stats(e) for c, e in sorted(by_concept.items())},
        "by_source": {f"{s}/{c}": stats(e) for (s, c), e in sorted(rows.items())},
    }
    main = [report["by_concept"][c]["giou"] for c in CONCEPTS if c in report["by_concept"]]
    if "change" in report["by_concept"]:  # change pairs are scored as change detection is: pooled F1
        main = [report["by_concept"]["change"]["f1_pooled"]]
    report["score"] = float(np.mean(main)) if main else 0.0
    return report


# ---------------------------------------------------------------------------------------------------- training


@dataclass
class RenderingPool:
    """Renderings by source; a draw takes a source (weight sqrt(its renderings)), then one of its renderings."""

    renderings: dict[str, list[int]]

    def __post_init__(self) -> None:
        self.names = sorted(self.renderings)
        self.weights = [math.sqrt(len(self.renderings[n])) for n in self.names]

    def draw(self, rng: random.Random) -> int:
        return rng.choice(self.renderings[rng.choices(self.names, self.weights)[0]])


def sampling_pools(items: HeadItems, tiles, balance: str) -> dict[str | None, RenderingPool]:
    """What ``sample_batch`` draws from, built once per run.

    ``"source"``: one pool of every rendering (key None). ``"concept"``: per concept, the renderings whose tile has
    a positive of it; a concept is drawn first, uniformly, so a concept that only one big source labels densely
    (Dubai's vegetation) is not crowded out by the classes every source has.
    """
    grouped: dict[str | None, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    for i, source in enumerate(items.sources):
        if balance == "concept":
            for concept in {t.concept for t in tiles[items.tile_index[i]].targets if t.positive}:
                grouped[concept][source].append(i)
        else:
            grouped[None][source].append(i)
    return {key: RenderingPool(dict(by_source)) for key, by_source in grouped.items()}


def sample_batch(
    items: HeadItems, tiles, rng: random.Random, batch: int, prompts: int, pools, concept_weights=None
):
    """``batch`` renderings x up to ``prompts`` targets each, drawn from ``sampling_pools``; a rendering drawn for
    a concept always has its positive of that concept among its prompts. ``concept_weights`` (concept -> weight,
    1 for the others) draws some concepts more often than uniformly."""
    concepts = sorted(k for k in pools if k is not None)
    weights = [concept_weights.get(c, 1.0) for c in concepts] if concept_weights else None
    indices, targets = [], []
    for _ in range(batch):
        if not concepts:
            concept = None
        elif weights:
            concept = rng.choices(concepts, weights=weights)[0]
        else:
            concept = rng.choice(concepts)  # kept so that unweighted runs draw exactly as before
        i = pools[concept].draw(rng)
        pool = list(tiles[items.tile_index[i]].targets)
        first = [next(t for t in pool if t.concept == concept and t.positive)] if concept else []
        pool = [t for t in pool if not (first and t is first[0])]
        rng.shuffle(pool)
        for target in (first + pool)[:prompts]:
            indices.append(i)
            targets.append(target)
    return indices, targets


def tile_collector(args):
    """What a run reads: two-date pairs (``--change``) or single-image tiles, with building middles (``--cores``)."""
    return collect_pairs if args.change else partial(collect_tiles, cores=args.cores)


def train(args) -> Path:
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    recipe = yaml.safe_load(open(args.recipe))
    sources = set(recipe["sources"]) - set(args.exclude or [])
    model = build_model(args.init)
    processor = model.get_processor()
    t0 = time.perf_counter()
    collect = tile_collector(args)
    train_tiles = cap_per_source(collect(Path(args.corpus), recipe, {"train"}, sources), args.cap, args.seed)
    val_tiles = cap_per_source(collect(Path(args.corpus), recipe, {"validation"}, sources), 60, args.seed)
    if not train_tiles:
        raise ValueError(f"no {'change pairs' if args.change else 'tiles with targets'} in {args.corpus}")
    logger.info("train tiles %s", json.dumps(summary(train_tiles)))
    items = encode_items(model, train_tiles, args.variants, args.seed)
    val_items = encode_items(model, val_tiles, 1, args.seed)
    encode_s = time.perf_counter() - t0
    logger.info(
        "encoded %d train and %d validation renderings in %.0f s",
        len(items.sources),
        len(val_items.sources),
        encode_s,
    )

    named = trainable_parameters(model, change=args.change)
    params = [p for _, p in named]
    names = [n for n, _ in named]
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)

    def lr_at(step: int) -> float:
        if step < args.warmup:
            return (step + 1) / args.warmup
        progress = (step - args.warmup) / max(1, args.max_steps - args.warmup)
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    state = {"step": 0, "best": -1.0, "history": []}
    rng = random.Random(args.seed)
    latest = ckpt.latest_checkpoint(out / "checkpoints")
    if latest is not None:
        model.load_trainable_state_dict(load_file(latest / "model.safetensors"))
        optimizer.load_state_dict(ckpt.optimizer_from_files(latest, names))
        scheduler.load_state_dict(json.loads((latest / "scheduler.json").read_text()))
        saved = json.loads((latest / "trainer_state.json").read_text())
        state.update(step=saved["step"], best=saved["best"], history=saved["history"])
        ckpt.set_rng_state(saved["rng"])
        rng.setstate((saved["py_rng"][0], tuple(saved["py_rng"][1]), saved["py_rng"][2]))
        logger.info("resumed from %s (step %d, best %.4f)", latest, state["step"], state["best"])

    def save(step: int) -> None:
        py = rng.getstate()
        extra = {**state, "rng": ckpt.rng_state(), "py_rng": [py[0], list(py[1]), py[2]], "args": vars(args)}
        ckpt.save_checkpoint(out / "checkpoints", step, model, optimizer, scheduler, names, extra)
        ckpt.prune_checkpoints(out / "checkpoints", 2)

    pools = sampling_pools(items, train_tiles, args.balance or ("source" if args.change else "concept"))
    model.train()
    tick, seen = time.perf_counter(), 0
    stop = min(args.max_steps, args.stop_after or args.max_steps)
    for step in range(state["step"], stop):
        indices, targets = sample_batch(
            items, train_tiles, rng, args.batch, args.prompts, pools, args.concept_weight
        )
        phrases = [rng.choice(t.phrases) for t in targets]
        pairs = [item_target(items, train_tiles, processor, i, t) for i, t in zip(indices, targets)]
        target = torch.stack([p[0] for p in pairs])
        weight = torch.stack([p[1] for p in pairs])
        logits = decode(model, items, indices, phrases)
        loss = mask_loss(logits, target, weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        scheduler.step()
        seen += len(indices)
        state["step"] = step + 1
        if (step + 1) % args.log_every == 0:
            rate = seen / (time.perf_counter() - tick)
            logger.info(
                "step %d loss %.4f lr %.2e %.1f masks/s",
                step + 1,
                loss.item(),
                scheduler.get_last_lr()[0],
                rate,
            )
            state["history"].append(
                {"step": step + 1, "loss": round(loss.item(), 5), "masks_per_s": round(rate, 2)}
            )
            tick, seen = time.perf_counter(), 0
        if (step + 1) % args.eval_every == 0 or step + 1 == args.max_steps:
            # Uncalibrated: the calibration is chosen after training, on this checkpoint.
            report = evaluate(model, val_items, val_tiles, calibrated=False)
            model.train()
            state["history"].append({"step": step + 1, "val_score": round(report["score"], 5)})
            logger.info("step %d validation score %.4f %s", step + 1, report["score"],
                        {c: round(v.get("giou", 0), 3) for c, v in report["by_concept"].items()})  # fmt: skip
            if report["score"] > state["best"]:
                state["best"] = report["score"]
                model.save_pretrained(out / "best")
                write_text_atomic(out / "best" / "validation.json", json.dumps(report, indent=1))
            save(step + 1)
            tick, seen = time.perf_counter(), 0
    if stop < args.max_steps:  # a sitting ends here; the same command later resumes the run
        if state["step"] % args.eval_every:
            save(state["step"])
        return out / "best"
    write_text_atomic(out / "heads_state.json", json.dumps({**state, "encode_s": encode_s}, indent=1))
    return out / "best"


def run_evaluation(args) -> dict:
    torch.set_num_threads(args.threads)
    recipe = yaml.safe_load(open(args.recipe))
    sources = set(args.only) if args.only else set(recipe["sources"])
    model = build_model(args.evaluate)
    tiles = tile_collector(args)(Path(args.corpus), recipe, {args.split}, sources)
    tiles = cap_per_source(tiles, args.cap, args.seed)
    if args.panchromatic:
        from train.heads_data import _luma

        for t in tiles:
            t.image = np.repeat(np.clip(_luma(t.image), 0, 255).astype(np.uint8)[..., None], 3, axis=-1)
    items = encode_items(model, tiles, 1, args.seed)
    report = evaluate(model, items, tiles, max_prompts=100_000, calibrated=not args.uncalibrated)
    report.update(split=args.split, panchromatic=bool(args.panchromatic), model=str(args.evaluate),
                  calibrated=not args.uncalibrated, tiles=summary(tiles))  # fmt: skip
    if args.report:
        write_text_atomic(Path(args.report), json.dumps(report, indent=1))
    return report


def concept_weight(text: str) -> tuple[str, float]:
    """ "tree=2" -> ("tree", 2.0), for ``--concept-weight``."""
    concept, _, weight = text.partition("=")
    try:
        value = float(weight)
    except ValueError:
        value = -1.0
    if concept not in CONCEPTS or not value > 0:
        raise argparse.ArgumentTypeError(
            f"{text!r}: want CONCEPT=W with CONCEPT one of {', '.join(CONCEPTS)} and W > 0"
        )
    return concept, value


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.heads", description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", default="out/corpus")
    p.add_argument("--recipe", default=str(DEFAULT_RECIPE))
    p.add_argument("--out", default="out/heads")
    p.add_argument(
        "--init", default=None, help="an rsvlm checkpoint to start from (default: a fresh default)"
    )
    p.add_argument("--exclude", nargs="*", help="sources left out of training (leave-one-source-out)")
    p.add_argument(
        "--change",
        action="store_true",
        help="stage A2: train (or --evaluate) the change path on two-date tiles",
    )
    p.add_argument("--max-steps", type=int, default=3000)
    p.add_argument(
        "--stop-after", type=int, default=None, help="end this sitting after step N (resume later)"
    )
    p.add_argument("--batch", type=int, default=8, help="renderings per step")
    p.add_argument("--prompts", type=int, default=4, help="targets per rendering")
    p.add_argument(
        "--variants", type=int, default=4, help="renderings per tile (identity, turn, pan, jitter)"
    )
    p.add_argument("--cap", type=int, default=400, help="tiles per source")
    p.add_argument(
        "--balance",
        choices=["source", "concept"],
        default=None,
        help="draw each rendering by concept first (default), or by source (default with --change, whose one "
        "concept has its empty targets drawn too); see sampling_pools",
    )
    p.add_argument(
        "--concept-weight",
        type=concept_weight,
        action="extend",
        nargs="+",
        default=None,
        metavar="CONCEPT=W",
        help="with --balance concept: draw CONCEPT W times as often as a concept left at 1 (e.g. tree=2)",
    )
    p.add_argument(
        "--cores",
        action="store_true",
        help="also train the middle of each building (train.heads_data.core_target), what counts objects",
    )
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--log-every", type=int, default=25)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--evaluate", default=None, help="score this checkpoint instead of training")
    p.add_argument("--split", default="test")
    p.add_argument("--only", nargs="*", help="sources to score (default all)")
    p.add_argument("--panchromatic", action="store_true", help="score single-band renderings of the split")
    p.add_argument(
        "--uncalibrated",
        action="store_true",
        help="score masks at probability 0.5 with no share, ignoring the checkpoint's calibration",
    )
    p.add_argument("--report", default=None)
    args = p.parse_args(argv)
    args.concept_weight = dict(args.concept_weight) if args.concept_weight else None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.evaluate:
            report = run_evaluation(args)
            print(json.dumps(report["by_concept"], indent=1))
        else:
            print(f"best checkpoint: {train(args)}")
    except (OSError, ValueError) as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
