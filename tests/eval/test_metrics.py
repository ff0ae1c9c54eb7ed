"""Metrics against hand-computed values, edge cases, and pycocotools where it has the same metric."""

import math

import numpy as np
import pytest

from eval import metrics as m
from rsvlm.grounding import OrientedBox


def test_box_iou_by_hand_and_edge_cases():
    assert m.box_iou([0, 0, 10, 10], [5, 5, 15, 15]) == pytest.approx(25 / 175)
    assert m.box_iou([0, 0, 10, 10], [0, 0, 10, 10]) == 1.0
    assert m.box_iou([0, 0, 10, 10], [20, 20, 30, 30]) == 0.0
    assert m.box_iou([0, 0, 0, 10], [0, 0, 10, 10]) == 0.0  # degenerate prediction
    assert m.box_iou([3, 3, 3, 3], [3, 3, 3, 3]) == 0.0  # both degenerate: union 0 -> 0, not a division error
    assert m.box_iou(None, [0, 0, 10, 10]) == 0.0


def test_grounding_scores_by_hand():
    scores = m.grounding_scores([0.2, 0.5, 0.8, 0.0], thresholds=(0.25, 0.5, 0.75))
    assert scores == pytest.approx({"acc@0.25": 0.5, "acc@0.5": 0.25, "acc@0.75": 0.25, "miou": 0.375})
    assert m.grounding_scores([]) == {}


def test_rotated_box_iou_of_a_square_and_its_45_degree_turn_is_one_over_root_two():
    assert m.obb_iou([5, 5, 10, 10, 45], [5, 5, 10, 10, 0]) == pytest.approx(1 / math.sqrt(2))
    assert m.obb_iou([5, 5, 10, 4, 90], [5, 5, 4, 10, 0]) == pytest.approx(1.0)  # same box, other convention
    assert m.obb_iou([5, 5, 0, 4, 0], [5, 5, 4, 10, 0]) == 0.0
    assert m.obb_iou(None, [5, 5, 4, 10, 0]) == 0.0


def test_obb_polygon_matches_the_protocol_corners():
    obb = OrientedBox(400, 300, 200, 80, 30)
    ours = np.asarray(m.obb_polygon(obb.as_list()).exterior.coords)[:4]
    np.testing.assert_allclose(ours, obb.corners(), atol=1e-9)
    assert m.obb_iou(obb.corners().tolist(), obb.as_list()) == pytest.approx(1.0)


def test_segmentation_giou_ciou_with_the_empty_target_convention():
    pred = np.zeros((4, 4), bool)
    pred[0, :2] = True
    gt = np.zeros((4, 4), bool)
    gt[0, 1:] = True
    counts = [m.mask_counts(pred, gt), m.mask_counts(np.zeros((4, 4), bool), np.zeros((4, 4), bool))]
    counts.append(m.mask_counts(None, gt))  # no prediction
    assert counts == [(1, 4), (0, 0), (0, 3)]
    scores = m.segmentation_scores(counts, thresholds=(0.5,))
    assert scores == pytest.approx({"giou": (0.25 + 1 + 0) / 3, "ciou": 1 / 7, "pr@0.5": 1 / 3})
    # Something predicted where nothing is: IoU 0 for that sample.
    assert m.sample_iou(*m.mask_counts(pred, np.zeros((4, 4), bool))) == 0.0
    with pytest.raises(ValueError, match="differ in shape"):
        m.mask_counts(np.zeros((2, 2)), gt)


def test_mask_iou_agrees_with_pycocotools():
    mask_utils = pytest.importorskip("pycocotools.mask")
    rng = np.random.default_rng(0)
    for _ in range(5):
        p, t = rng.random((37, 53)) > 0.6, rng.random((37, 53)) > 0.5
        inter, union = m.mask_counts(p, t)
        rle = [mask_utils.encode(np.asfortranarray(x.astype(np.uint8))) for x in (p, t)]
        assert inter / union == pytest.approx(float(mask_utils.iou([rle[0]], [rle[1]], [0])[0, 0]))


def test_change_mask_scores_by_hand():
    pred = np.array([[1, 1], [0, 0]], bool)
    gt = np.array([[1, 0], [1, 0]], bool)
    c = m.confusion(pred, gt)
    assert c == (1, 1, 1, 1)
    s = m.change_mask_scores([c])
    assert s == pytest.approx(
        {"iou": 1 / 3, "f1": 0.5, "precision": 0.5, "recall": 0.5, "miou": 1 / 3, "oa": 0.5}
    )
    # Summed over samples, not averaged: a perfect empty pair adds only true negatives.
    s2 = m.change_mask_scores([c, m.confusion(None, np.zeros((2, 2), bool))])
    assert s2["iou"] == pytest.approx(1 / 3) and s2["oa"] == pytest.approx(6 / 8)


