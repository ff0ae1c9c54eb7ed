"""A cache of the frozen vision tower's feature maps, keyed by the pixels themselves.

For an RGB model the tower (GeoEmbed, SigLIP...) is frozen and in inference mode, so its feature map is a pure
function of the input pixels. The projector that turns maps into tokens is trainable, so the cache holds the
tower's maps ``[D, h, w]``, not tokens; everything after the tower runs each step as usual.

    install_feature_cache(model, max_mb=2048)   # model.vision is wrapped; remove_feature_cache(model) undoes it

Keys are a BLAKE2 digest of the float32 pixel bytes, so a cache can never serve the map of another image (a
changed augmentation or resize simply misses). Misses are encoded one image at a time, so a map is bit-identical
whether it was computed in this step or an earlier one (a batched convolution may round differently), which keeps
a resumed run on exactly the same numbers as an uninterrupted one. Inputs that need gradients (a trainable band
adapter) bypass the cache.
"""

from __future__ import annotations

import hashlib
import logging

import torch
from torch import nn

logger = logging.getLogger(__name__)


class CachedVisionTower(nn.Module):
    """Wraps a ``rsvlm.vision.VisionTower``: same call, same output, each distinct image encoded once."""

    def __init__(self, tower: nn.Module, max_mb: int = 2048) -> None:
        super().__init__()
        self.tower = tower
        self.max_bytes = int(max_mb) * 2**20
        self.cache: dict[bytes, torch.Tensor] = {}
        self.used_bytes = 0
        self.hits = 0
        self.misses = 0

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("tower"), name)  # out_channels, stride, backbone...

    def train(self, mode: bool = True) -> CachedVisionTower:
        super().train(mode)
        self.tower.train(mode)  # the tower's own train() keeps its backbone in inference mode
        return self

    @staticmethod
    def key(image: torch.Tensor) -> bytes:
        data = image.detach().to("cpu", torch.float32).contiguous().numpy().tobytes()
        return hashlib.blake2b(data, digest_size=16).digest() + bytes(str(tuple(image.shape)), "ascii")

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        if pixels.requires_grad:
            return self.tower(pixels)
        maps = []
        for image in pixels:  # [3, S, S]
            key = self.key(image)
            cached = self.cache.get(key)
            if cached is None:
                self.misses += 1
                with torch.no_grad():
                    cached = self.tower(image[None])[0]  # [D, h, w]
                size = cached.numel() * cached.element_size()
                if self.used_bytes + size <= self.max_bytes:
                    self.cache[key] = cached
                    self.used_bytes += size
            else:
                self.hits += 1
            maps.append(cached)
        return torch.stack(maps)  # [N, D, h, w]


def install_feature_cache(model: nn.Module, max_mb: int = 2048) -> CachedVisionTower | None:
    """Wrap ``model.vision`` when the tower input cannot need gradients (RGB: frozen identity band adapter)."""
    if isinstance(model.vision, CachedVisionTower):
        return model.vision
    if any(p.requires_grad for p in model.band_adapter.parameters()):
        logger.info("vision feature cache off: the band adapter trains, so gradients pass through the tower")
        return None
    model.vision = CachedVisionTower(model.vision, max_mb)
    return model.vision


def remove_feature_cache(model: nn.Module) -> None:
    if isinstance(model.vision, CachedVisionTower):
        model.vision = model.vision.tower
