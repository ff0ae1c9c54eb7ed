"""Vision side: band adapter -> frozen tower -> feature map; projector to LLM tokens; two-date change fusion.

Every tower is wrapped into one interface, ``VisionTower(pixels [B, C, H, W] in [0, 1]) -> [B, D, h, w]``, so
the rest of the model never asks which network it runs:

- GeoEmbed V3 (our PyTorch port, packaged): a ResNet with ``out_channels``, ``stride``, ``image_mean`` and
  ``image_std`` attributes that maps normalised pixels to a stride-8 map. Any ``nn.Module`` with those attributes
  is accepted the same way.
- ``transformers`` ViT-like models from a local folder (SigLIP, CLIP, DINOv2, ViT): patch tokens are reshaped to
  their grid and CLS/register tokens dropped; mean/std come from the folder's ``preprocessor_config.json``.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel

logger = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class BandAdapter(nn.Module):
    """A learned 1x1 conv from ``C`` input bands to the tower's 3 channels.

    Initialised so an RGB input passes unchanged (identity) and any other band count starts as the band average
    in all three channels (a grey image the tower already understands); training then learns a better mix.
    """

    def __init__(self, in_channels: int, out_channels: int = 3) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.proj = nn.Conv2d(in_channels, out_channels, kernel_size=1)
        with torch.no_grad():
            self.proj.bias.zero_()
            if in_channels == out_channels:
                self.proj.weight.copy_(torch.eye(out_channels).view(out_channels, in_channels, 1, 1))
            else:
                self.proj.weight.fill_(1.0 / in_channels)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        if pixels.shape[1] != self.in_channels:
            raise ValueError(
                f"images have {pixels.shape[1]} bands but the model was configured with in_channels="
                f"{self.in_channels}"
            )
        return self.proj(pixels)  # [B, 3, H, W]


class VisionTower(nn.Module):
    """A frozen vision network behind one call: RGB pixels in [0, 1] -> feature map ``[B, D, h, w]``.

    Normalisation with the tower's own mean/std happens here, so callers always pass raw [0, 1] pixels.
    """

    def __init__(
        self,
        backbone: nn.Module,
        image_mean: tuple[float, ...] | None = None,
        image_std: tuple[float, ...] | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone.requires_grad_(False).eval()
        self.is_transformers = isinstance(backbone, PreTrainedModel)
        if self.is_transformers:
            config = getattr(backbone.config, "vision_config", None) or backbone.config
            self.net = getattr(backbone, "vision_model", backbone)
            self.patch_size = int(config.patch_size)
            self.out_channels = int(config.hidden_size)
            self.stride = self.patch_size
            params = inspect.signature(self.net.forward).parameters
            self._interpolate = "interpolate_pos_encoding" in params
        else:
            for attr in ("out_channels", "stride"):
                if not hasattr(backbone, attr):
                    raise ValueError(f"vision backbone {type(backbone).__name__} has no {attr!r} attribute")
            if not isinstance(backbone.stride, int) or not isinstance(backbone.out_channels, int):
                raise ValueError(
                    f"vision backbone {type(backbone).__name__} needs int out_channels and stride"
                )
            self.net = backbone
            self.out_channels = backbone.out_channels
            self.stride = backbone.stride
            image_mean = image_mean or getattr(backbone, "image_mean", None)
            image_std = image_std or getattr(backbone, "image_std", None)
        mean = torch.tensor(image_mean or IMAGENET_MEAN, dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(image_std or IMAGENET_STD, dtype=torch.float32).view(1, -1, 1, 1)
        # Not persistent: they come with the backbone, not with our checkpoint.
        self.register_buffer("image_mean", mean, persistent=False)
        self.register_buffer("image_std", std, persistent=False)

    @classmethod
    def from_name(cls, name_or_path: str | os.PathLike) -> VisionTower:
        """Resolve a packaged tower name or a local folder offline (``rsvlm.backbones``) and wrap it."""
        from rsvlm import backbones

        backbone = backbones.load_vision_model(name_or_path)
        mean, std = _preprocessor_stats(name_or_path)
        return cls(backbone, mean, std)

    def train(self, mode: bool = True) -> VisionTower:
        # The tower is frozen: batch-norm statistics and dropout stay in inference mode while the heads train.
        super().train(mode)
        self.backbone.eval()
        return self

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = (pixels.float() - self.image_mean) / self.image_std  # [B, 3, H, W]
        dtype = next(self.backbone.parameters()).dtype
        if not self.is_transformers:
            return self.net(x.to(dtype)).float()  # [B, D, H/stride, W/stride]
        height, width = x.shape[-2:]
        gh, gw = max(1, round(height / self.patch_size)), max(1, round(width / self.patch_size))
        if (gh * self.patch_size, gw * self.patch_size) != (height, width):
            x = F.interpolate(
                x, size=(gh * self.patch_size, gw * self.patch_size), mode="bilinear", antialias=True
            )
        kwargs = {"interpolate_pos_encoding": True} if self._interpolate else {}
        hidden = self.net(pixel_values=x.to(dtype), **kwargs).last_hidden_state  # [B, T, D]
        patches = hidden[:, -gh * gw :]  # CLS and register tokens come first; keep the patch grid
        return patches.transpose(1, 2).reshape(x.shape[0], -1, gh, gw).float()  # [B, D, gh, gw]


def _preprocessor_stats(name_or_path: str | os.PathLike) -> tuple[tuple | None, tuple | None]:
    path = Path(name_or_path).expanduser() / "preprocessor_config.json"
    if not path.is_file():
        return None, None
    data = json.loads(path.read_text())
    mean, std = data.get("image_mean"), data.get("image_std")
    if mean is None or std is None:
        logger.warning("%s has no image_mean/image_std; using ImageNet statistics", path)
    return (tuple(mean) if mean else None), (tuple(std) if std else None)


class Projector(nn.Module):
    """Feature map -> ``grid x grid`` image tokens in the LLM's hidden size (adaptive pool, LayerNorm, MLP)."""

    def __init__(self, in_dim: int, out_dim: int, grid: int) -> None:
        super().__init__()
        self.grid = grid
        self.norm = nn.LayerNorm(in_dim)
        self.mlp = nn.Sequential(nn.Linear(in_dim, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))

    def forward(self, feature_map: torch.Tensor) -> torch.Tensor:
        pooled = F.adaptive_avg_pool2d(feature_map, self.grid)  # [B, D, g, g]
        tokens = pooled.flatten(2).transpose(1, 2)  # [B, g*g, D]
        return self.mlp(self.norm(tokens))  # [B, g*g, H]


class ChangeFusion(nn.Module):
    """Two dates -> one change feature map (DeltaVLM-style): from ``(f1, f2, |f1 - f2|)`` to ``[B, D, h, w]``.

    The difference term makes change the easy signal; f1 and f2 keep what changed into what. A residual on
    ``f2`` keeps the map in the tower's feature space, so the same projector and mask decoder read it.
    """

    def __init__(self, dim: int, hidden: int | None = None) -> None:
        super().__init__()
        hidden = hidden or min(dim, 256)
        self.reduce = nn.Conv2d(3 * dim, hidden, kernel_size=1)
        self.spatial = nn.Conv2d(hidden, hidden, kernel_size=3, padding=1, groups=hidden)
        self.expand = nn.Conv2d(hidden, dim, kernel_size=1)
        self.act = nn.GELU()

    def forward(self, f1: torch.Tensor, f2: torch.Tensor) -> torch.Tensor:
        x = torch.cat([f1, f2, (f1 - f2).abs()], dim=1)  # [B, 3D, h, w]
        x = self.act(self.reduce(x))
        x = self.act(self.spatial(x))
        return f2 + self.expand(x)  # [B, D, h, w]
