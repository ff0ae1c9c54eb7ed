"""RSVLM: a frozen vision tower and a frozen LLM (+ LoRA) joined by small trainable parts, with masks from [SEG].

Data flow (``forward``)::

    pixels [N, C, S, S] -> band adapter -> tower -> maps [N, D, h, w] -> projector -> image tokens [N, n, H]
                          (pairs: change fusion (f1, f2, |f1 - f2|) -> change map -> projector -> change tokens)
    input_ids -> embeddings, image tokens spliced at <image> positions (masked_scatter)
              -> LLM decoder -> hidden [B, T, H] -> logits (base vocab + rows of the new tokens)
              -> hidden at [SEG] -> seg projector -> mask decoder (per-sample image context) -> masks [M, S, S]
    loss = ce_weight * CE(labels) + bce_weight * BCE(masks) + dice_weight * Dice(masks)

Trainable: band adapter (when bands != 3), projector, change fusion, seg projector, mask decoder, LoRA, and the
embedding/output rows of ``<image>`` and ``[SEG]`` (kept outside the frozen matrices, so a checkpoint never holds
the vocabulary). ``save_pretrained`` writes exactly these (``trainable_state_dict``); their keys are module paths
(LoRA keys carry peft's ``default`` adapter name), so they are stable across processes and machines.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import PreTrainedModel
from transformers.cache_utils import DynamicCache
from transformers.utils import ModelOutput

from rsvlm import backbones
from rsvlm.atomic import atomic_path, write_text_atomic
from rsvlm.configuration_rsvlm import RSVLMConfig
from rsvlm.grounding import last_phrase, normalise_phrase
from rsvlm.losses import dice_loss, sigmoid_ce_loss
from rsvlm.mask_decoder import LightMaskDecoder, SamMaskDecoderAdapter
from rsvlm.processing_rsvlm import END_OF_TURN, IGNORE_INDEX, RSVLMProcessor, add_special_tokens
from rsvlm.vision import BandAdapter, ChangeFusion, Projector, VisionTower, _preprocessor_stats

logger = logging.getLogger(__name__)

WEIGHTS_NAME = "model.safetensors"


class RSVLMInputError(ValueError):
    """Inputs that do not fit together (token counts, mask counts, image sizes); the message says which."""


@dataclass
class ImageFeatures:
    """Everything the model derives from a batch's images; cache it across chat turns.

    ``tokens``: ``[N_tokens, H]`` in splice order (per sample: image 1, image 2, change tokens).
    ``maps``: per sample the map the mask decoder reads (``[D, h, w]``; the change map for a pair; ``None``
    without images). ``pixels``: per sample the band-adapted ``[n_images, 3, S, S]`` for the high-res branch.
    ``contexts``: per sample the mask decoder's image context (see ``rsvlm.mask_decoder``).
    """

    tokens: torch.Tensor
    maps: list[torch.Tensor | None]
    pixels: list[torch.Tensor | None]
    contexts: list[tuple[torch.Tensor, ...] | None]
    num_images_per_sample: list[int]
    tokens_per_sample: list[int] = field(default_factory=list)

    def detach(self) -> ImageFeatures:
        def d(x):
            return None if x is None else x.detach()

        return ImageFeatures(
            tokens=self.tokens.detach(),
            maps=[d(m) for m in self.maps],
            pixels=[d(p) for p in self.pixels],
            contexts=[None if c is None else tuple(t.detach() for t in c) for c in self.contexts],
            num_images_per_sample=list(self.num_images_per_sample),
            tokens_per_sample=list(self.tokens_per_sample),
        )


@dataclass
class RSVLMOutput(ModelOutput):
    """``loss`` = ce_weight * ``ce_loss`` + ``mask_loss``; ``pred_masks``: per sample ``[n_seg, S, S]`` logits."""

    loss: torch.FloatTensor | None = None
    ce_loss: torch.FloatTensor | None = None
    mask_loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    pred_masks: list[torch.Tensor] | None = None
    last_hidden_state: torch.FloatTensor | None = None
    image_features: ImageFeatures | None = None


@dataclass
class GenerationResult:
    """``sequences``: ``[1, n_new]`` new token ids (stop token included when hit); ``masks``: per sample
    ``[n_seg, S, S]`` mask logits, one per generated ``[SEG]``; ``timings``: ``ttft`` (s, image encoding +
    prefill + first token), ``tokens_per_s`` (decode loop), ``mask_s`` (mask decoding).

    ``seg_states`` ``[n_seg, H]`` and ``seg_phrases`` are the mask prompts' inputs (the hidden state of each
    ``[SEG]`` and the phrase it closes), so the same prompts can be applied to other images without generating
    again (a large scene's full-resolution windows, ``rsvlm.scene``). ``None`` when the result was not generated
    (``rsvlm.testing.scripted_generation``)."""

    sequences: torch.Tensor
    masks: list[torch.Tensor]
    timings: dict[str, float]
    seg_states: torch.Tensor | None = None
    seg_phrases: list[str] | None = None


class RSVLMPreTrainedModel(PreTrainedModel):
    config_class = RSVLMConfig
    base_model_prefix = "rsvlm"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = False
    _supports_sdpa = True

    def init_weights(self) -> None:
        # The backbones arrive pretrained and every head initialises itself in its constructor; transformers'
        # generic re-initialisation would overwrite the GeoEmbed port (not a PreTrainedModel) and LoRA's zero B.
        return None


class RSVLMForConditionalGeneration(RSVLMPreTrainedModel):
    """The rsvlm model. Build with ``RSVLMForConditionalGeneration(config)`` (backbones resolved offline) or
    ``from_pretrained(checkpoint_dir)``."""

    # True (the trainer sets it): every forward that builds a graph uses every trainable module, those the batch
    # does not need at weight zero, so each gets a gradient (zero) rather than none. DeepSpeed reduces each
    # gradient as it is produced and expects every process to produce the same ones in the same order: a batch
    # with a [SEG] on one process and none on the other stalls it otherwise. Adam then also steps alike on one
    # process and on many (a parameter without a gradient is skipped, one with a zero gradient still moves).
    run_every_module: bool = False

    def __init__(self, config: RSVLMConfig) -> None:
        super().__init__(config)
        if config.load_in_4bit and not torch.cuda.is_available():
            raise RSVLMInputError(
                "load_in_4bit=True (QLoRA) needs a CUDA GPU with bitsandbytes; on CPU set load_in_4bit=False"
            )
        # --- vision side
        self.vision = VisionTower.from_name(config.vision_model)
        self.band_adapter = BandAdapter(config.in_channels)
        # An RGB input keeps the identity adapter frozen, so the frozen tower can run without autograd.
        self.band_adapter.requires_grad_(config.in_channels != 3)
        dim = self.vision.out_channels

        # --- language side
        llm, tokenizer = backbones.load_llm(
            config.text_model, dtype=config.torch_llm_dtype, load_in_4bit=config.load_in_4bit
        )
        image_id, seg_id = add_special_tokens(tokenizer)
        for name, new_id in (("image_token_id", image_id), ("seg_token_id", seg_id)):
            saved = getattr(config, name)
            if saved is not None and saved != new_id:
                raise RSVLMInputError(
                    f"the tokenizer of {config.text_model!r} gives {name}={new_id} but the checkpoint was trained "
                    f"with {saved}: the text model differs from the one the checkpoint was trained on"
                )
            setattr(config, name, new_id)
        self.tokenizer = tokenizer
        base_embed = llm.get_input_embeddings()
        self.base_vocab_size = base_embed.num_embeddings
        hidden = base_embed.embedding_dim
        self.hidden_size = hidden
        self.register_buffer("new_token_ids", torch.tensor([image_id, seg_id]), persistent=False)
        with torch.no_grad():
            embed_weight = base_embed.weight.float()
            head_weight = llm.get_output_embeddings().weight.float()
            self.new_token_embed = nn.Parameter(
                embed_weight.mean(0, keepdim=True).repeat(2, 1)
                + 0.02 * torch.randn(2, hidden) * embed_weight.std()
            )
            self.new_token_head = nn.Parameter(head_weight.mean(0, keepdim=True).repeat(2, 1).clone())
        self.llm = self._wrap_lora(llm, config)

        # --- trainable bridges
        self.projector = Projector(dim, hidden, config.image_grid)
        self.change_fusion = ChangeFusion(dim)
        self.change_embed = nn.Parameter(torch.zeros(hidden))  # marks change tokens apart from image tokens
        if config.uses_sam:
            sam = backbones.load_sam(config.mask_decoder)
            mean, std = _preprocessor_stats(config.mask_decoder)
            kwargs = {"image_mean": mean, "image_std": std} if mean and std else {}
            self.mask_decoder = SamMaskDecoderAdapter(sam, config.image_size, **kwargs)
        else:
            self.mask_decoder = LightMaskDecoder(
                dim,
                dim=config.decoder_dim,
                depth=config.decoder_depth,
                heads=config.decoder_heads,
                highres_dim=config.highres_dim,
                image_size=config.image_size,
                highres_cues=config.highres_cues,
            )
        prompt_dim = self.mask_decoder.prompt_dim
        self.seg_projector = nn.Sequential(
            nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, prompt_dim)
        )
        if config.phrase_prompt:
            self.phrase_projector = nn.Sequential(
                nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, prompt_dim)
            )
            # The [SEG] state starts as a no-op on top of the phrase, so a decoder trained on phrases alone
            # (train.heads) keeps its masks until end-to-end training teaches the [SEG] state something.
            nn.init.zeros_(self.seg_projector[-1].weight)
            nn.init.zeros_(self.seg_projector[-1].bias)
        self.post_init()
        if config.load_in_4bit:  # the quantised LLM already sits on the GPU; bring the heads there too
            device = base_embed.weight.device
            for name, module in self.named_children():
                if name != "llm":
                    module.to(device)
            for param in self.parameters(recurse=False):
                param.data = param.data.to(device)
            self.new_token_ids = self.new_token_ids.to(device)
        self.train(False)

    @staticmethod
    def _wrap_lora(llm: nn.Module, config: RSVLMConfig) -> nn.Module:
        from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

        if config.load_in_4bit:
            llm = prepare_model_for_kbit_training(llm, use_gradient_checkpointing=False)
        lora = LoraConfig(
            r=config.lora_r,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
            target_modules=list(config.lora_target_modules),
            bias="none",
        )
        return get_peft_model(llm, lora)

    # ------------------------------------------------------------------------------------------------------------
    # Pieces of the LLM (properties, so nothing is registered twice)

    @property
    def causal_lm(self) -> nn.Module:
        return self.llm.get_base_model()

    def get_input_embeddings(self) -> nn.Module:
        # transformers' default looks up an attribute named `embed_tokens`, which here is a method.
        return self.causal_lm.get_input_embeddings()

    def get_output_embeddings(self) -> nn.Module:
        return self.causal_lm.get_output_embeddings()

    @property
    def decoder(self) -> nn.Module:
        return self.causal_lm.get_decoder()

    def get_processor(self) -> RSVLMProcessor:
        """A processor on this model's tokenizer (same ``<image>`` / ``[SEG]`` ids) and image settings."""
        return RSVLMProcessor.from_model(self)

    def train(self, mode: bool = True) -> RSVLMForConditionalGeneration:
        # Frozen backbones stay in inference mode; only LoRA's dropout follows the training flag.
        super().train(mode)
        self.llm.eval()
        self.vision.eval()
        for name, module in self.llm.named_modules():
            if "lora_dropout" in name:
                module.train(mode)
        return self

    # ------------------------------------------------------------------------------------------------------------
    # Images

    def encode_images(
        self, pixel_values: torch.Tensor, num_images_per_sample: torch.Tensor | list[int] | None = None
    ) -> ImageFeatures:
        """Pixels ``[N, C, S, S]`` in [0, 1] -> ``ImageFeatures`` (tokens in splice order, decoder contexts)."""
        if pixel_values.ndim != 4:
            raise RSVLMInputError(f"pixel_values must be [N, C, S, S], got shape {tuple(pixel_values.shape)}")
        size = self.config.image_size
        if tuple(pixel_values.shape[-2:]) != (size, size):
            raise RSVLMInputError(
                f"images are {tuple(pixel_values.shape[-2:])} but the model expects {size}x{size} (use the processor)"
            )
        n = pixel_values.shape[0]
        counts = [1] * n if num_images_per_sample is None else [int(c) for c in num_images_per_sample]
        if sum(counts) != n:
            raise RSVLMInputError(f"num_images_per_sample sums to {sum(counts)} but {n} images were given")
        if any(c > 2 or c < 0 for c in counts):
            raise RSVLMInputError(f"each sample takes 0, 1 or 2 images (two dates), got {counts}")
        pixels = pixel_values.to(self.band_adapter.proj.weight.device, torch.float32)

        rgb = self.band_adapter(pixels)  # [N, 3, S, S]
        if rgb.requires_grad:
            maps = self.vision(rgb)  # gradients reach the band adapter through the frozen tower
        else:
            with torch.no_grad():
                maps = self.vision(rgb)  # [N, D, h, w]
        image_tokens = self.projector(maps)  # [N, n_tok, H]

        tokens, sample_maps, sample_pixels, contexts, per_sample = [], [], [], [], []
        offset = 0
        for count in counts:
            if count == 0:
                sample_maps.append(None)
                sample_pixels.append(None)
                contexts.append(None)
                per_sample.append(0)
                continue
            block = slice(offset, offset + count)
            tokens.extend(image_tokens[block])
            if count == 2:
                change = self.change_fusion(
                    maps[offset : offset + 1], maps[offset + 1 : offset + 2]
                )  # [1, D, h, w]
                tokens.append(self.projector(change)[0] + self.change_embed)
                decoder_map = change[0]
            else:
                decoder_map = maps[offset]
            sample_maps.append(decoder_map)
            sample_pixels.append(rgb[block])
            contexts.append(self.mask_decoder.image_context(decoder_map, rgb[block]))
            per_sample.append((count + (count == 2)) * self.config.num_image_tokens)
            offset += count
        hidden = self.hidden_size
        flat = torch.cat(tokens) if tokens else image_tokens.new_zeros(0, hidden)  # [N_tokens, H]
        return ImageFeatures(flat, sample_maps, sample_pixels, contexts, counts, per_sample)

    # ------------------------------------------------------------------------------------------------------------
    # Embeddings and logits with the new-token rows

    def embed_tokens(
        self, input_ids: torch.Tensor, image_features: ImageFeatures | None = None
    ) -> torch.Tensor:
        """Token embeddings ``[B, T, H]`` with the new rows for ``<image>``/``[SEG]`` and image tokens spliced in."""
        embed = self.causal_lm.get_input_embeddings()
        new_ids = self.new_token_ids.to(input_ids.device)
        is_new = input_ids[..., None] == new_ids  # [B, T, 2]
        base_ids = torch.where(is_new.any(-1), torch.zeros_like(input_ids), input_ids)
        embeds = embed(base_ids)  # [B, T, H]
        extra = is_new.to(embeds.dtype) @ self.new_token_embed.to(embeds.dtype)  # [B, T, H]
        embeds = torch.where(is_new.any(-1, keepdim=True), extra, embeds)

        image_mask = input_ids == self.config.image_token_id  # [B, T]
        per_row = image_mask.sum(-1).tolist()
        if image_features is None:
            if any(per_row):
                raise RSVLMInputError(
                    f"input_ids hold {sum(per_row)} <image> tokens but no pixel_values or image_features were given"
                )
            return embeds
        expected = image_features.tokens_per_sample
        if len(expected) != len(per_row):
            raise RSVLMInputError(
                f"the images make {len(expected)} sample(s) but input_ids has {len(per_row)} row(s): pass "
                "num_images_per_sample (the processor returns it; a two-date sample counts 2)"
            )
        if expected != per_row:
            raise RSVLMInputError(
                f"<image> tokens per sample in input_ids {per_row} differ from the image features {expected} "
                f"({self.config.num_image_tokens} per image, plus as many change tokens for a two-date sample)"
            )
        tokens = image_features.tokens.to(embeds.device, embeds.dtype)
        return embeds.masked_scatter(image_mask[..., None], tokens)  # image tokens in row-major order

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Hidden ``[..., H]`` -> logits over the base vocabulary with the new tokens' columns (``[..., V']``)."""
        head = self.causal_lm.get_output_embeddings()
        logits = head(hidden).float()  # [..., V]
        extra = hidden.float() @ self.new_token_head.float().T  # [..., 2]
        new_ids = self.new_token_ids.to(logits.device)
        total = max(self.base_vocab_size, int(new_ids.max()) + 1)
        if total > logits.shape[-1]:
            pad = logits.new_full(
                (*logits.shape[:-1], total - logits.shape[-1]), torch.finfo(logits.dtype).min
            )
            logits = torch.cat([logits, pad], dim=-1)
        return logits.index_copy(-1, new_ids, extra)

    def _run_decoder(self, embeds, attention_mask=None, cache=None) -> torch.Tensor:
        out = self.decoder(
            inputs_embeds=embeds, attention_mask=attention_mask, cache=cache, use_cache=cache is not None
        )
        return out.last_hidden_state  # [B, T, H]

    def phrase_embeddings(self, phrases: list[str]) -> torch.Tensor:
        """Phrases -> ``[M, H]``: the mean of the frozen LLM's input embeddings of each normalised phrase's
        tokens (``normalise_phrase``); an empty phrase gives zeros."""
        embed = self.causal_lm.get_input_embeddings()
        device = embed.weight.device
        out = torch.zeros(len(phrases), self.hidden_size, device=device)
        for i, phrase in enumerate(phrases):
            ids = self.tokenizer(normalise_phrase(phrase), add_special_tokens=False)["input_ids"]
            if ids:
                out[i] = embed(torch.tensor(ids, device=device)).float().mean(0)
        return out

    def mask_prompts(self, seg_hidden: torch.Tensor | None, phrases: list[str] | None) -> torch.Tensor:
        """The mask decoder's prompts ``[M, P]``: projected ``[SEG]`` states, plus the projected phrase
        embeddings when ``config.phrase_prompt`` (either input may be missing, not both)."""
        prompts = None
        if seg_hidden is not None:
            prompts = self.seg_projector(seg_hidden.float())
        if self.config.phrase_prompt and phrases is not None:
            from_phrase = self.phrase_projector(self.phrase_embeddings(phrases))
            prompts = from_phrase if prompts is None else prompts + from_phrase
        if prompts is None:
            raise RSVLMInputError("a mask prompt needs a [SEG] state or, with phrase_prompt, a phrase")
        return prompts

    def decode_masks(
        self,
        seg_hidden: torch.Tensor | None,
        sample_index: list[int],
        image_features: ImageFeatures | None,
        phrases: list[str] | None = None,
    ) -> torch.Tensor:
        """``[SEG]`` hidden states ``[M, H]`` (and/or the phrases they close) of the given samples -> mask logits
        ``[M, S, S]``. With ``seg_hidden=None`` the masks come from the phrases alone (``phrase_prompt``)."""
        size = self.config.image_size
        if len(sample_index) == 0:
            return self.new_token_embed.new_zeros(0, size, size, dtype=torch.float32)
        for i in set(sample_index):
            if image_features is None or image_features.contexts[i] is None:
                raise RSVLMInputError(f"sample {i} has a [SEG] token but no image to segment")
        prompts = self.mask_prompts(seg_hidden, phrases)  # [M, P]
        return self.mask_decoder(image_features.contexts, sample_index, prompts)  # [M, S, S]

    def seg_phrases(self, input_ids: torch.Tensor, positions: list[tuple[int, int]]) -> list[str]:
        """The phrase each ``[SEG]`` at ``(row, column)`` closes: the last ``<p>…</p>`` between the previous
        ``[SEG]`` of that row (or the row's start) and it; ``""`` when there is none."""
        seg_id = self.config.seg_token_id
        phrases, start_of = [], {}
        for row, col in positions:
            start = start_of.get(row, 0)
            ids = input_ids[row, start:col].tolist()
            phrases.append(last_phrase(self.tokenizer.decode(ids, skip_special_tokens=False)))
            start_of[row] = col + 1
            assert int(input_ids[row, col]) == seg_id
        return phrases

    def _image_side_unused(self, image_features: ImageFeatures | None) -> tuple[ImageFeatures, torch.Tensor]:
        """For ``run_every_module``: the image side this batch left unused, at weight zero (a scalar to add to the
        embeddings). Without images a blank one is encoded (its features stand in, for the mask probe, as the
        batch's only features); without a two-date sample the first image stands in as both dates of a pair."""
        outputs = []
        if image_features is None or all(c is None for c in image_features.contexts):
            size, bands = self.config.image_size, self.config.in_channels
            blank = self.encode_images(torch.zeros(1, bands, size, size, device=self.new_token_embed.device))
            outputs += [blank.tokens, *blank.contexts[0]]
            image_features = blank
        if 2 not in image_features.num_images_per_sample:
            first = next(i for i, m in enumerate(image_features.maps) if m is not None)
            single = image_features.maps[first][None]  # [1, D, h, w]
            change = self.change_fusion(single, single)
            pixels = image_features.pixels[first][-1:]
            outputs.append(self.projector(change)[0] + self.change_embed)
            outputs += self.mask_decoder.image_context(change[0], torch.cat([pixels, pixels]))  # as of a pair
        zero = sum((t.float().sum() * 0.0 for t in outputs), self.new_token_embed.new_zeros(()))
        return image_features, zero.to(self.new_token_embed.dtype)

    # ------------------------------------------------------------------------------------------------------------
    # Forward

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        num_images_per_sample: torch.Tensor | list[int] | None = None,
        image_features: ImageFeatures | None = None,
        labels: torch.LongTensor | None = None,
        seg_masks: list[torch.Tensor] | None = None,
        **kwargs,
    ) -> RSVLMOutput:
        if kwargs:
            raise RSVLMInputError(f"unexpected inputs {sorted(kwargs)}")
        if image_features is None and pixel_values is not None:
            image_features = self.encode_images(pixel_values, num_images_per_sample)
        embeds = self.embed_tokens(input_ids, image_features)  # [B, T, H]
        probe_features = image_features
        if self.run_every_module and torch.is_grad_enabled():
            probe_features, unused_image_side = self._image_side_unused(image_features)
            embeds = embeds + unused_image_side  # zero, upstream of the LLM like the parts it stands for
        hidden = self._run_decoder(embeds, attention_mask)  # [B, T, H]
        logits = self.compute_logits(hidden)  # [B, T, V']

        # [SEG] positions: the supervised ones when labels are given, else every [SEG] in the input.
        seg_id = self.config.seg_token_id
        if labels is not None:
            seg_positions = labels == seg_id
        else:
            seg_positions = input_ids == seg_id
            if attention_mask is not None:
                seg_positions &= attention_mask.bool()
        batch_index, columns = seg_positions.nonzero(as_tuple=True)
        phrases = (
            self.seg_phrases(input_ids, list(zip(batch_index.tolist(), columns.tolist())))
            if self.config.phrase_prompt
            else None
        )
        masks = self.decode_masks(
            hidden[seg_positions], batch_index.tolist(), image_features, phrases
        )  # [M, S, S]
        unused_mask_side = None
        if self.run_every_module and torch.is_grad_enabled() and masks.shape[0] == 0:
            # One mask from the first [SEG]-free state, weighted zero: the decoder and its prompt projectors.
            first = next(i for i, c in enumerate(probe_features.contexts) if c is not None)
            row = min(first, hidden.shape[0] - 1)  # a blank image's features have one sample
            blank_phrase = [""] if phrases is not None else None
            probe = self.decode_masks(hidden[row, :1], [first], probe_features, blank_phrase)
            unused_mask_side = probe.float().sum() * 0.0
        counts = seg_positions.sum(-1).tolist()
        pred_masks = list(masks.split(counts))

        ce_loss = mask_loss = loss = None
        if labels is not None:
            shift_logits = logits[:, :-1].reshape(-1, logits.shape[-1])
            shift_labels = labels[:, 1:].reshape(-1).to(shift_logits.device)
            if (shift_labels != IGNORE_INDEX).any():
                ce_loss = F.cross_entropy(shift_logits, shift_labels, ignore_index=IGNORE_INDEX)
            else:
                ce_loss = shift_logits.sum() * 0.0
            loss = self.config.ce_weight * ce_loss
        if seg_masks is not None:
            given = [int(m.shape[0]) for m in seg_masks]
            if given != counts:
                raise RSVLMInputError(
                    f"[SEG] tokens per sample {counts} differ from the masks given per sample {given}"
                )
            if masks.shape[0]:
                target = torch.cat([m.to(masks.device, masks.dtype) for m in seg_masks])  # [M, S, S]
                if target.shape != masks.shape:
                    raise RSVLMInputError(
                        f"seg_masks have shape {tuple(target.shape[1:])}, expected {masks.shape[1:]}"
                    )
                mask_loss = self.config.bce_weight * sigmoid_ce_loss(
                    masks, target
                ) + self.config.dice_weight * dice_loss(masks, target)
            else:
                mask_loss = logits.new_zeros(())
            loss = mask_loss if loss is None else loss + mask_loss
        if loss is not None and unused_mask_side is not None:
            loss = loss + unused_mask_side
        return RSVLMOutput(
            loss=loss,
            ce_loss=ce_loss,
            mask_loss=mask_loss,
            logits=logits,
            pred_masks=pred_masks,
            last_hidden_state=hidden,
            image_features=image_features,
        )

    # ------------------------------------------------------------------------------------------------------------
    # Generation

    def stop_token_ids(self) -> set[int]:
        """End-of-reply ids: the tokenizer's eos, ``<|im_end|>`` and every eos the LLM's generation config lists
        (instruct models such as Llama 3 or Qwen2.5 end turns on ids the tokenizer's eos alone misses)."""
        ids = {self.tokenizer.eos_token_id}
        configured = getattr(self.causal_lm.generation_config, "eos_token_id", None)
        ids.update(configured if isinstance(configured, (list, tuple)) else [configured])
        # One lookup, not get_vocab(): building the whole vocabulary dict cost ~40 ms a turn.
        end_of_turn = self.tokenizer.convert_tokens_to_ids(END_OF_TURN)
        if end_of_turn is not None and end_of_turn != self.tokenizer.unk_token_id:
            ids.add(end_of_turn)
        return {i for i in ids if i is not None}

    def _looping_tail(self, generated: list[int], repeats: int = 4, min_span: int = 8) -> int:
        """How many tokens to drop when the reply ends in one unit of up to 8 tokens said over and over (at least
        ``repeats`` times and ``min_span`` tokens in all): every saying but the first; else 0. A unit with a
        ``[SEG]`` or a digit is a list of regions or boxes ("<p>building</p> [SEG], ..."), never a loop."""
        for unit in range(1, 9):
            times = max(repeats, -(-min_span // unit))
            span = unit * times
            if len(generated) < span:
                break
            tail = generated[-span:]
            if any(tail[k] != tail[k - unit] for k in range(unit, span)):
                continue
            text = self.tokenizer.decode(tail[:unit], skip_special_tokens=False)
            if self.config.seg_token_id in tail[:unit] or any(ch.isdigit() for ch in text):
                continue
            return span - unit
        return 0

    @torch.no_grad()
    def next_token_logits(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        image_features: ImageFeatures | None = None,
    ) -> torch.Tensor:
        """Logits ``[V']`` of the token that would follow ``input_ids`` (batch size 1): one prefill, no cache."""
        device = self.new_token_embed.device
        mask = None if attention_mask is None else attention_mask.to(device)
        hidden = self._run_decoder(self.embed_tokens(input_ids.to(device), image_features), mask)
        return self.compute_logits(hidden[0, -1])

    def _next_token(self, logits: torch.Tensor, do_sample: bool, temperature: float, top_p: float, generator):
        logits = logits.float().clone()  # [V']
        logits[self.config.image_token_id] = float("-inf")  # image placeholders are never text
        if not do_sample or temperature <= 0:
            return int(logits.argmax())
        probs = torch.softmax(logits / temperature, dim=-1)
        sorted_probs, order = probs.sort(descending=True)
        keep = sorted_probs.cumsum(-1) - sorted_probs < top_p  # always keeps the most likely token
        sorted_probs = sorted_probs * keep
        choice = torch.multinomial(sorted_probs / sorted_probs.sum(), 1, generator=generator)
        return int(order[choice])

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        num_images_per_sample: torch.Tensor | list[int] | None = None,
        image_features: ImageFeatures | None = None,
        max_new_tokens: int = 128,
        do_sample: bool = False,
        temperature: float = 0.7,
        top_p: float = 0.9,
        streamer: Callable[[str], None] | None = None,
        generator: torch.Generator | None = None,
        stop_loops: bool = False,
    ) -> GenerationResult:
        """Prefill once, then decode one token at a time on the LLM's KV cache (batch size 1).

        The hidden state of each generated ``[SEG]`` (taken when it is fed back) is collected and the mask decoder
        runs once at the end. Stops at a ``stop_token_ids()`` token or after ``max_new_tokens`` (a ``[SEG]`` at the
        limit still gets its mask). ``streamer(text_piece)`` receives the decoded text as it grows (``[SEG]`` kept,
        other special tokens dropped); the pieces always add up to ``processor.decode(sequences)``, except that with
        ``stop_loops`` a reply that falls into a loop (``_looping_tail``) stops there and loses the repeats already
        streamed.
        """
        if input_ids.shape[0] != 1:
            raise RSVLMInputError(
                f"generate takes one conversation at a time, got a batch of {input_ids.shape[0]}"
            )
        if max_new_tokens < 1:
            raise RSVLMInputError(f"max_new_tokens must be at least 1 (got {max_new_tokens})")
        start = time.perf_counter()
        device = self.new_token_embed.device
        input_ids = input_ids.to(device)
        if image_features is None and pixel_values is not None:
            image_features = self.encode_images(pixel_values, num_images_per_sample)
        mask = None if attention_mask is None else attention_mask.to(device)
        cache = DynamicCache(config=self.decoder.config)
        hidden = self._run_decoder(self.embed_tokens(input_ids, image_features), mask, cache)  # [1, T, H]
        token = self._next_token(self.compute_logits(hidden[0, -1]), do_sample, temperature, top_p, generator)
        ttft = time.perf_counter() - start

        stops = self.stop_token_ids()
        seg_id = self.config.seg_token_id
        processor = self.get_processor() if streamer is not None else None
        generated: list[int] = []
        seg_hidden: list[torch.Tensor] = []
        streamed = ""
        loop_start = time.perf_counter()
        while True:
            generated.append(token)
            if processor is not None and token not in stops:
                text = processor.decode(generated)
                if not text.endswith("\ufffd") and len(text) > len(streamed):
                    streamer(text[len(streamed) :])
                    streamed = text
            if token in stops or (len(generated) >= max_new_tokens and token != seg_id):
                break
            looped = self._looping_tail(generated) if stop_loops else 0
            if looped:  # "background background background ..." to max_new_tokens: cut the repeats and stop
                del generated[-looped:]
                break
            if mask is not None:
                mask = torch.cat([mask, mask.new_ones(1, 1)], dim=1)
            step_ids = torch.tensor([[token]], device=device)
            hidden = self._run_decoder(self.embed_tokens(step_ids), mask, cache)  # [1, 1, H]
            if token == seg_id:
                seg_hidden.append(hidden[0, -1])
            if len(generated) >= max_new_tokens:
                break
            token = self._next_token(
                self.compute_logits(hidden[0, -1]), do_sample, temperature, top_p, generator
            )
        decode_s = time.perf_counter() - loop_start
        if processor is not None:  # bytes held back (a character cut by the end of the reply) go out now
            text = processor.decode(generated)
            if len(text) > len(streamed):
                streamer(text[len(streamed) :])

        mask_start = time.perf_counter()
        states = torch.stack(seg_hidden) if seg_hidden else hidden.new_zeros(0, self.hidden_size)
        phrases = None
        if self.config.phrase_prompt and seg_hidden:
            ids = torch.tensor([generated], device=device)
            phrases = self.seg_phrases(
                ids, [(0, i) for i, t in enumerate(generated) if t == seg_id][: len(seg_hidden)]
            )
        masks = self.decode_masks(states, [0] * len(seg_hidden), image_features, phrases)  # [n_seg, S, S]
        timings = {
            "ttft": ttft,
            "tokens_per_s": (len(generated) - 1) / decode_s if len(generated) > 1 and decode_s > 0 else 0.0,
            "mask_s": time.perf_counter() - mask_start,
        }
        sequences = torch.tensor([generated], dtype=torch.long, device=device)
        return GenerationResult(
            sequences=sequences, masks=[masks], timings=timings, seg_states=states, seg_phrases=phrases
        )

    # ------------------------------------------------------------------------------------------------------------
    # Persistence: the trainable part only

    def _is_trainable_key(self, key: str) -> bool:
        if key.startswith("llm."):
            return "lora_" in key
        if key.startswith("vision."):
            return False
        if key.startswith("mask_decoder.sam."):
            return key.startswith("mask_decoder.sam.mask_decoder.")
        return True

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """What a checkpoint holds: heads, LoRA, new-token rows (and the heads' buffers)."""
        return {k: v for k, v in self.state_dict().items() if self._is_trainable_key(k)}

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Load a checkpoint's tensors, strict on the trainable keys (missing or unexpected keys raise)."""
        expected = set(self.trainable_state_dict())
        missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
        if missing or unexpected:
            raise RSVLMInputError(
                f"checkpoint does not match this model: missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}"
            )
        result = self.load_state_dict(state, strict=False)
        if result.unexpected_keys:  # pragma: no cover - guarded above
            raise RSVLMInputError(f"unexpected keys {result.unexpected_keys[:5]}")

    def save_pretrained(
        self, save_directory: str | os.PathLike, state_dict: dict[str, torch.Tensor] | None = None, **kwargs
    ) -> None:
        """Write ``model.safetensors`` (trainable part only, atomically), ``config.json`` and the processor files.

        ``state_dict``: the tensors to write instead of the model's own (a trainer that gathered sharded
        parameters whole); its trainable keys are kept, as ``transformers``' own ``save_pretrained`` takes one."""
        directory = Path(save_directory)
        directory.mkdir(parents=True, exist_ok=True)
        source = self.trainable_state_dict() if state_dict is None else state_dict
        state = {
            k: v.detach().to("cpu").contiguous().clone()
            for k, v in source.items()
            if self._is_trainable_key(k)
        }
        with atomic_path(directory / WEIGHTS_NAME) as tmp:
            save_file(state, str(tmp), metadata={"format": "pt", "model_type": "rsvlm"})
        self.config.architectures = [type(self).__name__]
        write_text_atomic(directory / "config.json", self.config.to_json_string(use_diff=False))
        self.get_processor().save_pretrained(directory)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **config_overrides):
        """Rebuild on the offline backbones named in ``config.json`` and load the trainable tensors (strict).

        ``config_overrides`` replace config fields (for example ``load_in_4bit=False`` to run a QLoRA checkpoint
        on CPU); an unknown name is an error rather than silently ignored.
        """
        directory = Path(pretrained_model_name_or_path)
        weights = directory / WEIGHTS_NAME
        if not weights.is_file():
            raise RSVLMInputError(f"{directory} holds no {WEIGHTS_NAME}; it is not an rsvlm checkpoint")
        config, unused = RSVLMConfig.from_pretrained(directory, return_unused_kwargs=True, **config_overrides)
        if unused:
            raise RSVLMInputError(
                f"unknown config override(s) {sorted(unused)}; RSVLMConfig documents the fields"
            )
        config.validate_rsvlm()  # overrides are set after the config's own checks ran
        model = cls(config)
        state = load_file(weights, device=str(model.new_token_embed.device))
        model.load_trainable_state_dict(state)
        model.train(False)
        return model
