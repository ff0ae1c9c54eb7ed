"""Turn conversations and images into model inputs, and model outputs back into source pixels.

``RSVLMProcessor`` is a plain class (not ``transformers.ProcessorMixin``: that mixin wants an image processor
class registered with ``transformers``; ours is a few lines of resize-and-pad), with ``save_pretrained`` /
``from_pretrained`` writing the tokenizer files plus ``processor_config.json``.

Images: the longer side is resized to ``image_size`` (antialiased) and the rest padded with zeros at the bottom
and right, so the 0-1000 grid of the text protocol covers the padded square and ``ImageMeta`` maps grid
coordinates and masks back to source pixels.

Image tokens: each ``<image>`` in a conversation becomes ``num_image_tokens`` ``<image>`` ids. A sample with two
images (two dates) gets ``num_image_tokens`` more ``<image>`` ids right after the second image's block: they
carry the change tokens (from ``(f1, f2, |f1 - f2|)``), so the model's token order is image 1, image 2, change.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from rsvlm.atomic import write_text_atomic
from rsvlm.grounding import GRID, IMAGE_TOKEN, SEG_TOKEN, SPECIAL_TOKENS

logger = logging.getLogger(__name__)

PROCESSOR_CONFIG = "processor_config.json"
IGNORE_INDEX = -100
END_OF_TURN = "<|im_end|>"
# ChatML, SmolLM2's format; used only when a tokenizer ships no chat template of its own.
CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + "
    "'\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

Conversation = list[dict[str, str]]


class ProcessorInputError(ValueError):
    """Inputs the processor cannot turn into model inputs (bad image, count mismatch, bad message)."""


@dataclass
class ImageMeta:
    """How a source image became the padded model square, so outputs map back to source pixels.

    ``scale`` is model pixels per source pixel; the image occupies the top-left ``resized_height x
    resized_width`` of the ``image_size`` square.
    """

    height: int
    width: int
    image_size: int
    scale: float

    @property
    def resized_height(self) -> int:
        return max(1, round(self.height * self.scale))

    @property
    def resized_width(self) -> int:
        return max(1, round(self.width * self.scale))

    def grid_to_source(self, x: float, y: float) -> tuple[float, float]:
        """A 0-1000 grid point of the padded square -> source pixel coordinates (x, y), not clipped."""
        factor = self.image_size / GRID / self.scale
        return x * factor, y * factor

    def source_to_grid(self, x: float, y: float) -> tuple[float, float]:
        """Source pixel coordinates (x, y) -> the 0-1000 grid of the padded square."""
        factor = GRID * self.scale / self.image_size
        return x * factor, y * factor

    def mask_to_source(self, mask: np.ndarray | torch.Tensor) -> np.ndarray:
        """A ``[S, S]`` mask (bool, probabilities or logits) -> ``[height, width]`` in source pixels.

        The padding is cropped off, then the rest resized: nearest for boolean masks, bilinear otherwise (so
        thresholding after mapping gives smooth edges). Returns a bool array for bool input, else float32.
        """
        tensor = (
            torch.as_tensor(np.asarray(mask) if not isinstance(mask, torch.Tensor) else mask).detach().cpu()
        )
        if tensor.shape != (self.image_size, self.image_size):
            raise ProcessorInputError(
                f"mask has shape {tuple(tensor.shape)}, expected ({self.image_size}, {self.image_size})"
            )
        is_bool = tensor.dtype == torch.bool
        crop = tensor[: self.resized_height, : self.resized_width].float()[None, None]
        mode = "nearest" if is_bool else "bilinear"
        kwargs = {} if is_bool else {"align_corners": False}
        out = F.interpolate(crop, size=(self.height, self.width), mode=mode, **kwargs)[0, 0]
        return (out > 0.5).numpy() if is_bool else out.numpy().astype(np.float32)


def _to_chw_float(image: Any) -> torch.Tensor:
    """Accept ``[C, H, W]`` float in [0, 1], ``[H, W, 3|4]`` uint8, ``[H, W]`` arrays, or a PIL image."""
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow is a dependency
        Image = None
    if Image is not None and isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB") if image.mode not in ("RGB", "L") else image)
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    if not isinstance(image, np.ndarray):
        raise ProcessorInputError(
            f"unsupported image type {type(image).__name__}; pass a numpy array or PIL image"
        )
    if image.ndim == 2:
        image = image[None]
    if image.ndim != 3:
        raise ProcessorInputError(f"image must have 2 or 3 dimensions, got shape {image.shape}")
    if image.dtype == np.uint8:
        # 8-bit images come channels-last from PIL/imageio; a [C, H, W] uint8 stack is also accepted.
        if image.shape[-1] in (1, 3, 4) and image.shape[0] not in (1, 3, 4):
            image = image.transpose(2, 0, 1)
        return torch.from_numpy(image.astype(np.float32) / 255.0)
    if np.issubdtype(image.dtype, np.integer):
        raise ProcessorInputError(
            f"integer image of dtype {image.dtype}: scale it to float in [0, 1] first (rsvlm.geo does this)"
        )
    array = np.nan_to_num(image.astype(np.float32), nan=0.0, posinf=1.0, neginf=0.0)
    if array.size and (array.max() > 1.0 + 1e-3 or array.min() < -1e-3):
        raise ProcessorInputError(
            f"float image values must lie in [0, 1] (got {array.min():.3g}..{array.max():.3g}); "
            "scale or stretch the bands first"
        )
    return torch.from_numpy(np.clip(array, 0.0, 1.0))


class RSVLMProcessor:
    """Tokenizer (with ``<image>`` and ``[SEG]`` added) + image resize/pad + chat formatting + label masking."""

    def __init__(
        self, tokenizer, image_size: int = 256, num_image_tokens: int = 64, system_prompt: str = ""
    ) -> None:
        self.tokenizer = tokenizer
        self.image_size = int(image_size)
        self.num_image_tokens = int(num_image_tokens)
        self.system_prompt = system_prompt or ""
        add_special_tokens(tokenizer)
        self.image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        self.seg_token_id = tokenizer.convert_tokens_to_ids(SEG_TOKEN)
        vocab = tokenizer.get_vocab()
        self.end_of_turn = END_OF_TURN if END_OF_TURN in vocab else tokenizer.eos_token
        self.chat_template = tokenizer.chat_template or CHATML_TEMPLATE
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token

    # ------------------------------------------------------------------------------------------------------------
    # Images

    def preprocess_image(self, image: Any) -> tuple[torch.Tensor, ImageMeta]:
        """Image -> ``([C, S, S] float in [0, 1], ImageMeta)``: longer side to ``image_size``, zero-pad bottom/right."""
        chw = _to_chw_float(image)  # [C, H, W]
        _, height, width = chw.shape
        if height < 1 or width < 1:
            raise ProcessorInputError(f"empty image of shape {tuple(chw.shape)}")
        scale = self.image_size / max(height, width)
        meta = ImageMeta(height=height, width=width, image_size=self.image_size, scale=scale)
        size = (meta.resized_height, meta.resized_width)
        resized = F.interpolate(chw[None], size=size, mode="bilinear", antialias=True, align_corners=False)[0]
        out = torch.zeros(chw.shape[0], self.image_size, self.image_size)
        out[:, : size[0], : size[1]] = resized.clamp(0.0, 1.0)
        return out, meta

    def preprocess_mask(self, mask: Any, meta: ImageMeta) -> torch.Tensor:
        """A source-pixel mask ``[H, W]`` -> ``[S, S]`` float in [0, 1], resized and padded like its image.

        Antialiased resizing keeps soft values on edges (a fair target for BCE/Dice).
        """
        tensor = torch.as_tensor(np.asarray(mask)).float()
        if tensor.shape != (meta.height, meta.width):
            raise ProcessorInputError(
                f"mask shape {tuple(tensor.shape)} differs from its image ({meta.height}, {meta.width})"
            )
        size = (meta.resized_height, meta.resized_width)
        resized = F.interpolate(
            tensor[None, None], size=size, mode="bilinear", antialias=True, align_corners=False
        )
        out = torch.zeros(self.image_size, self.image_size)
        out[: size[0], : size[1]] = resized[0, 0].clamp(0.0, 1.0)
        return out

    # ------------------------------------------------------------------------------------------------------------
    # Text

    def render(self, conversation: Conversation, add_generation_prompt: bool = False) -> str:
        """The chat-template text of one conversation (``<image>`` not yet expanded)."""
        for message in conversation:
            if message.get("role") not in ("system", "user", "assistant") or not isinstance(
                message.get("content"), str
            ):
                raise ProcessorInputError(
                    f"each message needs role system|user|assistant and str content: {message}"
                )
        if self.system_prompt and (not conversation or conversation[0]["role"] != "system"):
            conversation = [{"role": "system", "content": self.system_prompt}, *conversation]
        return self.tokenizer.apply_chat_template(
            conversation,
            chat_template=self.chat_template,
            tokenize=False,
            add_generation_prompt=add_generation_prompt,
        )

    def expand_image_tokens(self, text: str, num_images: int) -> str:
        """Each ``<image>`` -> ``num_image_tokens`` copies; the second of a pair gets as many change tokens after."""
        parts = text.split(IMAGE_TOKEN)
        if len(parts) - 1 != num_images:
            raise ProcessorInputError(
                f"the conversation has {len(parts) - 1} {IMAGE_TOKEN} placeholder(s) but {num_images} image(s) "
                "were given"
            )
        if num_images > 2:
            raise ProcessorInputError(f"at most 2 images (two dates) per conversation, got {num_images}")
        block = IMAGE_TOKEN * self.num_image_tokens
        out = parts[0]
        for i, part in enumerate(parts[1:]):
            out += block + (block if (num_images == 2 and i == 1) else "") + part
        return out

    def _tokenize_with_labels(
        self, conversation: Conversation, num_images: int
    ) -> tuple[list[int], list[int]]:
        text = self.render(conversation)
        # Character spans of each assistant reply plus the end-of-turn marker after it: these are trained on.
        # Each reply is searched from where the template's assistant header for it ends (the prefix rendered with
        # a generation prompt), so a reply quoted earlier ("Answer Yes or No" -> "Yes") is not mistaken for it.
        spans: list[tuple[int, int]] = []
        cursor = 0
        for index, message in enumerate(conversation):
            if message["role"] != "assistant":
                continue
            header = self.render(conversation[:index], add_generation_prompt=True) if index else ""
            if text.startswith(header):
                cursor = max(cursor, len(header))
            reply = message["content"]
            start = text.find(reply, cursor)
            if start < 0 and reply.strip():  # templates such as Llama 3's write the reply trimmed
                reply = reply.strip()
                start = text.find(reply, cursor)
            if start < 0:
                raise ProcessorInputError(
                    f"could not locate assistant reply {index} in the rendered chat template: {reply[:60]!r}"
                )
            end = start + len(reply)
            if text.startswith(self.end_of_turn, end):
                end += len(self.end_of_turn)
            spans.append((start, end))
            cursor = end
        # Expand image placeholders, shifting the spans by the characters inserted before them.
        expanded = self.expand_image_tokens(text, num_images)
        if num_images:
            positions = [i for i in range(len(text)) if text.startswith(IMAGE_TOKEN, i)]
            extra_per = [
                len(IMAGE_TOKEN) * (self.num_image_tokens * (2 if (num_images == 2 and k == 1) else 1) - 1)
                for k in range(len(positions))
            ]

            def shift(index: int) -> int:
                return index + sum(e for p, e in zip(positions, extra_per) if p < index)

            spans = [(shift(s), shift(e)) for s, e in spans]
        encoding = self.tokenizer(expanded, add_special_tokens=False, return_offsets_mapping=True)
        ids = list(encoding["input_ids"])
        labels = [IGNORE_INDEX] * len(ids)
        for k, (token_start, token_end) in enumerate(encoding["offset_mapping"]):
            if any(token_start < end and token_end > start for start, end in spans):
                labels[k] = ids[k]
        return ids, labels

    def __call__(
        self,
        conversations: list[Conversation] | Conversation,
        images: list[list[Any]] | None = None,
        masks: list[list[Any]] | None = None,
    ) -> ProcessorOutput:
        """Batch of conversations (+ images per sample, + masks per sample in source pixels) -> model inputs.

        Returns input_ids / attention_mask / labels ``[B, T]`` (right-padded; labels -100 except assistant replies
        and their end-of-turn token), pixel_values ``[N_images, C, S, S]`` (or None), num_images_per_sample ``[B]``
        and, when masks are given, seg_masks (a list per sample of ``[n_seg, S, S]``). ``.image_meta`` holds the
        ``ImageMeta`` list per sample.
        """
        if conversations and isinstance(conversations[0], dict):
            conversations = [conversations]  # a single conversation
        batch = len(conversations)
        images = images if images is not None else [[] for _ in range(batch)]
        if len(images) != batch:
            raise ProcessorInputError(f"{batch} conversations but images for {len(images)} samples")
        if masks is not None and len(masks) != batch:
            raise ProcessorInputError(f"{batch} conversations but masks for {len(masks)} samples")

        all_ids, all_labels, pixels, metas, seg_masks = [], [], [], [], []
        for i, conversation in enumerate(conversations):
            sample_images = list(images[i] or [])
            ids, labels = self._tokenize_with_labels(conversation, len(sample_images))
            all_ids.append(ids)
            all_labels.append(labels)
            sample_meta = []
            for image in sample_images:
                tensor, meta = self.preprocess_image(image)
                pixels.append(tensor)
                sample_meta.append(meta)
            metas.append(sample_meta)
            if masks is not None:
                sample_masks = list(masks[i] or [])
                if sample_masks and not sample_meta:
                    raise ProcessorInputError(f"sample {i} has masks but no image")
                processed = [self.preprocess_mask(m, sample_meta[-1]) for m in sample_masks]
                size = self.image_size
                seg_masks.append(torch.stack(processed) if processed else torch.zeros(0, size, size))

        bands = {p.shape[0] for p in pixels}
        if len(bands) > 1:
            raise ProcessorInputError(f"all images of a batch need the same band count, got {sorted(bands)}")
        length = max(len(ids) for ids in all_ids)
        pad_id = self.tokenizer.pad_token_id
        input_ids = torch.full((batch, length), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((batch, length), dtype=torch.long)
        labels = torch.full((batch, length), IGNORE_INDEX, dtype=torch.long)
        for i, (ids, labs) in enumerate(zip(all_ids, all_labels)):
            input_ids[i, : len(ids)] = torch.tensor(ids)
            attention_mask[i, : len(ids)] = 1
            labels[i, : len(labs)] = torch.tensor(labs)
        out = ProcessorOutput(
            input_ids=input_ids,
            attention_mask=attention_mask,
            labels=labels,
            pixel_values=torch.stack(pixels) if pixels else None,
            num_images_per_sample=torch.tensor([len(m) for m in metas], dtype=torch.long),
        )
        if masks is not None:
            out["seg_masks"] = seg_masks
        out.image_meta = metas
        return out

    def prompt_for_generation(
        self, conversation: Conversation, images: list[Any] | None = None
    ) -> ProcessorOutput:
        """One conversation ending with the assistant header, ready for ``model.generate`` (batch size 1).

        With ``images=None`` the ``<image>`` placeholders are still expanded (their count taken from the text) and
        no ``pixel_values`` are returned: the caller passes cached ``image_features`` to ``generate``.
        """
        rendered = self.render(conversation, add_generation_prompt=True)
        num_images = rendered.count(IMAGE_TOKEN) if images is None else len(images)
        images = list(images or [])
        text = self.expand_image_tokens(rendered, num_images)
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        pixels, metas = [], []
        for image in images:
            tensor, meta = self.preprocess_image(image)
            pixels.append(tensor)
            metas.append(meta)
        out = ProcessorOutput(
            input_ids=torch.tensor([ids], dtype=torch.long),
            attention_mask=torch.ones((1, len(ids)), dtype=torch.long),
            pixel_values=torch.stack(pixels) if pixels else None,
            num_images_per_sample=torch.tensor([num_images], dtype=torch.long),
        )
        out.image_meta = [metas]
        return out

    def decode(self, ids: list[int] | torch.Tensor) -> str:
        """Token ids -> text, keeping ``[SEG]`` (the grounding parser needs it) and dropping other special tokens."""
        if isinstance(ids, torch.Tensor):
            ids = ids.flatten().tolist()
        drop = self.special_ids - {self.seg_token_id}
        return self.tokenizer.decode([i for i in ids if i not in drop], skip_special_tokens=False)

    @property
    def special_ids(self) -> set[int]:
        ids = set(self.tokenizer.all_special_ids)
        ids.update(i for i, tok in self.tokenizer.added_tokens_decoder.items() if tok.special)
        return ids

    # ------------------------------------------------------------------------------------------------------------
    # Persistence

    @classmethod
    def from_model(cls, model) -> RSVLMProcessor:
        """The processor matching a built model (its tokenizer, image size and token count)."""
        config = model.config
        return cls(model.tokenizer, config.image_size, config.num_image_tokens, config.system_prompt)

    def save_pretrained(self, save_directory: str | os.PathLike) -> None:
        """Tokenizer files + ``processor_config.json`` (written atomically)."""
        directory = Path(save_directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_pretrained(directory)
        config = {
            "image_size": self.image_size,
            "num_image_tokens": self.num_image_tokens,
            "system_prompt": self.system_prompt,
        }
        write_text_atomic(directory / PROCESSOR_CONFIG, json.dumps(config, indent=2) + "\n")

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> RSVLMProcessor:
        from transformers import AutoTokenizer

        directory = Path(directory)
        config_path = directory / PROCESSOR_CONFIG
        if not config_path.is_file():
            raise ProcessorInputError(
                f"{directory} has no {PROCESSOR_CONFIG}; it is not a saved RSVLMProcessor"
            )
        config = json.loads(config_path.read_text())
        tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
        return cls(
            tokenizer,
            image_size=config["image_size"],
            num_image_tokens=config["num_image_tokens"],
            system_prompt=config.get("system_prompt", ""),
        )


class ProcessorOutput(dict):
    """Model inputs (a dict, so ``model(**inputs)`` works) plus ``.image_meta`` per sample and ``.to(device)``."""

    image_meta: list[list[ImageMeta]]

    def to(self, device: torch.device | str) -> ProcessorOutput:
        for key, value in self.items():
            if isinstance(value, torch.Tensor):
                self[key] = value.to(device)
            elif isinstance(value, list) and value and isinstance(value[0], torch.Tensor):
                self[key] = [v.to(device) for v in value]
        return self


def add_special_tokens(tokenizer) -> list[int]:
    """Add ``<image>`` and ``[SEG]`` as special tokens (idempotent, fixed order, so ids match across processes)."""
    from tokenizers import AddedToken

    vocab = tokenizer.get_vocab()
    missing = [AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS if t not in vocab]
    if missing:
        tokenizer.add_tokens(missing, special_tokens=True)
    return [tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS]
