"""RSVLMProcessor: image resize/pad and the way back, chat formatting, image-token expansion, label masking."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from rsvlm.grounding import IMAGE_TOKEN, SEG_TOKEN
from rsvlm.processing_rsvlm import ImageMeta, ProcessorInputError, RSVLMProcessor

N = 4  # image tokens per image


@pytest.fixture
def processor(tiny_llm_dir) -> RSVLMProcessor:
    from transformers import AutoTokenizer

    return RSVLMProcessor(AutoTokenizer.from_pretrained(tiny_llm_dir), image_size=64, num_image_tokens=N)


def labelled_text(processor, input_ids, labels) -> str:
    return processor.tokenizer.decode(
        [i for i, lab in zip(input_ids.tolist(), labels.tolist()) if lab != -100]
    )


def test_special_tokens_are_single_ids(processor):
    ids = processor.tokenizer("a <image><image> b [SEG].", add_special_tokens=False)["input_ids"]
    assert ids.count(processor.image_token_id) == 2 and ids.count(processor.seg_token_id) == 1
    assert processor.image_token_id != processor.seg_token_id


def test_preprocess_float_chw_resizes_longer_side_and_pads(processor):
    image = np.full((4, 100, 50), 0.5, dtype=np.float32)
    tensor, meta = processor.preprocess_image(image)
    assert tensor.shape == (4, 64, 64) and tensor.dtype == torch.float32
    assert (meta.height, meta.width, meta.scale) == (100, 50, 0.64)
    assert (meta.resized_height, meta.resized_width) == (64, 32)
    assert torch.allclose(tensor[:, :, :32], torch.tensor(0.5))
    assert torch.all(tensor[:, :, 32:] == 0)  # padding on the right


def test_preprocess_uint8_hwc_and_pil(processor):
    rgb = np.zeros((32, 48, 3), dtype=np.uint8)
    rgb[..., 0] = 255
    tensor, meta = processor.preprocess_image(rgb)
    assert tensor.shape == (3, 64, 64) and (meta.height, meta.width) == (32, 48)
    assert torch.allclose(tensor[0, :40], torch.tensor(1.0)) and torch.all(tensor[1:] == 0)
    assert torch.all(tensor[:, 43:] == 0)  # 32 * 64/48 = 42.7 rows of image, then padding
    from_pil, _ = processor.preprocess_image(Image.fromarray(rgb))
    torch.testing.assert_close(from_pil, tensor)
    grey, _ = processor.preprocess_image(np.zeros((10, 10), dtype=np.uint8))
    assert grey.shape == (1, 64, 64)


def test_preprocess_rejects_bad_images(processor):
    with pytest.raises(ProcessorInputError, match=r"\[0, 1\]"):
        processor.preprocess_image(np.full((3, 8, 8), 255.0, dtype=np.float32))
    with pytest.raises(ProcessorInputError, match="integer image"):
        processor.preprocess_image(np.zeros((3, 8, 8), dtype=np.uint16))
    with pytest.raises(ProcessorInputError, match="dimensions"):
        processor.preprocess_image(np.zeros((1, 3, 8, 8), dtype=np.float32))
    with pytest.raises(ProcessorInputError, match="unsupported image type"):
        processor.preprocess_image("image.tif")


@settings(max_examples=50, deadline=None)
@given(
    st.integers(min_value=1, max_value=3000),
    st.integers(min_value=1, max_value=3000),
    st.floats(min_value=0, max_value=1000),
    st.floats(min_value=0, max_value=1000),
)
def test_grid_and_source_coordinates_round_trip(height, width, x, y):
    meta = ImageMeta(height=height, width=width, image_size=256, scale=256 / max(height, width))
    sx, sy = meta.grid_to_source(x, y)
    gx, gy = meta.source_to_grid(sx, sy)
    assert gx == pytest.approx(x, abs=1e-6) and gy == pytest.approx(y, abs=1e-6)
    # the far corner of the image is at the grid point of its share of the padded square
    cx, cy = meta.source_to_grid(width, height)
    assert max(cx, cy) == pytest.approx(1000.0)


def test_mask_round_trip_to_source_pixels(processor):
    source = np.zeros((90, 60), dtype=np.float32)
    source[20:70, 10:40] = 1
    _, meta = processor.preprocess_image(np.zeros((3, 90, 60), dtype=np.float32))
    model_mask = processor.preprocess_mask(source, meta)
    assert model_mask.shape == (64, 64) and torch.all(model_mask[:, 43:] == 0)
    back_soft = meta.mask_to_source(model_mask)
    back_bool = meta.mask_to_source(model_mask > 0.5)
    assert back_soft.shape == back_bool.shape == (90, 60) and back_bool.dtype == bool
    for back in (back_soft > 0.5, back_bool):
        iou = (back & (source > 0)).sum() / (back | (source > 0)).sum()
        assert iou > 0.9
    with pytest.raises(ProcessorInputError, match="mask has shape"):
        meta.mask_to_source(np.zeros((10, 10)))
    with pytest.raises(ProcessorInputError, match="differs from its image"):
        processor.preprocess_mask(np.zeros((10, 10)), meta)


def test_labels_cover_only_assistant_replies_and_their_end_of_turn(processor):
    conversation = [
        {"role": "system", "content": "You look at aerial images."},
        {"role": "user", "content": "<image>\nWhat is this?"},
        {"role": "assistant", "content": "A residential area."},
        {"role": "user", "content": "Segment the buildings."},
        {"role": "assistant", "content": "<p>buildings</p> [SEG]"},
    ]
    batch = processor([conversation], [[np.zeros((3, 64, 64), dtype=np.float32)]])
    text = labelled_text(processor, batch["input_ids"][0], batch["labels"][0])
    assert text == "A residential area.<|im_end|><p>buildings</p> [SEG]<|im_end|>"
    full = processor.tokenizer.decode(batch["input_ids"][0])
    assert full.startswith("<|im_start|>system\nYou look at aerial images.<|im_end|>")
    assert full.count(IMAGE_TOKEN) == N


def test_batch_padding_pixels_and_masks(processor):
    short = [{"role": "user", "content": "<image> Hi"}, {"role": "assistant", "content": "Yes."}]
    long = [
        {"role": "user", "content": "Image 1 (2009): <image>\nImage 2 (2020): <image>\nWhat changed?"},
        {"role": "assistant", "content": "New <p>buildings</p> [SEG] and <p>roads</p> [SEG]."},
    ]
    images = [[np.zeros((3, 64, 64), np.float32)], [np.zeros((3, 80, 64), np.float32)] * 2]
    masks = [[], [np.ones((80, 64)), np.zeros((80, 64))]]
    batch = processor([short, long], images, masks=masks)
    assert batch["pixel_values"].shape == (3, 3, 64, 64)
    assert batch["num_images_per_sample"].tolist() == [1, 2]
    counts = (batch["input_ids"] == processor.image_token_id).sum(-1).tolist()
    assert counts == [N, 3 * N]  # the pair's second block is followed by N change tokens
    assert [m.shape for m in batch["seg_masks"]] == [(0, 64, 64), (2, 64, 64)]
    lengths = batch["attention_mask"].sum(-1)
    assert lengths[0] < lengths[1] == batch["input_ids"].shape[1]
    assert torch.all(batch["labels"][0, lengths[0] :] == -100)
    assert torch.all(batch["input_ids"][0, lengths[0] :] == processor.tokenizer.pad_token_id)
    assert len(batch.image_meta[1]) == 2 and batch.image_meta[1][0].height == 80


def test_image_count_mismatch_is_a_clear_error(processor):
    conversation = [
        {"role": "user", "content": "<image> and <image>"},
        {"role": "assistant", "content": "ok"},
    ]
    with pytest.raises(ProcessorInputError, match=r"2 <image> placeholder\(s\) but 1 image"):
        processor([conversation], [[np.zeros((3, 8, 8), np.float32)]])
    with pytest.raises(ProcessorInputError, match="role"):
        processor([[{"role": "robot", "content": "x"}]])


def test_prompt_for_generation_ends_with_the_assistant_header(processor):
    conversation = [{"role": "user", "content": "<image>\nDescribe."}]
    prompt = processor.prompt_for_generation(conversation, [np.zeros((3, 64, 64), np.float32)])
    assert processor.tokenizer.decode(prompt["input_ids"][0]).endswith("<|im_start|>assistant\n")
    assert prompt["pixel_values"].shape == (1, 3, 64, 64)
    # without images (cached features), the placeholders are still expanded
    cached = processor.prompt_for_generation(conversation)
    assert cached["pixel_values"] is None and cached["num_images_per_sample"].tolist() == [1]
    torch.testing.assert_close(cached["input_ids"], prompt["input_ids"])


def test_decode_keeps_seg_and_drops_other_special_tokens(processor):
    ids = processor.tokenizer("<p>roof</p> [SEG]<|im_end|><image>", add_special_tokens=False)["input_ids"]
    assert processor.decode(ids) == f"<p>roof</p> {SEG_TOKEN}"
    assert processor.decode(torch.tensor(ids)) == f"<p>roof</p> {SEG_TOKEN}"


def test_save_and_load_keep_token_ids(processor, tmp_path):
    processor.save_pretrained(tmp_path)
    loaded = RSVLMProcessor.from_pretrained(tmp_path)
    assert (loaded.image_token_id, loaded.seg_token_id) == (processor.image_token_id, processor.seg_token_id)
    assert (loaded.image_size, loaded.num_image_tokens) == (64, N)
    conversation = [{"role": "user", "content": "<image> Hi"}, {"role": "assistant", "content": "Yes."}]
    image = [[np.zeros((3, 8, 8), np.float32)]]
    torch.testing.assert_close(
        loaded([conversation], image)["input_ids"], processor([conversation], image)["input_ids"]
    )
    with pytest.raises(ProcessorInputError, match="processor_config.json"):
        RSVLMProcessor.from_pretrained(tmp_path / "nothing")


def test_labels_sit_on_the_reply_even_when_its_text_occurs_earlier(processor):
    # VQA data often quotes the answer in the question ("Answer Yes or No"); the label span must be the reply's.
    conversation = [
        {"role": "user", "content": "<image>\nAnswer Yes or No: is there water?"},
        {"role": "assistant", "content": "Yes"},
        {"role": "user", "content": "And a road? Yes or No."},
        {"role": "assistant", "content": "No"},
    ]
    batch = processor([conversation], [[np.zeros((3, 64, 64), dtype=np.float32)]])
    ids, labels = batch["input_ids"][0].tolist(), batch["labels"][0].tolist()
    assert labelled_text(processor, batch["input_ids"][0], batch["labels"][0]) == "Yes<|im_end|>No<|im_end|>"
    header = processor.tokenizer("<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]
    starts = [i + len(header) for i in range(len(ids)) if ids[i : i + len(header)] == header]
    first_labelled = [k for k in range(len(ids)) if labels[k] != -100 and (k == 0 or labels[k - 1] == -100)]
    assert first_labelled == starts  # each labelled run begins right after an assistant header


@pytest.fixture(scope="module")
def smollm2_processor() -> RSVLMProcessor:
    """The processor on SmolLM2's real tokenizer and chat template (from the converted cache)."""
    from transformers import AutoTokenizer

    from rsvlm.backbones import BackboneError, _packaged_llm_folder

    try:
        folder = _packaged_llm_folder()
    except BackboneError as err:
        pytest.skip(f"packaged SmolLM2 unavailable: {err}")
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    return RSVLMProcessor(tokenizer, image_size=64, num_image_tokens=N)


