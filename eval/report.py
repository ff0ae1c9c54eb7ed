"""The Markdown report of an evaluation run: one table of metrics per task, then the worst samples.

Written by ``eval.run.evaluate`` next to ``summary.json``; a pure function of the summary and the rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

# Headline metric per task: the worst samples by it are listed so a reader can look at failures first.
_SAMPLE_SCORE = {"grounding": "iou", "obb": "iou", "refseg": "iou", "change_mask": "iou"}
_COUNTS = ("n", "errors", "unscored")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _cell(text: Any, width: int = 80) -> str:
    s = " ".join(str(text).split()).replace("|", "\\|")
    return s if len(s) <= width else s[: width - 1] + "…"


def render_report(
    summary: dict[str, Any], rows: Sequence[dict[str, Any]], worst: int = 5, plots: Sequence[str] = ()
) -> str:
    """Markdown: the run's benchmark / model / sample count, per task a table of the model and its baselines
    side by side, the plots and the worst samples; then missing ids, unreadable lines and errors."""
    lines = [
        f"# Evaluation: {summary.get('benchmark') or 'records'}",
        "",
        f"- model: `{summary.get('model') or '?'}`",
        f"- samples: {summary.get('samples', len(rows))}",
        "",
        "Fractions in [0, 1] (Acc@t, IoU, F1, accuracy); CIDEr-D on its x10 scale; MAE in counts. "
        "Each table puts the model next to trivial answers scored the same way (`eval/baselines.py`). "
        "Conventions and their sources: `eval/README.md`.",
        "",
    ]
    baselines = summary.get("baselines", {})
    for task, scores in summary.get("tasks", {}).items():
        names = [k for k in scores if k not in _COUNTS] + [k for k in _COUNTS if k in scores]
        lines += [f"## {task}", "", "| | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        lines += ["| **model** | " + " | ".join(_fmt(scores[k]) for k in names) + " |"]
        for name, by_task in baselines.items():
            if task in by_task and by_task[task].get("n"):
                row = by_task[task]
                lines.append(f"| {name} | " + " | ".join(_fmt(row.get(k, "")) for k in names) + " |")
        lines.append("")
        for plot in plots:
            if plot.startswith(f"plots/{task}_"):
                lines += [f"![{Path(plot).stem}]({plot})", ""]
        key = _SAMPLE_SCORE.get(task)
        scored = [r for r in rows if r["task"] == task and key and key in r]
        if scored:
            lines += [f"Lowest {key}:", "", "| id | " + key + " | answer |", "|---|---|---|"]
            for r in sorted(scored, key=lambda r: r[key])[:worst]:
                lines.append(f"| {_cell(r['id'], 40)} | {r[key]:.4f} | {_cell(r.get('answer', ''))} |")
            lines.append("")
    for key, title in (
        ("missing_ids", "Records without a prediction (scored as misses)"),
        ("unreadable_lines", "Prediction lines that could not be read"),
        ("unknown_ids", "Predicted ids that are not in the benchmark"),
    ):
        items = summary.get(key) or []
        if items:
            lines += [f"## {title}: {len(items)}", ""] + [f"- `{_cell(i, 80)}`" for i in items[:50]]
            lines += (["- …"] if len(items) > 50 else []) + [""]
    skipped = summary.get("skipped") or {}
    if skipped:
        lines += [f"## Left out while reading the benchmark: {sum(skipped.values())}", ""]
        lines += [f"- {_cell(reason, 80)}: {count}" for reason, count in sorted(skipped.items())] + [""]
    errors = [r for r in rows if r.get("error")]
    if errors:
        lines += ["## Errors", ""] + [
            f"- `{_cell(r['id'], 40)}`: {_cell(r['error'], 160)}" for r in errors[:20]
        ]
        lines.append("")
    return "\n".join(lines)
