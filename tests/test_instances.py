"""rsvlm.instances: touching objects of a probability map cut apart into one patch each."""

from __future__ import annotations

import numpy as np

from rsvlm.answer_facts import count_patches
from rsvlm.instances import MIN_OBJECT_M2, min_object_pixels, separate


def two_touching_houses(size: int = 64) -> np.ndarray:
    """Two squares joined by a strip the decoder is less sure of: one patch at 0.5, two cores above 0.65."""
    p = np.full((size, size), 0.05, np.float32)
    p[10:30, 8:28] = 0.95
    p[10:30, 32:52] = 0.95
    p[10:30, 28:32] = 0.6  # the shared wall
    return p


def test_touching_objects_become_separate_patches_that_keep_the_mask_outside_the_cut():
    p = two_touching_houses()
    assert count_patches(p > 0.5) == 1
    objects = separate(p)
    assert count_patches(objects) == 2
    assert not (objects & ~(p > 0.5)).any()  # never more than the mask
    assert (p > 0.5).sum() - objects.sum() <= 2 * 20  # at most a one-pixel cut down the 20-pixel wall


def test_a_blob_the_decoder_was_never_sure_of_is_left_out_and_specks_make_no_object():
    p = two_touching_houses()
    p[40:50, 40:50] = 0.6  # mask, but no core
    p[5, 60] = 0.99  # a speck of a core
    assert count_patches(separate(p)) == 2
    assert not separate(np.full((64, 64), 0.55, np.float32)).any()


def test_objects_at_opposite_borders_are_not_cut_by_each_other():
    p = np.full((32, 32), 0.05, np.float32)
    p[:, :6] = 0.9
    p[:, -6:] = 0.9
    objects = separate(p)
    assert count_patches(objects) == 2 and objects.sum() == (p > 0.5).sum()


def test_pieces_smaller_than_the_concepts_smallest_object_are_not_objects_where_the_gsd_is_known():
    p = two_touching_houses()
    p[40:44, 40:44] = 0.95  # a 16-pixel piece of roof: 0.09 m² at 7.5 cm, 16 m² at 1 m
    assert count_patches(separate(p)) == 3
    fine = min_object_pixels("building", 0.075)
    assert fine == int(np.ceil(MIN_OBJECT_M2["building"] / 0.075**2))
    assert count_patches(separate(p, min_pixels=fine)) == 0  # the 20x20 houses are 2.25 m² each: pieces too
    coarse = min_object_pixels("building", 1.0)
    assert count_patches(separate(p, min_pixels=coarse)) == 3
    assert count_patches(separate(p, min_pixels=min_object_pixels("building", 0.5))) == 2
    assert min_object_pixels("building", None) == 0 and min_object_pixels("water", 0.075) == 0
    assert min_object_pixels("building", float("nan")) == 0
