"""Re-check every sample of a generated dataset against its own masks and label rasters.

    report = validate_dataset("out/ds")   # or: rsvlm gen validate out/ds

Checks: each assistant turn parses with ``rsvlm.grounding.parse_answer`` without warnings; the ``[SEG]`` count
equals the number of masks; the user turn has one ``<image>`` per image; each ``<box>`` is the tight box of its
mask (within 1 grid unit) and each ``<obb>`` the mask's minimum-area rectangle; every box in the text has a fact
behind it; each quoted share, area and count is recomputed from the stored rasters (``meta.facts``) and must match
and appear in the text; each mask matches the class it claims; presence, positions, relations, class lists too.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from data_gen.driver import decode_png
from data_gen.tasks import phrasing, regions
from data_gen.tasks.builder import eval_where
from rsvlm.grounding import IMAGE_TOKEN, format_box, format_obb, parse_answer

log = logging.getLogger(__name__)

_BOX = re.compile(r"<box>\[[^\]]*\]</box>|<obb>\[[^\]]*\]</obb>")


@dataclass
class ValidationReport:
    samples: int = 0
    failed_samples: int = 0
    checks: Counter = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    by_kind: Counter = field(default_factory=Counter)

    @property
    def ok(self) -> bool:
        return self.failed_samples == 0 and self.samples > 0

    def summary(self, max_lines: int = 20) -> str:
        lines = [
            f"{self.samples} samples, {sum(self.checks.values())} checks, {self.failed_samples} samples failed",
            "checks: " + ", ".join(f"{k} {v}" for k, v in sorted(self.checks.items())),
        ]
        if self.by_kind:
            lines.append("failures: " + ", ".join(f"{k} {v}" for k, v in sorted(self.by_kind.items())))
        lines += self.failures[:max_lines]
        if len(self.failures) > max_lines:
            lines.append(f"... and {len(self.failures) - max_lines} more")
        return "\n".join(lines)


def _numbers(quote: str) -> list[float]:
    return [float(x) for x in re.findall(r"-?\d+(?:\.\d+)?", quote)]


def _close_box(a: str, b: str) -> bool:
    x, y = _numbers(a), _numbers(b)
    return len(x) == len(y) == 4 and all(abs(p - q) <= 1 for p, q in zip(x, y))


def _close_obb(a: str, b: str) -> bool:
    x, y = _numbers(a), _numbers(b)
    if len(x) != 5 or len(y) != 5 or any(abs(p - q) > 1 for p, q in zip(x[:4], y[:4])):
        return False
    period = 90.0 if abs(y[2] - y[3]) <= 2 else 180.0  # a near-square box has no preferred long side
    d = abs(x[4] - y[4]) % period
    return min(d, period - d) <= 2


def check_row(row: dict[str, Any]) -> list[tuple[str, str]]:
    """(kind, message) for each failed check of one dataset row; an empty list means the row is good."""
    return _check_row(row)[0]


def _check_row(row: dict[str, Any]) -> tuple[list[tuple[str, str]], Counter]:
    fails: list[tuple[str, str]] = []
    checked: Counter = Counter()
    meta = json.loads(row["meta"])
    convs = row["conversations"]
    masks = [decode_png(m) for m in row["masks"] or []]
    ref_masks = [decode_png(m) for m in row["ref_masks"] or []]
    rasters = {n: decode_png(r) for n, r in zip(row["raster_names"] or [], row["rasters"] or [])}
    images = row["images"] or []
    shape = decode_png(images[0]).shape[:2] if images else (0, 0)

    # --- text protocol
    if not convs or convs[0]["role"] != "user":
        fails.append(("protocol", "conversation does not start with a user turn"))
    elif convs[0]["content"].count(IMAGE_TOKEN) != len(images):
        fails.append(
            ("protocol", f"{convs[0]['content'].count(IMAGE_TOKEN)} <image> tokens for {len(images)} images")
        )
    n_seg = 0
    for t, turn in enumerate(convs):
        if turn["role"] != "assistant":
            continue
        parsed = parse_answer(turn["content"])
        checked["parse"] += 1
        for w in parsed.warnings:
            fails.append(("parse", f"turn {t}: {w}"))
        n_seg += parsed.num_seg
        quoted = {
            f["quote"] for f in meta.get("facts", []) if f.get("turn") == t and f["kind"] in ("box", "obb")
        }
        for m in _BOX.finditer(turn["content"]):
            if m.group(0) not in quoted:
                fails.append(("box", f"turn {t}: {m.group(0)} has no recorded mask"))
    checked["seg"] += 1
    if n_seg != len(masks):
        fails.append(("seg", f"{n_seg} [SEG] in the text but {len(masks)} masks"))
    for i, m in enumerate(masks):
        if m.shape != shape or not m.any():
            fails.append(("seg", f"mask {i} is empty or not on the image grid {shape}"))

    # --- facts
    for f in meta.get("facts", []):
        kind = f["kind"]
        checked[kind] += 1
        text = convs[f["turn"]]["content"] if "turn" in f and f["turn"] < len(convs) else ""
        try:
            msg = _check_fact(f, text, masks, ref_masks, rasters, shape, row)
        except (KeyError, IndexError, ValueError) as e:
            msg = f"cannot re-check ({type(e).__name__}: {e})"
        if msg:
            fails.append((kind, msg))
    return fails, checked


def _check_fact(f, text, masks, ref_masks, rasters, shape, row) -> str | None:
    kind = f["kind"]
    if "quote" in f and kind not in ("cells",) and f["quote"] not in text:
        return f"quote {f['quote']!r} not in turn {f.get('turn')}"
    if kind in ("box", "obb"):
        mask = (masks if f["list"] == "masks" else ref_masks)[f["mask"]]
        if kind == "box":
            expect = format_box(regions.grid_box(mask))
            return (
                None
                if _close_box(f["quote"], expect)
                else f"{f['quote']} is not the tight box {expect} of its mask"
            )
        expect = format_obb(regions.grid_obb(mask))
        return (
            None if _close_obb(f["quote"], expect) else f"{f['quote']} is not the min-area rectangle {expect}"
        )
    if kind == "mask":
        m = masks[f["mask"]]
        if int(m.sum()) != f["pixels"]:
            return f"mask {f['mask']} has {int(m.sum())} pixels, recorded {f['pixels']}"
        if f.get("where"):
            ref = eval_where(rasters, f["where"], shape)
            if f.get("exact") and not np.array_equal(m, ref):
                return f"mask {f['mask']} differs from its class mask"
            if not f.get("exact") and (m & ~ref).any():
                return f"mask {f['mask']} spills outside its class"
        return None
    if kind == "share":
        pixels = int(eval_where(rasters, f["where"], shape, f.get("window")).sum())
        total = int(eval_where(rasters, f["total_where"], shape, f.get("window")).sum())
        expect = regions.share_quote(pixels, total)
        return None if expect == f["quote"] else f"share {f['quote']!r} but the rasters give {expect!r}"
    if kind == "area":
        pixels = int(eval_where(rasters, f["where"], shape).sum())
        if f.get("gsd") != row.get("gsd"):
            return f"area computed with gsd {f.get('gsd')} but the tile's gsd is {row.get('gsd')}"
        expect = regions.area_quote(pixels, f.get("gsd"))
        return None if expect == f["quote"] else f"area {f['quote']!r} but the rasters give {expect!r}"
    if kind == "count":
        if f["method"] == "instances":
            n = len(f["instance_pixels"])
        else:
            n = regions.count_components(eval_where(rasters, f["where"], shape), f["min_pixels"])
        if n != f["count"] or regions.count_quote(n) != f["quote"]:
            return f"count {f['quote']!r} but recomputed {n}"
        return None
    if kind == "presence":
        n = int(eval_where(rasters, f["where"], shape).sum())
        ok = n >= f["min_pixels"] if f["answer"] == "yes" else n < f["min_pixels"]
        return None if ok else f"presence answered {f['answer']} but {n} pixels (threshold {f['min_pixels']})"
    if kind == "cells":
        expect = phrasing.join_words(regions.cells_covering(eval_where(rasters, f["where"], shape)))
        return None if expect == f["quote"] else f"position {f['quote']!r} but the rasters give {expect!r}"
    if kind == "relation":
        ca = _largest(eval_where(rasters, f["a"], shape), f["min_pixels"])
        cb = _largest(eval_where(rasters, f["b"], shape), f["min_pixels"])
        if ca is None or cb is None:
            return "relation between objects that are not in the rasters"
        expect = regions.direction(regions.centroid(ca), regions.centroid(cb), f["compass"])
        return None if expect == f["quote"] else f"relation {f['quote']!r} but the rasters give {expect!r}"
    if kind == "order":
        more = int(eval_where(rasters, f["more"], shape).sum())
        less = int(eval_where(rasters, f["less"], shape).sum())
        return None if more > less else f"comparison says {more} > {less} pixels, which is false"
    if kind == "classes":
        lab = rasters[f["raster"]]
        present = sorted(v for v in f["candidates"] if int((lab == v).sum()) >= f["min_pixels"])
        return (
            None
            if present == sorted(f["values"])
            else f"class list {f['values']} but the labels give {present}"
        )
    if kind == "none":
        return "a 'none here' answer carries a [SEG]" if "[SEG]" in text else None
    return f"unknown fact kind {kind!r}"


def _largest(mask: np.ndarray, min_pixels: int) -> np.ndarray | None:
    lab, ids, _ = regions.components(mask, min_pixels)
    return lab == ids[0] if ids else None


def validate_dataset(path: str | Path, show_progress: bool = True) -> ValidationReport:
    """Validate every parquet shard under ``path`` (a dataset folder or its ``data/``)."""
    import pyarrow.parquet as pq

    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"{root}: no such dataset folder")
    files = sorted((root / "data").glob("*.parquet")) or sorted(root.glob("*.parquet"))
    if not files:
        raise ValueError(f"{root}: no parquet shards found (expected {root}/data/*.parquet)")
    report = ValidationReport()
    total = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    with tqdm(total=total, desc="validate", unit="sample", disable=not show_progress) as bar:
        for path_ in files:
            for row in pq.read_table(path_).to_pylist():
                fails, checked = _check_row(row)
                report.samples += 1
                report.checks.update(checked)
                if fails:
                    report.failed_samples += 1
                    for kind, msg in fails:
                        report.by_kind[kind] += 1
                        report.failures.append(f"{row['id']}: [{kind}] {msg}")
                bar.update(1)
    return report
