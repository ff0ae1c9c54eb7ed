"""Atomic writes: every file the project writes appears whole or not at all.

The data goes to a temporary file in the destination folder (same filesystem), which is moved onto the target
with ``os.replace`` only when the write finished; on any error it is deleted. A crash mid-write leaves the old
file (or none), never half of a new one.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path``, on failure it is removed.

    The temporary name keeps the target's suffix, so writers that pick a format from it (matplotlib, GDAL,
    numpy) behave as for the real name. The file gets ordinary permissions (mkstemp's are owner-only).
    """
    target = Path(path)
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=f".tmp{target.suffix}")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
