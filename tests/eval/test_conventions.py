"""One test per convention of issue 10, each against the peer's official code (its output on the same input is
written into the test) or a hand value. The numbers in brackets are the issue's items."""

import numpy as np
import pytest

from eval import metrics as m
from eval.ptb import ptb_text


def test_1_acc_at_t_is_strict_as_rsvg():
    # RSVG / DIOR-RSVG (MGVLF, MLCMF test loops): accu5 = sum(iou > 0.5); DOTA and LHRS-Bot likewise.
    s = m.grounding_scores([0.5, 0.75, 0.25, 0.51])
    assert s["acc@0.5"] == pytest.approx(0.5)  # 0.75 and 0.51; exactly 0.5 is a miss
    assert s["acc@0.25"] == pytest.approx(0.75) and s["acc@0.75"] == 0.0
    # An IoU exactly on a threshold, from real boxes: [0,0,10,10] vs [0,0,10,20] is 100 / 200.
    assert m.grounding_scores([m.box_iou([0, 0, 10, 10], [0, 0, 10, 20])])["acc@0.5"] == 0.0


def test_2_flipped_boxes_and_negative_size_obbs_score_zero():
    assert m.box_iou([10, 0, 0, 10], [0, 0, 10, 10]) == 0.0  # x flipped
    assert m.box_iou([0, 10, 10, 0], [0, 0, 10, 10]) == 0.0  # y flipped
    assert m.box_counts([10, 0, 0, 10], [0, 0, 10, 10]) == (0.0, 100.0)  # a miss adds the target to cumIoU
    assert m.obb_iou([5, 5, -10, 10, 0], [5, 5, 10, 10, 0]) == 0.0  # negative width draws the same square
    assert m.obb_iou([5, 5, 10, -10, 0], [5, 5, 10, 10, 0]) == 0.0
    bowtie = [[0, 0], [10, 10], [10, 0], [0, 10]]  # corners out of order: a self-crossing polygon
    assert m.obb_iou(bowtie, [[0, 0], [10, 0], [10, 10], [0, 10]]) == 0.0
    # Either winding of a valid corner polygon is the same box (DOTA labels come in both).
    assert m.obb_iou([[0, 0], [0, 10], [10, 10], [10, 0]], [[0, 0], [10, 0], [10, 10], [0, 10]]) == 1.0


def test_3_cumiou_and_precision_at_0_5_to_0_9():
    # DIOR-RSVG (MLCMF): cumIoU = sum(interArea) / sum(unionArea) over the set, Pr@0.5..0.9 with `>`.
    preds = [[0, 0, 10, 10], [0, 0, 10, 10], None]
    targets = [[0, 0, 10, 10], [0, 0, 10, 20], [0, 0, 5, 5]]
    counts = [m.box_counts(p, t) for p, t in zip(preds, targets)]
    assert counts == [(100.0, 100.0), (100.0, 200.0), (0.0, 25.0)]
    s = m.grounding_scores([m.box_iou(p, t) for p, t in zip(preds, targets)], counts)
    assert s["cumiou"] == pytest.approx(200 / 325)
    assert s["miou"] == pytest.approx(0.5)
    assert [s[f"acc@{t}"] for t in (0.5, 0.6, 0.7, 0.8, 0.9)] == pytest.approx([1 / 3] * 5)
    # Referring segmentation (RRSIS-D / RefSegRS through LAVT): Pr@t counts this_iou >= t (inclusive).
    seg = m.segmentation_scores([(1, 2), (9, 10), (0, 5)])  # IoU 0.5, 0.9, 0
    assert seg["pr@0.5"] == pytest.approx(2 / 3) and seg["pr@0.9"] == pytest.approx(1 / 3)
    assert seg["pr@0.6"] == pytest.approx(1 / 3)


def test_4_a_set_with_no_change_scores_as_bit_cd():
    # BIT_CD cm2score on the confusion [[tn, fp], [fn, tp]] = [[8, 0], [0, 0]]:
    # iu = tp / (sum_a1 + sum_a0 - tp + eps) = [1, 0] -> mIoU 0.5, F1_1 = 0, precision_1 = recall_1 = 0.
    empty = np.zeros((2, 4), bool)
    s = m.change_mask_scores([m.confusion(empty, empty)])
    assert s == pytest.approx(
        {"iou": 0.0, "f1": 0.0, "precision": 0.0, "recall": 0.0, "miou": 0.5, "oa": 1.0}
    )


