"""Atomic writes: whole files or nothing, and never a stray temporary."""

import os

import pytest

from rsvlm.atomic import atomic_path, write_text_atomic


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "answer.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half of a new fi")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["answer.json"]


def test_a_finished_write_replaces_the_file_with_normal_permissions(tmp_path):
    target = tmp_path / "mask.tif"
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".tif"  # writers that read the suffix see .tif
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new"
    assert target.stat().st_mode & 0o777 == 0o666 & ~_current_umask()
    write_text_atomic(target, "text")
    assert target.read_text() == "text" and len(list(tmp_path.iterdir())) == 1


def _current_umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current
