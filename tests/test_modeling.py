"""RSVLMForConditionalGeneration on tiny random backbones: training signal, persistence, errors, generation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from rsvlm.configuration_rsvlm import RSVLMConfig
from rsvlm.losses import mask_iou
from rsvlm.modeling_rsvlm import ImageFeatures, RSVLMForConditionalGeneration, RSVLMInputError
from rsvlm.testing import forcing_logits

pytestmark = pytest.mark.usefixtures("single_thread")

SEG_CONV = [
    {"role": "user", "content": "<image>\nSegment the bright square."},
    {"role": "assistant", "content": "Here it is: <p>square</p> [SEG]."},
]
TEXT_CONV = [
    {"role": "user", "content": "<image>\nDescribe the image."},
    {"role": "assistant", "content": "A river crossing farmland."},
]
PAIR_CONV = [
    {"role": "user", "content": "Image 1 (2009): <image>\nImage 2 (2020): <image>\nWhat changed?"},
    {"role": "assistant", "content": "New <p>buildings</p> [SEG] appeared."},
]


def square_image(seed: int = 0, box=(20, 44, 12, 36)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = (rng.random((3, 64, 64)) * 0.3).astype(np.float32)
    y1, y2, x1, x2 = box
    image[:, y1:y2, x1:x2] += 0.6
    mask = np.zeros((64, 64), dtype=np.float32)
    mask[y1:y2, x1:x2] = 1.0
    return image, mask


def seg_and_text_batch(model):
    processor = model.get_processor()
    image, mask = square_image(0)
    other = np.random.default_rng(1).random((3, 64, 64)).astype(np.float32)
    return processor([SEG_CONV, TEXT_CONV], [[image], [other]], masks=[[mask], []])


def test_forward_backward_trains_only_the_heads(tiny_model):
    batch = seg_and_text_batch(tiny_model)
    out = tiny_model(**batch)
    assert torch.isfinite(out.loss)
    assert out.loss.item() == pytest.approx(out.ce_loss.item() + out.mask_loss.item(), rel=1e-5)
    assert out.logits.shape[:2] == batch["input_ids"].shape
    assert [m.shape for m in out.pred_masks] == [(1, 64, 64), (0, 64, 64)]
    out.loss.backward()
    named = dict(tiny_model.named_parameters())
    # seg_projector's last layer starts at zero beside the phrase prompt, so on this first step only it (not
    # the layer before it) has a gradient: the [SEG] state's route to the decoder is open, and learns.
    for name in ["new_token_embed", "new_token_head", "projector.mlp.0.weight", "seg_projector.2.weight",
                 "phrase_projector.0.weight", "mask_decoder.output_token",
                 "mask_decoder.highres.net.0.weight"]:  # fmt: skip
        assert named[name].grad is not None and named[name].grad.abs().sum() > 0, name
    lora_b = [p for n, p in named.items() if "lora_B" in n]
    assert lora_b and all(p.grad is not None for p in lora_b)
    frozen = [n for n, p in named.items() if n.startswith(("vision.", "llm.")) and "lora_" not in n]
    assert frozen and not any(named[n].requires_grad for n in frozen)


def test_frozen_backbones_stay_in_eval_mode(tiny_config):
    model = RSVLMForConditionalGeneration(RSVLMConfig.tiny(tiny_config.text_model, tiny_config.vision_model,
                                                           lora_dropout=0.1))  # fmt: skip
    model.train()
    assert model.training and model.projector.training
    assert not model.llm.training and not model.vision.backbone.training
    dropouts = [
        m for n, m in model.llm.named_modules() if "lora_dropout" in n and isinstance(m, torch.nn.Dropout)
    ]
    assert dropouts and all(d.training for d in dropouts)
    model.eval()
    assert not any(d.training for d in dropouts)


def test_overfit_two_samples(tiny_llm_dir, tiny_vit_dir, single_thread):
    torch.manual_seed(0)
    config = RSVLMConfig.tiny(
        tiny_llm_dir, tiny_vit_dir, lora_target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]
    )
    model = RSVLMForConditionalGeneration(config)
    batch = seg_and_text_batch(model)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    first_ce = None
    for _ in range(50):
        out = model(**batch)
        first_ce = first_ce if first_ce is not None else out.ce_loss.item()
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        out = model(**batch)
    assert out.ce_loss.item() <= 0.5 * first_ce, (first_ce, out.ce_loss.item())
    iou = mask_iou(out.pred_masks[0], batch["seg_masks"][0]).item()
    assert iou > 0.9, iou


def _perturb_trainable(model, seed: int = 0) -> None:
    """Random values in every trainable tensor, so a round trip cannot pass on initial values (LoRA B is 0)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(0.05 * torch.randn(param.shape, generator=generator))


