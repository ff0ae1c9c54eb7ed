"""Benchmark metrics as small pure functions (no model, no I/O), each checked by hand-computed tests.

Conventions, stated once:

- Boxes are ``[x1, y1, x2, y2]`` in any one pixel frame; a missing or flipped prediction scores IoU 0.
  Visual grounding (RSVG / DIOR-RSVG): Acc@t is the share of samples with IoU > t (strict, as RSVG);
  mIoU the mean IoU; cumIoU the summed intersections over the summed unions.
- Oriented boxes are ``[cx, cy, w, h, angle_deg]`` or a corner polygon; IoU of the shapely polygons.
- Referring segmentation (LISA / RRSIS-D / SegEarth-R1): gIoU = mean of per-sample IoU, cIoU = sum of
  intersections / sum of unions. Empty target (a "none here" query, the GRES convention): an empty prediction
  scores IoU 1 and a non-empty one 0 in gIoU; both add their (0 or |pred|) pixels to cIoU's sums.
- Change masks: confusion counts accumulated over the whole set, then IoU / F1 of the change class and mIoU
  (mean of change and no-change IoU), as LEVIR-CD / DSIFN papers report.
- Captions follow the coco-caption definitions (BLEU with the "closest" reference length, ROUGE-L with
  beta 1.2, CIDEr-D with sigma 6, clipped counts and x10), on ``eval.ptb``'s reproduction of its PTB tokenizer.
- Where peers disagree, each benchmark follows its own original code; ``eval/README.md`` names the source.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np
from shapely.geometry import Polygon

from eval.ptb import ptb_tokenize
from rsvlm import presence

# ------------------------------------------------------------------------------------------------ boxes


def box_counts(pred: Sequence[float] | None, target: Sequence[float]) -> tuple[float, float]:
    """(intersection, union) areas of two ``[x1, y1, x2, y2]`` boxes, for IoU and RSVG's cumIoU.

    A missing prediction, or one with flipped corners (x2 < x1 or y2 < y1), is a miss: intersection 0, union
    the target's area. RSVG / DIOR-RSVG score such a box 0 (their ``bbox_iou`` clamps the overlap at 0 and the
    flipped area is not positive), so sorting the corners, which would turn ``[10, 0, 0, 10]`` into a perfect
    box, is not done."""
    tx1, ty1, tx2, ty2 = (float(v) for v in target)
    target_area = max(0.0, tx2 - tx1) * max(0.0, ty2 - ty1)
    if pred is None:
        return 0.0, target_area
    px1, py1, px2, py2 = (float(v) for v in pred)
    if px2 < px1 or py2 < py1:
        return 0.0, target_area
    iw = max(0.0, min(px2, tx2) - max(px1, tx1))
    ih = max(0.0, min(py2, ty2) - max(py1, ty1))
    inter = iw * ih
    return inter, (px2 - px1) * (py2 - py1) + target_area - inter


def box_iou(pred: Sequence[float] | None, target: Sequence[float]) -> float:
    """IoU of two ``[x1, y1, x2, y2]`` boxes; a missing, flipped or zero-area box has IoU 0."""
    inter, union = box_counts(pred, target)
    return inter / union if union > 0 else 0.0


def obb_polygon(obb: Sequence[float] | Sequence[Sequence[float]]) -> Polygon:
    """A shapely polygon from ``[cx, cy, w, h, angle_deg]`` or from corner points ``[[x, y], ...]``."""
    if len(obb) and isinstance(obb[0], (list, tuple, np.ndarray)):
        return Polygon([(float(x), float(y)) for x, y in obb])
    cx, cy, w, h, angle = (float(v) for v in obb)
    t = math.radians(angle)
    c, s = math.cos(t), math.sin(t)
    dx, dy = (c * w / 2, s * w / 2), (-s * h / 2, c * h / 2)
    return Polygon(
        [
            (cx - dx[0] - dy[0], cy - dx[1] - dy[1]),
            (cx + dx[0] - dy[0], cy + dx[1] - dy[1]),
            (cx + dx[0] + dy[0], cy + dx[1] + dy[1]),
            (cx - dx[0] + dy[0], cy - dx[1] + dy[1]),
        ]
    )


def _valid_obb(obb) -> bool:
    """A ``[cx, cy, w, h, angle]`` box needs positive sides; a corner polygon must not cross itself. A negative
    width would otherwise draw the same rectangle and score 1, as an invalid DOTA / mmcv box never does."""
    if len(obb) and isinstance(obb[0], (list, tuple, np.ndarray)):
        return obb_polygon(obb).is_valid
    return float(obb[2]) > 0 and float(obb[3]) > 0


def obb_counts(pred, target) -> tuple[float, float]:
    """(intersection, union) areas of two oriented boxes; a missing or invalid prediction is a miss."""
    b = obb_polygon(target)
    if not b.is_valid:
        b = b.buffer(0)
    if pred is None or not _valid_obb(pred):
        return 0.0, float(b.area)
    a = obb_polygon(pred)
    return float(a.intersection(b).area), float(a.union(b).area)


def obb_iou(pred, target) -> float:
    """Rotated-box IoU through polygon intersection; missing, invalid or degenerate boxes give 0."""
    inter, union = obb_counts(pred, target)
    return inter / union if union > 0 else 0.0


# Acc@0.25 / 0.5 / 0.75 as RSVG / DIOR-RSVG / LHRS-Bot report, plus DIOR-RSVG's Pr@0.6 ... 0.9.
GROUNDING_THRESHOLDS = (0.25, 0.5, 0.6, 0.7, 0.75, 0.8, 0.9)


def grounding_scores(
    ious: Sequence[float],
    counts: Sequence[tuple[float, float]] | None = None,
    thresholds: Sequence[float] = GROUNDING_THRESHOLDS,
) -> dict[str, float]:
    """Acc@t (share with IoU **strictly above** t: RSVG's ``iou > 0.5``, as DOTA and LHRS-Bot), mean IoU and,
    given per-sample (intersection, union) areas, cumIoU (sum of intersections / sum of unions, DIOR-RSVG)."""
    values = np.asarray(list(ious), dtype=float)
    if values.size == 0:
        return {}
    out = {f"acc@{t:g}": float((values > t).mean()) for t in thresholds}
    out["miou"] = float(values.mean())
    if counts is not None:
        inter = sum(float(c[0]) for c in counts)
        union = sum(float(c[1]) for c in counts)
        out["cumiou"] = inter / union if union > 0 else 0.0
    return out


def matched_objects(preds: Sequence, targets: Sequence, threshold: float = 0.5) -> int:
    """Targets matched one to one by predicted oriented boxes with IoU strictly above ``threshold``, pairs taken
    in descending IoU (TEOChat's GeoChat-Bench scorer, ``get_single_image_results_rotated``: Acc@0.5 is the sum of
    matches over the sum of target boxes)."""
    pairs = sorted(
        ((obb_iou(p, t), i, j) for i, p in enumerate(preds) for j, t in enumerate(targets)), reverse=True
    )
    used_p, used_t = set(), set()
    for iou, i, j in pairs:
        if iou <= threshold:
            break
        if i not in used_p and j not in used_t:
            used_p.add(i)
            used_t.add(j)
    return len(used_t)


# ------------------------------------------------------------------------------------------------ masks


def mask_counts(
    pred: np.ndarray | None, target: np.ndarray, ignore: np.ndarray | None = None
) -> tuple[int, int]:
    """(intersection, union) pixel counts; a missing prediction is an empty mask. Pixels in ``ignore`` count
    for neither (LISA's label 255: ``output[target == ignore_index] = ignore_index`` before counting)."""
    t = np.asarray(target, dtype=bool)
    p = np.zeros_like(t) if pred is None else np.asarray(pred, dtype=bool)
    if p.shape != t.shape:
        raise ValueError(f"prediction mask {p.shape} and target mask {t.shape} differ in shape")
    if ignore is not None:
        keep = ~np.asarray(ignore, dtype=bool)
        p, t = p & keep, t & keep
    return int(np.logical_and(p, t).sum()), int(np.logical_or(p, t).sum())


def sample_iou(intersection: int, union: int) -> float:
    """Per-sample IoU with the empty-target convention: nothing predicted for nothing there is 1."""
    return 1.0 if union == 0 else intersection / union


# Precision@t of referring segmentation (RRSIS-D / RefSegRS, from LAVT's ``this_iou >= eval_seg_iou``).
SEGMENTATION_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)


def segmentation_scores(
    counts: Sequence[tuple[int, int]], thresholds: Sequence[float] = SEGMENTATION_THRESHOLDS
) -> dict[str, float]:
    """gIoU (mean of per-sample IoU), cIoU (cumulative intersection / cumulative union) and Pr@t.

    cIoU is 0 when every union is empty, as LISA's ``intersection / (union + 1e-10)``. Pr@t counts IoU >= t
    (inclusive, as LAVT / RRSIS-D; grounding's Acc@t is strict, as RSVG: each follows its benchmark's code)."""
    if not counts:
        return {}
    inters = np.array([c[0] for c in counts], dtype=float)
    unions = np.array([c[1] for c in counts], dtype=float)
    ious = np.array([sample_iou(i, u) for i, u in zip(inters, unions, strict=True)])
    out = {
        "giou": float(ious.mean()),
        "ciou": float(inters.sum() / unions.sum()) if unions.sum() > 0 else 0.0,
    }
    out.update({f"pr@{t:g}": float((ious >= t).mean()) for t in thresholds})
    return out


def confusion(pred: np.ndarray | None, target: np.ndarray) -> tuple[int, int, int, int]:
    """(tp, fp, fn, tn) pixel counts of a binary change mask; a missing prediction is all no-change."""
    t = np.asarray(target, dtype=bool)
    p = np.zeros_like(t) if pred is None else np.asarray(pred, dtype=bool)
    if p.shape != t.shape:
        raise ValueError(f"prediction mask {p.shape} and target mask {t.shape} differ in shape")
    tp = int((p & t).sum())
    fp = int((p & ~t).sum())
    fn = int((~p & t).sum())
    return tp, fp, fn, int(t.size - tp - fp - fn)


def change_mask_scores(confusions: Iterable[tuple[int, int, int, int]]) -> dict[str, float]:
    """Pixel-level scores over the summed confusion: change IoU, F1, precision, recall, mIoU, OA."""
    tp, fp, fn, tn = (int(v) for v in np.sum(np.asarray(list(confusions), dtype=np.int64).reshape(-1, 4), 0))
    total = tp + fp + fn + tn
    if total == 0:
        return {}

    def ratio(a: float, b: float) -> float:
        return a / b if b > 0 else 0.0

    # An empty denominator gives 0, never 1: BIT_CD's ``tp / (sum + eps)``. A set with no change at all and
    # none predicted thus has change IoU 0, F1 0 and mIoU 0.5, as BIT reports it.
    precision, recall = ratio(tp, tp + fp), ratio(tp, tp + fn)
    iou_change = ratio(tp, tp + fp + fn)
    iou_same = ratio(tn, tn + fp + fn)
    return {
        "iou": iou_change,
        "f1": ratio(2 * precision * recall, precision + recall),
        "precision": precision,
        "recall": recall,
        "miou": (iou_change + iou_same) / 2,
        "oa": (tp + tn) / total,
    }


# ------------------------------------------------------------------------------------------------ text answers

# VQA answers are normalised as the VQAv2 evaluation does (``vqaEval.py``; LLaVA's ``m4c_evaluator.py``
# ``EvalAIAnswerProcessor``, which GeoChat and LHRS-Bot inherit): no leniency beyond it, so "Yes, there are
# two." is not "yes" and "y" / "true" / "nope" are not yes or no. RSVQA's own code compares answer strings
# exactly (a classifier over its answer set); this normalisation is the identity on those answers.
_VQA_NUMBERS = {
    w: str(i) for i, w in enumerate("zero one two three four five six seven eight nine ten".split())
}
_VQA_NUMBERS["none"] = "0"
_VQA_ARTICLES = {"a", "an", "the"}
_VQA_PUNCTUATION = ';/[]"{}()=+\\_-><@`,?!'
_VQA_DIGIT_COMMA = re.compile(r"(?<=\d)(\,)+(?=\d)")
_VQA_PERIOD = re.compile(r"(?!<=\d)(\.)(?!\d)")
# The common apostrophe-less spellings of VQAv2's contraction table (its full table has ~170 entries of the
# same kind, none of which occur in remote-sensing answers).
_VQA_CONTRACTIONS = {
    "arent": "aren't", "cant": "can't", "couldnt": "couldn't", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hasnt": "hasn't", "havent": "haven't", "isnt": "isn't", "thats": "that's",
    "theres": "there's", "theyre": "they're", "wasnt": "wasn't", "werent": "weren't", "wont": "won't",
    "wouldnt": "wouldn't",
}  # fmt: skip


def normalize_answer(text: str) -> str:
    """VQAv2 answer normalisation: lower case, commas and ``?`` dropped, other punctuation dropped or turned
    into spaces, periods not before a digit dropped, number words zero..ten (and "none") -> digits, articles
    dropped. "1,000" -> "1000"; "No, there are none." -> "no there are 0" (not "no")."""
    text = text.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()
    text = text.replace("\n", " ").replace("\t", " ").strip()
    out = text
    for p in _VQA_PUNCTUATION:
        if p + " " in text or " " + p in text or _VQA_DIGIT_COMMA.search(text) is not None:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    out = _VQA_PERIOD.sub("", out)
    words = [_VQA_NUMBERS.get(w, w) for w in out.split()]
    words = [_VQA_CONTRACTIONS.get(w, w) for w in words if w not in _VQA_ARTICLES]
    return " ".join(words)


def exact_match(prediction: str, answers: str | Sequence[str]) -> float:
    """1.0 when the normalised prediction equals any normalised reference answer."""
    refs = [answers] if isinstance(answers, str) else list(answers)
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(a) for a in refs))


