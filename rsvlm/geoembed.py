"""GeoEmbed V3 in plain PyTorch: the ResNet-18 tile encoder of the ``geoembed`` package, as a feature map.

The package (``geoembed==1.1.2``, MIT) runs its network through netcl/OpenCL; this is a port of its
``arch.NetCLResNet18`` + ``arch.TileEncoderV3`` that loads the packaged ``weights/v3.npz`` unchanged.

What the package does, and what we keep:

- input: RGB, ``x / 255`` then ``(x - 0.5) / 0.5`` (so ``image_mean = image_std = (0.5, 0.5, 0.5)`` in [0, 1]
  pixel space), resized to 128 px tiles at ~0.1-0.15 m (``preprocess.preprocess``, ``models._CONFIGS["v3"]``);
- backbone: a CIFAR-style ResNet-18: 3x3 stride-1 stem without max-pool, four stages of two BasicBlocks
  (64, 128, 256, 512 channels), stages 2-4 halve the resolution. Its native last stage is therefore at stride 8
  with 512 channels, exactly the ``[B, 512, H/8, W/8]`` map the VLM wants: no stage is cut or dilated;
- head (kept for parity checks and tile retrieval, not used by the VLM): average-pool the map to 4x4, flatten,
  a linear layer to 256, L2-normalise (``TileEncoderV3.forward``).

netcl's BatchNorm in inference mode is ``gamma * (x - mean) / sqrt(var + 1e-5) + beta``, the same as PyTorch's.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rsvlm.atomic import atomic_path

# Metadata arrays of v3.npz: they describe the constructor arguments and are checked, not loaded as weights.
_NPZ_METADATA = {"embed_dim": "embed_dim", "base_channels": "width", "pool_size": "pool_size"}


class GeoEmbedWeightsError(ValueError):
    """An ``.npz`` file does not match the network it is loaded into (missing, extra or misshapen arrays)."""


class BasicBlock(nn.Module):
    """ResNet BasicBlock; names (``conv1``, ``bn1``, ``short.0``...) follow the npz keys of the package."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.short: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.short = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(self.conv1(x)))
        h = self.bn2(self.conv2(h))
        return F.relu(h + self.short(x))


class ResNetBackbone(nn.Module):
    """CIFAR/NAIP-style ResNet: stride-1 3x3 stem, no max-pool, ``depth`` blocks per stage, stride 8 overall."""

    def __init__(self, width: int = 64, depth: int = 2) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, width, 3, stride=1, padding=1, bias=False), nn.BatchNorm2d(width)
        )
        channels = [width, width * 2, width * 4, width * 8]
        in_channels = width
        for index, out_channels in enumerate(channels):
            stride = 1 if index == 0 else 2
            blocks = [BasicBlock(in_channels, out_channels, stride)]
            blocks += [BasicBlock(out_channels, out_channels) for _ in range(depth - 1)]
            self.add_module(f"layer{index + 1}", nn.Sequential(*blocks))
            in_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.stem(x))  # [B, w, H, W]
        h = self.layer1(h)  # [B, w, H, W]
        h = self.layer2(h)  # [B, 2w, H/2, W/2]
        h = self.layer3(h)  # [B, 4w, H/4, W/4]
        return self.layer4(h)  # [B, 8w, H/8, W/8]


