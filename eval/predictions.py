"""Score another system's answers (or an oracle) without running a model: ``rsvlm eval --predictions``.

    rsvlm eval --benchmark dior-rsvg --data DIOR_RSVG --split test --predictions theirs.jsonl --out runs/theirs

One JSON object a line, matched to the benchmark's records by ``id``; in the source pixels of the record's
first image:

    {"id": "00001#0", "box": [x1, y1, x2, y2]}                  grounding
    {"id": "00001#0", "obb": [[x, y], [x, y], [x, y], [x, y]]}   oriented box (or [cx, cy, w, h, angle_deg])
    {"id": "17", "obbs": [[[x, y], ...], [[x, y], ...]]}         several oriented boxes (obb_multi)
    {"id": "img1", "mask": "masks/img1.png"}                     refseg / change_mask (non-zero = predicted;
                                                                  a path relative to the predictions file)
    {"id": "q17", "text": "yes"}                                 every text task ("answer" is read too)

A record with no line is a failure (scored as no answer, its id listed in the report); a line that is not JSON
or lacks an ``id``, or a value of the wrong shape, is a miss with its reason kept, never a crash.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from eval.readers import Record
from rsvlm.assistant import Answer
from rsvlm.grounding import Region

logger = logging.getLogger(__name__)


def read_predictions(path: str | Path) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """(id -> prediction, one reason per unreadable line). A later line for the same id replaces an earlier."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is not a predictions file")
    predictions: dict[str, dict[str, Any]] = {}
    problems = []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            problems.append(f"line {number}: not JSON ({error.msg})")
            continue
        if not isinstance(row, dict) or "id" not in row:
            problems.append(f"line {number}: no 'id'")
            continue
        predictions[str(row["id"])] = row
    return predictions, problems


def _numbers(value: Any, count: int) -> list[float] | None:
    if isinstance(value, (list, tuple)) and len(value) == count:
        try:
            return [float(v) for v in value]
        except (TypeError, ValueError):
            return None
    return None


def answer_from_prediction(
    prediction: dict[str, Any], record: Record, folder: Path
) -> tuple[Answer, str | None]:
    """The ``Answer`` a prediction line stands for, and why it was not usable (None when it was)."""
    text = prediction.get("text", prediction.get("answer", ""))
    text = text if isinstance(text, str) else str(text)
    region = Region()
    problem = None
    image_shape = None
    if "box" in prediction:
        box = _numbers(prediction["box"], 4)
        if box is None:
            problem = "box is not four numbers"
        else:
            region.pixel_box = tuple(box)
    if "obb" in prediction:
        obb = prediction["obb"]
        corners = [_numbers(p, 2) for p in obb] if isinstance(obb, list) and len(obb) == 4 else None
        flat = _numbers(obb, 5)
        if corners and all(c is not None for c in corners):
            region.pixel_polygon = [tuple(c) for c in corners]
        elif flat is not None:
            from eval.metrics import obb_polygon

            if flat[2] > 0 and flat[3] > 0:
                region.pixel_polygon = list(obb_polygon(flat).exterior.coords)[:4]
            else:
                problem = "obb has a side that is not positive"
        else:
            problem = "obb is neither four [x, y] corners nor [cx, cy, w, h, angle]"
    if "mask" in prediction:
        mask_path = folder / str(prediction["mask"])
        try:
            pixels = np.asarray(Image.open(mask_path))
            region.mask = (pixels.any(-1) if pixels.ndim == 3 else pixels) > 0
            image_shape = region.mask.shape
        except (OSError, ValueError) as error:
            problem = f"mask {prediction['mask']!r} cannot be read ({type(error).__name__})"
    has_region = region.pixel_box is not None or region.pixel_polygon is not None or region.mask is not None
    regions = [region] if has_region else []
    if "obbs" in prediction:  # several objects (GeoChat-Bench's multi-object referring)
        obbs = prediction["obbs"] if isinstance(prediction["obbs"], list) else None
        for obb in obbs or []:
            corners = [_numbers(p, 2) for p in obb] if isinstance(obb, list) and len(obb) == 4 else None
            if corners and all(c is not None for c in corners):
                regions.append(Region(pixel_polygon=[tuple(c) for c in corners]))
            else:
                problem = "an obb of obbs is not four [x, y] corners"
        if obbs is None:
            problem = "obbs is not a list of oriented boxes"
    return Answer(text=text, regions=regions, image_shape=image_shape), problem


def score_predictions(
    records: list[Record],
    predictions: str | Path,
    out: str | Path,
    *,
    benchmark: str = "",
    skipped: dict[str, int] | None = None,
) -> dict[str, Any]:
    """Score a predictions file against ``records``; writes samples.jsonl, summary.json and report.md."""
    from eval.run import SAMPLES, score_answer, write_outputs
    from rsvlm.atomic import write_text_atomic

    predictions = Path(predictions)
    found, problems = read_predictions(predictions)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows, missing = [], []
    for record in records:
        error = None
        if record.id in found:
            answer, error = answer_from_prediction(found[record.id], record, predictions.parent)
        else:
            missing.append(record.id)
            answer, error = Answer(text=""), "no prediction for this id"
        try:
            scores = score_answer(record, answer)
        except (ValueError, FileNotFoundError) as exc:  # a mask off the image grid: a miss, not a crash
            error = " ".join(str(exc).split())
            try:
                scores = score_answer(record, Answer(text="", image_shape=answer.image_shape))
            except (ValueError, FileNotFoundError):
                scores = {}
        rows.append(
            {
                "id": record.id,
                "task": record.task,
                "question": record.question,
                "answer": found.get(record.id, {}).get("text", ""),
                "refs": record.texts,
                **scores,
                "error": error,
            }
        )
    unknown = sorted(set(found) - {r.id for r in records})
    if missing:
        logger.warning("%d records have no prediction (scored as misses)", len(missing))
    write_text_atomic(out / SAMPLES, "".join(json.dumps(r) + "\n" for r in rows))
    return write_outputs(
        out,
        rows,
        records,
        benchmark=benchmark,
        model=f"predictions:{predictions.name}",
        missing_ids=missing,
        unreadable_lines=problems,
        unknown_ids=unknown,
        **({"skipped": dict(skipped)} if skipped else {}),
    )
