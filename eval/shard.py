"""Per-sample logs, one per process: which records this process asks, where it logs them, and the merge.

    accelerate launch --multi_gpu --num_processes 2 -m eval.cli --benchmark dior-rsvg --data DIOR_RSVG --split test --out runs/dior

Under ``accelerate launch`` process k of n asks records k, k + n, k + 2n, ... and appends them to
``samples.shard{k}-of-{n}.jsonl`` (flushed per record, as ``samples.jsonl`` is in one process). Once every process
is done, the main one folds all logs into ``samples.jsonl`` in record order and writes one summary, which is the
single-process summary: the same rows, summed in the same order. A record already in any log (``samples.jsonl`` or
any shard's, whatever the process count was) is not asked again, so a killed shard, or the whole run, resumes.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eval.record import Record
from rsvlm.atomic import write_text_atomic

logger = logging.getLogger(__name__)


def _no_wait() -> None:
    return None


@dataclass(frozen=True)
class Shard:
    """This process's part of a run: ``index`` of ``count``; ``wait`` blocks until every process reaches it."""

    index: int = 0
    count: int = 1
    wait: Callable[[], None] = field(default=_no_wait, compare=False)
    device: str | None = None  # the accelerator this process owns (None: the CPU)

    @property
    def is_main(self) -> bool:
        return self.index == 0

    def take(self, records: Sequence[Record]) -> list[Record]:
        return list(records[self.index :: self.count])

    def log(self, out: Path, stem: str) -> Path:
        return out / (
            f"{stem}.jsonl" if self.count == 1 else f"{stem}.shard{self.index}-of-{self.count}.jsonl"
        )


def from_accelerate() -> Shard:
    """This process's shard under ``accelerate launch`` / torchrun (``WORLD_SIZE`` > 1); one shard otherwise."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Shard()
    import torch
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    # PartialState, unlike Accelerator, does not read ACCELERATE_USE_CPU itself; without it (or a GPU) it would
    # not join the process group, and every process would run every record.
    state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.cuda.is_available())
    if state.num_processes <= 1:
        raise RuntimeError(f"launched as {os.environ['WORLD_SIZE']} processes, but no process group formed")
    device = str(state.device) if state.device.type != "cpu" else None
    return Shard(state.process_index, state.num_processes, state.wait_for_everyone, device)


def read_log(path: Path) -> list[dict[str, Any]]:
    """The rows already scored; a torn last line (a run killed mid-write) is dropped with a warning."""
    rows = []
    if not path.exists():
        return rows
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            logger.warning("%s line %d is incomplete; that record will be run again", path.name, number)
    return rows


def logs(out: Path, stem: str) -> list[Path]:
    """``stem.jsonl`` and every shard log of ``stem``, whatever process count wrote them."""
    return [out / f"{stem}.jsonl", *sorted(out.glob(f"{stem}.shard*-of-*.jsonl"))]


def done_ids(out: Path, stem: str) -> set[str]:
    return {row["id"] for path in logs(out, stem) for row in read_log(path)}


def append_rows(
    path: Path, records: Sequence[Record], run: Callable[[Record], dict[str, Any]], progress: Callable = iter
) -> None:
    """Run each record and append its row to ``path``, flushed per row (a torn last line gets its own line
    first, so the next row is never glued to it)."""
    if path.exists() and path.stat().st_size and not path.read_text().endswith("\n"):
        with path.open("a") as f:
            f.write("\n")
    with path.open("a") as f:
        for record in progress(records):
            f.write(json.dumps(run(record)) + "\n")
            f.flush()


def merged_rows(out: Path, stem: str, records: Sequence[Record]) -> list[dict[str, Any]]:
    """One row per record of ``records`` (in their order) from every log of ``stem``; shard logs are folded
    into ``stem.jsonl`` (rows of records outside ``records``, from a run with a larger scope, are kept after)."""
    paths = logs(out, stem)
    by_id: dict[str, dict[str, Any]] = {}
    for path in paths:
        for row in read_log(path):
            by_id.setdefault(row["id"], row)
    scope = [r.id for r in records]
    rows = [by_id[rid] for rid in scope if rid in by_id]
    if len(paths) > 1:
        in_scope = set(scope)
        rest = [row for rid, row in by_id.items() if rid not in in_scope]
        write_text_atomic(paths[0], "".join(json.dumps(row) + "\n" for row in _chain(rows, rest)))
        for path in paths[1:]:
            path.unlink()
    return rows


def _chain(*parts: list) -> Iterator:
    for part in parts:
        yield from part