def test_save_load_round_trip_gives_identical_outputs(tiny_model, tmp_path):
    _perturb_trainable(tiny_model)
    batch = seg_and_text_batch(tiny_model)
    with torch.no_grad():
        before = tiny_model(**batch)
    tiny_model.save_pretrained(tmp_path / "ckpt")
    files = sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    assert "model.safetensors" in files and "config.json" in files and "processor_config.json" in files
    assert not [f for f in files if f.endswith(".tmp")]
    saved = load_file(tmp_path / "ckpt" / "model.safetensors")
    assert set(saved) == set(tiny_model.trainable_state_dict())
    assert not any("embed_tokens" in k or "lm_head" in k or k.startswith("vision.") for k in saved)
    assert any("lora_A" in k for k in saved)

    loaded = RSVLMForConditionalGeneration.from_pretrained(tmp_path / "ckpt")
    with torch.no_grad():
        after = loaded(**batch)
    torch.testing.assert_close(after.logits, before.logits)
    torch.testing.assert_close(after.pred_masks[0], before.pred_masks[0])

    fresh = RSVLMForConditionalGeneration(tiny_model.config)  # same backbones, other heads: must differ
    with torch.no_grad():
        other = fresh(**batch)
    assert not torch.allclose(other.logits, before.logits)


def test_checkpoint_loading_is_strict(tiny_model, tmp_path):
    state = tiny_model.trainable_state_dict()
    state.pop(next(iter(state)))
    with pytest.raises(RSVLMInputError, match="missing"):
        tiny_model.load_trainable_state_dict(state)
    with pytest.raises(RSVLMInputError, match="no model.safetensors"):
        RSVLMForConditionalGeneration.from_pretrained(tmp_path)


def test_image_token_count_mismatch_is_a_clear_error(tiny_model):
    batch = seg_and_text_batch(tiny_model)
    ids = batch["input_ids"].clone()
    first = (ids[0] == tiny_model.config.image_token_id).nonzero()[0, 0]
    ids[0, first] = tiny_model.tokenizer.convert_tokens_to_ids("Here")  # one <image> fewer in sample 0
    with pytest.raises(RSVLMInputError, match="<image> tokens per sample"):
        tiny_model(input_ids=ids, attention_mask=batch["attention_mask"], pixel_values=batch["pixel_values"],
                   num_images_per_sample=batch["num_images_per_sample"])  # fmt: skip
    with pytest.raises(RSVLMInputError, match="no pixel_values"):
        tiny_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    with pytest.raises(RSVLMInputError, match="sums to"):
        tiny_model.encode_images(batch["pixel_values"], [1, 2])


def test_seg_mask_count_mismatch_is_a_clear_error(tiny_model):
    batch = seg_and_text_batch(tiny_model)
    batch["seg_masks"] = [torch.zeros(2, 64, 64), torch.zeros(0, 64, 64)]
    with pytest.raises(RSVLMInputError, match=r"\[SEG\] tokens per sample \[1, 0\]"):
        tiny_model(**batch)


def test_wrong_image_size_is_a_clear_error(tiny_model):
    with pytest.raises(RSVLMInputError, match="expects 64x64"):
        tiny_model.encode_images(torch.rand(1, 3, 32, 32))


def test_two_date_forward_with_change_tokens_and_change_mask(tiny_model):
    processor = tiny_model.get_processor()
    before, _ = square_image(0, box=(10, 20, 10, 20))
    after, _ = square_image(0, box=(10, 20, 10, 20))
    after[:, 30:50, 30:50] = 0.95  # something new
    change = np.zeros((64, 64), dtype=np.float32)
    change[30:50, 30:50] = 1
    batch = processor([PAIR_CONV, TEXT_CONV], [[before, after], [before]], masks=[[change], []])
    n = tiny_model.config.num_image_tokens
    image_counts = (batch["input_ids"] == tiny_model.config.image_token_id).sum(-1).tolist()
    assert image_counts == [3 * n, n]  # image 1, image 2, change tokens
    out = tiny_model(**batch)
    assert out.image_features.tokens.shape[0] == 4 * n
    assert out.image_features.maps[0].shape == out.image_features.maps[1].shape
    assert out.pred_masks[0].shape == (1, 64, 64)
    out.loss.backward()
    assert tiny_model.change_fusion.reduce.weight.grad.abs().sum() > 0
    assert tiny_model.change_embed.grad.abs().sum() > 0
    assert tiny_model.mask_decoder.pair_fuse.weight.grad.abs().sum() > 0