def leading_yes_no(text: str) -> bool | None:
    """The yes / no an answer *starts* with ("Yes, there are changes." -> True), as rsvlm's protocol answers
    yes/no questions (yes or no first, then a clause); None when it starts with neither. Used for ``gen`` sets,
    whose references are written that way; the official VQA sets keep ``yes_no``'s exact match."""
    return presence.leading_yes_no(text)


def yes_no(text: str) -> bool | None:
    """True / False when the normalised answer is exactly "yes" / "no", else None (a miss)."""
    norm = normalize_answer(text)
    return True if norm == "yes" else False if norm == "no" else None


_NUMBER_WORDS = {
    w: str(i)
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
        "sixteen seventeen eighteen nineteen twenty".split()
    )
}


def tokenize(text: str) -> list[str]:
    """Lower-case words and numbers, punctuation dropped (used to find numbers; captions use ``eval.ptb``)."""
    return re.findall(r"[a-z0-9]+(?:[.'-][a-z0-9]+)*", _VQA_DIGIT_COMMA.sub("", text.lower()))


def first_number(text: str) -> float | None:
    """The first number in an answer (digits or a number word), for counting."""
    for word in tokenize(text):
        word = _NUMBER_WORDS.get(word, word)
        try:
            return float(word)
        except ValueError:
            continue
    return None


