"""Configuration of the rsvlm model: which frozen backbones to resolve offline and the trainable heads' sizes.

The config names backbones (a packaged name from ``rsvlm.backbones`` or a local folder); it never holds their
weights. A checkpoint of this project is this config plus the trainable parts only.
"""

from __future__ import annotations

import math
import os

import torch
from transformers import PretrainedConfig

DEFAULT_LORA_TARGETS = ("q_proj", "v_proj")


DEFAULT_SYSTEM_PROMPT = (
    "You are rsvlm, an assistant for satellite and aerial images. Answer about the image you are shown; "
    "when asked where things are, mark them with boxes, oriented boxes or masks."
)


class RSVLMConfig(PretrainedConfig):
    r"""Configuration for [`RSVLMForConditionalGeneration`].

    Args:
        text_model: packaged LLM name (``"smollm2-135m-instruct"``) or a local ``transformers`` causal-LM folder.
        vision_model: packaged tower name (``"geoembed-v3"``) or a local folder holding a ViT-like model
            (SigLIP, CLIP, DINOv2, ViT).
        mask_decoder: ``"light"`` (the promptable decoder of ``rsvlm.mask_decoder``) or a local ``SamModel`` folder.
        image_size: side of the square model input (the processor resizes the longer side and pads).
        num_image_tokens: tokens per image after adaptive pooling of the tower's feature map; a perfect square.
            A two-date sample gets as many again for the change tokens.
        in_channels: input bands; a learned 1x1 band adapter maps them to the tower's 3 channels.
        lora_r / lora_alpha / lora_dropout / lora_target_modules: LoRA on the frozen LLM.
        decoder_dim / decoder_depth / decoder_heads: width, number of two-way blocks and heads of the light decoder.
        highres_dim: channels of the light decoder's high-resolution pixel branch (stride 4).
        highres_cues: feed that branch sensor-agnostic pixel cues (standardised colour, greenness, texture, edges;
            ``rsvlm.mask_decoder.PixelCues``) beside the raw pixels.
        phrase_prompt: each ``[SEG]``'s mask prompt adds the embedding of the phrase it closes (``<p>phrase</p>
            [SEG]``, mean of the frozen LLM's input embeddings of the phrase's tokens) to the projected ``[SEG]``
            state. The LLM then decides *what* to segment and the decoder *where*; the decoder can be trained on
            (image, phrase, mask) triples without the LLM in the loop, and large scenes can be decoded window by
            window from the phrase alone.
        ce_weight / bce_weight / dice_weight: loss = ce_weight * CE + bce_weight * BCE + dice_weight * Dice.
        load_in_4bit: load the LLM through bitsandbytes (QLoRA); needs a CUDA GPU.
        llm_dtype: dtype name for the frozen LLM (``"float32"``, ``"bfloat16"``, ``"float16"``); ``None`` keeps
            the checkpoint's default. The trainable heads always run in float32.
        system_prompt: the system turn the processor puts first when a conversation has none, in training and
            at inference alike (so the model learns who it is: SmolLM2's template would otherwise call it
            "SmolLM"); ``""`` leaves the chat template's own default. It must not hold ``<image>`` or ``[SEG]``.
        describe_from_land_cover: answer a plain description request about one image ("Describe this image.")
            from the decoder's land covers (``rsvlm.describe``) instead of the LLM's text. The embedded default
            sets it (its LLM's own descriptions scored far below them, held out); a checkpoint fine-tuned on
            captions leaves it off, so its LLM describes.
        image_token_id / seg_token_id: filled in when the model is built (ids of ``<image>`` / ``[SEG]``).
    """

    model_type = "rsvlm"

    text_model: str = "smollm2-135m-instruct"
    vision_model: str = "geoembed-v3"
    mask_decoder: str = "light"
    image_size: int = 256
    num_image_tokens: int = 64
    in_channels: int = 3
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_target_modules: list[str] | None = None
    decoder_dim: int = 128
    decoder_depth: int = 2
    decoder_heads: int = 4
    highres_dim: int = 32
    highres_cues: bool = True
    phrase_prompt: bool = True
    ce_weight: float = 1.0
    bce_weight: float = 2.0
    dice_weight: float = 0.5
    load_in_4bit: bool = False
    llm_dtype: str | None = None
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    describe_from_land_cover: bool = False
    image_token_id: int | None = None
    seg_token_id: int | None = None

    def __post_init__(self, **kwargs):
        if self.lora_target_modules is None:
            self.lora_target_modules = list(DEFAULT_LORA_TARGETS)
        else:
            self.lora_target_modules = list(self.lora_target_modules)
        # Paths are stored as strings so config.json stays plain JSON.
        self.text_model = os.fspath(self.text_model)
        self.vision_model = os.fspath(self.vision_model)
        self.mask_decoder = os.fspath(self.mask_decoder)
        super().__post_init__(**kwargs)
        self.validate_rsvlm()

    def validate_rsvlm(self) -> None:
        """Fail early, with a sentence a user understands, on values the model cannot be built from."""
        if "<image>" in (self.system_prompt or "") or "[SEG]" in (self.system_prompt or ""):
            raise ValueError("system_prompt must not contain <image> or [SEG]: they would count as inputs")
        side = math.isqrt(self.num_image_tokens) if self.num_image_tokens > 0 else 0
        if side * side != self.num_image_tokens:
            raise ValueError(
                f"num_image_tokens must be a positive perfect square (got {self.num_image_tokens})"
            )
        if self.image_size < 16 or self.image_size % 8:
            raise ValueError(f"image_size must be a multiple of 8 and at least 16 (got {self.image_size})")
        if self.in_channels < 1:
            raise ValueError(f"in_channels must be at least 1 (got {self.in_channels})")
        if self.decoder_dim % self.decoder_heads or self.decoder_dim % 8:
            raise ValueError(
                f"decoder_dim ({self.decoder_dim}) must be divisible by decoder_heads ({self.decoder_heads}) and 8"
            )
        if self.llm_dtype is not None and not isinstance(
            getattr(torch, str(self.llm_dtype), None), torch.dtype
        ):
            raise ValueError(f"llm_dtype {self.llm_dtype!r} is not a torch dtype name (e.g. 'bfloat16')")

    @property
    def torch_llm_dtype(self) -> torch.dtype | None:
        return None if self.llm_dtype is None else getattr(torch, str(self.llm_dtype))

    @property
    def image_grid(self) -> int:
        """Side of the pooled token grid: ``num_image_tokens == image_grid ** 2``."""
        return math.isqrt(self.num_image_tokens)

    @property
    def uses_sam(self) -> bool:
        return self.mask_decoder != "light"

    @classmethod
    def tiny(
        cls,
        text_model: str | os.PathLike,
        vision_model: str | os.PathLike,
        mask_decoder: str | os.PathLike = "light",
        **overrides,
    ) -> RSVLMConfig:
        """A small configuration for tests and smoke runs on tiny random backbones saved to folders."""
        values = dict(
            image_size=64,
            num_image_tokens=4,
            decoder_dim=32,
            decoder_depth=1,
            decoder_heads=2,
            highres_dim=8,
            lora_r=4,
            lora_alpha=8,
            lora_dropout=0.0,
        )
        values.update(overrides)
        return cls(text_model=text_model, vision_model=vision_model, mask_decoder=mask_decoder, **values)