def test_text_only_sample_in_a_batch(tiny_model):
    processor = tiny_model.get_processor()
    image, mask = square_image(0)
    conv = [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Yes."}]
    batch = processor([conv, SEG_CONV], [[], [image]], masks=[[], [mask]])
    assert batch["num_images_per_sample"].tolist() == [0, 1]
    out = tiny_model(**batch)
    assert torch.isfinite(out.loss) and out.pred_masks[1].shape == (1, 64, 64)


@pytest.mark.parametrize("images", ["one", "none"])
def test_run_every_module_gives_every_trainable_parameter_a_gradient_and_keeps_the_loss(tiny_model, images):
    """A text batch without [SEG] or a pair uses neither the mask decoder nor the change fusion (nor, without
    images, the image side); with ``run_every_module`` they still get a gradient (zero), the loss unchanged."""
    processor = tiny_model.get_processor()
    image = np.random.default_rng(1).random((3, 64, 64)).astype(np.float32)
    pictures = [[image]] if images == "one" else [[]]
    conv = TEXT_CONV if images == "one" else [{"role": "user", "content": "Hello"},
                                              {"role": "assistant", "content": "Yes."}]  # fmt: skip
    batch = processor([conv], pictures, masks=[[]])
    trainable = {n: p for n, p in tiny_model.named_parameters() if p.requires_grad}
    plain = tiny_model(**batch).loss
    plain.backward()
    unused = [n for n, p in trainable.items() if p.grad is None]
    assert {n.split(".")[0] for n in unused} >= {"mask_decoder", "change_fusion"}
    tiny_model.zero_grad(set_to_none=True)
    tiny_model.run_every_module = True
    every = tiny_model(**batch).loss
    every.backward()
    assert every.item() == plain.item()
    assert [n for n, p in trainable.items() if p.grad is None] == []
    assert all(float(trainable[n].grad.abs().max()) == 0.0 for n in unused)


def test_image_features_reuse_matches_pixels(tiny_model):
    _perturb_trainable(tiny_model)
    batch = seg_and_text_batch(tiny_model)
    with torch.no_grad():
        direct = tiny_model(**batch)
        features = tiny_model.encode_images(batch["pixel_values"], batch["num_images_per_sample"])
        assert isinstance(features, ImageFeatures)
        cached = tiny_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                            image_features=features, labels=batch["labels"], seg_masks=batch["seg_masks"])  # fmt: skip
    torch.testing.assert_close(cached.logits, direct.logits)
    torch.testing.assert_close(cached.pred_masks[0], direct.pred_masks[0])
    torch.testing.assert_close(cached.loss, direct.loss)


def _greedy_without_cache(model, input_ids, features, max_new_tokens):
    ids = input_ids.clone()
    generated = []
    stops = model.stop_token_ids()
    for _ in range(max_new_tokens):
        logits = model(input_ids=ids, image_features=features).logits[0, -1].clone()
        logits[model.config.image_token_id] = float("-inf")
        token = int(logits.argmax())
        generated.append(token)
        if token in stops:
            break
        ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
    return generated


def test_generate_with_kv_cache_equals_greedy_without_cache(tiny_model):
    _perturb_trainable(tiny_model, seed=3)
    tiny_model.eval()
    processor = tiny_model.get_processor()
    image, _ = square_image(0)
    prompt = processor.prompt_for_generation(SEG_CONV[:1], [image])
    with torch.no_grad():
        features = tiny_model.encode_images(prompt["pixel_values"], prompt["num_images_per_sample"])
        expected = _greedy_without_cache(tiny_model, prompt["input_ids"], features, 12)
    result = tiny_model.generate(**prompt, max_new_tokens=12)
    assert result.sequences[0].tolist() == expected
    assert set(result.timings) == {"ttft", "tokens_per_s", "mask_s"}
    assert result.timings["ttft"] > 0


