"""Which questions are presence questions, and how a mask's presence becomes the answer's yes or no."""

from __future__ import annotations

import pytest

from rsvlm import presence


@pytest.mark.parametrize(
    "question, two_dates, expected",
    [
        ("Is there any water in this image?", False, True),
        ("Do you see building in this aerial image?", False, True),
        ("Is forest visible anywhere in the picture?", False, True),
        ("Does any agriculture appear in this tile?", False, True),
        ("Answer yes or no: are there trees?", False, True),
        ("Is the road north of the river?", False, False),  # a relation, not a presence
        ("Are there more buildings than trees?", False, False),
        ("Outline the buildings.", False, False),
        ("How much of the image is water?", False, False),
        ("Did this area change?", True, True),
        ("Has anything changed between the two images?", True, True),
        ("Did the area stay the same?", True, True),
        ("Are the two images different?", True, True),
        ("Is there any water in the second image?", True, False),  # two dates, but not about change
    ],
)
def test_asks_presence(question, two_dates, expected):
    assert presence.asks_presence(question, two_dates) is expected


def test_absence_questions_flip_the_yes():
    assert presence.asks_absence("Did the area stay the same?")
    assert not presence.asks_absence("Did this area change?")
    assert presence.answer_text(True, "change", absence_question=True) == "No."
    assert presence.answer_text(False, "change", absence_question=True) == "Yes: no change found."
    assert presence.answer_text(True, "water", absence_question=False) == "Yes."
    assert presence.answer_text(False, "water", absence_question=False) == "No: no water found."


def test_phrase_from_continuation():
    assert presence.phrase_from_continuation("water</p> [SEG]") == "water"
    assert presence.phrase_from_continuation(" the  changed areas</p> [SEG].") == "the changed areas"
    assert presence.phrase_from_continuation("water and trees") is None  # never closed
    assert presence.phrase_from_continuation("</p> [SEG]") is None
    assert presence.phrase_from_continuation("<p>gamma</p> [SEG]") == "gamma"


def test_presence_needs_more_than_a_speck():
    assert not presence.is_present(100, 256 * 256)  # 0.15 % of the pixels
    assert presence.is_present(200, 256 * 256)
    assert not presence.is_present(0, 0)


@pytest.mark.parametrize(
    "question, subject",
    [
        ("Is there any water in this image?", "water"),
        ("Is any part of this image covered by road?", "road"),
        ("Is forest visible anywhere in the picture?", "forest"),
        ("Can you see any swimming pools here?", "swimming pools"),
        ("Answer yes or no: is there bare land in the image", "bare land"),
        (
            "Is there a road north of the big river with many boats?",
            None,
        ),  # not a short phrase: the model names it
    ],
)
def test_question_subject(question, subject):
    assert presence.question_subject(question) == subject


def test_the_phrase_in_a_no_reads_naturally():
    assert presence.answer_text(False, "the road", absence_question=False) == "No: no road found."


@pytest.mark.parametrize(
    "question, expected",
    [
        ("Can you detect any change here?", True),
        ("Is the road north of the river?", True),
        ("Answer yes or no: is there water?", True),
        ("Is this area urban or rural?", False),
        ("What changed?", False),
        ("Where is the water?", False),
        ("Can you segment the second largest patch of agriculture on the left?", False),
        ("Could you please count the buildings?", False),
        ("Can you mask all of the buildings?", False),
    ],
)
def test_asks_yes_no(question, expected):
    assert presence.asks_yes_no(question) is expected


def test_leading_yes_no():
    assert presence.leading_yes_no("Yes, it changed.") is True and presence.leading_yes_no(" no.") is False
    assert presence.leading_yes_no("Nothing here.") is None