def test_vqa_normalisation_and_counting():
    assert m.exact_match("Two.", "2") == 1.0
    assert m.exact_match("Yes.", ["yes"]) == 1.0
    assert m.exact_match("The harbor", "harbor") == 1.0
    assert m.exact_match("no", "yes") == 0.0
    assert m.yes_no("No.") is False and m.yes_no("maybe") is None
    assert m.first_number("There are three ships") == 3.0
    assert m.first_number("12 cars and 3 trucks") == 12.0
    assert m.first_number("none visible?") is None
    assert m.counting_mae([3.0, None], [1.0, 2.0]) == 2.0


def test_bleu_by_hand():
    b = m.bleu(["the cat sat on the mat"], [["the cat sat on a mat"]])
    # clipped precisions 5/6, 3/5, 2/4, 1/3; equal lengths -> no brevity penalty
    expected = [5 / 6, math.sqrt(5 / 6 * 3 / 5), (5 / 6 * 3 / 5 * 1 / 2) ** (1 / 3), (1 / 12) ** 0.25]
    assert b == pytest.approx(expected)
    short = m.bleu(["the cat"], [["the cat sat on a mat", "a cat"]])  # closest ref length is 2 -> no penalty
    assert short[0] == pytest.approx(1.0)
    short = m.bleu(["the cat"], [["the cat sat on a mat"]])
    assert short[0] == pytest.approx(math.exp(1 - 3))


def test_rouge_l_by_hand():
    assert m.rouge_l(["the cat sat on the mat"], [["the cat sat on a mat"]]) == pytest.approx(5 / 6)
    # P = 1, R = 1/3, beta = 1.2
    assert m.rouge_l(["the cat"], [["the cat sat on a mat"]]) == pytest.approx(
        2.44 * (1 / 3) / (1 / 3 + 1.44)
    )
    assert m.rouge_l(["dog"], [["the cat"]]) == 0.0


def test_cider_d_by_hand():
    # Two images, each candidate equals its only reference: unigram and bigram cosine 1, no tri/4-grams ->
    # mean over n = 0.5, times 10.
    assert m.cider_d(["a b", "c d"], [["a b"], ["c d"]]) == pytest.approx(5.0)
    assert m.cider_d(["a b"], [["a b"]]) == 0.0  # a single image: every idf is 0, as in coco-caption
    # Word order: the second pair shares its unigrams but no bigram.
    swapped = m.cider_d(["a b", "c d"], [["a b"], ["d c"]])
    assert swapped == pytest.approx((5.0 + 10 * (1 / 4)) / 2)  # second: unigram 1, bigram 0


def test_caption_scores_keys():
    s = m.caption_scores(["a b", "c d"], [["a b"], ["c d"]])
    assert set(s) - {"meteor"} == {
        "bleu1",
        "bleu2",
        "bleu3",
        "bleu4",
        "rouge_l",
        "cider_d",
    }  # METEOR needs Java
    assert m.caption_scores([], []) == {}


def test_cider_d_length_penalty():
    # Same ngram overlap, candidate one word longer than the reference: Gaussian penalty exp(-1 / 72).
    longer = m.cider_d(["a b x", "c d"], [["a b"], ["c d"]])
    plain = m.cider_d(["a b", "c d"], [["a b"], ["c d"]])
    assert longer < plain
    assert m.cider_d(["a b x", "c d"], [["a b"], ["c d"]]) == pytest.approx(
        (_cider_one(["a", "b", "x"], ["a", "b"]) * math.exp(-1 / 72) + 5.0) / 2
    )


def _cider_one(cand, ref):
    """CIDEr-D of one pair in the two-image corpus above, by hand: idf log 2 for shared ngrams and for unseen
    ones (df 0 -> log(max(1, 0)) = 0), so every ngram weighs log 2 and the cosine is a count overlap."""
    uni = len(set(cand) & set(ref)) / math.sqrt(len(cand) * len(ref))
    bc, br = list(zip(cand, cand[1:])), list(zip(ref, ref[1:]))
    bi = len(set(bc) & set(br)) / math.sqrt(len(bc) * len(br))
    tri = 0.0  # the reference has no trigram
    return 10 * (uni + bi + tri + 0.0) / 4


def test_captions_leave_meteor_out_without_java(monkeypatch):
    import shutil

    monkeypatch.setattr(shutil, "which", lambda name: None)
    scores = m.caption_scores(["a house was built"], [["a building was built", "new house"]])
    assert "meteor" not in scores and "cider_d" in scores
