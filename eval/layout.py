"""Finding a benchmark's files: images by name, annotation files, and a root that must hold named parts.

A folder that is not the benchmark asked for is one ``BenchmarkError`` line naming what it lacks.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from eval.record import IMAGE_SUFFIXES, BenchmarkError


def find_image(folder: Path, name: str) -> Path:
    """``folder/name``, or the same stem with another image suffix; the path as named when neither exists (the
    runner reports a missing image for its record, so one lost file does not stop a benchmark)."""
    candidate = folder / name
    if candidate.exists():
        return candidate
    for suffix in IMAGE_SUFFIXES:
        if (folder / f"{Path(name).stem}{suffix}").exists():
            return folder / f"{Path(name).stem}{suffix}"
    return candidate


def files(path: Path, pattern: str) -> list[Path]:
    """``path`` itself, or the files in it matching ``pattern`` (sorted)."""
    if not path.exists():
        raise BenchmarkError(f"{path} does not exist")
    found = sorted(path.glob(pattern)) if path.is_dir() else [path]
    if not found:
        raise BenchmarkError(f"no {pattern} files in {path}")
    return found


def load_json(path: Path) -> Any:
    if not path.exists():
        raise BenchmarkError(f"{path} does not exist")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise BenchmarkError(f"{path.name} is not valid JSON: {error}") from error


def load_jsonl(path: Path) -> list[Any]:
    """One JSON value a line (blank lines skipped); a line that is not JSON names its number."""
    if not path.is_file():
        raise BenchmarkError(f"{path} does not exist")
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise BenchmarkError(f"{path.name} line {number} is not JSON: {error.msg}") from error
    return rows


def require(root: Path, parts: list[str], benchmark: str) -> None:
    """Raise one line naming every part (relative to ``root``) that is missing, when any is."""
    missing = [part for part in parts if not (root / part).exists()]
    if missing:
        raise BenchmarkError(f"{root} is not a {benchmark} root: missing {', '.join(missing)}")
