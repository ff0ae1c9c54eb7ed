"""Run by ``torchrun --nproc_per_node 2`` from ``test_fsdp.py``: the tiny model sharded with FSDP2 (gloo, CPU)
trains two steps, its checkpoint is gathered whole by ``train.fsdp`` and written as the trainer writes it, a new
sharded model resumes from that checkpoint for a third step, and every weight is compared with the same three
steps on the whole, unsharded model. Prints one JSON line per process."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import load_file
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor

from rsvlm.configuration_rsvlm import RSVLMConfig
from rsvlm.modeling_rsvlm import WEIGHTS_NAME, RSVLMForConditionalGeneration
from train import checkpoint as ckpt
from train.fsdp import full_tensors, sharded_like


def build(llm: str, vit: str, shard: bool, resume: Path | None = None):
    torch.manual_seed(0)
    model = RSVLMForConditionalGeneration(
        RSVLMConfig.tiny(text_model=llm, vision_model=vit, lora_dropout=0.0)
    )
    if resume is not None:  # as train.sft does: whole weights in, then sharded
        model.load_trainable_state_dict(load_file(resume / WEIGHTS_NAME))
    if shard:  # as accelerate's TRANSFORMER_BASED_WRAP does: each decoder layer, then the root
        for module in model.modules():
            if type(module).__name__ == "LlamaDecoderLayer":
                fully_shard(module)
        fully_shard(model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    return model, optimizer, names


def step(model, optimizer, k: int) -> None:
    # The same batch on every process, so the averaged gradient is the whole model's gradient.
    ids = torch.randint(0, 50, (2, 12), generator=torch.Generator().manual_seed(100 + k))
    model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=ids).loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def main(llm: str, vit: str, out: Path) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    whole, whole_opt, _ = build(llm, vit, shard=False)
    for k in range(3):
        step(whole, whole_opt, k)

    sharded, opt, names = build(llm, vit, shard=True)
    for k in range(2):
        step(sharded, opt, k)
    shards = sum(isinstance(p, DTensor) for p in sharded.parameters())
    weights = full_tensors(sharded.trainable_state_dict())  # collectives: every process
    moments = full_tensors(opt.state_dict())
    scheduler = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    if rank == 0:
        ckpt.save_checkpoint(out, 2, sharded, moments, scheduler, names, {"step": 2}, weights=weights)
    dist.barrier()
    saved = ckpt.step_dir(out, 2)

    resumed, resumed_opt, resumed_names = build(llm, vit, shard=True, resume=saved)
    resumed_opt.load_state_dict(sharded_like(resumed_opt, ckpt.optimizer_from_files(saved, resumed_names)))
    step(resumed, resumed_opt, 2)
    final = full_tensors(resumed.trainable_state_dict())
    reference = whole.trainable_state_dict()
    written = load_file(saved / WEIGHTS_NAME)
    report = {
        "rank": rank,
        "sharded_parameters": shards,
        "keys_equal": sorted(final) == sorted(reference) == sorted(written),
        "written_whole": all(written[k].shape == reference[k].shape for k in written),
        "max_difference": max(float((final[k].double() - reference[k].double()).abs().max()) for k in final),
        "moved": max(float((written[k].double() - reference[k].double()).abs().max()) for k in written),
    }
    # One process after the other: both write to the same pipe, and lines written at once can interleave.
    for turn in range(dist.get_world_size()):
        if turn == rank:
            print(json.dumps(report), flush=True)
        dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], Path(sys.argv[3]))
