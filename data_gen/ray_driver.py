"""The data-generation driver on Ray Data: the same shards as the pool driver, run as Ray tasks on many machines.

    rsvlm gen --config gen.yaml --out /mnt/shared/ds --ray                      # a local Ray with --num-proc CPUs
    rsvlm gen --config gen.yaml --out /mnt/shared/ds --ray auto                 # the cluster `ray start` joined here
    rsvlm gen --config gen.yaml --out /mnt/shared/ds --ray 10.0.0.1:6379        # a remote cluster's head node
    build_dataset_on_ray(cfg, address="auto") -> Path(cfg.out)

Data flow: connect → ``driver.shards_to_run`` (plan once, check ``plan.json``, drop shards whose parquet exists)
→ ``ray.data.from_items`` (one block per shard name) → ``map(generate_shard)``: each Ray task runs
``driver.run_shard`` and writes its own ``data/`` and ``stats/`` files → the card, written here from the stats.

So the output is the pool driver's, file for file: the same plan, the same shard files (a shard's rows depend only
on its tiles, the tasks and the seed) and the same card. Resume is the same too: a finished parquet file is never
re-run. Every worker must see ``cfg.out`` and the inputs at the same paths (NFS, a FUSE mount) and have rsvlm
installed (``pip install 'rsvlm[ray]'``); relative paths are made absolute here, against this process's folder.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from data_gen.card import write_card
from data_gen.config import GenConfig
from data_gen.driver import Loader, Planner, Shard, run_shard, shards_to_run, with_default_sources

log = logging.getLogger(__name__)

LOCAL = "local"
"""``--ray`` with no address: start a Ray instance on this machine (and stop it at the end)."""
CONNECT_TIMEOUT_S = 5.0
# Options whose values are paths; a Ray worker may run in another folder (or on another machine).
PATH_OPTIONS = ("image", "image2", "labels", "labels2", "change_mask", "osm", "vectors", "out")


class RayUnavailableError(RuntimeError):
    """Ray is not installed, or the cluster at the given address cannot be reached."""


def build_dataset_on_ray(
    cfg: GenConfig, address: str = LOCAL, planner: Planner | None = None, loader: Loader | None = None
) -> Path:
    """Generate ``cfg``'s dataset under ``cfg.out`` with one Ray task per unfinished shard; returns ``cfg.out``.

    ``address`` is ``"local"`` (a new Ray on this machine with ``cfg.num_proc`` CPUs), ``"auto"``, ``HOST:PORT``
    or ``ray://HOST:PORT``. When Ray is already initialised in this process it is used as it is and left running.
    """
    ray = _import_ray()
    planner, loader = with_default_sources(planner, loader)
    started_here = not ray.is_initialized()
    if started_here:
        _connect(ray, address, cfg.num_proc)
    try:
        shards, todo = shards_to_run(cfg, planner)
        if todo:
            _run_on_ray(ray, _for_workers(cfg), todo, loader, done_before=len(shards) - len(todo))
    finally:
        if started_here:
            ray.shutdown()
    write_card(cfg.out, cfg)  # from the user's cfg, so the card names the inputs as the pool driver's does
    return Path(cfg.out)


def generate_shard(
    row: dict[str, Any], cfg: GenConfig, shards: dict[str, Shard], loader: Loader
) -> dict[str, Any]:
    """One Ray task: write the shard named by ``row`` and return a flat row (Arrow wants one schema; the full
    per-shard stats dicts differ in keys and stay in ``stats/``)."""
    stats = run_shard(cfg, shards[row["shard"]], loader)
    return {
        "shard": stats["shard"],
        "samples": stats["samples"],
        "worker": f"{socket.gethostname()}:{os.getpid()}",
    }


def _run_on_ray(ray, cfg: GenConfig, todo: list[Shard], loader: Loader, done_before: int) -> None:
    ray.data.DataContext.get_current().enable_progress_bars = False  # one bar, ours, counting shards
    items = ray.data.from_items([{"shard": s.name} for s in todo], override_num_blocks=len(todo))
    done = items.map(
        generate_shard,
        fn_kwargs={"cfg": cfg, "shards": {s.name: s for s in todo}, "loader": loader},
        num_cpus=1,
    )
    workers, samples = set(), 0
    with tqdm(total=done_before + len(todo), initial=done_before, desc="shards", unit="shard") as bar:
        for row in done.iter_rows():
            workers.add(row["worker"])
            samples += row["samples"]
            bar.update(1)
    log.info("%d shards (%d samples) written by %d Ray workers", len(todo), samples, len(workers))


def _for_workers(cfg: GenConfig) -> GenConfig:
    """``cfg`` with every path absolute (a taxonomy only when it names a file, not a preset)."""
    paths = {k: os.path.abspath(os.path.expanduser(v)) for k in PATH_OPTIONS if (v := getattr(cfg, k))}
    if Path(cfg.taxonomy).expanduser().is_file():
        paths["taxonomy"] = os.path.abspath(os.path.expanduser(cfg.taxonomy))
    return dataclasses.replace(cfg, **paths)


def _import_ray():
    try:
        import ray
        import ray.data  # noqa: F401  (ray without the [data] extra lacks pyarrow/pandas glue)
    except ImportError as error:
        raise RayUnavailableError(
            f"--ray needs Ray Data, which is not installed ({error}): pip install 'rsvlm[ray]'"
        ) from error
    return ray


def _connect(ray, address: str, num_proc: int) -> None:
    """Start or join Ray; an unreachable address fails in seconds (``ray.init`` alone retries for minutes)."""
    if address not in (LOCAL, "auto"):
        host, port = _host_port(address)
        try:
            socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S).close()
        except OSError as error:
            reason = error.strerror or type(error).__name__
            raise RayUnavailableError(f"cannot reach a Ray cluster at {address}: {reason}") from error
    # A cluster brings its own CPUs; only a Ray started here is sized, like the pool, by --num-proc.
    local = {"num_cpus": max(1, num_proc), "include_dashboard": False} if address == LOCAL else {}
    try:
        ray.init(address=address, logging_level=logging.WARNING, **local)
    except (ConnectionError, RuntimeError, ValueError) as error:
        message = " ".join(str(error).split())[:300]
        raise RayUnavailableError(f"cannot connect to Ray at {address}: {message}") from error


def _host_port(address: str) -> tuple[str, int]:
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not host or not port.isdigit():
        raise RayUnavailableError(
            f"--ray {address}: expected HOST:PORT, ray://HOST:PORT, auto, or no address"
        )
    return host.strip("[]"), int(port)
