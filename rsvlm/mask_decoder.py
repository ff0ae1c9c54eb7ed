"""Promptable mask decoders driven by ``[SEG]`` hidden states.

Two implementations share one interface, so the model never asks which one it holds:

- ``image_context(feature_map [D, h, w] | None, pixels [n, 3, S, S]) -> tuple of tensors``: the per-sample
  image side, computed once per image (or pair) and cached with the image features across chat turns.
- ``forward(contexts, sample_index [M], prompts [M, prompt_dim]) -> mask logits [M, S, S]``: one mask per
  prompt, each prompt reading the context of its sample.

``LightMaskDecoder`` is a small SAM-style two-way transformer on the vision tower's feature map, with a
high-resolution branch computed from the pixels so masks get edges finer than the tower's stride. On a large
scene it also decodes *guided* (``scene_guide``): what to look for is decided once on the overview, so every
window (and a single pass over the whole scene) applies the same decision to its own pixels.
``SamMaskDecoderAdapter`` drives a ``transformers`` ``SamModel`` (frozen image encoder, trainable mask decoder),
feeding the projected ``[SEG]`` state as a sparse prompt embedding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel dimension of a ``[B, C, H, W]`` map."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return x * self.weight[:, None, None] + self.bias[:, None, None]


class PositionEmbeddingRandom(nn.Module):
    """SAM's random Fourier features of normalised (x, y) coordinates; a saved buffer, so it round-trips."""

    def __init__(self, dim: int, scale: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("gaussian", scale * torch.randn(2, dim // 2))

    def forward(self, height: int, width: int, frames: torch.Tensor | None = None) -> torch.Tensor:
        """``[F, h*w, dim]`` encodings of a ``height x width`` grid's cell centres.

        ``frames`` ``[F, 4]`` (x0, y0, x1, y1) place each grid inside a larger normalised frame (a window inside
        its scene), so a pixel gets the same encoding in every window that holds it; None: the grid is the
        whole frame (F = 1).
        """
        device = self.gaussian.device
        ys = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) / height
        xs = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) / width
        if frames is None:
            frames = torch.tensor([[0.0, 0.0, 1.0, 1.0]], device=device)
        frames = frames.to(device, torch.float32)
        xs = frames[:, 0:1] + (frames[:, 2:3] - frames[:, 0:1]) * xs  # [F, w]
        ys = frames[:, 1:2] + (frames[:, 3:4] - frames[:, 1:2]) * ys  # [F, h]
        coords = torch.stack(
            [xs[:, None, :].expand(-1, height, -1), ys[:, :, None].expand(-1, -1, width)], dim=-1
        )  # [F, h, w, 2] as (x, y)
        proj = 2 * math.pi * ((2 * coords - 1) @ self.gaussian)  # [F, h, w, dim/2]
        return torch.cat([proj.sin(), proj.cos()], dim=-1).flatten(1, 2)  # [F, h*w, dim]


class Attention(nn.Module):
    """Multi-head attention with an optional narrower inner width (SAM's ``downsample_rate``)."""

    def __init__(self, dim: int, heads: int, downsample: int = 1) -> None:
        super().__init__()
        inner = dim // downsample
        self.heads = heads
        self.q_proj = nn.Linear(dim, inner)
        self.k_proj = nn.Linear(dim, inner)
        self.v_proj = nn.Linear(dim, inner)
        self.out_proj = nn.Linear(inner, dim)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.view(b, n, self.heads, c // self.heads).transpose(1, 2)  # [B, heads, N, c/heads]

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        q, k, v = self._split(self.q_proj(q)), self._split(self.k_proj(k)), self._split(self.v_proj(v))
        out = F.scaled_dot_product_attention(q, k, v)  # [B, heads, Nq, c/heads]
        return self.out_proj(out.transpose(1, 2).flatten(2))


class TwoWayBlock(nn.Module):
    """Token self-attention, token->image attention, MLP, image->token attention (SAM's two-way block)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int = 4, skip_first_pe: bool = False) -> None:
        super().__init__()
        self.self_attn = Attention(dim, heads)
        self.norm1 = nn.LayerNorm(dim)
        self.cross_token_to_image = Attention(dim, heads, downsample=2)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, dim * mlp_ratio), nn.GELU(), nn.Linear(dim * mlp_ratio, dim))
        self.norm3 = nn.LayerNorm(dim)
        self.cross_image_to_token = Attention(dim, heads, downsample=2)
        self.norm4 = nn.LayerNorm(dim)
        self.skip_first_pe = skip_first_pe

    def forward(
        self, tokens: torch.Tensor, image: torch.Tensor, token_pe: torch.Tensor, image_pe: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.attend_tokens(tokens, image, token_pe, image_pe)
        return tokens, self.attend_image(image, tokens, token_pe, image_pe)

    def attend_tokens(
        self, tokens: torch.Tensor, image: torch.Tensor, token_pe: torch.Tensor, image_pe: torch.Tensor
    ) -> torch.Tensor:
        """The token side: self-attention, attention over the whole image, MLP."""
        if self.skip_first_pe:
            tokens = self.self_attn(tokens, tokens, tokens)
        else:
            q = tokens + token_pe
            tokens = tokens + self.self_attn(q, q, tokens)
        tokens = self.norm1(tokens)
        tokens = self.norm2(tokens + self.cross_token_to_image(tokens + token_pe, image + image_pe, image))
        return self.norm3(tokens + self.mlp(tokens))

    def attend_image(
        self, image: torch.Tensor, tokens: torch.Tensor, token_pe: torch.Tensor, image_pe: torch.Tensor
    ) -> torch.Tensor:
        """The image side: each position attends to the (two) tokens only, so it is local given the tokens."""
        return self.norm4(image + self.cross_image_to_token(image + image_pe, tokens + token_pe, tokens))


def _box_mean(x: torch.Tensor, size: int) -> torch.Tensor:
    return F.avg_pool2d(F.pad(x, [size // 2] * 4, mode="replicate"), size, stride=1)


class PixelCues(nn.Module):
    """Sensor-agnostic pixel cues beside the raw pixels, for the high-resolution branch (no parameters).

    Why: on imagery from other sensors and places, frozen tower features alone transferred poorly; cues that mean
    the same thing whatever the sensor's gain (window-standardised colour, greenness ExG = 2g - r - b, blueness
    b - r, local texture at 5 and 15 px, edge strength) were the one lever that helped every class. A single-band
    image (r = g = b) gives ExG = b - r = 0, so greyscale and colour inputs share one path.
    ``[n, 3, S, S]`` in [0, 1] -> ``[n, 11, S, S]``: raw - 0.5, standardised RGB, ExG, b - r, std5, std15, Sobel.
    """

    channels = 11

    @staticmethod
    def statistics(rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(mean [n, 3, 1, 1], std [n, 3, 1, 1], contrast [n, 1, 1, 1])``: what the cues are relative to."""
        x = rgb.float()
        mean = x.mean(dim=(2, 3), keepdim=True)
        std = x.std(dim=(2, 3), keepdim=True).clamp_min(1e-3)
        contrast = x.mean(1, keepdim=True).std(dim=(2, 3), keepdim=True).clamp_min(1e-3)
        return mean, std, contrast

    def forward(self, rgb: torch.Tensor, stats: tuple[torch.Tensor, ...] | None = None) -> torch.Tensor:
        """``stats`` (``statistics`` of another image, e.g. a scene's overview) replace the window's own, so the
        windows of one scene are standardised alike."""
        x = rgb.float()
        mean, std, scale = self.statistics(x) if stats is None else (t.to(x.device) for t in stats)
        standard = ((x - mean) / std).clamp(-4, 4)
        r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
        exg, blue = 2 * g - r - b, b - r
        luma = x.mean(1, keepdim=True)  # texture is relative to the image's contrast (``scale``)
        texture = []
        for size in (5, 15):
            var = (_box_mean(luma * luma, size) - _box_mean(luma, size) ** 2).clamp_min(0)
            texture.append(var.sqrt() / scale)
        kx = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]], device=x.device).view(1, 1, 3, 3)
        padded = F.pad(luma, [1, 1, 1, 1], mode="replicate")
        gx, gy = F.conv2d(padded, kx), F.conv2d(padded, kx.transpose(2, 3))
        edges = (gx * gx + gy * gy).sqrt() / (4 * scale)
        cues = torch.cat([x - 0.5, standard, exg, blue, *texture, edges], dim=1)
        return cues.to(rgb.dtype)


