"""The evaluation runner: ask the assistant every record, score its Answer, log per sample, summarise.

    summary = evaluate(assistant, records, "runs/dior", benchmark="dior-rsvg")

Inference is the assistant's (one ``Session`` per record, two images for change); this module only reads the
``Answer`` (``pixel_box``, ``pixel_polygon``, ``mask`` in source pixels, ``text``) and scores it against the
record's target. Outputs in ``out``: ``samples.jsonl`` (one line per record, appended and flushed as it is
scored, so an interrupted run resumes from it: records already there are skipped, a torn last line is
dropped), ``summary.json`` and ``report.md`` (both written atomically, from all lines of the log).
"""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from eval import metrics
from eval.baselines import blanked_image
from eval.readers import Record, plain_text
from eval.shard import Shard, append_rows, done_ids, merged_rows, read_log
from rsvlm import geo
from rsvlm.assistant import Answer, Assistant
from rsvlm.atomic import write_text_atomic

__all__ = ["evaluate", "read_log", "run_one", "score_answer", "summarise", "write_outputs"]

logger = logging.getLogger(__name__)

SAMPLES = "samples.jsonl"
SAMPLES_STEM = "samples"  # samples.jsonl, and samples.shard{k}-of-{n}.jsonl under accelerate launch
SUMMARY = "summary.json"
REPORT = "report.md"


# ------------------------------------------------------------------------------------------------ one answer


def _dense(mask: Any) -> np.ndarray:
    if isinstance(mask, geo.SparseMask):
        return mask.read((0, 0, mask.width, mask.height))
    return np.asarray(mask, dtype=bool)


def _image_shape(record: Record, answer: Answer) -> tuple[int, int]:
    if answer.image_shape is not None:
        return tuple(int(v) for v in answer.image_shape[-2:])
    info = geo.inspect_raster(record.images[0])
    return info.height, info.width


def _pred_masks(answer: Answer, shape: tuple[int, int]) -> list[np.ndarray]:
    masks = []
    for region in answer.regions:
        if region.mask is None:
            continue
        mask = _dense(region.mask)
        if mask.shape != shape:
            raise ValueError(f"answer mask {mask.shape} is not on the image grid {shape}")
        masks.append(mask)
    return masks


