"""The format rate counts an answer only when it carries the element its question asked for."""

from eval.protocol import format_ok


def test_each_task_wants_its_element():
    assert format_ok({"task": "refseg", "raw_text": "<p>water</p> [SEG]", "refs": ["the water"]})
    assert not format_ok({"task": "refseg", "raw_text": "There is water.", "refs": ["the water"]})
    assert format_ok({"task": "refseg", "raw_text": "None here: no water.", "refs": ["None here: no water."]})
    assert not format_ok({"task": "refseg", "raw_text": "None here.", "refs": ["the water"]})
    assert format_ok({"task": "grounding", "raw_text": "It is at <box>[1, 2, 30, 40]</box>.", "refs": []})
    assert not format_ok(
        {"task": "grounding", "raw_text": "<box>[30, 2, 1, 40]</box>", "refs": []}
    )  # inverted
    assert format_ok({"task": "obb", "raw_text": "<obb>[500, 500, 100, 50, 30]</obb>", "refs": []})
    assert format_ok({"task": "vqa", "raw_text": "No, I see none.", "refs": ["Yes, there is."]})
    assert not format_ok({"task": "vqa", "raw_text": "There might be.", "refs": ["Yes, there is."]})
    assert format_ok({"task": "change_binary", "raw_text": "yes, it changed", "refs": ["No."]})
    assert not format_ok({"task": "caption", "raw_text": "", "refs": ["A field."]})


def test_gen_yes_no_is_read_from_the_first_word():
    from eval.metrics import leading_yes_no, yes_no

    assert leading_yes_no("Yes, there are changes.") is True and leading_yes_no("no.") is False
    assert leading_yes_no("There are changes.") is None and leading_yes_no("Nothing here") is None
    assert yes_no("Yes, there are changes.") is None  # the official sets stay exact