class HighResBranch(nn.Module):
    """Small convs on the pixels (and, with ``cues``, on ``PixelCues``) at stride 4: the edges the stride-8/16
    tower cannot see."""

    def __init__(self, in_channels: int, dim: int, cues: bool = False) -> None:
        super().__init__()
        self.cues = PixelCues() if cues else None
        first = PixelCues.channels if cues else in_channels
        self.net = nn.Sequential(
            nn.Conv2d(first, dim, 3, stride=2, padding=1),
            nn.GELU(),
            nn.Conv2d(dim, dim, 3, stride=2, padding=1),
            nn.GELU(),
            nn.Conv2d(dim, dim, 3, padding=1),
        )

    def forward(self, pixels: torch.Tensor, stats: tuple[torch.Tensor, ...] | None = None) -> torch.Tensor:
        x = self.cues(pixels, stats) if self.cues is not None else pixels - 0.5
        return self.net(x.to(self.net[0].weight.dtype))  # [B, dim, S/4, S/4]


class LightMaskDecoder(nn.Module):
    """A light promptable decoder: one mask per prompt token on a tower feature map plus a pixel branch.

    Flow per mask: feature map -> 1x1 to ``dim`` + random Fourier PE; tokens ``[output, prompt]``; ``depth``
    two-way blocks and a final token->image attention; the image embedding is upsampled x2, resized to the
    stride-4 grid and fused with the high-resolution branch; a hypernetwork MLP of the output token dotted with the
    fused features gives logits, bilinearly resized to ``image_size``.
    """

    def __init__(
        self,
        in_channels: int,
        dim: int = 128,
        depth: int = 2,
        heads: int = 4,
        highres_dim: int = 32,
        image_size: int = 256,
        highres_cues: bool = False,
    ) -> None:
        super().__init__()
        self.prompt_dim = dim
        self.image_size = image_size
        self.input_proj = nn.Sequential(nn.Conv2d(in_channels, dim, 1), LayerNorm2d(dim))
        self.pe = PositionEmbeddingRandom(dim)
        self.output_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.blocks = nn.ModuleList(TwoWayBlock(dim, heads, skip_first_pe=(i == 0)) for i in range(depth))
        self.final_attn = Attention(dim, heads, downsample=2)
        self.final_norm = nn.LayerNorm(dim)
        self.upscale = nn.Sequential(
            nn.ConvTranspose2d(dim, dim // 4, 2, stride=2), LayerNorm2d(dim // 4), nn.GELU()
        )
        self.highres = HighResBranch(3, highres_dim, cues=highres_cues)
        self.pair_fuse = nn.Conv2d(2 * highres_dim, highres_dim, 1)
        out_dim = dim // 8
        self.fuse = nn.Sequential(
            nn.Conv2d(dim // 4 + highres_dim, out_dim * 2, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(out_dim * 2, out_dim, 1),
        )
        self.hyper = nn.Sequential(
            nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, out_dim)
        )

    def image_context(
        self, feature_map: torch.Tensor | None, pixels: torch.Tensor, guide: SceneGuide | None = None
    ) -> tuple[torch.Tensor, ...]:
        """``(feature map [D, h, w], high-res features [c, S/4, S/4])`` for one sample (one image or a pair).

        For a pair the high-res features are ``fuse(h2, |h1 - h2|)``, so edges of what changed are visible. With
        a scene's ``guide`` the pixel cues are standardised by the overview's statistics, not the window's.
        """
        if feature_map is None:
            raise ValueError("the light mask decoder needs a tower feature map")
        hr = self.highres(pixels, guide.pixel_stats if guide is not None else None)  # [n, c, S/4, S/4]
        if hr.shape[0] == 2:
            hr = self.pair_fuse(torch.cat([hr[1:], (hr[1:] - hr[:1]).abs()], dim=1))
        return feature_map, hr[-1]

    def forward(
        self,
        contexts: list[tuple[torch.Tensor, ...]],
        sample_index: list[int],
        prompts: torch.Tensor,
        guide: SceneGuide | None = None,
        frames: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Mask logits ``[M, S, S]``, one per prompt on its sample's context.

        Guided (a scene's windows): ``guide`` holds, per prompt row, the token states the overview gave, and
        ``frames`` ``[M, 4]`` where each window lies in the overview's normalised frame. Each window position
        then attends to the overview's tokens, with its scene position's encoding: the result depends on the
        pixels under it and the overview, not on where the window was cut.
        """
        maps = torch.stack([contexts[i][0] for i in sample_index])  # [M, D, h, w]
        highres = torch.stack([contexts[i][1] for i in sample_index])  # [M, c, S/4, S/4]
        image, image_pe, tokens, token_pe = self._embed(maps, prompts, frames)
        m, dim, h, w = maps.shape[0], self.prompt_dim, maps.shape[-2], maps.shape[-1]
        if guide is None:
            for block in self.blocks:
                tokens, image = block(tokens, image, token_pe, image_pe)
            tokens = self._final_tokens(tokens, image, token_pe, image_pe)
        else:
            for block, fixed in zip(self.blocks, guide.block_tokens):
                image = block.attend_image(image, fixed.to(image.dtype), token_pe, image_pe)
            tokens = guide.final_tokens.to(image.dtype)

        up = self.upscale(image.transpose(1, 2).reshape(m, dim, h, w))  # [M, dim/4, 2h, 2w]
        if up.shape[-2:] != highres.shape[-2:]:
            up = F.interpolate(up, size=highres.shape[-2:], mode="bilinear", align_corners=False)
        fused = self.fuse(torch.cat([up, highres], dim=1))  # [M, dim/8, S/4, S/4]
        weights = self.hyper(tokens[:, 0])  # [M, dim/8]
        logits = torch.einsum("mc,mchw->mhw", weights, fused)  # [M, S/4, S/4]
        size = (self.image_size, self.image_size)
        return F.interpolate(logits[:, None], size=size, mode="bilinear", align_corners=False)[
            :, 0
        ]  # [M, S, S]

    def scene_guide(
        self, context: tuple[torch.Tensor, ...], pixels: torch.Tensor, prompts: torch.Tensor
    ) -> SceneGuide:
        """Decide on a scene's overview (its ``context`` and model pixels ``[n, 3, S, S]``) what each of ``prompts``
        ``[M, P]`` looks for: the token states every window of the scene then applies (``forward(guide=...)``)."""
        maps = context[0][None].expand(len(prompts), -1, -1, -1)  # [M, D, h, w]
        image, image_pe, tokens, token_pe = self._embed(maps, prompts, None)
        block_tokens = []
        for block in self.blocks:
            tokens, image = block(tokens, image, token_pe, image_pe)
            block_tokens.append(tokens)
        final = self._final_tokens(tokens, image, token_pe, image_pe)
        return SceneGuide(block_tokens, final, PixelCues.statistics(pixels[-1:]))

    def _embed(self, maps: torch.Tensor, prompts: torch.Tensor, frames: torch.Tensor | None):
        """Image tokens ``[M, h*w, dim]`` with their encodings, and the ``[output, prompt]`` tokens ``[M, 2, dim]``
        (their own encodings, as SAM uses the prompt tokens' initial values)."""
        x = self.input_proj(maps.to(prompts.dtype))  # [M, dim, h, w]
        m, _, h, w = x.shape
        image = x.flatten(2).transpose(1, 2)  # [M, h*w, dim]
        image_pe = self.pe(h, w, frames).to(image.dtype)  # [1 or M, h*w, dim]
        tokens = torch.cat([self.output_token.expand(m, -1, -1), prompts[:, None, :]], dim=1)  # [M, 2, dim]
        return image, image_pe, tokens, tokens

    def _final_tokens(self, tokens, image, token_pe, image_pe) -> torch.Tensor:
        return self.final_norm(tokens + self.final_attn(tokens + token_pe, image + image_pe, image))


@dataclass
class SceneGuide:
    """What ``LightMaskDecoder`` decided on a scene's overview, per prompt row: the tokens after each two-way
    block and the final tokens (``[M, 2, dim]`` each), and the overview's pixel-cue statistics."""

    block_tokens: list[torch.Tensor]
    final_tokens: torch.Tensor
    pixel_stats: tuple[torch.Tensor, ...]

    def rows(self, index: list[int] | torch.Tensor) -> SceneGuide:
        """The guide for prompt rows ``index`` (a batch of windows repeats the scene's prompts)."""
        index = torch.as_tensor(index, dtype=torch.long)
        return SceneGuide([t[index] for t in self.block_tokens], self.final_tokens[index], self.pixel_stats)


class SamMaskDecoderAdapter(nn.Module):
    """Drive a ``transformers`` ``SamModel``: frozen image encoder and prompt encoder, trainable mask decoder.

    The image (the second one for a pair: SAM has no change input) is resized to SAM's input size and normalised
    with SAM's statistics; each projected ``[SEG]`` state is one sparse prompt embedding; SAM's single-mask output
    (low resolution) is bilinearly resized to ``image_size``.
    """

    frozen_prefixes = ("sam.vision_encoder", "sam.prompt_encoder", "sam.shared_image_embedding")

    def __init__(
        self,
        sam: nn.Module,
        image_size: int,
        image_mean: tuple[float, ...] = (0.485, 0.456, 0.406),
        image_std: tuple[float, ...] = (0.229, 0.224, 0.225),
    ) -> None:
        super().__init__()
        self.sam = sam
        sam.requires_grad_(False)
        sam.mask_decoder.requires_grad_(True)
        self.prompt_dim = int(sam.config.prompt_encoder_config.hidden_size)
        size = sam.config.vision_config.image_size
        self.sam_size = int(size if isinstance(size, int) else size[0])
        self.image_size = image_size
        self.register_buffer("image_mean", torch.tensor(image_mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("image_std", torch.tensor(image_std).view(1, -1, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> SamMaskDecoderAdapter:
        super().train(mode)
        self.sam.vision_encoder.eval()
        self.sam.prompt_encoder.eval()
        return self

    def image_context(
        self, feature_map: torch.Tensor | None, pixels: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        x = F.interpolate(
            pixels[-1:].float(), size=(self.sam_size, self.sam_size), mode="bilinear", antialias=True
        )
        x = (x - self.image_mean) / self.image_std
        dtype = self.sam.vision_encoder.get_input_embeddings().projection.weight.dtype
        with torch.no_grad():
            embedding = self.sam.get_image_embeddings(x.to(dtype))  # [1, C, h, w]
        return (embedding[0].float(),)

    def forward(
        self, contexts: list[tuple[torch.Tensor, ...]], sample_index: list[int], prompts: torch.Tensor
    ) -> torch.Tensor:
        embeddings = torch.stack([contexts[i][0] for i in sample_index])  # [M, C, h, w]
        m, _, h, w = embeddings.shape
        image_pe = self.sam.get_image_wide_positional_embeddings().expand(m, -1, -1, -1)
        dense = self.sam.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(m, -1, h, w)
        sparse = prompts[:, None, None, :]  # [M, point_batch=1, 1 prompt, C]
        masks, _ = self.sam.mask_decoder(
            image_embeddings=embeddings,
            image_positional_embeddings=image_pe,
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=False,
        )  # [M, 1, 1, 4h, 4w]
        size = (self.image_size, self.image_size)
        return F.interpolate(masks[:, 0].float(), size=size, mode="bilinear", align_corners=False)[:, 0]
