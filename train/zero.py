"""What checkpoints need under DeepSpeed ZeRO-1/2, whose engine owns the Adam moments in flat partitions.

    moments = adam_moments(raw_model, names, optimizer, groups)  # whole exp_avg / exp_avg_sq per parameter
    load_adam_moments(raw_model, names, optimizer, moments)      # a resume puts them back into the partitions

Checkpoints stay what one process writes without DeepSpeed (whole tensors, safetensors, no pickle), so a run saved
under ZeRO resumes on one process, under DDP, FSDP or ZeRO with another number of processes. The moments go
through DeepSpeed's tensor-fragment API (``safe_get_full_optimizer_state``), which maps a parameter to its slices
of the engine's partitions; every process must call these functions, on the same parameters, in order.
"""

from __future__ import annotations

from typing import Any

import torch

MOMENTS = ("exp_avg", "exp_avg_sq")


def _named_trainable(model, names: list[str]) -> list[torch.nn.Parameter]:
    params = dict(model.named_parameters())
    return [params[name] for name in names]


def _zero_optimizer(optimizer):
    """DeepSpeed's ZeRO optimizer inside accelerate's wrapper (the wrapper's ``optimizer``)."""
    return getattr(optimizer, "optimizer", optimizer)


def _inner_optimizer(optimizer) -> torch.optim.Optimizer:
    """The torch optimizer DeepSpeed steps, over its flat fp32 partitions."""
    return _zero_optimizer(optimizer).optimizer


def _link(optimizer) -> None:
    """ZeRO-1/2 link each parameter to its slices of the optimizer state once, right after the first group's
    first step, so the groups stepped after it (this trainer has up to four) stay unlinked: link them again."""
    zero = _zero_optimizer(optimizer)
    if hasattr(zero, "_lazy_init_hp_params_optimizer_state"):
        zero._hp_optimizer_states_linked = False
        zero._lazy_init_hp_params_optimizer_state()


def adam_moments(model, names: list[str], optimizer, param_groups: list[dict[str, Any]]) -> dict[str, Any]:
    """A torch-style optimizer ``state_dict`` of whole tensors (``train.checkpoint.optimizer_to_files`` writes it):
    per trainable parameter, in ``names`` order, its ``step`` and Adam moments. ``param_groups``: the optimizer's
    own ``state_dict()["param_groups"]`` from before DeepSpeed flattened them (indices into ``names``)."""
    from deepspeed.utils import safe_get_full_optimizer_state

    inner = _inner_optimizer(optimizer)
    step = next((s["step"] for s in inner.state.values() if "step" in s), None)
    if step is None:  # no update yet: no moments
        return {"state": {}, "param_groups": param_groups}
    _link(optimizer)
    state = {}
    for index, param in enumerate(_named_trainable(model, names)):
        values = {key: safe_get_full_optimizer_state(param, key).detach().cpu().clone() for key in MOMENTS}
        state[index] = {**values, "step": torch.as_tensor(step, dtype=torch.float32).detach().cpu().clone()}
    # The hyper-parameters as they are now (the scheduler moves the learning rate), the layout as built.
    groups = [
        {**{k: v for k, v in group.items() if k != "params"}, "params": layout["params"]}
        for group, layout in zip(inner.param_groups, param_groups, strict=True)
    ]
    return {"state": state, "param_groups": groups}


def load_adam_moments(model, names: list[str], optimizer, state: dict[str, Any]) -> None:
    """Put whole moments from a checkpoint (``adam_moments``' layout) into DeepSpeed's partitions, the step counter
    into every partition's state and the groups' learning rates back, so the next update is the one an
    uninterrupted run would make.

    Before its first step a torch Adam has no state; its moments are created here as that step would (zeros),
    then filled."""
    from deepspeed.utils import safe_set_full_optimizer_state

    if not state["state"]:
        return
    inner = _inner_optimizer(optimizer)
    # The groups' hyper-parameters as saved (the learning rate of the step reached): DeepSpeed keeps the groups'
    # dicts and order, with each group's parameters replaced by its flat partition.
    for group, saved in zip(inner.param_groups, state["param_groups"], strict=True):
        group.update({k: tuple(v) if k == "betas" else v for k, v in saved.items() if k != "params"})
    step = next(iter(state["state"].values()))["step"]
    for group in inner.param_groups:
        for flat in group["params"]:
            values = inner.state[flat]
            for key in MOMENTS:
                values.setdefault(key, torch.zeros_like(flat, memory_format=torch.preserve_format))
            values["step"] = torch.as_tensor(step, dtype=torch.float32).clone()  # torch Adam's own dtype
    _link(optimizer)
    params = _named_trainable(model, names)
    for index, values in sorted(state["state"].items()):
        for key in MOMENTS:
            safe_set_full_optimizer_state(params[int(index)], values[key].float(), key)