def counting_mae(predictions: Sequence[float | None], targets: Sequence[float]) -> float:
    """Mean absolute error; an answer with no number counts as 0 (the worst honest reading)."""
    if not targets:
        return float("nan")
    errors = [abs((p if p is not None else 0.0) - t) for p, t in zip(predictions, targets, strict=True)]
    return float(np.mean(errors))


# ------------------------------------------------------------------------------------------------ captions


def _ngrams(words: Sequence[str], n: int) -> Counter:
    return Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))


def bleu(candidates: Sequence[str], references: Sequence[Sequence[str]], max_n: int = 4) -> list[float]:
    """Corpus BLEU-1..max_n as coco-caption's ``bleu_scorer`` (option "closest"): clipped n-gram counts and
    lengths summed over the corpus, the brevity penalty from the closest reference length."""
    tiny, small = 1e-15, 1e-9
    correct, guess = [0] * max_n, [0] * max_n
    test_len = ref_len = 0
    for cand, refs in zip(candidates, references, strict=True):
        words = ptb_tokenize(cand)
        ref_words = [ptb_tokenize(r) for r in refs]
        test_len += len(words)
        ref_len += min((abs(len(r) - len(words)), len(r)) for r in ref_words)[1]
        for n in range(1, max_n + 1):
            counts = _ngrams(words, n)
            max_ref: Counter = Counter()
            for r in ref_words:
                max_ref |= _ngrams(r, n)
            correct[n - 1] += sum(min(c, max_ref[g]) for g, c in counts.items())
            guess[n - 1] += max(0, len(words) - n + 1)
    scores, product = [], 1.0
    for k in range(max_n):
        product *= (correct[k] + tiny) / (guess[k] + small)
        scores.append(product ** (1.0 / (k + 1)))
    ratio = (test_len + tiny) / (ref_len + small)
    if ratio < 1:
        scores = [s * math.exp(1 - 1 / ratio) for s in scores]
    return scores


