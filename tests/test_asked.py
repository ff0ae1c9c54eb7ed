"""The element a question asks for, and boxes / minimum-area rectangles cut from a mask's patches."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rsvlm import asked
from rsvlm.answer_facts import count_patches
from rsvlm.grounding import Box, Region


@pytest.mark.parametrize(
    "question, expected",
    [
        ("Segment the fifth largest building in the bottom right.", "mask"),
        ("Give a mask of all patches of vegetation.", "mask"),
        ("Which pixels belong to the road along the top?", "mask"),
        ("Outline the buildings.", "mask"),
        ("Where are the buildings? Give boxes.", "box"),
        ("Please localise the patch of agriculture in the centre with a box.", "box"),
        ("Detect all patches of road in this image.", "box"),
        ("Give a rotated box that fits the second largest patch of bare land.", "obb"),
        ("Give the minimum-area rectangle of the patch of background.", "obb"),
        ("Fit an oriented rectangle to the patch of forest in the centre.", "obb"),
        ("Describe this image.", None),
        ("How much of the image is covered by trees?", "place"),  # the area is measured on a mask
        ("Where could someone carry a canoe into the water?", "place"),
        ("Show me the building in the top left.", "place"),
        ("Which parts of the scene are different?", "place"),
        ("Locate the changes between the two images.", "place"),
        ("Locate the water in terms of image regions.", "place"),
        ("Locate the airport.", "box"),
        ("Give a description where every mentioned region is segmented.", "mask"),
        ("Please produce a grounded conversation-style caption.", "mask"),
        ("Where is each patch of background? Answer with boxes.", "box"),
        ("Where was this image taken?", None),
        ("What is the main land cover?", None),
    ],
)
def test_element(question, expected):
    assert asked.element(question) == expected


def test_every_or_the_largest():
    assert asked.wants_every("Box all the buildings.") and asked.wants_every(
        "Where are the ponds? Give boxes."
    )
    assert not asked.wants_every("Box the building on the left.")


def test_has_element():
    boxed = Region(label="a", box=Box(0, 0, 10, 10))
    assert asked.has_element([boxed], "box") and not asked.has_element([boxed], "obb")
    assert not asked.has_element([boxed], "mask")
    empty = Region(label="b", mask=np.zeros((4, 4), bool))
    assert not asked.has_element([empty], "mask")  # an empty mask is not the mask asked for ...
    assert asked.has_element([empty], "mask", overview=True)  # ... except on a large scene's overview
    assert asked.has_element([Region(label="b", mask=np.ones((4, 4), bool))], "mask")
    assert not asked.has_element([], "mask")
    assert asked.has_element([boxed], "place") and not asked.has_element([empty], "place")


def test_counts_are_patches_without_specks():
    mask = np.zeros((100, 100), bool)
    mask[0:10, 0:10] = mask[50:60, 50:60] = True
    mask[90, 90] = True  # 1 px: under data_gen's 4-pixel floor
    assert count_patches(mask) == 2
    assert asked.asks_count("How many buildings are there?") and asked.asks_count("Count the ponds.")
    assert not asked.asks_count("Describe the scene.")
    assert asked.count_subject("How many separate patches of water can you see?") == "water"
    assert asked.count_subject("Can you count the buildings in this tile?") == "buildings"
    assert asked.count_subject("What is the number of patches of bare or built ground in this scene?") == (
        "bare or built ground"
    )
    assert asked.count_subject("How many?") is None
    assert asked.count_subject("How many are there?") is None  # no noun: not the verb
    assert asked.count_text(1, "water") == "1 separate patch of water."
    assert asked.count_text(0, "water") == "No water found."


def test_patches_come_largest_first_and_their_boxes_are_pixel_edges():
    mask = np.zeros((20, 20), bool)
    mask[2:4, 2:5] = True  # 6 px
    mask[10:18, 8:12] = True  # 32 px
    big, small = asked.patches(mask, 10)
    assert big.sum() == 32 and small.sum() == 6
    assert asked.pixel_box(big) == (8.0, 10.0, 12.0, 18.0)
    assert len(asked.patches(mask, 1)) == 1 and not asked.patches(np.zeros((3, 3), bool), 5)


def test_min_area_rect_of_a_turned_bar():
    size = 64
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    theta = math.radians(30)
    u = (xx - 32) * math.cos(theta) + (yy - 32) * math.sin(theta)  # along the bar
    v = -(xx - 32) * math.sin(theta) + (yy - 32) * math.cos(theta)
    bar = (np.abs(u) < 20) & (np.abs(v) < 4)
    cx, cy, w, h, angle = asked.min_area_rect(bar)
    assert abs(cx - 32) < 1.5 and abs(cy - 32) < 1.5
    assert 38 <= w <= 44 and 7 <= h <= 11 and w > h
    assert abs(angle - 30) < 5 and -90 < angle <= 90


@pytest.mark.parametrize(
    "question, noun",
    [
        ("Mark every patch of bare or built ground with a mask.", "bare or built ground"),
        ("Find all buildings and segment them.", "buildings"),
        ("Please segment each patch of bare land you can see.", "bare land"),
        ("Highlight all trees in the scene.", "trees"),
        ("Box all the ponds.", "ponds"),
        ("Where is the water?", None),
        ("Show me all of them.", None),
    ],
)
def test_a_request_for_every_one_names_its_class(question, noun):
    assert asked.every_subject(question) == noun


@pytest.mark.parametrize(
    "question, noun",
    [
        ("Outline the buildings.", "buildings"),
        ("Segment all the water in this image with a mask.", "water"),
        ("Where are the trees?", "trees"),
        ("Show me the roads.", "roads"),
        ("Can you segment the forest?", "forest"),
        ("Where are all the patches of water? Segment them.", "water"),
        ("Give a mask of all patches of vegetation.", "vegetation"),
        ("Find all buildings and segment them.", "buildings"),
        ("Outline all patches of bare land in this tile.", "bare land"),
        ("Outline the largest building.", "largest building"),  # a noun the calibrated concepts do not hold
        ("Draw boxes around the buildings.", None),  # boxes are asked: cut from a mask, not the mask
        ("Where could a plane land?", None),
        ("Is there any water?", None),
    ],
)
def test_class_request_is_the_users_noun_of_a_request_to_see_where_it_is(question, noun):
    assert asked.class_request(question) == noun


@pytest.mark.parametrize(
    "question, expected",
    [
        ("Describe this image.", True),
        ("Write a paragraph describing this image.", True),
        ("What does this aerial image show?", True),
        ("Characterise the landscape in this tile.", True),
        ("Provide a detailed caption with segmentation masks.", False),  # a grounded caption: masks asked
        ("What is in the top left?", False),
        ("How many buildings? Describe them.", False),
    ],
)
def test_asks_description(question, expected):
    assert asked.asks_description(question) is expected


def test_every_box_or_mask_question_data_gen_asks_names_its_element():
    """The element of each referring / every-object question data_gen trains on is the one its answer carries, so
    "Locate the largest patch of water." is answered with the box the benchmark scores, not a mask."""
    from data_gen.tasks.phrasing import TEMPLATES

    wanted = {
        "refer_box": "box",
        "all_box": "box",
        "refer_obb": "obb",
        "refer_seg": "mask",
        "all_seg": "mask",
    }
    for kind, element in wanted.items():
        for template in TEMPLATES[kind]:
            question = template.format(ref="the largest pond", plural="buildings", singular="building")
            got = asked.element(question)
            # "Show me the largest pond." asks for a place: any region answers it, and a mask is cut when none is
            assert got == element or (element == "mask" and got == "place"), (question, got)


def test_every_area_question_data_gen_asks_wants_a_measured_place_not_a_count():
    """ "What is the area of water?" is answered from a mask (its area measured), so the answer must carry one;
    "How many square metres of water?" asks for an area, not a count of patches of "square metres"."""
    from data_gen.tasks.phrasing import TEMPLATES

    for template in TEMPLATES["area"]:
        question = template.format(cls="water")
        assert asked.element(question) == "place" and not asked.asks_count(question), question
    assert asked.element("Describe this area.") is None
