"""The CUDA-only checks as one short script: tiny random model, LLM in 4-bit (QLoRA step), bf16 autocast.

    python -m eval.gpu_check            # on a CUDA machine: ~1 min including imports; elsewhere it skips

What runs (nothing is downloaded; the tiny backbones are written to a temporary folder by code):

1. QLoRA: the tiny Llama loaded through bitsandbytes in 4-bit (nf4), LoRA on top, one AdamW step on a batch with
   a ``[SEG]`` mask; checks a finite loss, LoRA gradients, that the LoRA weights moved, and a short ``generate``.
2. bf16 autocast: the same tiny model in full precision on the GPU, forward and backward under
   ``torch.autocast("cuda", torch.bfloat16)``; checks finite losses and head gradients.

Prints one line per check with its timings, then ``all CUDA checks passed``; exits 1 if a check fails. On a machine
without CUDA it prints ``no CUDA device: skipped`` and exits 0, so CI can call it anywhere.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

_CONVERSATION = [
    {"role": "user", "content": "<image>\nSegment the bright square."},
    {"role": "assistant", "content": "Here it is: <p>square</p> [SEG]."},
]


def build_tiny_backbones(root: Path) -> tuple[Path, Path]:
    """Write a tiny random Llama (+ byte-level BPE tokenizer) and a tiny DINOv2 to folders; return both paths."""
    from rsvlm.testing import write_tiny_llm, write_tiny_tokenizer, write_tiny_vit

    tokenizer_dir = write_tiny_tokenizer(root / "tiny_tokenizer")
    return write_tiny_llm(root / "tiny_llm", tokenizer_dir), write_tiny_vit(root / "tiny_vit")


def _batch(model):
    image = np.random.default_rng(0).random((3, 64, 64)).astype(np.float32) * 0.3
    image[:, 20:44, 12:36] += 0.6
    mask = np.zeros((64, 64), dtype=np.float32)
    mask[20:44, 12:36] = 1.0
    batch = model.get_processor()([_CONVERSATION], [[image]], masks=[[mask]])
    return batch.to(model.new_token_embed.device), image


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def check_qlora_step(llm_dir: Path, vit_dir: Path) -> dict:
    """Tiny model with the LLM in 4-bit: one QLoRA training step and a short generate; returns figures."""
    from rsvlm.configuration_rsvlm import RSVLMConfig
    from rsvlm.modeling_rsvlm import RSVLMForConditionalGeneration

    start = time.perf_counter()
    config = RSVLMConfig.tiny(str(llm_dir), str(vit_dir), load_in_4bit=True)
    model = RSVLMForConditionalGeneration(config)
    device = model.new_token_embed.device
    load_s = time.perf_counter() - start
    quantised = [n for n, m in model.llm.named_modules() if type(m).__name__ == "Linear4bit"]
    assert quantised, "no bitsandbytes Linear4bit layer in the LLM"
    lora = {n: p for n, p in model.named_parameters() if "lora_" in n}
    before = {n: p.detach().clone() for n, p in lora.items()}

    batch, image = _batch(model)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    step_start = time.perf_counter()
    out = model(**batch)
    out.loss.backward()
    assert torch.isfinite(out.loss), f"QLoRA loss is {out.loss.item()}"
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for n, p in lora.items() if "lora_B" in n)
    optimizer.step()
    _sync(device)
    step_s = time.perf_counter() - step_start
    lora_b = [
        n for n in lora if "lora_B" in n
    ]  # B starts at zero, so only B has a gradient in the first step
    moved = sum(not torch.equal(before[n], lora[n].detach()) for n in lora_b)
    assert lora_b and moved == len(lora_b), f"only {moved}/{len(lora_b)} LoRA B tensors changed in the step"

    model.eval()
    prompt = model.get_processor().prompt_for_generation(_CONVERSATION[:1], [image]).to(device)
    gen_start = time.perf_counter()
    result = model.generate(**prompt, max_new_tokens=8)
    _sync(device)
    return {
        "check": "qlora_4bit_step",
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else str(device),
        "linear4bit_layers": len(quantised),
        "loss": round(out.loss.item(), 4),
        "load_s": round(load_s, 3),
        "step_s": round(step_s, 3),
        "generate_s": round(time.perf_counter() - gen_start, 3),
        "new_tokens": int(result.sequences.shape[1]),
        "peak_mem_mb": round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
        if device.type == "cuda"
        else None,
    }


def check_bf16_autocast(llm_dir: Path, vit_dir: Path, device: str | torch.device = "cuda") -> dict:
    """Tiny model in full precision on ``device``: forward + backward under bf16 autocast; returns figures."""
    from rsvlm.configuration_rsvlm import RSVLMConfig
    from rsvlm.modeling_rsvlm import RSVLMForConditionalGeneration

    device = torch.device(device)
    torch.manual_seed(0)
    model = RSVLMForConditionalGeneration(RSVLMConfig.tiny(str(llm_dir), str(vit_dir))).to(device)
    model.train()
    batch, _ = _batch(model)
    start = time.perf_counter()
    with torch.autocast(device.type, dtype=torch.bfloat16):
        out = model(**batch)
    out.loss.backward()
    _sync(device)
    elapsed = time.perf_counter() - start
    assert torch.isfinite(out.loss), f"bf16 autocast loss is {out.loss.item()}"
    assert out.logits.dtype == torch.float32 and out.pred_masks[0].shape == (1, 64, 64)
    for name in (
        "new_token_embed",
        "projector.mlp.0.weight",
        "seg_projector.2.weight",  # its last layer starts at zero beside the phrase prompt (first step)
        "phrase_projector.0.weight",
        "mask_decoder.output_token",
    ):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name
    return {
        "check": "bf16_autocast_forward_backward",
        "device": str(device),
        "loss": round(out.loss.item(), 4),
        "ce_loss": round(out.ce_loss.item(), 4),
        "mask_loss": round(out.mask_loss.item(), 4),
        "forward_backward_s": round(elapsed, 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA device: skipped")
        return 0
    print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name(0)}")
    failures = 0
    with tempfile.TemporaryDirectory(prefix="rsvlm-gpu-check-") as tmp:
        start = time.perf_counter()
        llm_dir, vit_dir = build_tiny_backbones(Path(tmp))
        print(f"tiny backbones written in {time.perf_counter() - start:.2f} s")
        checks = [("bf16", lambda: check_bf16_autocast(llm_dir, vit_dir, "cuda"))]
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            print("bitsandbytes is not installed: QLoRA check skipped (pip install bitsandbytes)")
        else:
            checks.insert(0, ("qlora", lambda: check_qlora_step(llm_dir, vit_dir)))
        for name, check in checks:
            try:
                print(json.dumps(check()))
            except Exception as err:  # report every check, then fail
                failures += 1
                print(f"FAILED {name}: {type(err).__name__}: {err}")
    print("all CUDA checks passed" if not failures else f"{failures} CUDA check(s) failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