def _lcs(a: Sequence[str], b: Sequence[str]) -> int:
    row = [0] * (len(b) + 1)
    for x in a:
        prev = 0
        for j, y in enumerate(b, 1):
            prev, row[j] = row[j], prev + 1 if x == y else max(row[j], row[j - 1])
    return row[-1]


def rouge_l(candidates: Sequence[str], references: Sequence[Sequence[str]], beta: float = 1.2) -> float:
    """coco-caption ROUGE-L: per candidate, F_beta of the best LCS precision and recall over its references."""
    scores = []
    for cand, refs in zip(candidates, references, strict=True):
        words = ptb_tokenize(cand)
        precs, recs = [], []
        for r in refs:
            ref_words = ptb_tokenize(r)
            lcs = _lcs(words, ref_words)
            precs.append(lcs / len(words) if words else 0.0)
            recs.append(lcs / len(ref_words) if ref_words else 0.0)
        p, r = max(precs, default=0.0), max(recs, default=0.0)
        scores.append((1 + beta**2) * p * r / (r + beta**2 * p) if p > 0 and r > 0 else 0.0)
    return float(np.mean(scores)) if scores else 0.0


def cider_d(
    candidates: Sequence[str], references: Sequence[Sequence[str]], n: int = 4, sigma: float = 6.0
) -> float:
    """coco-caption CIDEr-D: tf-idf n-gram vectors (document frequency over the reference sets), clipped
    candidate weights, a Gaussian length penalty, averaged over n and references, times 10.

    With a single image every idf is log(1/1) = 0, so CIDEr-D is 0 there (as in coco-caption)."""

    def cook(text: str) -> list[Counter]:
        words = ptb_tokenize(text)
        return [_ngrams(words, k) for k in range(1, n + 1)]

    cands = [cook(c) for c in candidates]
    refs = [[cook(r) for r in rs] for rs in references]
    df: Counter = Counter()
    for rs in refs:
        for gram in {g for r in rs for counts in r for g in counts}:
            df[gram] += 1
    log_ref = math.log(float(len(refs))) if refs else 0.0

    def vec(cooked: list[Counter]) -> tuple[list[dict], list[float], int]:
        vecs, norms = [], []
        for counts in cooked:
            v = {g: tf * (log_ref - math.log(max(1.0, df[g]))) for g, tf in counts.items()}
            vecs.append(v)
            norms.append(math.sqrt(sum(x * x for x in v.values())))
        return vecs, norms, sum(cooked[0].values())

    scores = []
    for cand, rs in zip(cands, refs, strict=True):
        vc, nc, lc = vec(cand)
        total = np.zeros(n)
        for r in rs:
            vr, nr, lr = vec(r)
            for k in range(n):
                val = sum(min(w, vr[k].get(g, 0.0)) * vr[k].get(g, 0.0) for g, w in vc[k].items())
                if nc[k] != 0 and nr[k] != 0:
                    val /= nc[k] * nr[k]
                total[k] += val * math.exp(-((lc - lr) ** 2) / (2 * sigma**2))
        scores.append(float(np.mean(total)) / max(1, len(rs)) * 10.0)
    return float(np.mean(scores)) if scores else 0.0


