import numpy as np

from rsvlm.describe import describe
from rsvlm.grounding import Region


def _region(label: str, mask: np.ndarray) -> Region:
    return Region(label=label, mask=mask)


def test_a_description_names_the_covers_in_order_with_their_shares_and_what_leads_each_corner():
    water = np.zeros((90, 90), bool)
    water[:, :45] = True  # the left half
    buildings = np.zeros((90, 90), bool)
    buildings[:45, 45:] = True  # the top right quarter
    text = describe([_region("water", water), _region("buildings", buildings)], None)
    assert text.startswith(
        "Most of this image is water, about half. The rest is buildings at about a quarter."
    )
    assert "In the top left, water leads with all." in text
    assert "In the top right, buildings lead with all." in text
    assert "bottom right" not in text  # nothing there


def test_shares_are_of_the_valid_pixels_and_no_cover_is_said_plainly():
    water = np.zeros((90, 90), bool)
    water[:, :30] = True
    valid = np.zeros((90, 90), bool)
    valid[:, :60] = True  # the right third is nodata
    assert describe([_region("water", water)], valid).startswith("Most of this image is water, about half.")
    assert describe([], None).startswith("I find none of water, buildings, roads")
