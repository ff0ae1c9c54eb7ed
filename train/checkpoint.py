"""Training checkpoints without pickle: safetensors for tensors, JSON for everything else, folders made atomically.

    out/checkpoints/step-000050/
        model.safetensors, config.json, tokenizer + processor files   (model.save_pretrained: trainable part only)
        optimizer.safetensors   every tensor of optimizer.state_dict() under "state.<param index>.<name>"
        optimizer.json          the rest: param_groups (lr, betas, ...), the names of the params in order
        scheduler.json          the LR scheduler's state_dict (numbers only)
        trainer_state.json      step, epoch, micro-batches consumed, RNG states as lists, the run's config

A checkpoint is written into ``checkpoints/.tmp-step-NNNNNN-<pid>/`` and renamed to ``step-NNNNNN`` only when every
file is there, so a run killed at any moment leaves either a complete checkpoint or a temporary folder that
``latest_checkpoint`` ignores (as it ignores a ``step-*`` folder lacking any of the files). ``torch.save`` /
``torch.load`` are never used.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from rsvlm.atomic import atomic_path, write_text_atomic

logger = logging.getLogger(__name__)

STEP_PATTERN = re.compile(r"^step-(\d{6,})$")
REQUIRED = ("model.safetensors", "config.json", "optimizer.json", "scheduler.json", "trainer_state.json")


class CheckpointError(ValueError):
    """A checkpoint that does not fit the run resuming from it (other parameters, a damaged file)."""


def step_dir(root: Path, step: int) -> Path:
    return Path(root) / f"step-{step:06d}"


def list_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints under ``root`` as ``(step, path)``, oldest first."""
    found = []
    if not Path(root).is_dir():
        return found
    for path in Path(root).iterdir():
        match = STEP_PATTERN.match(path.name)
        if match and path.is_dir() and all((path / name).is_file() for name in REQUIRED):
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(root: Path) -> Path | None:
    """The newest complete checkpoint whose trainer state reads back, else ``None``."""
    for step, path in reversed(list_checkpoints(root)):
        try:
            state = json.loads((path / "trainer_state.json").read_text())
        except (OSError, json.JSONDecodeError):
            logger.warning("ignoring %s: its trainer_state.json does not read", path)
            continue
        if state.get("step") == step:
            return path
        logger.warning("ignoring %s: its trainer state says step %s", path, state.get("step"))
    return None


def prune_checkpoints(root: Path, keep_last: int) -> None:
    """Delete all but the newest ``keep_last`` complete checkpoints, and temporary folders of dead writers."""
    for _, path in list_checkpoints(root)[:-keep_last]:
        shutil.rmtree(path, ignore_errors=True)
    for path in Path(root).glob(".tmp-step-*"):
        pid = path.name.rsplit("-", 1)[-1]
        if not (pid.isdigit() and int(pid) == os.getpid()):
            shutil.rmtree(path, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------- optimizer


def optimizer_to_files(
    optimizer: torch.optim.Optimizer | dict[str, Any], param_names: list[str], folder: Path
) -> None:
    """``optimizer.state_dict()`` (or a state dict gathered already: FSDP) as ``optimizer.safetensors`` (tensors)
    + ``optimizer.json`` (the rest)."""
    state = optimizer if isinstance(optimizer, dict) else optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, values in state["state"].items():
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{index}.{name}"] = value.detach().to("cpu").contiguous().clone()
            else:
                scalars.setdefault(str(index), {})[name] = value
    with atomic_path(folder / "optimizer.safetensors") as tmp:
        save_file(tensors, str(tmp))
    groups = [
        {k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in state["param_groups"]
    ]
    meta = {"param_groups": groups, "scalars": scalars, "param_names": param_names}
    write_text_atomic(folder / "optimizer.json", json.dumps(meta, indent=1) + "\n")


def optimizer_from_files(folder: Path, param_names: list[str]) -> dict[str, Any]:
    """Rebuild the ``state_dict`` written by :func:`optimizer_to_files`; the parameters must be the same, in order."""
    meta = json.loads((folder / "optimizer.json").read_text())
    if meta["param_names"] != param_names:
        raise CheckpointError(
            f"{folder}: the optimizer was saved for other trainable parameters (first difference: "
            f"{next((a, b) for a, b in zip(meta['param_names'] + [None], param_names + [None]) if a != b)})"
        )
    path = folder / "optimizer.safetensors"
    tensors = load_file(path) if path.is_file() else {}
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        _, index, name = key.split(".", 2)
        state.setdefault(int(index), {})[name] = value
    for index, values in meta["scalars"].items():
        state.setdefault(int(index), {}).update(values)
    if meta["param_groups"] is None:  # written without moments (``save_checkpoint(optimizer=None)``)
        return {"state": {}, "param_groups": None}
    groups = []
    for group in meta["param_groups"]:
        group = dict(group)
        if isinstance(group.get("betas"), list):
            group["betas"] = tuple(group["betas"])
        groups.append(group)
    return {"state": state, "param_groups": groups}


# ---------------------------------------------------------------------------------------------------- RNG


def rng_state() -> dict[str, Any]:
    """Python, numpy and torch (CPU and every CUDA device) RNG states as plain lists."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {
        "python": [py_state[0], list(py_state[1]), py_state[2]],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state().tolist(),
    }
    if torch.cuda.is_available():
        state["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]])


# ---------------------------------------------------------------------------------------------------- whole


def save_checkpoint(
    root: Path,
    step: int,
    model,
    optimizer: torch.optim.Optimizer | None,
    scheduler,
    param_names: list[str],
    trainer_state: dict[str, Any],
    weights: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write ``root/step-NNNNNN`` atomically (temporary folder, then rename) and return it.

    ``optimizer`` is an optimizer or its state dict (gathered whole first under FSDP, ``train.fsdp``, and
    DeepSpeed, ``train.zero``); ``optimizer=None`` writes an empty ``optimizer.safetensors`` and the parameter
    names only (a resume then restarts the moments). ``weights``: the trainable tensors gathered whole (FSDP),
    instead of reading them from ``model``.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = step_dir(root, step)
    tmp = root / f".tmp-step-{step:06d}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        model.save_pretrained(tmp, state_dict=weights)
        if optimizer is not None:
            optimizer_to_files(optimizer, param_names, tmp)
        else:
            save_file({}, str(tmp / "optimizer.safetensors"))
            meta = {"param_groups": None, "scalars": {}, "param_names": param_names}
            write_text_atomic(tmp / "optimizer.json", json.dumps(meta) + "\n")
        write_text_atomic(tmp / "scheduler.json", json.dumps(scheduler.state_dict(), indent=1) + "\n")
        # Written last: its presence (with the step inside) is what marks a checkpoint complete.
        write_text_atomic(tmp / "trainer_state.json", json.dumps({**trainer_state, "step": step}) + "\n")
        if final.exists():  # the same step written again (a re-run of a finished run): replace it whole
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def replace_dir(tmp: Path, target: Path) -> None:
    """Move a finished folder onto ``target``; an old ``target`` is moved aside first and removed after."""
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)