@pytest.mark.slow
def test_real_smollm2_template_tokens_and_labels(smollm2_processor):
    processor = smollm2_processor
    tokenizer = processor.tokenizer
    # <image> and [SEG] are single ids just past SmolLM2's 49152-row vocabulary
    assert (
        tokenizer("<image>", add_special_tokens=False)["input_ids"] == [processor.image_token_id] == [49152]
    )
    assert tokenizer("[SEG]", add_special_tokens=False)["input_ids"] == [processor.seg_token_id] == [49153]
    ids = tokenizer("<p>x</p> [SEG]", add_special_tokens=False)["input_ids"]
    assert ids.count(processor.seg_token_id) == 1 and processor.decode(ids) == "<p>x</p> [SEG]"

    # SmolLM2's template inserts its own system prompt unless the conversation brings one
    replies = ["Here: <p>roof</p> [SEG].", " Leading space, trailing newline\n", "Yes"]
    conversation = [
        {"role": "user", "content": "<image>\nSegment the roofs."},
        {"role": "assistant", "content": replies[0]},
        {"role": "user", "content": "More? Yes or no."},
        {"role": "assistant", "content": replies[1]},
        {"role": "user", "content": "Yes?"},
        {"role": "assistant", "content": replies[2]},
    ]
    rendered = processor.render(conversation)
    assert rendered.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    with_system = processor.render([{"role": "system", "content": "Aerial expert."}, *conversation])
    assert with_system.startswith("<|im_start|>system\nAerial expert.<|im_end|>\n<|im_start|>user\n")
    assert "SmolLM" not in with_system

    batch = processor([conversation], [[np.zeros((3, 64, 64), dtype=np.float32)]])
    ids, labels = batch["input_ids"][0].tolist(), batch["labels"][0].tolist()
    runs, run = [], []
    for token, label in zip(ids, labels):
        if label != -100:
            assert label == token
            run.append(token)
        elif run:
            runs.append(run)
            run = []
    runs += [run] if run else []
    assert [tokenizer.decode(r) for r in runs] == [reply + "<|im_end|>" for reply in replies]
    assert ids.count(processor.image_token_id) == N

    prompt = processor.prompt_for_generation(conversation[:1], [np.zeros((3, 64, 64), dtype=np.float32)])
    text = tokenizer.decode(prompt["input_ids"][0])
    assert text.endswith(
        "<|im_start|>user\n" + "<image>" * N + "\nSegment the roofs.<|im_end|>\n<|im_start|>assistant\n"
    )


