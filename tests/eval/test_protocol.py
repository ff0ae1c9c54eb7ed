"""Format rate: the model's own text, and the answer the assistant delivered."""

from __future__ import annotations

import json

import pytest

from eval.protocol import delivered_ok, format_ok, main

NONE = {"masks": 0, "boxes": 0, "obbs": 0}


def record(task, raw, answer=None, refs=(), **elements):
    return {"id": "r", "task": task, "raw_text": raw, "answer": raw if answer is None else answer,
            "refs": list(refs), "elements": {**NONE, **elements}}  # fmt: skip


def test_the_models_text_must_carry_the_element():
    assert format_ok(record("refseg", "<p>roofs</p> [SEG]"))
    assert not format_ok(record("refseg", "The roofs are in the north."))
    assert format_ok(record("refseg", "None here: no roofs.", refs=["None here: the image shows no roofs."]))
    assert format_ok(record("grounding", "It is at <box>[1, 2, 30, 40]</box>."))
    assert not format_ok(record("obb", "It is at <box>[1, 2, 30, 40]</box>."))
    assert format_ok(record("vqa", "No, none.", refs=["Yes, the image contains water."]))
    assert not format_ok(record("vqa", "None here.", refs=["Yes, the image contains water."]))


def test_the_delivered_answer_counts_its_regions():
    cut = record("refseg", "The roofs are in the north.", answer="Here it is.", masks=1)
    assert not format_ok(cut) and delivered_ok(cut)  # a mask cut from the named phrase (rsvlm.asked)
    assert not delivered_ok(record("refseg", "The roofs.", masks=0))
    assert delivered_ok(record("obb", "<box>[1, 2, 3, 4]</box>", answer="Here it is.", obbs=1))
    assert not delivered_ok(record("obb", "<box>[1, 2, 3, 4]</box>", boxes=1))
    presence = record("vqa", "None here: no water.", answer="Yes.", refs=["Yes, water."], masks=1)
    assert not format_ok(presence) and delivered_ok(presence)
    with pytest.raises(ValueError, match="elements"):
        delivered_ok({"id": "old", "task": "refseg", "answer": "x"})


def test_cli_prints_rates_and_refuses_old_logs_in_one_line(tmp_path, capsys):
    path = tmp_path / "samples.jsonl"
    rows = [record("refseg", "<p>a</p> [SEG]", masks=1), record("grounding", "no box")]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert main(["--delivered", str(path)]) == 0
    out = capsys.readouterr().out
    assert "all            0.500  (n=2)" in out and "refseg         1.000  (n=1)" in out
    old = tmp_path / "old.jsonl"
    old.write_text(json.dumps({"id": "x", "task": "vqa", "answer": "y"}) + "\n")
    assert main(["--delivered", str(old)]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