def caption_scores(candidates: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
    """BLEU-1..4, ROUGE-L and CIDEr-D of a corpus, and METEOR where pycocoevalcap and a Java runtime are present
    (METEOR 1.5 is a Java program with its own paraphrase tables: there is no faithful pure-Python copy)."""
    if not candidates:
        return {}
    b = bleu(candidates, references)
    out = {f"bleu{k + 1}": b[k] for k in range(4)}
    out["rouge_l"] = rouge_l(candidates, references)
    out["cider_d"] = cider_d(candidates, references)
    score = meteor(candidates, references)
    if score is not None:
        out["meteor"] = score
    return out


def meteor(candidates: Sequence[str], references: Sequence[Sequence[str]]) -> float | None:
    """pycocoevalcap's METEOR on PTB tokens (as its COCO pipeline feeds it), or None without it or Java."""
    import shutil

    if shutil.which("java") is None:
        return None
    try:
        from pycocoevalcap.meteor.meteor import Meteor
    except ImportError:
        return None
    from eval.ptb import ptb_text

    res = {i: [ptb_text(c)] for i, c in enumerate(candidates)}
    gts = {i: [ptb_text(r) for r in refs] for i, refs in enumerate(references)}
    score, _ = Meteor().compute_score(gts, res)
    return float(score)