def test_generate_returns_one_mask_per_generated_seg(tiny_model, monkeypatch):
    _perturb_trainable(tiny_model, seed=4)
    tiny_model.eval()
    processor = tiny_model.get_processor()
    image, _ = square_image(0)
    prompt = processor.prompt_for_generation(SEG_CONV[:1], [image])
    seg_id = tiny_model.config.seg_token_id
    stop = tiny_model.tokenizer.convert_tokens_to_ids("<|im_end|>")
    word = _word_id(tiny_model)
    scripted = forcing_logits(tiny_model, [seg_id, word, seg_id, seg_id, stop])
    monkeypatch.setattr(tiny_model, "compute_logits", scripted)
    streamed: list[str] = []
    result = tiny_model.generate(**prompt, max_new_tokens=10, streamer=streamed.append)
    monkeypatch.undo()
    tokens = result.sequences[0].tolist()
    assert tokens == [seg_id, word, seg_id, seg_id, stop]
    assert result.masks[0].shape == (3, 64, 64)
    assert "".join(streamed) == processor.decode(tokens) and "".join(streamed).count("[SEG]") == 3

    # the masks are those of the [SEG] hidden states of the full sequence (what training sees)
    full = torch.cat([prompt["input_ids"], result.sequences], dim=1)
    with torch.no_grad():
        out = tiny_model(input_ids=full, pixel_values=prompt["pixel_values"])
    torch.testing.assert_close(out.pred_masks[0], result.masks[0], atol=1e-4, rtol=1e-4)


def test_generate_rejects_batches(tiny_model):
    with pytest.raises(RSVLMInputError, match="one conversation"):
        tiny_model.generate(torch.zeros(2, 3, dtype=torch.long))


def test_geoembed_tower_drives_the_model(tiny_llm_dir, monkeypatch, single_thread):
    geoembed = pytest.importorskip("rsvlm.geoembed")
    from rsvlm import backbones

    original = backbones.load_vision_model
    monkeypatch.setattr(
        backbones,
        "load_vision_model",
        lambda name: geoembed.GeoEmbedResNet.tiny().eval() if name == "geoembed-tiny" else original(name),
    )
    model = RSVLMForConditionalGeneration(RSVLMConfig.tiny(tiny_llm_dir, "geoembed-tiny"))
    batch = seg_and_text_batch(model)
    out = model(**batch)
    assert out.image_features.maps[0].shape[-2:] == (8, 8)
    out.loss.backward()
    assert model.mask_decoder.input_proj[0].weight.grad.abs().sum() > 0


def test_multiband_input_trains_the_band_adapter(tiny_llm_dir, tiny_vit_dir, single_thread):
    model = RSVLMForConditionalGeneration(RSVLMConfig.tiny(tiny_llm_dir, tiny_vit_dir, in_channels=4))
    processor = model.get_processor()
    image = np.random.default_rng(0).random((4, 64, 64)).astype(np.float32)
    batch = processor([TEXT_CONV], [[image]])
    assert batch["pixel_values"].shape == (1, 4, 64, 64)
    out = model(**batch)
    out.loss.backward()
    assert model.band_adapter.proj.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="in_channels=4"):
        model.encode_images(torch.rand(1, 3, 64, 64))


def test_sam_mask_decoder_model(tiny_llm_dir, tiny_vit_dir, tiny_sam_dir, tmp_path, single_thread):
    config = RSVLMConfig.tiny(tiny_llm_dir, tiny_vit_dir, mask_decoder=str(tiny_sam_dir))
    model = RSVLMForConditionalGeneration(config)
    _perturb_trainable(model)
    batch = seg_and_text_batch(model)
    out = model(**batch)
    assert out.pred_masks[0].shape == (1, 64, 64) and torch.isfinite(out.mask_loss)
    out.loss.backward()
    keys = [k for k in model.trainable_state_dict() if k.startswith("mask_decoder.")]
    assert keys and all(k.startswith("mask_decoder.sam.mask_decoder.") for k in keys)
    model.save_pretrained(tmp_path)
    loaded = RSVLMForConditionalGeneration.from_pretrained(tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).pred_masks[0], model(**batch).pred_masks[0])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU message")
