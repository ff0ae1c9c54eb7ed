"""The example gallery (licence-clean real samples from ``rsvlm/samples/``) and the suggested questions.

A gallery click loads the example's image(s) and asks its question; the suggestion buttons under the chat follow
what is loaded (a change question only with two dates).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from demo import render

SAMPLES = Path(__file__).parents[1] / "rsvlm" / "samples"


@dataclass(frozen=True)
class Example:
    caption: str
    files: tuple[str, ...]
    question: str
    bands: str | None = None  # a band preset, when the file does not say

    @property
    def paths(self) -> list[str]:
        return [str(SAMPLES / name) for name in self.files]


EXAMPLES = [
    Example("Water · NAIP 2020, 5 m", ("naip_2020_256.tif",), "Outline the water."),
    Example(
        "Change · NAIP 2009 vs 2020", ("naip_2009_256.tif", "naip_2020_256.tif"), "Segment the changed areas."
    ),
    Example(
        "Multispectral RGB + NIR · Haiti, 5 m",
        ("haiti_rgbn_256.tif",),
        "How much of the image is covered by trees?",
        bands="rgbn",
    ),
    Example("Trees · NEON, 10 cm", ("neon_sjer_trees_400.tif",), "Describe this image."),
]

SINGLE_DATE_QUESTIONS = [
    "Describe this image.",
    "Outline the water.",
    "Outline the buildings.",
    "How much of the image is covered by trees?",
]
TWO_DATE_QUESTIONS = [
    "What changed between the two dates?",
    "Segment the changed areas.",
    "Is there any new building?",
    "Describe the second date.",
]


def suggestions(images: int) -> list[str]:
    return TWO_DATE_QUESTIONS if images == 2 else SINGLE_DATE_QUESTIONS


def thumbnail(example: Example) -> np.ndarray:
    """The example's (later) image with its caption drawn on (the gallery's own captions fall outside a short
    strip)."""
    preview = render.to_uint8(render.read_preview(example.paths[-1], example.bands))
    # The strip shows only the upper part of each square cell, so the caption sits there, right-aligned (the
    # gallery's label floats over the first cell's top-left).
    return render.captioned(preview, example.caption, corner="upper-right")