def test_labels_with_a_template_that_trims_replies(processor):
    # Llama 3's template writes `message['content'] | trim`: a reply with outer whitespace is still found
    processor.chat_template = (
        "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] | trim "
        "+ '<|im_end|>' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    )
    conversation = [{"role": "user", "content": " Hi "}, {"role": "assistant", "content": " Yes.\n"}]
    batch = processor([conversation])
    assert labelled_text(processor, batch["input_ids"][0], batch["labels"][0]) == "Yes.<|im_end|>"


def test_system_prompt_goes_first_unless_the_conversation_brings_its_own(tiny_tokenizer_dir, tmp_path):
    from transformers import AutoTokenizer

    from rsvlm.processing_rsvlm import RSVLMProcessor

    processor = RSVLMProcessor(
        AutoTokenizer.from_pretrained(tiny_tokenizer_dir), 64, 4, system_prompt="You are rsvlm."
    )
    text = processor.render([{"role": "user", "content": "Hi"}])
    assert text.startswith("<|im_start|>system\nYou are rsvlm.<|im_end|>")
    own = processor.render([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}])
    assert "You are rsvlm." not in own and "Be brief." in own
    processor.save_pretrained(tmp_path)
    assert RSVLMProcessor.from_pretrained(tmp_path).system_prompt == "You are rsvlm."