def test_4bit_on_cpu_is_a_clear_error(tiny_config):
    config = RSVLMConfig.tiny(tiny_config.text_model, tiny_config.vision_model, load_in_4bit=True)
    with pytest.raises(ValueError, match="needs a CUDA GPU"):
        RSVLMForConditionalGeneration(config)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_4bit_qlora_forward_backward_on_cuda(tiny_config):
    pytest.importorskip("bitsandbytes")
    config = RSVLMConfig.tiny(tiny_config.text_model, tiny_config.vision_model, load_in_4bit=True)
    model = RSVLMForConditionalGeneration(config)
    assert model.new_token_embed.device.type == "cuda"
    batch = seg_and_text_batch(model).to(model.new_token_embed.device)
    out = model(**batch)
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert any(p.grad is not None for n, p in model.named_parameters() if "lora_B" in n)


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="perfect square"):
        RSVLMConfig(num_image_tokens=10)
    with pytest.raises(ValueError, match="multiple of 8"):
        RSVLMConfig(image_size=100)
    with pytest.raises(ValueError, match="not a torch dtype"):
        RSVLMConfig(llm_dtype="float33")


def test_bfloat16_llm_with_float32_heads(tiny_llm_dir, tiny_vit_dir, single_thread):
    model = RSVLMForConditionalGeneration(RSVLMConfig.tiny(tiny_llm_dir, tiny_vit_dir, llm_dtype="bfloat16"))
    assert model.causal_lm.get_input_embeddings().weight.dtype == torch.bfloat16
    assert model.projector.mlp[0].weight.dtype == torch.float32
    batch = seg_and_text_batch(model)
    out = model(**batch)
    assert out.logits.dtype == torch.float32 and torch.isfinite(out.loss)
    out.loss.backward()
    assert model.new_token_embed.grad is not None and model.seg_projector[-1].weight.grad is not None
    prompt = model.get_processor().prompt_for_generation(SEG_CONV[:1], [square_image(0)[0]])
    assert model.generate(**prompt, max_new_tokens=3).sequences.shape[1] >= 1


def _scripted_generate(model, monkeypatch, script, **kwargs):
    """Run the real ``generate`` loop with the next token forced from ``script`` at every step."""
    scripted = forcing_logits(model, script)

    processor = model.get_processor()
    prompt = processor.prompt_for_generation(SEG_CONV[:1], [square_image(0)[0]])
    with monkeypatch.context() as patch:
        patch.setattr(model, "compute_logits", scripted)
        return model.generate(**prompt, **kwargs), prompt


def test_generate_honours_max_new_tokens_even_on_a_seg(tiny_model, monkeypatch):
    tiny_model.eval()
    seg_id = tiny_model.config.seg_token_id
    word = _word_id(tiny_model)
    result, _ = _scripted_generate(tiny_model, monkeypatch, [word] * 10, max_new_tokens=3)
    assert result.sequences.shape == (1, 3) and result.masks[0].shape[0] == 0
    result, _ = _scripted_generate(tiny_model, monkeypatch, [word, word, seg_id, word], max_new_tokens=3)
    assert result.sequences[0].tolist() == [word, word, seg_id]
    assert result.masks[0].shape == (1, 64, 64)  # the last [SEG] still gets its mask
    with pytest.raises(RSVLMInputError, match="max_new_tokens"):
        tiny_model.generate(torch.zeros(1, 3, dtype=torch.long), max_new_tokens=0)


def test_generate_stops_at_the_llm_generation_config_eos(tiny_model, monkeypatch):
    # Instruct LLMs (Llama 3, Qwen2.5) list several end ids in generation_config, not all of them the tokenizer's
    word = _word_id(tiny_model)
    other_end = tiny_model.tokenizer.convert_tokens_to_ids("<|endoftext|>")
    monkeypatch.setattr(tiny_model.causal_lm.generation_config, "eos_token_id", [other_end])
    assert other_end in tiny_model.stop_token_ids()
    result, _ = _scripted_generate(tiny_model, monkeypatch, [word, other_end, word, word], max_new_tokens=4)
    assert result.sequences[0].tolist() == [word, other_end]


def test_streamed_text_always_adds_up_to_the_final_text(tiny_model, monkeypatch):
    # A reply cut inside a multi-byte character: the held-back bytes must still reach the streamer.
    half_e_acute = tiny_model.tokenizer.convert_tokens_to_ids("Ã")  # byte 0xC3, first half of "é"
    stop = tiny_model.tokenizer.convert_tokens_to_ids("<|im_end|>")
    word = _word_id(tiny_model)
    processor = tiny_model.get_processor()
    for script, limit in (([word, half_e_acute, stop], 5), ([word, half_e_acute, word], 2)):
        streamed: list[str] = []
        result, _ = _scripted_generate(
            tiny_model, monkeypatch, script, max_new_tokens=limit, streamer=streamed.append
        )
        assert "".join(streamed) == processor.decode(result.sequences[0]), script


