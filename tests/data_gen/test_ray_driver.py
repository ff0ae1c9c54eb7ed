"""`rsvlm gen --ray`: on a local Ray with 2 workers the dataset is the pool driver's file for file (rows, splits,
stats, plan, card), a resume re-runs only the missing shard, and the bad-input paths are one line with exit 2.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import sys
from pathlib import Path

import pytest

from data_gen.config import GenConfig
from data_gen.driver import build_dataset
from data_gen.ray_driver import RayUnavailableError, build_dataset_on_ray
from rsvlm.cli import main
from tests.data_gen.task_fixtures import fixture_loader, fixture_planner

ROOT = Path(__file__).resolve().parents[2]

try:
    import ray
    import ray.data  # noqa: F401
except ImportError:
    ray = None
needs_ray = pytest.mark.skipif(ray is None, reason="Ray Data is not installed: pip install 'rsvlm[ray]'")


def _cfg(out, **kw) -> GenConfig:
    return GenConfig(out=str(out), tile_size=64, extra={"tiles_per_shard": 3}, num_proc=2, **kw)


def _files(out: Path) -> dict[str, str]:
    """Every file of a dataset folder -> its SHA-256: parquet shards, stats, plan.json, README.md, task_mix.png."""
    return {
        str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(out.rglob("*"))
        if p.is_file()
    }


def _different(a: dict[str, str], b: dict[str, str]) -> list[str]:
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


@needs_ray
@pytest.mark.slow
def test_ray_writes_the_pool_dataset_and_resumes_only_missing_shards(tmp_path, monkeypatch, caplog) -> None:
    # Ray's workers are fresh processes: they import the fixture loader (tests.data_gen) from the checkout.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    pool, on_ray = tmp_path / "pool", tmp_path / "ray"
    build_dataset(_cfg(pool), fixture_planner, fixture_loader)
    with caplog.at_level(logging.INFO, logger="data_gen.ray_driver"):
        build_dataset_on_ray(_cfg(on_ray), "local", fixture_planner, fixture_loader)
    assert not ray.is_initialized()  # the Ray it started is stopped again

    files = _files(pool)
    shards = sorted(k for k in files if k.startswith("data/"))
    assert len(shards) == 7 and {s.split("/")[1].split("-")[0] for s in shards} == {
        "train",
        "validation",
        "test",
    }
    assert {"plan.json", "README.md", "task_mix.png"} <= set(files)
    assert not _different(files, _files(on_ray)), _different(files, _files(on_ray))
    workers = [r.getMessage() for r in caplog.records if "Ray workers" in r.getMessage()]
    assert workers and workers[0].endswith(("by 1 Ray workers", "by 2 Ray workers")), workers

    # Resume the pool's folder on Ray: only the deleted shard is written again, byte for byte.
    missing = pool / shards[2]
    kept = {p: p.stat().st_mtime_ns for p in (pool / "data").glob("*.parquet") if p != missing}
    missing.unlink()
    build_dataset_on_ray(_cfg(pool), "local", fixture_planner, fixture_loader)
    assert all(p.stat().st_mtime_ns == t for p, t in kept.items())
    assert _files(pool) == files


@needs_ray
def test_an_unreachable_address_is_one_line_exit_2(tmp_path, capsys) -> None:
    with socket.socket() as s:  # a port nobody listens on: bound, then released
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    argv = ["gen", "--image", str(tmp_path / "scene.tif"), "--out", str(tmp_path / "o"), "--ray"]
    assert main([*argv, f"127.0.0.1:{port}"]) == 2
    err = capsys.readouterr().err.strip()
    assert f"cannot reach a Ray cluster at 127.0.0.1:{port}" in err and "\n" not in err
    assert main([*argv, "no-port-here"]) == 2
    assert "expected HOST:PORT" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_ray_missing_is_one_line_naming_the_extra(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` sees without the package
    assert main(["gen", "--image", str(tmp_path / "scene.tif"), "--out", str(tmp_path / "o"), "--ray"]) == 2
    err = capsys.readouterr().err.strip()
    assert "pip install 'rsvlm[ray]'" in err and "\n" not in err
    with pytest.raises(RayUnavailableError):
        build_dataset_on_ray(_cfg(tmp_path / "o"), "local", fixture_planner, fixture_loader)
