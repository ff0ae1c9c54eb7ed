"""The paraphrase guard against what the packaged SmolLM2-135M really wrote (captured from one real run on the
synthetic tile): every one of these used to be accepted; none is a faithful rewrite. Plus one real-model run."""

from __future__ import annotations

import pytest

from data_gen.paraphrase import accept, paraphrase_samples, protected_tokens, template_fields
from data_gen.tasks import run_tasks
from tests.data_gen.task_fixtures import synthetic_tile

# (question type, original question, SmolLM2-135M-Instruct's greedy "rewrite")
REAL_REWRITES = [
    ("multilabel", "Enumerate the land-cover types shown.",
     "The aerial image is a land-cover type that includes the land-cover types."),
    ("position", "Describe where the road lies in the image.", "The road lies in the image."),
    ("relation", "Where is the largest forest area relative to the largest building?",
     "The largest forest area relative to the largest building is the largest forest area relative to the "
     "largest building."),
    ("refer_seg", "Outline the canal named Test Canal along the bottom next to the background.",
     "The canal named Test Canal is a scenic waterway that runs along the bottom next to the background."),
    ("refer_box", "Give the bounding box of the canal named Test Canal along the bottom next to the background.",
     "The aerial image is a bounding box of the canal named Test Canal, which is located at the bottom next to "
     "the background."),
    ("airstrip", "Where could a small plane land in an emergency? Please show it with a mask.",
     "A small plane could land in an emergency with a mask."),
    ("change_caption", "Write a change caption for this image pair.", "The image is a change caption for this image."),
]  # fmt: skip


@pytest.mark.parametrize(("qtype", "question", "rewrite"), REAL_REWRITES)
def test_real_bad_rewrites_are_rejected(qtype: str, question: str, rewrite: str) -> None:
    assert not accept(question, rewrite, template_fields(question, qtype))


def test_good_rewrites_pass_and_fields_are_kept() -> None:
    q = "Where is the largest forest area relative to the largest building?"
    assert template_fields(q, "relation") == ["largest forest area", "largest building"]
    assert accept(q, "Seen from the largest building, in which direction is the largest forest area?",
                  template_fields(q, "relation"))  # fmt: skip
    assert not accept(q, "Where is the forest relative to the building?", template_fields(q, "relation"))
    box = "Give the bounding box of the building in the top left next to the road."
    keep = template_fields(box, "refer_box")
    assert keep == ["the building in the top left next to the road"]
    assert accept(box, "Draw a box around the building in the top left next to the road.", keep)
    assert not accept(box, "Segment the building in the top left next to the road.", keep)  # format word lost
    assert protected_tokens("Is it 12 % or 0.5 ha?") == ["0.5", "12"]


@pytest.mark.slow
def test_real_llm_paraphrase_keeps_fields_numbers_and_tags() -> None:
    """The packaged SmolLM2 on a few questions: whatever it rewrites keeps the fields, numbers and tags."""
    samples = run_tasks(synthetic_tile(256), ["grounding"], 3)[:1]  # one question: ~25 s on 2 busy cores
    out = paraphrase_samples(samples)
    for before, after in zip(samples, out):
        types = list(before.meta["types"])
        for t0, t1 in zip(before.conversations, after.conversations):
            if t0["role"] != "user":
                assert t1 == t0  # answers are never touched
                continue
            q0, q1 = t0["content"], t1["content"]
            assert protected_tokens(q1) == protected_tokens(q0) and q1.startswith("<image>\n")
            for field in template_fields(q0.split("\n", 1)[1], types.pop(0)):
                assert field in q1