def test_5_ciou_is_zero_when_every_union_is_empty_as_lisa():
    # LISA validate(): ciou = intersection_sum / (union_sum + 1e-10) -> 0; giou counts an empty pair as 1.
    s = m.segmentation_scores([(0, 0), (0, 0)])
    assert s["ciou"] == 0.0 and s["giou"] == 1.0


def test_6_ignore_pixels_count_for_neither_side():
    # LISA's intersectionAndUnionGPU: output[target == 255] = 255 before counting.
    target = np.array([[1, 1, 0, 0]], bool)
    ignore = np.array([[0, 0, 1, 1]], bool)
    pred = np.array([[1, 1, 1, 0]], bool)  # spills into the ignored pixels only
    assert m.mask_counts(pred, target, ignore) == (2, 2)
    assert m.mask_counts(pred, target) == (2, 3)


@pytest.mark.parametrize(
    ("prediction", "reference", "matches"),
    [
        ("Yes, there are two.", "yes", False),  # the whole answer is compared, as VQAv2 / LLaVA
        ("No, there are none.", "no", False),
        ("No.", "no", True),
        ("1,000", "1000", True),  # commas are removed before anything else
        ("Two", "2", True),  # zero..ten -> digits
        ("none", "0", True),  # VQAv2's number map has none -> 0
        ("eleven", "11", False),  # ...and stops at ten
        ("The harbor.", "harbor", True),  # articles and the final period go
        ("y", "yes", False),
        ("true", "yes", False),
        ("nope", "no", False),
        ("between 10m2 and 100m2", "between 10m2 and 100m2", True),  # RSVQA-HR area answers unchanged
    ],
)
def test_7_vqa_normalisation_is_vqav2s(prediction, reference, matches):
    assert m.exact_match(prediction, reference) == float(matches)


def test_7_vqav2_normaliser_outputs():
    # EvalAIAnswerProcessor()(x) in LLaVA's llava/eval/m4c_evaluator.py, run on these inputs.
    assert m.normalize_answer("No, there are none.") == "no there are 0"
    assert m.normalize_answer("The building's roof!") == "building 's roof"
    assert m.normalize_answer("2.5 km") == "2.5 km"
    assert m.normalize_answer("dont know") == "don't know"
    assert m.yes_no("Yes") is True and m.yes_no("Yes, there is.") is None


@pytest.mark.parametrize(
    ("caption", "corenlp"),
    [
        # pycocoevalcap 1.2 PTBTokenizer (Stanford CoreNLP 3.4.1 -preserveLines -lowerCase) outputs.
        ("The building's roof.", "the building 's roof"),
        ("1,000 cars & 2.5 trucks", "1,000 cars & 2.5 trucks"),
        ("A café near the road", "a café near the road"),
        ("don't (go) here!", "do n't -lrb- go -rrb- here"),
        ("two-storey houses -- many; some: \"quoted\" 'single'", "two-storey houses many some quoted single"),
        ("roads/paths U.S. 50% $5 #3", "roads/paths u.s. 50 % $ 5 # 3"),
        (
            "it's can't won't cannot I'm they're we've he'll she'd",
            "it 's ca n't wo n't can not i 'm they 're we 've he 'll she 'd",
        ),
        ("The houses' roofs at 5 o'clock", "the houses roofs at 5 o'clock"),
        ("end. next one", "end next one"),
    ],
)
def test_8_caption_tokens_are_pycocoevalcaps(caption, corenlp):
    assert ptb_text(caption) == corenlp


def test_8_bleu_sees_ptb_tokens():
    # "building's" is two tokens for coco-caption, so a candidate without the clitic loses a unigram.
    assert m.bleu(["the building 's roof"], [["The building's roof."]])[0] == pytest.approx(1.0)
    assert m.bleu(["1,000 cars"], [["1,000 cars"]])[1] == pytest.approx(1.0)
