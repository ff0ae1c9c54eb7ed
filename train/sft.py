"""Supervised fine-tuning of rsvlm on ``rsvlm gen`` instruction data, with ``accelerate``.

    rsvlm train --recipe default-cpu --data out/ds --out out/run                  # one process (CPU or one GPU)
    python -m train.cli --recipe default-cpu --data out/ds --out out/run          # the same
    accelerate launch --config_file train/accelerate/multi_gpu.yaml --num_processes 8 -m train.cli --recipe lora --data out/ds \
        --out out/run-lora                                                        # DDP on every GPU

The loop: the model (frozen backbones + trainable heads and LoRA) -> AdamW over the parameters that require
grad -> for each optimizer step, ``grad_accum`` micro-batches (``accelerator.accumulate``) -> clip -> step ->
LR schedule (warm-up + cosine). Every ``eval_every`` steps: mean CE, mask loss and mask IoU of the ``[SEG]``
predictions on the validation split. Every ``save_every`` steps: a checkpoint (``train.checkpoint``). A start
with checkpoints in ``out/checkpoints`` resumes from the newest complete one — same weights, optimizer moments,
schedule, RNG and data position — so a killed run continues as if it had not stopped. The end writes a last
checkpoint and ``out/final/``, an rsvlm checkpoint ``Assistant.from_pretrained`` loads.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import math
import os
import random
import resource
import shutil
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from train import checkpoint as ckpt
from train.config import TrainConfig, TrainConfigError
from train.data import BatchBuilder, SFTData, eval_batches, loader
from train.fsdp import full_tensors, sharded_like
from train.mixing import plan_epoch, samples_per_source
from train.zero import adam_moments, load_adam_moments, partition_only_layers, whole_trainable_weights

logger = logging.getLogger(__name__)

METRICS = "metrics.jsonl"


@dataclass
class TrainResult:
    """What a run did: the last optimizer step, where the final model is, and the logged records."""

    step: int
    final_dir: Path | None
    checkpoint: Path | None
    history: list[dict[str, Any]] = field(default_factory=list)
    resumed_from: Path | None = None
    skipped: dict[str, int] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------------- model


def build_model(spec: str | dict[str, Any]):
    """``"default"`` / a mapping of config overrides / a YAML of them -> a fresh model; a checkpoint folder -> that
    checkpoint's model, to continue training it."""
    from rsvlm.configuration_rsvlm import RSVLMConfig
    from rsvlm.modeling_rsvlm import RSVLMForConditionalGeneration

    if isinstance(spec, dict):
        return RSVLMForConditionalGeneration(_config_from_mapping(spec, "model"))
    if spec == "default":
        return RSVLMForConditionalGeneration(RSVLMConfig())
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise TrainConfigError(f"model folder {path} is not an rsvlm checkpoint (no config.json)")
        model = RSVLMForConditionalGeneration.from_pretrained(path)
        return model
    if path.is_file() and path.suffix in (".yaml", ".yml"):
        import yaml

        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise TrainConfigError(f"{path}: expected a mapping of RSVLMConfig fields")
        return RSVLMForConditionalGeneration(_config_from_mapping(loaded, str(path)))
    raise TrainConfigError(
        f"model {spec!r} is not 'default', a checkpoint folder, a YAML file or a mapping of config fields"
    )


def _config_from_mapping(values: dict[str, Any], where: str):
    from rsvlm.configuration_rsvlm import RSVLMConfig

    known = set(RSVLMConfig.__annotations__) - {"model_type"}
    unknown = sorted(set(values) - known)
    if unknown:
        raise TrainConfigError(f"{where}: unknown RSVLMConfig field(s) {', '.join(unknown)}")
    return RSVLMConfig(**values)


