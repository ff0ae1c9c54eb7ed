"""rsvlm.affordances: reasoning questions read against the affordance table, and the masks it builds."""

from __future__ import annotations

import numpy as np
import pytest

from data_gen.tasks.reasoning import RULES
from rsvlm.affordances import AFFORDANCES, airstrip, asked_for, boat_launch, build_homes, buildings_at_risk


def test_every_reasoning_question_data_gen_writes_is_read_as_its_own_affordance():
    assert {a.name for a in AFFORDANCES} == {r.name for r in RULES}
    for rule in RULES:
        for question in rule.questions:
            assert asked_for(question).name == rule.name, question


@pytest.mark.parametrize(
    "question, name",
    [
        ("Where can I find some shade for a picnic?", "shade"),
        ("Where could I launch my kayak?", "boat_launch"),
        ("Where could a small plane land on a road?", "airstrip"),
        ("Which buildings would flood first?", "buildings_at_risk"),
        ("Outline the planes.", None),  # objects, not a place to land
        ("Give the oriented boxes of all the ships and boats.", None),
        ("Where are the new buildings?", None),
        ("Segment the buildings.", None),
        ("Is there any water?", None),
    ],
)
def test_paraphrases_are_read_and_object_requests_are_not(question, name):
    found = asked_for(question)
    assert (found.name if found else None) == name


def test_masks_follow_the_rules_distances_in_metres_or_pixels():
    water = np.zeros((64, 64), bool)
    water[:, :20] = True
    road = np.zeros((64, 64), bool)
    road[:10, 22:64] = True  # 2 px from the water along the top rows
    launch = boat_launch({"water": water, "road": road}, px_per_m=1.0)  # within 3 m = 3 px
    assert launch[:5, 19].all() and not launch[:, :18].any() and not launch[20:].any()
    houses = np.zeros((64, 64), bool)
    houses[30:34, 30:34] = True  # 10 px from the water
    houses[30:34, 60:64] = True  # 40 px from it
    at_risk = buildings_at_risk({"building": houses, "water": water}, px_per_m=1.0)  # within 20 m
    assert at_risk[30:34, 30:34].all() and not at_risk[:, 60:].any()
    open_ground = ~water
    homes = build_homes({"barren": open_ground, "water": water}, px_per_m=0.0)  # no GSD: 20 px
    assert not homes[:, :40].any() and homes[:, 40:].all()  # column 40 is 21 px from the water


def test_an_airstrip_is_a_long_straight_well_filled_strip():
    strip = np.zeros((100, 100), bool)
    strip[45:52, 5:95] = True
    square = np.zeros((100, 100), bool)
    square[10:40, 10:40] = True
    assert airstrip({"road": strip | square}, 0.0).sum() == strip.sum()
    assert not airstrip({"grass": square}, 0.0).any()