def _union(masks: Sequence[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    out = np.zeros(shape, bool)
    for m in masks:
        out |= m
    return out


def _pred_polygons(answer: Answer) -> list[list[list[float]]]:
    """Each region's oriented box as four corners (a box's corners when it has no oriented box), in order."""
    return [
        [list(p) for p in r.pixel_polygon] if r.pixel_polygon is not None else _box_corners(r.pixel_box)
        for r in answer.regions
        if r.pixel_polygon is not None or r.pixel_box is not None
    ]


def score_answer(record: Record, answer: Answer) -> dict[str, Any]:
    """Per-sample scores of one answer; everything the task summary needs is in the returned dict."""
    task = record.task
    text = plain_text(answer.text)
    if task == "grounding":
        box = next((list(r.pixel_box) for r in answer.regions if r.pixel_box is not None), None)
        inter, union = metrics.box_counts(box, record.box)
        return {"pred_box": box, "iou": inter / union if union > 0 else 0.0, "area_counts": [inter, union]}
    if task == "obb":
        pred = next(iter(_pred_polygons(answer)), None)
        inter, union = metrics.obb_counts(pred, record.obb)
        return {"pred_obb": pred, "iou": inter / union if union > 0 else 0.0, "area_counts": [inter, union]}
    if task == "obb_multi":
        preds = _pred_polygons(answer)
        matched = metrics.matched_objects(preds, record.obbs or [])
        return {"matched": matched, "objects": len(record.obbs or []), "predicted": len(preds)}
    if task in ("refseg", "change_mask"):
        shape = _image_shape(record, answer)
        pred = _union(_pred_masks(answer, shape), shape)
        target = record.target_mask(shape)
        inter, union = metrics.mask_counts(pred, target, record.ignore_mask(shape))
        out = {"intersection": inter, "union": union, "iou": metrics.sample_iou(inter, union)}
        if task == "change_mask":
            out["confusion"] = list(metrics.confusion(pred, target))
            out["binary_correct"] = bool(pred.any()) == bool(target.any())
        return out
    if task == "gcg":
        shape = _image_shape(record, answer)
        preds, targets = _pred_masks(answer, shape), record.target_masks(shape)
        ious = _greedy_match(preds, targets)
        return {"mask_ious": ious, "num_pred_masks": len(preds), "text": text}
    if task == "change_binary":
        said = metrics.leading_yes_no(text)
        return {"pred": said, "correct": said is not None and said == record.answer}
    if task == "count":
        number = metrics.first_number(text)
        return {"pred": number, "abs_error": abs((number or 0.0) - float(record.number or 0.0))}
    if task == "vqa":
        out = {"correct": bool(metrics.exact_match(text, record.texts))}
        if record.question_type:  # RSVQA's per-type accuracies
            out["question_type"] = record.question_type
        expected = metrics.leading_yes_no(record.texts[0]) if record.texts else None
        if expected is not None:  # a yes/no question: is the answer's yes / no the reference's?
            out["yes_no_correct"] = metrics.leading_yes_no(text) == expected
        return out
    return {"text": text}  # captions: scored on the corpus


def _box_corners(box) -> list[list[float]]:
    x1, y1, x2, y2 = box
    return [[x1, y1], [x2, y1], [x2, y2], [x1, y2]]


def _greedy_match(preds: list[np.ndarray], targets: list[np.ndarray]) -> list[float]:
    """Each target's IoU with its predicted mask, pairs taken greedily by highest IoU (GLaMM's GCG matching
    is Hungarian; greedy gives the same pairs whenever the IoU matrix has a clear best pair per row)."""
    if not targets:
        return []
    ious = np.zeros((len(targets), len(preds)))
    for i, t in enumerate(targets):
        for j, p in enumerate(preds):
            ious[i, j] = metrics.sample_iou(*metrics.mask_counts(p, t))
    best = [0.0] * len(targets)
    while ious.size and ious.max() > 0:
        i, j = np.unravel_index(int(ious.argmax()), ious.shape)
        best[i] = float(ious[i, j])
        ious[i, :] = -1
        ious[:, j] = -1
    return best


# ------------------------------------------------------------------------------------------------ summary


def summarise(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Task -> metric -> value, from the per-sample rows (so a resumed run summarises all of them)."""
    by_task: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_task[row["task"]].append(row)
    out: dict[str, dict[str, float]] = {}
    for task, all_items in sorted(by_task.items()):
        # Rows without scores are records whose target could not be read (missing image): counted, not scored.
        items = [r for r in all_items if _scored(r)]
        s: dict[str, float] = {}
        if task in ("grounding", "obb"):
            counts = [r["area_counts"] for r in items] if all("area_counts" in r for r in items) else None
            s = metrics.grounding_scores([r["iou"] for r in items], counts)
        elif (
            task == "obb_multi"
        ):  # every object of every question counts once (TEOChat's GeoChat-Bench Acc@0.5)
            matched, objects = sum(r["matched"] for r in items), sum(r["objects"] for r in items)
            predicted = sum(r["predicted"] for r in items)
            s = {"acc@0.5": matched / objects if objects else 0.0, "objects": objects}
            s["precision@0.5"] = matched / predicted if predicted else 0.0
        elif task == "refseg":
            s = metrics.segmentation_scores([(r["intersection"], r["union"]) for r in items])
        elif task == "change_mask":
            s = metrics.change_mask_scores([r["confusion"] for r in items])
            s["binary_acc"] = float(np.mean([r["binary_correct"] for r in items]))
        elif task == "gcg":
            ious = [v for r in items for v in r["mask_ious"]]
            s = {"mask_miou": float(np.mean(ious)) if ious else 0.0}
            s["mask_recall@0.5"] = float(np.mean([v >= 0.5 for v in ious])) if ious else 0.0
            s.update(
                metrics.caption_scores(
                    [r["text"] for r in items], [[plain_text(r["refs"][0])] for r in items]
                )
            )
        elif task in ("change_binary", "vqa"):
            s = {"accuracy": float(np.mean([r["correct"] for r in items]))}
            by_type: dict[str, list[bool]] = defaultdict(list)
            for r in items:
                if r.get("question_type"):
                    by_type[r["question_type"]].append(r["correct"])
            if by_type:  # RSVQA reports each type's accuracy and their mean (AA) beside the overall (OA)
                s.update({f"accuracy_{t}": float(np.mean(v)) for t, v in sorted(by_type.items())})
                s["average_accuracy"] = float(np.mean([np.mean(v) for v in by_type.values()]))
            yes_no = [r["yes_no_correct"] for r in items if "yes_no_correct" in r]
            if yes_no:
                s.update(yes_no_accuracy=float(np.mean(yes_no)), yes_no_n=len(yes_no))
        elif task == "count":
            s = {"mae": float(np.mean([r["abs_error"] for r in items]))}
            s["accuracy"] = float(np.mean([r["abs_error"] == 0 for r in items]))
            s["within_1"] = float(np.mean([r["abs_error"] <= 1 for r in items]))
        elif task in ("caption", "change_caption"):
            s = metrics.caption_scores([r["text"] for r in items], [r["refs"] for r in items])
        if not items:
            s = {}
        s["n"] = len(items)
        s["errors"] = sum(bool(r.get("error")) for r in all_items)
        s["unscored"] = len(all_items) - len(items)
        out[task] = s
    return out


def _elements(answer: Answer) -> dict[str, int]:
    """What the delivered answer carries (``eval.protocol --delivered``): non-empty masks, boxes, oriented boxes."""
    masks = sum(r.mask is not None and bool(np.asarray(r.mask).any()) for r in answer.regions)
    obbs = sum(r.pixel_polygon is not None for r in answer.regions)
    boxes = sum(  # a box the answer gave (beside a mask too), not the one every mask gets around it
        (r.box is not None or r.pixel_box is not None and r.mask is None) and r.pixel_polygon is None
        for r in answer.regions
    )
    return {"masks": int(masks), "boxes": int(boxes), "obbs": int(obbs)}


def _scored(row: dict[str, Any]) -> bool:
    return any(k in row for k in ("iou", "mask_ious", "correct", "abs_error", "text", "matched"))


# ------------------------------------------------------------------------------------------------ the loop

BLANK = "blank"  # the log of the blanked-image baseline: blank.jsonl
BLANK_BASELINE = "blanked image"
ONE_PROCESS = Shard()


def evaluate(
    assistant: Assistant,
    records: Sequence[Record],
    out: str | Path,
    *,
    benchmark: str = "",
    model: str = "",
    limit: int | None = None,
    max_new_tokens: int = 128,
    blank_baseline: bool = False,
    shard: Shard = ONE_PROCESS,
    skipped: dict[str, int] | None = None,
) -> dict[str, Any] | None:
    """Run and score ``records`` (the first ``limit``), resuming from the logs in ``out``; returns the summary
    (None on a process that is not the main one of a sharded run). ``blank_baseline``: each record is asked a
    second time with its images blanked, and scored as the ``blanked image`` baseline."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    scoped = list(records[:limit] if limit is not None else records)
    passes = [(SAMPLES_STEM, False)] + ([(BLANK, True)] if blank_baseline else [])
    for stem, blank in passes:
        done = done_ids(out, stem)
        todo = [r for r in shard.take(scoped) if r.id not in done]
        if done:
            logger.info("%s: resuming, %d records already scored, %d to go", stem, len(done), len(todo))
        desc = f"eval {benchmark} {'blanked' if blank else ''}".strip()
        append_rows(
            shard.log(out, stem),
            todo,
            lambda r, blank=blank: run_one(assistant, r, max_new_tokens=max_new_tokens, blank=blank),
            lambda items, desc=desc: tqdm(items, desc=desc, unit="sample", disable=not shard.is_main),
        )
    shard.wait()  # every shard's rows are in its log before the main process merges them
    if not shard.is_main:
        return None
    rows = merged_rows(out, SAMPLES_STEM, scoped)
    model_baselines = {BLANK_BASELINE: merged_rows(out, BLANK, scoped)} if blank_baseline else {}
    extra = {"skipped": dict(skipped)} if skipped else {}
    return write_outputs(
        out, rows, scoped, benchmark=benchmark, model=model, model_baselines=model_baselines, **extra
    )


def score_baselines(records: Sequence[Record]) -> tuple[dict[str, dict], dict[str, list[dict]]]:
    """Each baseline's summary (task -> metric -> value) and its per-sample rows, scored as the model is."""
    from eval.baselines import baseline_answers

    summaries, all_rows = {}, {}
    by_id = {r.id: r for r in records}
    for name, answers in baseline_answers(records).items():
        rows = []
        for rid, answer in answers.items():
            try:
                scores = score_answer(by_id[rid], answer)
            except (ValueError, FileNotFoundError):
                continue
            rows.append({"id": rid, "task": by_id[rid].task, "refs": by_id[rid].texts, **scores})
        summaries[name] = summarise(rows)
        all_rows[name] = rows
    return summaries, all_rows


def write_outputs(
    out: Path,
    rows: list[dict[str, Any]],
    records: Sequence[Record],
    *,
    benchmark: str,
    model: str,
    model_baselines: dict[str, list[dict[str, Any]]] | None = None,
    **extra,
) -> dict[str, Any]:
    """summary.json (with the baselines), report.md and the plots, from every scored row. ``model_baselines``:
    rows of baselines the model itself answered (the blanked image), summarised beside the trivial ones."""
    from eval.plots import write_plots
    from eval.report import render_report

    baselines, baseline_rows = score_baselines(records)
    for name, answered in (model_baselines or {}).items():
        baselines[name], baseline_rows[name] = summarise(answered), answered
    summary = {
        "benchmark": benchmark,
        "model": model,
        "samples": len(rows),
        "tasks": summarise(rows),
        "baselines": baselines,
        **extra,
    }
    plots = write_plots(out, rows, baseline_rows)
    write_text_atomic(out / SUMMARY, json.dumps(summary, indent=1) + "\n")
    write_text_atomic(out / REPORT, render_report(summary, rows, plots=plots))
    return summary


def run_one(
    assistant: Assistant, record: Record, *, max_new_tokens: int = 128, blank: bool = False
) -> dict[str, Any]:
    """Ask one record in a fresh session and score it (``blank``: on its images blanked, ``blanked_image``). A
    record the assistant refuses (a missing or unreadable image) is scored as no answer and keeps its one-line
    error, so one bad file does not stop a benchmark; so is an answer that cannot be parsed."""
    start = time.perf_counter()
    error = None
    try:
        images = [blanked_image(p) for p in record.images] if blank else record.images
        answer = assistant.session().ask(record.question, images=images, max_new_tokens=max_new_tokens)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:  # RasterError is a ValueError
        error = " ".join(str(exc).split()) or type(exc).__name__
        logger.warning("%s: %s", record.id, error)
        answer = Answer(text="")
    try:
        scores = score_answer(record, answer)
    except (
        ValueError,
        FileNotFoundError,
    ) as exc:  # the target grid is unknown (its image is missing): the row is left unscored
        error = error or " ".join(str(exc).split())
        scores = {}
    return {
        "id": record.id,
        "task": record.task,
        "question": record.question,
        "answer": answer.text,
        "raw_text": answer.raw_text,
        "refs": record.texts,
        "elements": _elements(answer),
        **scores,
        "warnings": list(answer.warnings),
        "error": error,
        "seconds": round(time.perf_counter() - start, 4),
    }
