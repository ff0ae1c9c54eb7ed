"""Numbers in answers come from the returned geometry, never from the language model's text."""

from __future__ import annotations

import numpy as np
import pytest

from rsvlm.answer_facts import format_area, measured_facts, strip_model_quantities
from rsvlm.assistant import Assistant
from rsvlm.grounding import Region
from tests.test_assistant import NAIP_2020, scripted


def test_model_quantities_are_removed_and_listed():
    text, dropped = strip_model_quantities(
        "Forest covers about a third (34 %) of the tile, 11,213 pixels, or 3,072 m² (0.31 ha); 12% is water."
    )
    assert dropped == ["(34 %)", "11,213 pixels", "3,072 m²", "(0.31 ha)", "12%"]
    assert text == "Forest covers about a third of the tile, or; is water."
    assert strip_model_quantities("Yes, there are buildings.") == ("Yes, there are buildings.", [])


def test_areas_read_in_the_unit_a_person_expects():
    assert format_area(3072) == "3,072 m²"
    assert format_area(31_000) == "3.10 ha"
    assert format_area(2_500_000) == "2.50 km² (250 ha)"


def test_facts_state_area_share_and_patches_of_each_mask():
    mask = np.zeros((10, 10), bool)
    mask[0:2, 0:2] = True
    mask[5:8, 5:8] = True  # two separate patches, 13 px
    region = Region(label="buildings", mask=mask, area_m2=13 * 25.0)
    empty = Region(label="water", mask=np.zeros((10, 10), bool))
    assert measured_facts([region, empty], valid_pixels=100) == (
        "buildings: 325 m² (13 % of the image), 2 patches. water: none found."
    )


@pytest.fixture
def assistant(tiny_checkpoint) -> Assistant:
    return Assistant.from_pretrained(tiny_checkpoint, max_tiles=4)


def test_the_number_in_the_text_is_the_regions_area(assistant):
    size = assistant.image_size
    mask = np.zeros((size, size), bool)
    mask[: size // 4, : size // 2] = True  # an eighth of the model input, which covers the whole NAIP tile
    scripted(assistant, "Water covers about a half (50 %): <p>water</p> [SEG]", [mask])
    answer = assistant.session().ask("How much water is there?", images=[NAIP_2020])
    region = answer.regions[0]
    assert "50 %" not in answer.text and any("dropped 1 number" in w for w in answer.warnings)
    assert f"water: {format_area(region.area_m2)} (12 % of the image)." in answer.text
    assert answer.to_json()["regions"][0]["area_m2"] == round(region.area_m2, 2)


@pytest.mark.parametrize(
    "text, cleaned, dropped",
    [
        ("tree, about 100 in this image.", "tree, in this image.", ["about 100"]),
        ("There are 11 buildings in this picture.", "There are buildings in this picture.", ["11"]),
        ("Here are ~40 cars along a 3.5 m road.", "Here are cars along a road.", ["3.5 m", "~40"]),
        ("Between 2009 and 2020 the field in image 2 changed.", None, []),  # years and image numbers stay
        ("The 1st building.", None, []),
    ],
)
def test_counts_and_lengths_the_model_wrote_are_removed_too(text, cleaned, dropped):
    assert strip_model_quantities(text) == (text if cleaned is None else cleaned, dropped)
