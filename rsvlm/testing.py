"""Tiny random backbones written to folders, for tests and smoke checks (nothing is downloaded).

Each writer saves a real ``transformers`` model folder, so the code under test loads it the way it loads a
user's checkpoint by local path. Sizes are chosen for speed, not quality.

- ``write_tiny_tokenizer``: a byte-level BPE tokenizer trained on a few sentences, with ChatML specials and a
  ChatML chat template (SmolLM2's format).
- ``write_tiny_llm``: a 2-layer Llama (hidden 64) saved with that tokenizer.
- ``write_tiny_vit``: a 1-layer DINOv2 (hidden 32, patch 8) with a ``preprocessor_config.json``.
- ``write_tiny_sam``: a tiny random ``SamModel`` (64 px input).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

CHATML_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant.<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

CORPUS = [
    "The image shows a residential area with houses, roads and trees.",
    "Segment the buildings. <p>buildings</p> [SEG] are in the north-east.",
    "There is a river crossing farmland; the water is dark blue.",
    "Image 1 (2009): Image 2 (2020): What changed between the two dates?",
    "New buildings were built on former fields near the road <box>[120, 340, 560, 780]</box>.",
    "A parking lot with many cars, a forest patch and a small lake.",
    "Answer briefly. Yes. No. 0 1 2 3 4 5 6 7 8 9",
]


def write_tiny_tokenizer(path: Path) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(CORPUS * 4, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    tokenizer.save_pretrained(path)
    return Path(path)


def write_tiny_llm(path: Path, tokenizer_dir: Path) -> Path:
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        # Wide enough weights that logits can move: at the default 0.02 a normed hidden state cannot reach a
        # confident token, and no adapter could lower the loss much.
        initializer_range=0.2,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return Path(path)


def write_tiny_vit(path: Path) -> Path:
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    config = Dinov2Config(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, mlp_ratio=2, patch_size=8, image_size=64
    )
    Dinov2Model(config).save_pretrained(path)
    stats = {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.25, 0.25, 0.25]}
    (Path(path) / "preprocessor_config.json").write_text(json.dumps(stats))
    return Path(path)


def write_tiny_sam(path: Path) -> Path:
    from transformers import SamConfig, SamModel

    torch.manual_seed(0)
    config = SamConfig(
        vision_config=dict(
            hidden_size=32,
            output_channels=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=64,
            patch_size=8,
            window_size=4,
            global_attn_indexes=[0],
            mlp_dim=64,
            num_pos_feats=8,
        ),
        prompt_encoder_config=dict(hidden_size=16, image_size=64, patch_size=8),
        mask_decoder_config=dict(hidden_size=16, mlp_dim=32, num_attention_heads=2, iou_head_hidden_dim=16),
    )
    SamModel(config).save_pretrained(path)
    return Path(path)


def scripted_generation(tokenizer, text: str, masks=(), image_size: int = 64):
    """The ``GenerationResult`` a model returns when it "says" ``text`` with these boolean masks ([S, S] each):
    tests replace ``model.generate`` with it to check everything after the model on a known answer."""
    from rsvlm.modeling_rsvlm import GenerationResult

    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    logits = (
        torch.stack([torch.where(torch.as_tensor(m), 10.0, -10.0) for m in masks])
        if len(masks)
        else torch.zeros(0, image_size, image_size)
    )  # [n_seg, S, S]
    return GenerationResult(sequences=torch.tensor([ids]), masks=[logits], timings={"ttft": 0.0})


def forcing_logits(model, tokens):
    """A ``compute_logits`` for ``model`` that makes each decoding step pick the next id of ``tokens``: the real
    ``generate`` loop (KV cache, [SEG] states, masks) runs on an answer the test chose."""
    script = iter(tokens)
    original = model.compute_logits

    def compute_logits(hidden):
        logits = original(hidden)
        if hidden.ndim == 1:  # one decoding step (the forward pass over a whole sequence is left alone)
            logits = logits.clone()
            logits[next(script)] = 1e4
        return logits

    return compute_logits
