"""A description of the scene measured on the decoder's land-cover masks, not written by the language model.

Asked "Describe this image.", the 135M LLM writes fluent sentences that rarely say what the image holds ("The
image is spread across the whole scene."). The decoder does read the image: its masks of the common land covers
(``rsvlm.asked.VOCABULARY``) say which cover the scene and where. So a plain description request is answered from
them, in the words data_gen's land-cover captions use (the covers in order, each with its proportion word, then the
cover that leads each corner and the centre), and the masks come back as the answer's regions, measured like any.
"""

from __future__ import annotations

import numpy as np

from rsvlm.answer_facts import proportion_word
from rsvlm.asked import VOCABULARY, listed
from rsvlm.grounding import Region

# The corners and the centre of a 3 x 3 grid of the image: (name, rows, columns) in thirds.
CELLS = (
    ("top left", 0, 0),
    ("top right", 0, 2),
    ("centre", 1, 1),
    ("bottom left", 2, 0),
    ("bottom right", 2, 2),
)


def describe(regions: list[Region], valid: np.ndarray | None) -> str:
    """ "Most of this image is water, about half. The rest is buildings at about a quarter and trees at a small
    part. In the top left, water leads with about four fifths. ..." from non-overlapping land-cover masks (source
    pixels, largest first) over the valid pixels (None: all); "I find none of ..." without any."""
    if not regions:
        return f"I find none of {listed(list(VOCABULARY), 'or')} here."
    masks = [np.asarray(r.mask, bool) for r in regions]
    shape = masks[0].shape
    valid = np.ones(shape, bool) if valid is None else np.asarray(valid, bool)
    total = max(int(valid.sum()), 1)
    shares = [int((m & valid).sum()) / total for m in masks]
    first, first_share = regions[0].label, shares[0]
    lead = "Most of this image is" if first_share >= 0.5 else "The largest cover in this image is"
    sentences = [f"{lead} {first}, {proportion_word(first_share)}."]
    if len(regions) > 1:
        rest = [f"{r.label} at {proportion_word(share)}" for r, share in zip(regions[1:], shares[1:])]
        sentences.append(f"The rest is {listed(rest)}.")
    height, width = shape
    for name, row, col in CELLS:
        rows = slice(row * height // 3, (row + 1) * height // 3)
        cols = slice(col * width // 3, (col + 1) * width // 3)
        cell_valid = valid[rows, cols]
        counts = [int((m[rows, cols] & cell_valid).sum()) for m in masks]
        best = int(np.argmax(counts))
        if counts[best] == 0:
            continue
        share = proportion_word(counts[best] / int(cell_valid.sum()))
        label = regions[best].label
        verb = "lead" if label.endswith("s") else "leads"  # buildings lead, water leads
        sentences.append(f"In the {name}, {label} {verb} with {share}.")
    return " ".join(sentences)
