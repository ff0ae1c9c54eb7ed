"""What checkpoints need under FSDP2, where each process holds a shard (a ``DTensor``) of every parameter.

    weights = full_tensors(raw_model.trainable_state_dict())     # every process, same order: a collective
    moments = full_tensors(optimizer.state_dict())
    optimizer.load_state_dict(sharded_like(optimizer, moments))  # whole moments from a checkpoint -> shards

Checkpoints stay what one process writes without FSDP (whole tensors, safetensors), so a run saved under FSDP
resumes on one process, under DDP, or under FSDP with another number of processes. Only the trainable part is
gathered (heads, LoRA, new-token rows), never the frozen LLM.
"""

from __future__ import annotations

from typing import Any

import torch


def _dtensor():
    from torch.distributed.tensor import DTensor

    return DTensor


def full_tensors(tree: Any) -> Any:
    """``tree`` with every ``DTensor`` shard gathered into the whole tensor (on the CPU).

    ``full_tensor`` is a collective: every process must call this on the same structure in the same order."""
    if isinstance(tree, _dtensor()):
        return tree.full_tensor().cpu()
    if isinstance(tree, dict):
        return {k: full_tensors(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(full_tensors(v) for v in tree)
    return tree


def sharded_like(optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> dict[str, Any]:
    """An optimizer ``state_dict`` of whole tensors, cut into the shards of the optimizer's own parameters, so
    ``load_state_dict`` gets moments placed as the parameters are (a parameter that is not a ``DTensor`` keeps the
    whole tensor)."""
    from torch.distributed.tensor import distribute_tensor

    params = [p for group in optimizer.param_groups for p in group["params"]]
    out = {"state": {}, "param_groups": state["param_groups"]}
    for index, values in state["state"].items():
        param = params[int(index)]
        placed = {}
        for name, value in values.items():
            if (
                isinstance(param, _dtensor())
                and isinstance(value, torch.Tensor)
                and value.shape == param.shape
            ):
                value = distribute_tensor(value.to(param.device), param.device_mesh, param.placements)
            placed[name] = value
        out["state"][index] = placed
    return out