def param_groups(model, cfg: TrainConfig) -> tuple[list[dict[str, Any]], list[str]]:
    """AdamW groups over the parameters that require grad: heads vs LoRA (own LR), decay only on matrices.

    Returns the groups and the parameter names in optimizer order (checked again on resume).
    """
    groups: dict[tuple[bool, bool], list[tuple[str, torch.nn.Parameter]]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        is_lora = "lora_" in name
        decay = param.ndim >= 2 and not name.startswith("new_token_")
        groups.setdefault((is_lora, decay), []).append((name, param))
    out, names = [], []
    for (is_lora, decay), members in sorted(groups.items()):
        out.append(
            {
                "params": [p for _, p in members],
                "lr": (cfg.lora_lr or cfg.lr) if is_lora else cfg.lr,
                "weight_decay": cfg.weight_decay if decay else 0.0,
            }
        )
        names.extend(n for n, _ in members)
    if not names:
        raise TrainConfigError("the model has no trainable parameter")
    return out, names


def lr_lambda(total_steps: int, warmup: int, schedule: str, min_ratio: float):
    """Multiplier of the peak LR at optimizer step ``s`` (0-based): linear warm-up, then cosine or constant."""

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / (warmup + 1)
        if schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


# ---------------------------------------------------------------------------------------------------- helpers


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB (Linux reports KiB)."""
    usage = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return usage / (2**20 if sys.platform == "darwin" else 1024)


def _set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _append_metrics(path: Path, record: dict[str, Any]) -> None:
    """One JSON line per record; a line is written by one write() call, so a kill leaves at most a torn last line
    (``read_metrics`` drops it)."""
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def read_metrics(path: Path) -> list[dict[str, Any]]:
    records = []
    if not Path(path).is_file():
        return records
    for line in Path(path).read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def _rewrite_metrics_up_to(path: Path, step: int) -> None:
    """On resume, drop records written after the checkpoint (they will be written again)."""
    from rsvlm.atomic import write_text_atomic

    kept = [r for r in read_metrics(path) if r.get("step", 0) <= step]
    write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in kept))


def _zero_loss(model) -> torch.Tensor:
    """A zero connected to every trainable parameter, the loss of a micro-batch whose rows were all skipped on one
    process (several processes run a stand-in row instead, so that all run the same forwards)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return sum((p.sum() * 0.0 for p in params[1:]), params[0].sum() * 0.0)


def _output_tensors(value: Any) -> Iterator[torch.Tensor]:
    """Every tensor inside a model output (dataclasses, dicts, lists, tuples), depth first."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _output_tensors(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _output_tensors(item)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            yield from _output_tensors(getattr(value, f.name))


def _with_every_output(loss: torch.Tensor, output) -> torch.Tensor:
    """``loss`` plus zero times every other output tensor that needs grad.

    DDP (``find_unused_parameters``) marks as unused only the parameters it cannot reach from the forward's
    *outputs*; the mask decoder's image contexts reach the output (``image_features``) on a batch without ``[SEG]``
    but not the loss, so their gradient hooks never fire and the next step fails ("Expected to have finished
    reduction in the prior iteration"). Adding them at weight zero changes no gradient value.
    """
    extra = [t for t in _output_tensors(dict(output)) if t.requires_grad and t is not loss]
    return loss + sum(t.float().sum() * 0.0 for t in extra) if extra else loss


def _first_that_builds(builder: BatchBuilder, candidates) -> dict[str, Any] | None:
    """The first of these row lists that builds into a batch, or None: a stand-in forward for a process whose own
    batch did not build, while the others run theirs."""
    return next((b for b in (builder.build(rows)[0] for rows in candidates) if b is not None), None)


def _tensor_value(x) -> float | None:
    return None if x is None else float(x.detach().float())


# ---------------------------------------------------------------------------------------------------- eval


@torch.no_grad()
def evaluate(
    model, builder: BatchBuilder, batches: list[list[int]], accelerator, lockstep: bool = False
) -> dict[str, float]:
    """Teacher-forced metrics on fixed batches: token-weighted CE, mask-weighted mask loss, mean [SEG] mask IoU.

    Each process takes every ``num_processes``-th batch; sums are reduced across processes. ``lockstep``: the
    parameters are sharded (FSDP), so every forward is a collective and all processes run as many.
    """
    from rsvlm.losses import mask_iou

    was_training = model.training
    model.eval()
    device = accelerator.device
    sums = torch.zeros(6, dtype=torch.float64)  # ce*tokens, tokens, mask_loss*masks, masks, iou sum, samples
    mine = batches[accelerator.process_index :: accelerator.num_processes]
    # Sharded, each forward gathers parameters from every process, so all run the same number of forwards: a
    # process with one batch fewer repeats its first one, uncounted.
    rounds = -(-len(batches) // accelerator.num_processes)
    padding = rounds - len(mine) if lockstep else 0
    for k, rows in enumerate(
        tqdm(
            mine + (mine or batches)[:1] * padding,
            desc="eval",
            leave=False,
            disable=not accelerator.is_local_main_process,
        )
    ):
        batch, _ = builder.build(rows)
        counted = k < len(mine) and batch is not None
        if batch is None and lockstep:  # the others run a forward, so this process runs one too, uncounted
            batch = _first_that_builds(builder, batches)
        if batch is None:
            continue
        batch = _to_device(batch, device)
        with accelerator.autocast():
            out = model(**batch)
        if not counted:
            continue
        tokens = int((batch["labels"][:, 1:] != -100).sum())
        masks = sum(int(m.shape[0]) for m in batch["seg_masks"])
        sums[0] += float(out.ce_loss) * tokens
        sums[1] += tokens
        if masks:
            sums[2] += float(out.mask_loss) * masks
            sums[3] += masks
            pred = torch.cat([p.float() for p in out.pred_masks])
            target = torch.cat(batch["seg_masks"]).to(pred.device)
            sums[4] += float(mask_iou(pred, target).sum())
        sums[5] += batch["input_ids"].shape[0]
    if accelerator.num_processes > 1:
        sums = accelerator.reduce(sums.to(device), reduction="sum").cpu()
    model.train(was_training)
    return {
        "ce": float(sums[0] / sums[1]) if sums[1] else float("nan"),
        "mask_loss": float(sums[2] / sums[3]) if sums[3] else float("nan"),
        "mask_iou": float(sums[4] / sums[3]) if sums[3] else float("nan"),
        "masks": int(sums[3]),
        "samples": int(sums[5]),
    }


def _to_device(batch: dict[str, Any], device) -> dict[str, Any]:
    out = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor):
            out[key] = value.to(device)
        elif isinstance(value, list):
            out[key] = [v.to(device) for v in value]
        else:
            out[key] = value
    return out


# ---------------------------------------------------------------------------------------------------- train


def _micro_batches(
    builder: BatchBuilder, cfg: TrainConfig, global_batch: int, start: int, accelerator
) -> Iterator[tuple[int, int, dict[str, Any] | None, dict[str, int]]]:
    """``(epoch, index in epoch, this process's batch, skip reasons)`` from global micro-batch ``start`` on, forever.

    Global micro-batch ``m`` is batch ``m % per_epoch`` of epoch ``m // per_epoch``; this process takes its
    ``micro_batch_size`` slice of it.
    """
    per_epoch = len(plan_epoch(builder.data, global_batch, cfg.seed, 0, cfg.mix))
    epoch, offset = divmod(start, per_epoch)
    rank, size = accelerator.process_index, cfg.micro_batch_size
    while True:
        plan = plan_epoch(builder.data, global_batch, cfg.seed, epoch, cfg.mix)
        mine = [rows[rank * size : (rank + 1) * size] for rows in plan[offset:]]
        for k, (batch, skipped) in enumerate(loader(builder, mine, cfg.num_workers, cfg.seed + epoch)):
            yield epoch, offset + k, batch, skipped
        epoch, offset = epoch + 1, 0


def parameter_sharding(distributed_type: str, zero_stage: int | None) -> str | None:
    """The scheme's name when it shards the parameters themselves (ZeRO-3, FSDP), else None (DDP, ZeRO-1/2).

    Under DDP and ZeRO-1/2 every process holds whole parameters, so one process saves the unwrapped model's
    weights; under ZeRO the engine owns the Adam moments, which ``train.zero`` reads and restores whole. Under
    FSDP (2) the trainable tensors and their moments are gathered whole before the main process writes them
    (``train.fsdp``), a resume cuts them back into shards, and evaluation runs in lockstep. Under ZeRO-3 only the
    LLM's layers stay partitioned (``train.zero.partition_only_layers``); the trainable tensors are gathered
    whole for each checkpoint and evaluation runs in lockstep too.
    """
    if distributed_type == "FSDP":
        return "FSDP"
    if distributed_type == "DEEPSPEED" and zero_stage == 3:
        return "DeepSpeed ZeRO-3"
    return None


def _deepspeed_on_cpu() -> bool:
    """A DeepSpeed launch (``accelerate launch --use_deepspeed``) on a machine without CUDA."""
    launched = os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"
    return launched and int(os.environ.get("LOCAL_RANK", -1)) != -1 and not torch.cuda.is_available()


def train(cfg: TrainConfig) -> TrainResult:
    """Run (or resume) the training ``cfg`` describes; returns when ``max_steps`` (or ``stop_after_steps``) is hit."""
    from accelerate import Accelerator, DistributedDataParallelKwargs, InitProcessGroupKwargs

    if not cfg.data:
        raise TrainConfigError("no dataset given: pass --data FOLDER (an `rsvlm gen` output)")
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # With run_every_module every trainable module is in every graph; DDP still allows for one left out.
    handlers = [DistributedDataParallelKwargs(find_unused_parameters=True)]
    if _deepspeed_on_cpu():
        # accelerate names no backend for DeepSpeed without an accelerator, and then counts one process while
        # DeepSpeed's own group (gloo on the CPU) has them all: name gloo, so both count the same processes.
        handlers.append(InitProcessGroupKwargs(backend="gloo"))
    accelerator = Accelerator(
        mixed_precision=cfg.mixed_precision,
        gradient_accumulation_steps=cfg.grad_accum,
        kwargs_handlers=handlers,
    )
    deepspeed_plugin = accelerator.state.deepspeed_plugin
    zero_stage = deepspeed_plugin.zero_stage if deepspeed_plugin else None
    sharding = parameter_sharding(accelerator.distributed_type, zero_stage)
    zero3 = sharding == "DeepSpeed ZeRO-3"
    if accelerator.num_processes > 1 or deepspeed_plugin:
        logger.info("%d processes, %s%s", accelerator.num_processes, accelerator.distributed_type,
                    f" (ZeRO-{zero_stage})" if deepspeed_plugin else "")  # fmt: skip
    fsdp = sharding == "FSDP"
    if fsdp and accelerator.state.fsdp_plugin.fsdp_version != 2:
        raise TrainConfigError("FSDP1 keeps flat parameters this trainer cannot gather: set fsdp_version: 2")
    is_main = accelerator.is_main_process
    with accelerator.main_process_first():  # one process fills the datasets cache, the others read it
        train_data = SFTData(cfg.data, cfg.train_split, cfg.tasks, cfg.datasets_cache)
        eval_data = SFTData(cfg.data, cfg.eval_split, cfg.tasks, cfg.datasets_cache)
    if not len(train_data):
        raise TrainConfigError(
            f"no usable {cfg.train_split} rows in {', '.join(cfg.data)}"
            + (f" for tasks {', '.join(cfg.tasks)}" if cfg.tasks else "")
        )
    if not len(eval_data):
        logger.warning("no %s rows: training without evaluation", cfg.eval_split)
    out = Path(cfg.out).expanduser()
    checkpoints = out / "checkpoints"
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
    resume_from = ckpt.latest_checkpoint(checkpoints)

    _set_seed(cfg.seed)
    if zero3:
        from transformers.integrations import unset_hf_deepspeed_config

        # accelerate registers the ZeRO-3 config with transformers, whose from_pretrained would then load the LLM
        # already partitioned under the model's own build; build it whole, and let prepare() partition it.
        unset_hf_deepspeed_config()
        model = build_model(cfg.model)
        deepspeed_plugin.set_deepspeed_weakref()
    else:
        model = build_model(cfg.model)
    model.train()
    # A module the batch does not need gets a zero gradient rather than none, under every launch: DeepSpeed needs
    # the same gradients from every process, and Adam then takes the same steps on one process, DDP, ZeRO, FSDP.
    model.run_every_module = True
    cache = None
    if cfg.cache_vision_features:
        from train.feature_cache import install_feature_cache

        cache = install_feature_cache(model, cfg.feature_cache_mb)
    processor = model.get_processor()

    builder = BatchBuilder(train_data, processor, cfg.max_length)
    eval_builder = BatchBuilder(eval_data, processor, cfg.max_length)
    eval_plan = eval_batches(len(eval_data), cfg.micro_batch_size, cfg.eval_batches) if len(eval_data) else []

    global_batch = cfg.micro_batch_size * accelerator.num_processes
    per_epoch = len(plan_epoch(train_data, global_batch, cfg.seed, 0, cfg.mix))
    if cfg.mix is not None:
        planned = samples_per_source(train_data, global_batch, cfg.seed, per_epoch, cfg.mix)
        logger.info("mixing %s: samples per epoch %s", ", ".join(
            f"{name} ({rows} rows, weight {w:g})" for name, rows, w in
            zip(train_data.source_names, np.bincount(train_data.sources, minlength=len(cfg.mix)), cfg.mix)),
            planned)  # fmt: skip
    total_steps = cfg.max_steps or max(1, math.ceil(cfg.epochs * per_epoch / cfg.grad_accum))

    groups, names = param_groups(model, cfg)
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(total_steps, cfg.warmup_steps, cfg.schedule, cfg.min_lr_ratio)
    )
    deepspeed = accelerator.state.deepspeed_plugin is not None
    # The groups' layout (indices into ``names``) before DeepSpeed flattens them, for its checkpoints.
    groups_by_index = optimizer.state_dict()["param_groups"] if deepspeed else None
    if deepspeed:  # no DataLoader goes through prepare(), so DeepSpeed is told the batch sizes here
        ds_config = accelerator.state.deepspeed_plugin.deepspeed_config
        ds_config["train_micro_batch_size_per_gpu"] = cfg.micro_batch_size
        ds_config["gradient_accumulation_steps"] = cfg.grad_accum
        ds_config["train_batch_size"] = cfg.micro_batch_size * cfg.grad_accum * accelerator.num_processes
        ds_config["gradient_clipping"] = cfg.grad_clip or 0.0  # DeepSpeed clips inside its step
        if zero3:
            # Prefetching follows the order modules ran in the first step; batches make it differ between
            # processes (the image side runs per sample), and prefetches grouped differently would not match.
            ds_config["zero_optimization"]["stage3_prefetch_bucket_size"] = 0
    if resume_from is not None:
        from safetensors.torch import load_file

        from rsvlm.modeling_rsvlm import WEIGHTS_NAME

        # Before prepare: FSDP then shards the resumed weights, DDP and DeepSpeed start every process on them.
        model.load_trainable_state_dict(load_file(resume_from / WEIGHTS_NAME))
    model, optimizer = accelerator.prepare(model, optimizer)
    raw_model = accelerator.unwrap_model(model)
    if deepspeed and not hasattr(model, "coalesce_grad_reduction"):
        import deepspeed as ds

        raise TrainConfigError(f"DeepSpeed {ds.__version__} lacks coalesce_grad_reduction: install >= 0.19.8")
    if zero3:
        layers = partition_only_layers(raw_model, optimizer)
        logger.info("ZeRO-3: %d parameters of the LLM's layers partitioned over %d processes, the rest whole",
                    layers, accelerator.num_processes)  # fmt: skip
    if fsdp:
        from torch.distributed.tensor import DTensor

        shards = sum(isinstance(p, DTensor) for p in raw_model.parameters())
        logger.info("FSDP: %d parameters sharded over %d processes", shards, accelerator.num_processes)

    step, consumed = 0, 0
    metrics_path = out / METRICS
    if resume_from is not None:
        state = json.loads((resume_from / "trainer_state.json").read_text())
        moments = ckpt.optimizer_from_files(resume_from, names)
        if moments["param_groups"] is None:
            logger.warning("%s holds no optimizer moments: they restart at this resume", resume_from)
        elif deepspeed:
            load_adam_moments(raw_model, names, optimizer, moments)
        else:
            optimizer.load_state_dict(sharded_like(optimizer.optimizer, moments) if fsdp else moments)
        scheduler.load_state_dict(json.loads((resume_from / "scheduler.json").read_text()))
        ckpt.set_rng_state(state["rng"])
        step, consumed = int(state["step"]), int(state["micro_batches"])
        if state.get("num_processes", 1) != accelerator.num_processes:
            logger.warning(
                "resuming on %d processes a run checkpointed on %d: the global batch changed, so the data "
                "position is approximate", accelerator.num_processes, state.get("num_processes"),
            )  # fmt: skip
        changed = {k: (v, cfg.to_dict().get(k)) for k, v in state.get("config", {}).items()
                   if cfg.to_dict().get(k) != v and k not in ("stop_after_steps", "out")}  # fmt: skip
        if changed:
            logger.warning("resuming with a changed config: %s", changed)
        if is_main:
            _rewrite_metrics_up_to(metrics_path, step)
        logger.info("resumed from %s (step %d, %d micro-batches consumed)", resume_from, step, consumed)

    stop_at = min(total_steps, cfg.stop_after_steps or total_steps)
    history: list[dict[str, Any]] = []
    skipped: Counter[str] = Counter(train_data.skipped)

    def log(record: dict[str, Any]) -> None:
        history.append(record)
        if is_main:
            _append_metrics(metrics_path, record)

    def run_eval() -> None:
        if not eval_plan:
            return
        result = evaluate(raw_model, eval_builder, eval_plan, accelerator, lockstep=sharding is not None)
        record = {"step": step, "split": cfg.eval_split, **result}
        logger.info("eval step %d: ce %.4f  mask_loss %.4f  mask_iou %.3f (%d samples)", step, result["ce"],
                    result["mask_loss"], result["mask_iou"], result["samples"])  # fmt: skip
        log(record)

    def per_source() -> dict[str, int]:
        """Samples each --data source has given so far (recomputed from the plan, so a resume agrees)."""
        counts = samples_per_source(train_data, global_batch, cfg.seed, consumed, cfg.mix)
        return dict(zip(train_data.source_names, counts, strict=True))

    def whole_weights() -> dict | None:
        """The trainable tensors gathered whole where the parameters are sharded (every process takes part), else
        None: the model's own are whole."""
        if fsdp:
            return full_tensors(raw_model.trainable_state_dict())
        return whole_trainable_weights(raw_model) if zero3 else None

    def gathered_state() -> tuple[dict | None, dict | None]:
        """Whole trainable weights (None: the model's own) and optimizer moments (None: the optimizer's own)."""
        if fsdp:
            return whole_weights(), full_tensors(optimizer.state_dict())
        if deepspeed:  # the moments live in the engine's partitions
            return whole_weights(), adam_moments(raw_model, names, optimizer, groups_by_index)
        return None, None

    def save() -> Path | None:
        path = None
        # Under FSDP and DeepSpeed every process takes part in gathering the shards; only the main one writes.
        weights, moments = gathered_state()
        if is_main:
            trainer_state = {
                "step": step,
                "epoch": consumed // per_epoch,
                "batches_in_epoch": consumed % per_epoch,
                "micro_batches": consumed,
                "rng": ckpt.rng_state(),
                "config": cfg.to_dict(),
                "num_processes": accelerator.num_processes,
                "skipped": dict(skipped),
                "samples_per_source": per_source(),
            }
            optimizer_state = moments if moments is not None else optimizer
            path = ckpt.save_checkpoint(checkpoints, step, raw_model, optimizer_state, scheduler, names,
                                        trainer_state, weights=weights)  # fmt: skip
            ckpt.prune_checkpoints(checkpoints, cfg.keep_last)
            logger.info("checkpoint %s", path)
        accelerator.wait_for_everyone()
        return path

    @functools.cache
    def stand_in_batch() -> dict[str, Any]:
        """The first training row that builds, as a batch of one."""
        batch = _first_that_builds(builder, ([row] for row in range(len(train_data))))
        if batch is None:
            raise TrainConfigError(f"no row of {', '.join(cfg.data)} builds into a batch")
        return batch

    if step == 0 and cfg.eval_at_start:
        run_eval()

    last_saved = resume_from
    stream = _micro_batches(builder, cfg, global_batch, consumed, accelerator)
    bar = tqdm(total=stop_at, initial=step, desc="train", unit="step", disable=not is_main)
    window = {
        "loss": 0.0,
        "ce": 0.0,
        "mask": 0.0,
        "n": 0,
        "masks": 0,
        "samples": 0,
        "t0": time.perf_counter(),
    }
    while step < stop_at:
        # DeepSpeed: the micro-batches' gradients stay local and are reduced once, in parameter order, as the block
        # ends; reduced as backward produces them, they would follow an order that differs between processes
        # whose batches differ (masks, pairs), and ZeRO-2 would add up misaligned buckets.
        with model.coalesce_grad_reduction() if deepspeed else contextlib.nullcontext():
            for _ in range(cfg.grad_accum):
                epoch, _index, batch, reasons = next(stream)
                consumed += 1
                for reason, count in reasons.items():
                    if skipped[reason] == 0:
                        logger.warning("skipping rows: %s (counted; see the run summary)", reason)
                    skipped[reason] += count
                with accelerator.accumulate(model):
                    stand_in = batch is None and accelerator.num_processes > 1
                    if stand_in:
                        # Every process must run the forward the others run (DDP syncs buffers in it, ZeRO-3
                        # and FSDP gather parameters), so a micro-batch whose rows were all skipped runs a
                        # stand-in row, at weight zero.
                        batch = stand_in_batch()
                    if batch is None:
                        loss = _zero_loss(raw_model)
                    else:
                        batch = _to_device(batch, accelerator.device)
                        with accelerator.autocast():
                            output = model(**batch)
                        loss = output.loss * 0.0 if stand_in else output.loss
                        if accelerator.num_processes > 1:
                            loss = _with_every_output(loss, output)
                    if batch is not None and not stand_in:
                        window["ce"] += _tensor_value(output.ce_loss) or 0.0
                        if output.mask_loss is not None and sum(m.shape[0] for m in batch["seg_masks"]):
                            window["mask"] += _tensor_value(output.mask_loss)
                            window["masks"] += 1
                        window["samples"] += batch["input_ids"].shape[0] * accelerator.num_processes
                    window["loss"] += float(loss.detach())
                    window["n"] += 1
                    if deepspeed:
                        model.backward(loss)  # the engine's own: accelerate's would step inside the block
                    else:
                        accelerator.backward(loss)
                    if accelerator.sync_gradients and cfg.grad_clip:
                        accelerator.clip_grad_norm_(
                            [p for p in raw_model.parameters() if p.requires_grad], cfg.grad_clip
                        )
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
        if deepspeed:
            model.set_gradient_accumulation_boundary(True)
            model.step()
        scheduler.step()
        step += 1
        bar.update(1)
        n = max(1, window["n"])
        bar.set_postfix(loss=f"{window['loss'] / n:.3f}", ce=f"{window['ce'] / n:.3f}",
                        mask=f"{window['mask'] / max(1, window['masks']):.3f}")  # fmt: skip
        if step % cfg.log_every == 0 or step == stop_at:
            elapsed = time.perf_counter() - window["t0"]
            steps_in_window = window["n"] / cfg.grad_accum
            record = {
                "step": step,
                "epoch": epoch,
                "loss": window["loss"] / n,
                "ce": window["ce"] / n,
                "mask_loss": window["mask"] / window["masks"] if window["masks"] else None,
                "lr": scheduler.get_last_lr()[0],
                "samples_per_s": window["samples"] / elapsed if elapsed else None,
                "s_per_step": elapsed / steps_in_window if steps_in_window else None,
                "peak_rss_mb": round(peak_rss_mb(), 1),
            }
            if len(cfg.data) > 1:
                record["samples_per_source"] = per_source()
                logger.info("samples per source: %s", record["samples_per_source"])
            if cache is not None:
                record["feature_cache"] = {"hits": cache.hits, "misses": cache.misses}
            logger.info(
                "step %d/%d  loss %.4f  ce %.4f  lr %.2e  %.2f samples/s  %.2f s/step",
                step, total_steps, record["loss"], record["ce"], record["lr"],
                record["samples_per_s"] or 0.0, record["s_per_step"] or 0.0,
            )  # fmt: skip
            log(record)
            window = {"loss": 0.0, "ce": 0.0, "mask": 0.0, "n": 0, "masks": 0, "samples": 0,
                      "t0": time.perf_counter()}  # fmt: skip
        if cfg.eval_every and step % cfg.eval_every == 0 and step < total_steps:
            run_eval()
        if cfg.save_every and step % cfg.save_every == 0 and step < stop_at:
            last_saved = save() or last_saved
    bar.close()

    final_dir = None
    if step >= total_steps:
        run_eval()
    if not (last_saved is not None and last_saved.name == ckpt.step_dir(checkpoints, step).name):
        last_saved = save() or last_saved
    weights = whole_weights() if step >= total_steps else None
    if step >= total_steps and is_main:
        final_dir = out / "final"
        tmp = out / f".final-tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        raw_model.save_pretrained(tmp, state_dict=weights)
        ckpt.replace_dir(tmp, final_dir)
        logger.info("final model in %s", final_dir)
    accelerator.wait_for_everyone()
    if skipped:
        logger.warning("skipped rows in this run: %s", dict(skipped))
    if cache is not None:
        logger.info("vision feature cache: %d hits, %d misses, %.0f MiB", cache.hits, cache.misses,
                    cache.used_bytes / 2**20)  # fmt: skip
    return TrainResult(step, final_dir, last_saved, history, resume_from, dict(skipped))


if __name__ == "__main__":
    # The command line lives in train.cli, above this loop; importing it from here would close an import circle.
    print("rsvlm train: run `python -m train.cli` (or `rsvlm train`); train.sft is the loop", file=sys.stderr)
    sys.exit(2)
