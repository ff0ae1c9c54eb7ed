"""Mask losses: known values, per-mask averaging, bounds (property tests) and shape errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from rsvlm.losses import dice_loss, mask_iou, sigmoid_ce_loss


def _square_target(size: int = 16) -> torch.Tensor:
    target = torch.zeros(1, size, size)
    target[:, 4:12, 4:12] = 1.0
    return target


def test_dice_perfect_and_inverted_predictions():
    target = _square_target()
    perfect = (target * 2 - 1) * 50  # confident and right
    wrong = -perfect
    assert dice_loss(perfect, target).item() < 1e-3
    assert dice_loss(wrong, target).item() > 0.95


def test_dice_empty_target_predicted_empty_is_zero():
    target = torch.zeros(2, 8, 8)
    assert dice_loss(torch.full_like(target, -50.0), target).item() < 1e-3
    assert dice_loss(torch.full_like(target, 50.0), target).item() > 0.9


def test_dice_known_value_at_zero_logits():
    target = _square_target()  # 64 of 256 pixels
    loss = dice_loss(torch.zeros_like(target), target, smooth=0.0)
    expected = 1 - 2 * (0.5 * 64) / (0.5 * 256 + 64)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_sigmoid_ce_matches_torch_and_averages_per_mask():
    torch.manual_seed(0)
    logits = torch.randn(3, 8, 8)
    target = (torch.rand(3, 8, 8) > 0.5).float()
    reference = F.binary_cross_entropy_with_logits(logits, target)
    assert sigmoid_ce_loss(logits, target).item() == pytest.approx(reference.item(), rel=1e-5)
    per_mask = [F.binary_cross_entropy_with_logits(logits[i], target[i]).item() for i in range(3)]
    assert sigmoid_ce_loss(logits, target).item() == pytest.approx(sum(per_mask) / 3, rel=1e-5)


def test_losses_reject_shape_mismatch():
    with pytest.raises(ValueError, match="shape"):
        dice_loss(torch.zeros(1, 4, 4), torch.zeros(1, 4, 5))
    with pytest.raises(ValueError, match="shape"):
        sigmoid_ce_loss(torch.zeros(2, 4, 4), torch.zeros(1, 4, 4))


def test_losses_of_no_masks_are_zero_and_differentiable():
    logits = torch.zeros(0, 4, 4, requires_grad=True)
    total = dice_loss(logits, torch.zeros(0, 4, 4)) + sigmoid_ce_loss(logits, torch.zeros(0, 4, 4))
    total.backward()
    assert total.item() == 0.0


def test_mask_iou():
    target = _square_target()
    assert mask_iou(target * 10 - 5, target).item() == pytest.approx(1.0)
    half = target.clone()
    half[:, 4:8] = 0  # predict half of the square
    assert mask_iou(half * 10 - 5, target).item() == pytest.approx(0.5)
    assert mask_iou(torch.full((1, 4, 4), -1.0), torch.zeros(1, 4, 4)).item() == 1.0


@settings(max_examples=40, deadline=None)
@given(
    st.integers(min_value=1, max_value=3),
    st.integers(min_value=1, max_value=6),
    st.floats(min_value=0.1, max_value=30.0),
    st.integers(min_value=0, max_value=10_000),
)
def test_losses_are_bounded_and_finite(masks, side, scale, seed):
    generator = torch.Generator().manual_seed(seed)
    logits = (torch.randn(masks, side, side, generator=generator) * scale).requires_grad_()
    target = torch.rand(masks, side, side, generator=generator)
    dice = dice_loss(logits, target)
    ce = sigmoid_ce_loss(logits, target)
    assert 0.0 <= dice.item() <= 1.0
    assert ce.item() >= 0.0
    (dice + ce).backward()
    assert torch.isfinite(logits.grad).all()
