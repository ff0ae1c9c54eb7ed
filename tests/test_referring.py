"""One-instance referring expressions: parsed into rank, noun and cell, and resolved to one patch of a mask."""

from __future__ import annotations

import numpy as np
import pytest

from rsvlm import referring
from rsvlm.referring import Reference


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            "Give a rotated box that fits the second largest patch of bare land in the bottom left next to the road.",
            Reference("bare land", 1, False, "bottom left"),
        ),
        (
            "Segment the fifth largest building in the bottom right.",
            Reference("building", 4, False, "bottom right"),
        ),
        (
            "Mark the patch of road in the centre next to the bare land with a mask.",
            Reference("road", None, False, "centre"),
        ),
        ("Draw a box around the smallest building on the right.", Reference("building", None, True, "right")),
        ("Segment the largest lake.", Reference("lake", 0, False, None)),
        ("Outline the buildings.", None),
        ("Where is the water?", None),
        ("Is this image taken in the centre of a city?", None),
    ],
)
def test_parse(text, expected):
    assert referring.parse(text) == expected


def _scene() -> np.ndarray:
    mask = np.zeros((90, 90), bool)
    mask[0:20, 0:20] = True  # 400 px, top left: the largest
    mask[70:85, 70:85] = True  # 225 px, bottom right
    mask[40:50, 40:50] = True  # 100 px, centre
    mask[0:5, 80:85] = True  # 25 px, top right: the smallest
    mask[60, 0] = True  # a speck: not a patch
    return mask


def identity(x: float, y: float) -> tuple[float, float]:
    return x / 90, y / 90


@pytest.mark.parametrize(
    "reference, pixels, corner",
    [
        (Reference("x", 0, False, None), 400, (0, 0)),
        (Reference("x", 1, False, None), 225, (70, 70)),
        (Reference("x", None, True, None), 25, (0, 80)),
        (Reference("x", None, False, "centre"), 100, (40, 40)),
        # The third largest is the centre patch, but the expression says top right: the patch there, nearest in rank.
        (Reference("x", 2, False, "top right"), 25, (0, 80)),
        (Reference("x", 9, False, None), 25, (0, 80)),  # past the last rank: the last patch
    ],
)
def test_select_names_one_patch(reference, pixels, corner):
    patch = referring.select(_scene(), reference, identity)
    rows, cols = np.nonzero(patch)
    assert patch.sum() == pixels and (rows.min(), cols.min()) == corner


def test_select_on_an_empty_mask_is_none():
    assert referring.select(np.zeros((9, 9), bool), Reference("x", 0, False, None), identity) is None
