"""Mask losses (LISA-style): per-mask sigmoid cross-entropy and Dice, averaged over masks.

Both take logits and targets of the same shape ``[M, H, W]`` (targets in [0, 1], soft targets allowed) and
return a scalar. Pure functions, so they are easy to test and reuse in evaluation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _check(logits: torch.Tensor, targets: torch.Tensor) -> None:
    if logits.shape != targets.shape:
        raise ValueError(
            f"mask logits {tuple(logits.shape)} and targets {tuple(targets.shape)} differ in shape"
        )


def dice_loss(logits: torch.Tensor, targets: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Mean over masks of ``1 - (2|P∩T| + s) / (|P| + |T| + s)`` with P = sigmoid(logits).

    The smoothing term keeps the loss finite (and near 0) for an empty target predicted empty.
    """
    _check(logits, targets)
    if logits.numel() == 0:
        return logits.sum() * 0.0
    probs = logits.float().sigmoid().flatten(1)  # [M, H*W]
    targets = targets.float().flatten(1)
    intersection = (probs * targets).sum(-1)
    union = probs.sum(-1) + targets.sum(-1)
    return (1.0 - (2.0 * intersection + smooth) / (union + smooth)).mean()


def sigmoid_ce_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-pixel binary cross-entropy on logits, averaged over pixels and then over masks."""
    _check(logits, targets)
    if logits.numel() == 0:
        return logits.sum() * 0.0
    loss = F.binary_cross_entropy_with_logits(logits.float(), targets.float(), reduction="none")
    return loss.flatten(1).mean(-1).mean()


def mask_iou(logits: torch.Tensor, targets: torch.Tensor, threshold: float = 0.0) -> torch.Tensor:
    """IoU per mask ``[M]`` of ``logits > threshold`` against ``targets > 0.5`` (1.0 when both are empty)."""
    _check(logits, targets)
    pred = (logits > threshold).flatten(1)
    gt = (targets > 0.5).flatten(1)
    inter = (pred & gt).sum(-1).float()
    union = (pred | gt).sum(-1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))
