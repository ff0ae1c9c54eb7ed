"""What this trainer needs under DeepSpeed ZeRO, whose engine owns the Adam moments in flat partitions (and, at
stage 3, the parameters too).

    moments = adam_moments(raw_model, names, optimizer, groups)  # whole exp_avg / exp_avg_sq per parameter
    load_adam_moments(raw_model, names, optimizer, moments)      # a resume puts them back into the partitions
    partition_only_layers(raw_model, optimizer)                  # ZeRO-3: only the LLM's layers stay partitioned
    weights = whole_trainable_weights(raw_model)                 # ZeRO-3: gathered for the checkpoint

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


def _flat_partitions(optimizer) -> list[torch.Tensor]:
    """The fp32 partitions the torch optimizer steps. ZeRO-3 lists them in its groups only during a step."""
    zero = _zero_optimizer(optimizer)
    if hasattr(zero, "fp32_partitioned_groups_flat"):
        return list(zero.fp32_partitioned_groups_flat)
    return [flat for group in _inner_optimizer(optimizer).param_groups for flat in group["params"]]


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
    for flat in _flat_partitions(optimizer):
        values = inner.state[flat]
        for key in MOMENTS:
            values.setdefault(key, torch.zeros_like(flat, memory_format=torch.preserve_format))
        values["step"] = torch.as_tensor(step, dtype=torch.float32).clone()  # torch Adam's own dtype
    _link(optimizer)
    params = _named_trainable(model, names)
    for index, values in sorted(state["state"].items()):
        for key in MOMENTS:
            safe_set_full_optimizer_state(params[int(index)], values[key].float(), key)


def partition_only_layers(model, optimizer) -> int:
    """ZeRO-3: keep every parameter outside the LLM's decoder layers whole on every process, as DeepSpeed keeps
    its small "persistent" parameters, and take those modules out of ZeRO-3's module trace; returns how many
    parameters stay partitioned. Every process must call this, right after ``accelerator.prepare``.

    ZeRO-3 gathers a module's parameters each time the module runs and checks that every process ran the same
    modules in the same order. The LLM's layers run once per forward on every process; the image side, the
    mask decoder and the LLM's embedding run per sample, pair and phrase, which differ between the processes'
    batches. The layers are the bulk of a large LLM, so the memory ZeRO-3 saves is theirs. DeepSpeed picks its
    persistent parameters by size only, so they are marked here by place, added to the list it gathers again
    after every step, and gathered once; the module hooks that would fetch and trace them are removed. Their
    gradients and Adam moments stay partitioned (they reduce per parameter, sorted, not per module)."""
    zero = _zero_optimizer(optimizer)
    offload = zero.parameter_offload
    layers = getattr(model.decoder, "layers", None)
    if layers is None:
        raise ValueError("ZeRO-3: the LLM's decoder has no `layers` to partition")
    inside = {id(p) for p in layers.parameters()}
    whole = [p for p in model.parameters() if id(p) not in inside]
    listed = {id(p) for p in offload.persistent_parameters}
    # The engine's own list (the optimizer holds the same one), which it gathers after every step.
    offload.persistent_parameters.extend(p for p in whole if id(p) not in listed)
    for param in whole:
        param.ds_persist = True
    # Persistent parameters are first gathered where they are first used; with their hooks gone, here.
    whole[0].all_gather(param_list=whole)
    # Only the layers stay traced. The root's own hooks go too (its start-of-forward hook is separate and stays):
    # its backward hook runs once per output tensor, and the outputs differ in number between batches.
    traced = {id(m) for m in layers.modules()}
    untraced = {id(hooks) for m in model.modules() if id(m) not in traced
                for hooks in (m._forward_pre_hooks, m._forward_hooks)}  # fmt: skip
    for handle in offload.forward_hooks + offload.backward_hooks:
        hooks = handle.hooks_dict_ref()
        if hooks is not None and id(hooks) in untraced:
            handle.remove()
    return sum(not p.ds_persist for p in layers.parameters())  # DeepSpeed keeps the smallest ones whole too


def whole_trainable_weights(model) -> dict[str, torch.Tensor]:
    """ZeRO-3: the trainable tensors gathered whole (``model.trainable_state_dict()`` names, CPU copies). Every
    process must call this; the partitioned ones are gathered for the copy and released after it."""
    from deepspeed import zero

    # Only the partitioned ones: leaving the context partitions what it gathered, persistent parameters too.
    params = [p for p in model.parameters() if p.requires_grad and not p.ds_persist]
    with zero.GatheredParameters(params):
        return {name: t.detach().cpu().clone() for name, t in model.trainable_state_dict().items()}