def _word_id(model) -> int:
    """An ordinary text token (not special), for scripted generation."""
    ids = model.tokenizer(" river", add_special_tokens=False)["input_ids"]
    assert ids[0] not in model.get_processor().special_ids
    return ids[0]


def test_two_date_generate_masks_come_from_the_change_map(tiny_model, monkeypatch):
    _perturb_trainable(tiny_model, seed=5)
    tiny_model.eval()
    processor = tiny_model.get_processor()
    before, _ = square_image(0)
    after, _ = square_image(1)
    prompt = processor.prompt_for_generation(PAIR_CONV[:1], [before, after])
    assert prompt["num_images_per_sample"].tolist() == [2]
    seg_id = tiny_model.config.seg_token_id
    stop = tiny_model.tokenizer.convert_tokens_to_ids("<|im_end|>")
    monkeypatch.setattr(
        tiny_model, "compute_logits", forcing_logits(tiny_model, [_word_id(tiny_model), seg_id, stop])
    )
    result = tiny_model.generate(**prompt, max_new_tokens=8)
    monkeypatch.undo()
    assert result.masks[0].shape == (1, 64, 64)
    full = torch.cat([prompt["input_ids"], result.sequences], dim=1)
    with torch.no_grad():
        forced = tiny_model(input_ids=full, pixel_values=prompt["pixel_values"], num_images_per_sample=[2])
        swapped = tiny_model(
            input_ids=full, pixel_values=prompt["pixel_values"].flip(0), num_images_per_sample=[2]
        )
    torch.testing.assert_close(forced.pred_masks[0], result.masks[0], atol=1e-4, rtol=1e-4)
    assert not torch.allclose(swapped.pred_masks[0], result.masks[0], atol=1e-3)  # date order matters

    # two images without num_images_per_sample read as two one-image samples: the error says what to pass
    with pytest.raises(RSVLMInputError, match="num_images_per_sample"):
        tiny_model(input_ids=full, pixel_values=prompt["pixel_values"])


def test_from_pretrained_overrides_are_checked(tiny_checkpoint):
    with pytest.raises(RSVLMInputError, match="llm_dtyp"):
        RSVLMForConditionalGeneration.from_pretrained(tiny_checkpoint, llm_dtyp="bfloat16")  # a typo
    with pytest.raises(ValueError, match="multiple of 8"):
        RSVLMForConditionalGeneration.from_pretrained(tiny_checkpoint, image_size=100)


def test_a_reply_caught_in_a_loop_stops_and_keeps_one_saying(tiny_model, monkeypatch):
    word = _word_id(tiny_model)
    other = tiny_model.tokenizer(" lake", add_special_tokens=False)["input_ids"][0]
    seg = tiny_model.config.seg_token_id
    result, _ = _scripted_generate(
        tiny_model, monkeypatch, [other] + [word] * 30, max_new_tokens=30, stop_loops=True
    )
    assert result.sequences[0].tolist() == [other, word]
    # Off by default, and a list of regions or boxes is never a loop.
    result, _ = _scripted_generate(tiny_model, monkeypatch, [word] * 12, max_new_tokens=12)
    assert len(result.sequences[0]) == 12
    assert tiny_model._looping_tail([word, seg] * 8) == 0
    digits = tiny_model.tokenizer("0", add_special_tokens=False)["input_ids"]
    assert tiny_model._looping_tail(digits * 10) == 0
    assert tiny_model._looping_tail([other, word, other, word] * 2) == 6  # a 2-token unit said 4 times


def test_input_and_output_embeddings_are_the_llms(tiny_model):
    """accelerate's FSDP2 preparation shards ``get_input_embeddings()`` on its own; transformers' default returned
    the model's ``embed_tokens`` method."""
    assert tiny_model.get_input_embeddings() is tiny_model.causal_lm.get_input_embeddings()
    assert isinstance(tiny_model.get_input_embeddings(), torch.nn.Embedding)
    assert tiny_model.get_output_embeddings() is tiny_model.causal_lm.get_output_embeddings()
