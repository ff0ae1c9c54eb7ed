"""PNG plots of a run, per task with per-sample IoU: an IoU histogram and the success-vs-threshold curve
(share of samples with IoU above t, for t in [0, 1]), the baselines drawn on the same axes.

Written by ``eval.run.write_outputs`` into ``out/plots/``; returns the written paths relative to ``out``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

PLOTTED_TASKS = ("grounding", "obb", "refseg", "change_mask")


def _ious(rows: Sequence[dict[str, Any]]) -> dict[str, list[float]]:
    by_task: dict[str, list[float]] = defaultdict(list)
    for row in rows:
        if row.get("task") in PLOTTED_TASKS and "iou" in row:
            by_task[row["task"]].append(float(row["iou"]))
    return by_task


def success_curve(ious: Sequence[float], thresholds: np.ndarray) -> np.ndarray:
    """Share of samples with IoU strictly above each threshold (the grounding Acc@t convention)."""
    values = np.asarray(ious, dtype=float)
    return (values[None, :] > thresholds[:, None]).mean(1)


def write_plots(
    out: Path, rows: Sequence[dict[str, Any]], baseline_rows: dict[str, Sequence[dict[str, Any]]]
) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a server
    import matplotlib.pyplot as plt

    model = _ious(rows)
    baselines = {name: _ious(r) for name, r in baseline_rows.items()}
    if not model:
        return []
    folder = out / "plots"
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    thresholds = np.linspace(0, 1, 101)
    for task, ious in sorted(model.items()):
        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.hist(ious, bins=np.linspace(0, 1, 21), color="tab:blue", edgecolor="white")
        ax.set(xlabel="IoU", ylabel="samples", title=f"{task}: IoU of {len(ious)} samples")
        fig.tight_layout()
        fig.savefig(folder / f"{task}_iou_hist.png", dpi=100)
        plt.close(fig)
        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.plot(thresholds, success_curve(ious, thresholds), label="model", lw=2)
        for name, by_task in baselines.items():
            if by_task.get(task):
                ax.plot(thresholds, success_curve(by_task[task], thresholds), "--", label=name)
        ax.set(xlabel="IoU threshold t", ylabel="share with IoU > t", ylim=(0, 1.02), title=task)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(folder / f"{task}_success.png", dpi=100)
        plt.close(fig)
        written += [f"plots/{task}_iou_hist.png", f"plots/{task}_success.png"]
    return written
