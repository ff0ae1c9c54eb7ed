"""The balanced presence set and the counting set cut from gen rows: which turns they keep, and what they ask."""

from __future__ import annotations

import json

import pytest

from eval.count_set import count_rows
from eval.readers import _gen_record
from eval.yes_no_set import balanced, presence_rows, score


def _row(turns: list[tuple[str, str]], facts: list[dict], images: int = 1) -> dict:
    conversations = []
    for k, (question, answer) in enumerate(turns):
        prefix = "<image>\n" * images if k == 0 else ""
        conversations += [
            {"role": "user", "content": prefix + question},
            {"role": "assistant", "content": answer},
        ]
    return {
        "id": "tile-0",
        "images": [b"png"] * images,
        "conversations": conversations,
        "masks": [],
        "task": "vqa",
        "meta": json.dumps({"types": ["count"], "facts": facts}),
    }


def test_count_rows_keep_counting_questions_with_their_facts_number():
    row = _row(
        [
            ("What is in the image?", "Buildings and roads."),
            ("How many buildings are there in this image?", "There are seven buildings."),
            ("Mark all buildings with bounding boxes.", "There are 7 buildings: <box>[0, 0, 9, 9]</box>."),
            ("How many patches of background are visible?", "I count 1 patch of background."),
        ],
        [
            {"kind": "count", "turn": 3, "count": 7},  # the answer at index 3; its question at 2
            {"kind": "count", "turn": 5, "count": 7},  # a box list, not a counting question
            {"kind": "count", "turn": 7, "count": 1},  # the catch-all class
        ],
    )
    (kept,) = count_rows([row], "src")
    assert kept["task"] == "count" and kept["id"] == "tile-0-t1"
    assert kept["conversations"][0]["content"] == "<image>\nHow many buildings are there in this image?"
    record = _gen_record(kept["id"], "count", ["a.png"], "How many buildings?", "7.", [], 256, 256)
    assert record.task == "count" and record.number == 7
    assert (
        count_rows(
            [_row([("How many changed areas?", "3.")], [{"kind": "count", "turn": 1, "count": 3}], 2)], "s"
        )
        == []
    )


def test_presence_rows_are_balanced_per_source_and_leave_out_the_catch_all():
    yes = _row([("Is there any water in this image?", "Yes, there is water.")], [])
    no = _row([("Is there any forest in this image?", "No, there is no forest.")], [])
    other = _row([("Do you see background in this image?", "Yes.")], [])
    candidates = presence_rows([yes, yes, no, other], "src")
    assert len(candidates) == 3  # background left out
    kept = balanced(candidates, seed=0, per_group=10)
    answers = sorted(r["conversations"][1]["content"].split(",")[0] for r in kept)
    assert answers == ["No", "Yes"]  # as many no as yes


def test_score_counts_each_kind_and_source_and_a_missing_yes_no_as_wrong():
    rows = []
    for k, (question, reference, images, source) in enumerate(
        [
            ("Is there any water in this image?", "Yes, there is water.", 1, "a"),
            ("Is there any road in this image?", "No, there is no road.", 1, "b"),
            ("Did anything change?", "No, nothing changed.", 2, "a"),
        ]
    ):
        row = _row([(question, reference)], [], images=images)
        rows.append({**row, "id": f"q{k}", "source": source})
    samples = [
        {"id": "q0", "answer": "Yes. Water covers 12 %."},
        {"id": "q1", "answer": "I see a road."},  # no leading yes / no: wrong
        {"id": "q2", "answer": "Yes, a building went up."},
    ]
    scores = score(samples, rows)
    assert scores[("one image", "all")] == (1, 2, 1)
    assert scores[("one image", "a")] == (1, 1, 1) and scores[("one image", "b")] == (0, 1, 0)
    assert scores[("two dates", "all")] == (0, 1, 1)
    with pytest.raises(ValueError, match="not in the set"):
        score([{"id": "elsewhere", "answer": "Yes"}], rows)