class GeoEmbedResNet(nn.Module):
    """GeoEmbed V3 as a frozen-able feature extractor: ``forward`` gives the stride-8 map, ``embed`` the vector.

    Attributes used by ``rsvlm.vision``: ``out_channels`` (512 for V3), ``stride`` (8), ``image_mean`` and
    ``image_std`` (for pixels in [0, 1]; callers feed ``(x - mean) / std``), ``native_tile`` (128 px, the tile
    size the network was trained on; other sizes divisible by 8 work, the network is fully convolutional).
    """

    stride: int = 8
    image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    image_std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    native_tile: int = 128

    def __init__(self, width: int = 64, depth: int = 2, embed_dim: int = 256, pool_size: int = 4) -> None:
        super().__init__()
        self.width, self.depth, self.embed_dim, self.pool_size = width, depth, embed_dim, pool_size
        self.out_channels = width * 8
        self.bb = ResNetBackbone(width, depth)
        self.fc = nn.Linear(self.out_channels * pool_size * pool_size, embed_dim)

    @classmethod
    def tiny(cls) -> GeoEmbedResNet:
        """A small random network with the same layout, for fast tests (``out_channels`` 32)."""
        return cls(width=4, depth=1, embed_dim=16, pool_size=2)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` normalised RGB -> ``[B, out_channels, ceil(H/8), ceil(W/8)]`` features."""
        if pixel_values.ndim != 4 or pixel_values.shape[1] != 3:
            raise ValueError(
                f"GeoEmbed expects [B, 3, H, W] RGB pixels, got shape {tuple(pixel_values.shape)}"
            )
        return self.bb(pixel_values)

    def embed(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The package's tile embedding: ``[B, 3, H, W]`` -> L2-normalised ``[B, embed_dim]``.

        Like ``TileEncoderV3.forward``: average pool with kernel and stride ``H/8 // pool_size`` (so the map must
        divide into ``pool_size`` cells: 128 px tiles for V3), flatten channel-major, linear, normalise.
        """
        feat = self.bb(pixel_values)  # [B, C, h, w]
        kernel = (feat.shape[2] // self.pool_size, feat.shape[3] // self.pool_size)
        pooled = F.avg_pool2d(feat, kernel_size=kernel, stride=kernel)  # [B, C, p, p]
        if pooled.shape[2:] != (self.pool_size, self.pool_size):
            raise ValueError(
                f"embed needs tiles whose feature map splits into {self.pool_size}x{self.pool_size} cells, "
                f"got a {feat.shape[2]}x{feat.shape[3]} map (use {self.native_tile} px tiles)"
            )
        return F.normalize(self.fc(pooled.flatten(1)), dim=-1, eps=1e-8)  # [B, embed_dim]

    def load_npz(self, path: str | os.PathLike) -> GeoEmbedResNet:
        """Load a GeoEmbed ``.npz`` (V3 key layout) strictly: every array used, every parameter filled.

        Keys map one to one onto our state dict (the module names follow the package's export), except that
        netcl stores ``fc.weight`` as ``[in, out]`` (we transpose) and three metadata arrays describe the shape.
        """
        path = Path(path)
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
        for key, attribute in _NPZ_METADATA.items():
            if key in arrays and int(arrays[key].reshape(-1)[0]) != getattr(self, attribute):
                raise GeoEmbedWeightsError(
                    f"{path.name}: {key}={int(arrays[key].reshape(-1)[0])} but the network has "
                    f"{attribute}={getattr(self, attribute)}"
                )
            arrays.pop(key, None)
        if "fc.weight" in arrays:
            arrays["fc.weight"] = arrays["fc.weight"].T  # netcl Linear keeps [in, out]
        own = self.state_dict()
        expected = {key for key in own if not key.endswith("num_batches_tracked")}
        missing, unexpected = sorted(expected - arrays.keys()), sorted(arrays.keys() - expected)
        if missing or unexpected:
            raise GeoEmbedWeightsError(
                f"{path.name} does not match GeoEmbedResNet(width={self.width}, depth={self.depth}): "
                f"missing {missing[:5]}{'...' if len(missing) > 5 else ''} ({len(missing)}), "
                f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''} ({len(unexpected)})"
            )
        bad = [
            f"{k} {arrays[k].shape} vs {tuple(own[k].shape)}"
            for k in expected
            if arrays[k].shape != own[k].shape
        ]
        if bad:
            raise GeoEmbedWeightsError(f"{path.name}: shape mismatch: {'; '.join(sorted(bad)[:5])}")
        state = {
            key: torch.from_numpy(np.ascontiguousarray(arrays[key], dtype=np.float32)) for key in expected
        }
        self.load_state_dict(state, strict=False)  # only num_batches_tracked is left out, checked above
        return self


def save_npz(model: GeoEmbedResNet, path: str | os.PathLike) -> None:
    """Write ``model`` in the package's V3 npz layout (used by tests to build a tiny file; atomic write)."""
    path = Path(path)
    arrays = {
        key: value.detach().cpu().numpy()
        for key, value in model.state_dict().items()
        if not key.endswith("num_batches_tracked")
    }
    arrays["fc.weight"] = arrays["fc.weight"].T.copy()
    for key, attribute in _NPZ_METADATA.items():
        arrays[key] = np.array([getattr(model, attribute)], dtype=np.int32)
    with atomic_path(path) as tmp:
        np.savez(tmp, **arrays)
