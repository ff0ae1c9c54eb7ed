"""The real embedded default (SmolLM2-135M-Instruct + GeoEmbed V3, untrained adapters) on a real NAIP tile.

Slow: loads the packaged backbones (the first run converts SmolLM2's GGUF into the cache).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch

from rsvlm.testing import forcing_logits

pytestmark = pytest.mark.slow

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def default_model():
    from rsvlm.backbones import BackboneError
    from rsvlm.configuration_rsvlm import RSVLMConfig
    from rsvlm.modeling_rsvlm import RSVLMForConditionalGeneration

    torch.manual_seed(0)
    try:
        model = RSVLMForConditionalGeneration(RSVLMConfig())
    except (BackboneError, NotImplementedError) as err:  # packaged weights not installed here
        pytest.skip(f"packaged backbones unavailable: {err}")
    return model.eval()


def _naip(name: str) -> np.ndarray:
    rasterio = pytest.importorskip("rasterio")
    with rasterio.open(DATA / name) as src:
        return src.read([1, 2, 3]).astype(np.float32) / 255.0  # [3, H, W] in [0, 1]


def test_default_model_answers_about_a_naip_tile(default_model):
    model = default_model
    assert model.vision.out_channels == 512 and model.hidden_size == 576
    processor = model.get_processor()
    image = _naip("naip_2020_256.tif")
    conversation = [{"role": "user", "content": "<image>\nDescribe this aerial image."}]
    prompt = processor.prompt_for_generation(conversation, [image])
    assert (prompt["input_ids"] == model.config.image_token_id).sum() == model.config.num_image_tokens
    start = time.perf_counter()
    result = model.generate(**prompt, max_new_tokens=24)
    elapsed = time.perf_counter() - start
    text = processor.decode(result.sequences[0])
    assert text.strip(), "the default model produced no text"
    assert result.timings["ttft"] < elapsed
    print(f"\n[end-to-end] {elapsed:.1f}s, timings={result.timings}, text={text!r}")


def test_default_model_two_dates_forward(default_model):
    model = default_model
    processor = model.get_processor()
    before, after = _naip("naip_2009_256.tif"), _naip("naip_2020_256.tif")
    conversation = [
        {"role": "user", "content": "Image 1 (2009): <image>\nImage 2 (2020): <image>\nWhat changed?"},
        {"role": "assistant", "content": "New <p>buildings</p> [SEG]."},
    ]
    batch = processor([conversation], [[before, after]], masks=[[np.zeros(before.shape[1:], np.float32)]])
    with torch.no_grad():
        out = model(**batch)
    assert torch.isfinite(out.loss)
    assert out.pred_masks[0].shape == (1, 256, 256)


def test_default_model_generate_with_the_real_tokenizer(default_model, monkeypatch):
    """Scripted tokens through the real decoding loop: stop id, [SEG] masks as in a teacher-forced forward."""
    model = default_model
    processor = model.get_processor()
    tokenizer = model.tokenizer
    assert model.stop_token_ids() == {tokenizer.convert_tokens_to_ids("<|im_end|>")}
    reply = tokenizer("<p>roof</p> [SEG] and <p>road</p> [SEG].", add_special_tokens=False)["input_ids"]
    stop = tokenizer.convert_tokens_to_ids("<|im_end|>")
    scripted = forcing_logits(model, [*reply, stop, *reply])

    prompt = processor.prompt_for_generation(
        [{"role": "user", "content": "<image>\nSegment."}], [_naip("naip_2020_256.tif")]
    )
    streamed: list[str] = []
    monkeypatch.setattr(model, "compute_logits", scripted)
    result = model.generate(**prompt, max_new_tokens=64, streamer=streamed.append)
    monkeypatch.undo()
    assert result.sequences[0].tolist() == [*reply, stop]
    text = processor.decode(result.sequences[0])
    assert text == "".join(streamed) == "<p>roof</p> [SEG] and <p>road</p> [SEG]."
    assert result.masks[0].shape == (2, 256, 256)
    full = torch.cat([prompt["input_ids"], result.sequences], dim=1)
    with torch.no_grad():
        forced = model(input_ids=full, pixel_values=prompt["pixel_values"])
    torch.testing.assert_close(forced.pred_masks[0], result.masks[0], atol=1e-3, rtol=1e-3)


def test_default_checkpoint_round_trip_is_small_and_exact(default_model, tmp_path):
    from safetensors.torch import load_file

    from rsvlm.modeling_rsvlm import RSVLMForConditionalGeneration

    model = default_model
    original = {k: v.clone() for k, v in model.trainable_state_dict().items()}
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # every trainable tensor off its initial value (LoRA B starts at 0)
        for param in model.parameters():
            if param.requires_grad:
                param.add_(0.02 * torch.randn(param.shape, generator=generator))
    try:
        model.save_pretrained(tmp_path)
        prompt = model.get_processor().prompt_for_generation(
            [{"role": "user", "content": "<image>\nDescribe."}], [_naip("naip_2020_256.tif")]
        )
        with torch.no_grad():
            before = model(**prompt).logits
    finally:
        model.load_trainable_state_dict(original)
    size = (tmp_path / "model.safetensors").stat().st_size
    saved = load_file(tmp_path / "model.safetensors")
    n_values = sum(t.numel() for t in saved.values())
    print(
        f"\n[checkpoint] model.safetensors {size / 2**20:.1f} MiB, {n_values / 1e6:.2f} M values, {len(saved)} tensors"
    )
    assert size < 20 * 2**20  # the heads and LoRA only: SmolLM2 alone is 540 MB in float32
    assert not any(k.startswith("vision.") or "embed_tokens" in k or "lm_head" in k for k in saved)
    assert not any(k.startswith("llm.") and "lora_" not in k for k in saved)

    loaded = RSVLMForConditionalGeneration.from_pretrained(tmp_path)
    with torch.no_grad():
        after = loaded(**prompt).logits
    torch.testing.assert_close(after, before, atol=0, rtol=0)
    assert loaded.config.to_dict() == model.config.to_dict()
