"""The text protocol: formatting and parsing round trips, and a parser that never raises."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rsvlm.grounding import (
    SEG_TOKEN,
    Box,
    OrientedBox,
    attach_masks,
    format_box,
    format_obb,
    format_phrase,
    format_two_date_prompt,
    normalize_obb,
    parse_answer,
)

grid = st.integers(min_value=0, max_value=1000)
phrase_text = st.text(
    alphabet=st.characters(whitelist_categories=("L", "N"), whitelist_characters=" -'"),
    min_size=1,
    max_size=40,
).filter(lambda s: s.strip())


@given(grid, grid, grid, grid)
def test_box_round_trip(a, b, c, d):
    x1, x2 = sorted((a, c))
    y1, y2 = sorted((b, d))
    parsed = parse_answer(f"the field {format_box([x1, y1, x2, y2])}.")
    assert parsed.warnings == []
    assert len(parsed.regions) == 1
    assert parsed.regions[0].box == Box(x1, y1, x2, y2)


@given(grid, grid, grid, grid, st.integers(min_value=-89, max_value=90))
def test_obb_round_trip(cx, cy, w, h, angle):
    w, h = max(w, h), min(w, h)
    if w == h:  # a square's long side is ambiguous; the convention then keeps the given angle
        h = max(0, h - 1)
    text = format_obb([cx, cy, w, h, angle])
    parsed = parse_answer(text)
    assert parsed.warnings == []
    assert parsed.regions[0].obb == OrientedBox(cx, cy, w, h, angle)


@given(phrase_text)
def test_phrase_round_trip(phrase):
    parsed = parse_answer(f"There is {format_phrase(phrase)} here.")
    assert parsed.warnings == []
    assert [r.label for r in parsed.regions] == [" ".join(phrase.split())]
    assert parsed.regions[0].seg_index == 0


@given(st.text(max_size=300))
def test_parser_never_raises_on_arbitrary_text(text):
    parsed = parse_answer(text)
    assert isinstance(parsed.text, str)


@given(
    st.lists(
        st.sampled_from(
            [
                "<box>",
                "</box>",
                "<obb>",
                "</obb>",
                "<p>",
                "</p>",
                "[SEG]",
                "[",
                "]",
                ",",
                "12",
                "-5",
                "2000",
                "x",
                " ",
                "3.5",
            ]
        ),
        max_size=40,
    )
)
def test_parser_never_raises_on_tag_soup(tokens):
    parsed = parse_answer("".join(tokens))
    assert "<box>" not in parsed.text and "</p>" not in parsed.text


def test_box_attaches_to_preceding_phrase_and_masks_in_order():
    text = f"{format_phrase('a red roof')} {format_box([10, 20, 30, 40])} and {format_phrase('the pool')}"
    parsed = parse_answer(text)
    assert [r.label for r in parsed.regions] == ["a red roof", "the pool"]
    assert parsed.regions[0].box == Box(10, 20, 30, 40)
    masks = [np.zeros((4, 4), bool), np.ones((4, 4), bool)]
    attach_masks(parsed, masks)
    assert parsed.regions[1].mask is masks[1]
    assert parsed.text == "a red roof and the pool"


@pytest.mark.parametrize(
    "text, warning",
    [
        ("<box>[1, 2, 3]</box>", "malformed box"),
        ("<box>[1, 2, 3000, 4]</box>", "outside"),
        ("<box>[30, 2, 3, 4]</box>", "inverted"),
        ("<obb>[1, 2, 3, 4, 120]</obb>", "out of range"),
        ("<p>lake</p> and more", "no [SEG]"),
        ("a lake [SEG]", "without a <p>phrase</p>"),
        ("<box>[1, 2, 3, 4] and", "unbalanced"),
    ],
)
def test_malformed_output_is_dropped_with_a_warning(text, warning):
    parsed = parse_answer(text)
    assert any(warning in w for w in parsed.warnings), parsed.warnings
    assert "<box>" not in parsed.text


def test_missing_masks_and_extra_masks_are_reported():
    parsed = attach_masks(parse_answer(f"{format_phrase('a')} {format_phrase('b')}"), [np.zeros((2, 2))])
    assert any("no mask" in w for w in parsed.warnings)
    parsed = attach_masks(parse_answer(format_phrase("a")), [np.zeros((2, 2))] * 3)
    assert any("without a [SEG]" in w for w in parsed.warnings)


def test_label_for_a_bare_box_comes_from_the_words_before_it():
    parsed = parse_answer("The small airplane is at <box>[1, 2, 3, 4]</box>.")
    assert parsed.regions[0].label == "The small airplane"
    parsed = parse_answer(
        "The field is at <box>[1, 2, 3, 4]</box>, a road at <obb>[5, 5, 9, 2, 0]</obb> and a barn <box>[1, 1, 2, 2]</box>."
    )
    assert [r.label for r in parsed.regions] == ["The field", "a road", "a barn"]


def test_obb_normalisation_swaps_sides_and_wraps_angles():
    assert normalize_obb(5, 5, 2, 10, 0) == OrientedBox(5, 5, 10, 2, 90)
    assert normalize_obb(5, 5, 10, 2, -90).angle == 90
    assert normalize_obb(5, 5, 10, 2, 135).angle == -45


def test_phrase_with_tags_inside_is_cleaned():
    assert format_phrase("a <p>bad</p> [SEG] name") == f"<p>a bad name</p> {SEG_TOKEN}"


def test_two_date_prompt():
    text = format_two_date_prompt("What changed?", ("2009", "2020"))
    assert text == "Image 1 (2009): <image>\nImage 2 (2020): <image>\nWhat changed?"


def test_non_text_input_does_not_raise():
    assert parse_answer(None).warnings  # type: ignore[arg-type]
