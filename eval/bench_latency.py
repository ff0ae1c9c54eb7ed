"""Latency and memory of the embedded default on this machine's CPU.

    python -m eval.bench_latency                  # uses the real backbone cache (first-time load if empty)
    python -m eval.bench_latency --fresh-cache    # also measures the one-time GGUF conversion in a temp cache
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 python -m eval.bench_latency --dtype float32
                                                  # what an AVX2-only CPU runs, on a newer one

Prints: cold load (first time and cached, each in a new process), warm turn latency for a 256 px and a 512 px
image (time to first token, tokens/s, time to mask), the second turn on the same image (which must not re-encode
it), "Outline the buildings." and "Describe this image." (the decoder's alone), a grounding turn that generates,
and peak RSS. Targets (issue 2): cached cold load <= 10 s, warm 256 px turn with 32 new tokens and one mask <= 3 s,
peak RSS <= 3 GB.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

SAMPLE = Path(__file__).resolve().parents[1] / "rsvlm" / "samples" / "naip_2020_256.tif"

_LOAD_SNIPPET = """
import json, resource, time
t = time.perf_counter()
from rsvlm.assistant import Assistant
Assistant.from_pretrained("default")
print(json.dumps({"load_s": time.perf_counter() - t,
                  "rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}))
"""


def load_in_new_process(cache: str | None) -> dict:
    env = dict(os.environ)
    if cache:
        env["RSVLM_CACHE"] = cache
    out = subprocess.run(
        [sys.executable, "-c", _LOAD_SNIPPET], env=env, capture_output=True, text=True, check=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def timed_turn(session, question: str, images, max_new_tokens: int) -> dict:
    start = time.perf_counter()
    answer = session.ask(question, images=images, max_new_tokens=max_new_tokens)
    wall = time.perf_counter() - start
    return {"wall_s": wall, **answer.timings, "text_chars": len(answer.text)}


def mask_time(assistant, features, repeats: int = 5) -> float:
    """The mask decoder on one [SEG] state: what one mask adds to a turn, whatever the text said."""
    model = assistant.model
    hidden = torch.randn(1, model.hidden_size)
    with assistant.inference():
        model.decode_masks(hidden, [0], features)
        start = time.perf_counter()
        for _ in range(repeats):
            model.decode_masks(hidden, [0], features)
    return (time.perf_counter() - start) / repeats


def decode_rate(assistant, features, new_tokens: int) -> dict:
    """Time to first token and a steady decode of exactly ``new_tokens`` (eos ignored) on the KV cache."""
    from transformers import DynamicCache

    model, processor = assistant.model, assistant.processor
    conversation = [{"role": "user", "content": "<image>\nDescribe this image in detail."}]
    inputs = processor.prompt_for_generation(conversation)
    with assistant.inference():
        start = time.perf_counter()
        cache = DynamicCache(config=model.decoder.config)
        hidden = model._run_decoder(
            model.embed_tokens(inputs["input_ids"], features), inputs["attention_mask"], cache
        )
        token = int(model.compute_logits(hidden[0, -1]).argmax())
        ttft = time.perf_counter() - start
        mask = inputs["attention_mask"]
        loop = time.perf_counter()
        for _ in range(new_tokens - 1):
            mask = torch.cat([mask, mask.new_ones(1, 1)], dim=1)
            hidden = model._run_decoder(model.embed_tokens(torch.tensor([[token]])), mask, cache)
            token = int(model.compute_logits(hidden[0, -1]).argmax())
        decode = time.perf_counter() - loop
    return {
        "prompt_tokens": int(inputs["input_ids"].shape[1]),
        "ttft_s": ttft,
        "tokens_per_s": (new_tokens - 1) / decode,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--fresh-cache", action="store_true", help="measure the first-time conversion too")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument(
        "--dtype",
        default="auto",
        help="the LLM's inference dtype (auto: bf16 where the CPU does it natively); with "
        "ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 --dtype float32 a newer CPU runs the AVX2-only kernels",
    )
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    rows: list[tuple[str, str]] = []

    if args.fresh_cache:
        with tempfile.TemporaryDirectory() as tmp:
            first = load_in_new_process(tmp)
            rows.append(
                (
                    "cold load, first time (converts GGUF)",
                    f"{first['load_s']:.1f} s, RSS {first['rss_gb']:.2f} GB",
                )
            )
    cached = load_in_new_process(
        None
    )  # makes the cache if it is missing, so the next one is the cached figure
    cached = load_in_new_process(None)
    rows.append(("cold load, cached (new process, imports included)", f"{cached['load_s']:.1f} s"))

    from rsvlm import geo
    from rsvlm.assistant import Assistant

    assistant = Assistant.from_pretrained("default", dtype=args.dtype)
    model, processor = assistant.model, assistant.processor
    image = geo.read_image(SAMPLE)
    for size in (256, 512):
        model.config.image_size = size
        processor.image_size = size
        pixels, _ = processor.preprocess_image(image.rgb())
        with assistant.inference():
            model.encode_images(pixels[None], torch.tensor([1]))  # warm-up: oneDNN picks kernels per shape
            start = time.perf_counter()
            features = model.encode_images(pixels[None], torch.tensor([1]))
            encode_s = time.perf_counter() - start
        rate = decode_rate(assistant, features, args.new_tokens)
        mask_s = mask_time(assistant, features)
        turn = encode_s + rate["ttft_s"] + (args.new_tokens - 1) / rate["tokens_per_s"] + mask_s
        rows.append(
            (
                f"warm turn {size} px ({args.new_tokens} new tokens + 1 mask)",
                f"{turn:.2f} s = encode {encode_s:.2f} + prefill/first token {rate['ttft_s']:.2f} "
                f"({rate['prompt_tokens']} prompt tokens) + decode at {rate['tokens_per_s']:.1f} tok/s "
                f"+ mask {mask_s * 1000:.0f} ms",
            )
        )
    model.config.image_size = processor.image_size = 256

    session = assistant.session()
    image_256 = geo.read_image(SAMPLE)
    # Questions the language model answers ("Describe this image." is the decoder's, rsvlm.describe).
    first_turn = timed_turn(session, "What is in this image?", [image_256], args.new_tokens)
    second_turn = timed_turn(session, "What is in the top left?", None, args.new_tokens)
    rows.append(
        (
            "session turn 1 (encodes the image)",
            f"{first_turn['wall_s']:.2f} s, ttft {first_turn['ttft']:.2f} s",
        )
    )
    rows.append(
        (
            "session turn 2, same image",
            f"{second_turn['wall_s']:.2f} s, ttft {second_turn['ttft']:.2f} s, vision tower runs: {session.encode_count}",
        )
    )
    # The turn a user makes, answered for real by the default: warm, that is the model loaded and the kernels
    # chosen, on a new session (so the image is encoded in the turn). A request only to see where a class is goes
    # to the decoder alone (rsvlm.decided.answered_by_decoder): the tower and one decoder pass, no generation.
    for _ in range(2):
        outline = assistant.session().ask("Outline the buildings.", images=[image_256], max_new_tokens=64)
    start = time.perf_counter()
    outline = assistant.session().ask("Outline the buildings.", images=[image_256], max_new_tokens=64)
    wall = time.perf_counter() - start
    rows.append(
        (
            'warm 256 px "Outline the buildings." (real answer)',
            f"{wall:.2f} s, {len(outline.regions)} region(s), answer {outline.raw_text[:60]!r}",
        )
    )
    assistant.session().ask("Describe this image.", images=[image_256])
    start = time.perf_counter()
    described = assistant.session().ask("Describe this image.", images=[image_256])
    rows.append(
        (
            'warm 256 px "Describe this image." (land covers)',
            f"{time.perf_counter() - start:.2f} s, {len(described.regions)} region(s), {described.text[:50]!r}",
        )
    )
    # A grounding turn the language model answers (a rank is more than where a class is), so its speed shows.
    question = "Segment the largest patch of water."
    assistant.session().ask(question, images=[image_256], max_new_tokens=64)
    start = time.perf_counter()
    referred = assistant.session().ask(question, images=[image_256], max_new_tokens=64)
    rows.append(
        (
            f'warm 256 px "{question}" (generates)',
            f"{time.perf_counter() - start:.2f} s, answer {referred.raw_text[:60]!r}",
        )
    )
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    rows.append(("peak RSS (this process)", f"{rss:.2f} GB"))

    width = max(len(k) for k, _ in rows)
    cpu = next(
        (ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?"
    )
    print(
        f"rsvlm latency on {cpu}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
        f"LLM in {assistant.dtype}"
    )
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    return 0 if session.encode_count == 1 else 1


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    sys.exit(main())
