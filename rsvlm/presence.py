"""Yes/no presence answers decided by the mask decoder, not by the language model's guess.

"Is there any water?": the 135M LLM's own yes or no is close to a coin toss on images it has not seen (10 of 36 on
a balanced held-out set, ``eval.yes_no_set``), while the phrase-prompted decoder's mask of the subject, thresholded
at a share calibrated on the validation split (``train.calibrate``), gets 28 of 36. So for a presence question
about one image the assistant decodes the subject's mask and answers yes when it covers more than
``presence_min_share`` of the valid pixels; the mask goes back as the answer's region, so the yes comes with where
and how much, measured like every other number. Where calibration fitted a presence model for the subject's concept
(``presence_model_by_concept``: a logistic regression on how sure the mask's pixels are, ``presence_features``),
that model decides instead: on the held-out class targets it raised the balanced presence accuracy from 0.772 to
0.825 for trees and from 0.881 to 0.917 for water, where a share alone cannot tell a few sure pixels from as many
stray ones.

The subject is the question's own words when they leave a short phrase ("Is there any *water*?",
``question_subject``): the user's words are a better prompt than a small model's paraphrase. Otherwise the model
names it: it continues an answer forced to open with ``<p>``. Only questions that ask whether something is there
(``asks_presence``) are answered this way, whatever the model first said ("No.", "None here: …"); a yes/no about a
relation ("is the road north of the river?") and "did it change?" on two dates stay the model's.
"""

from __future__ import annotations

import math
import re

import numpy as np
import torch

from rsvlm.grounding import normalise_phrase

# The share of valid pixels a mask must cover to count as "there", unless the checkpoint's config carries its own
# calibrated ``presence_min_share`` (``python -m train.calibrate``): the stage A evaluation's presence threshold.
MIN_SHARE = 0.002

_ASKS = re.compile(
    r"^\s*(?:answer yes or no:?\s*)?(?:is|are|do|does|did|can|could|has|have|was|were)\b"
    r".*\b(?:any|anything|there|see|visible|contain|contains|show|shows|present|appear|appears|"
    r"change|changed|changes|different|modified|evidence|same|unchanged)\b",
    re.IGNORECASE,
)
_RELATION = re.compile(
    r"\b(?:north|south|east|west|left|right|above|below|next to|near|closer|closest|larger|smaller|more|"
    r"less|bigger|between the .* and|than)\b",
    re.IGNORECASE,
)
_CHANGE = re.compile(r"\b(?:change|changed|changes|different|modified|same|unchanged)\b", re.IGNORECASE)
# Questions whose "yes" means the thing is absent ("Did the area stay the same?" -> yes = nothing changed).
_ABSENCE = re.compile(
    r"\b(?:stay(?:ed)? the same|remain(?:ed)? the same|unchanged|free of|without any)\b", re.I
)


# Concepts the stage A metrics report and presence is calibrated per: names and synonyms mapped to one word.
CONCEPTS = {
    "building": {"building", "buildings", "house", "houses", "damaged building", "destroyed building"},
    "water": {"water", "sea", "river", "lake", "water body", "flood water", "pond"},
    "tree": {"tree", "trees", "forest", "woodland", "vegetation", "tree cover", "woods"},
    "road": {"road", "roads", "street", "streets", "impervious surfaces"},
}


def concept_of(phrases: list[str]) -> str:
    """The concept of a class's phrases ("the buildings" -> "building"), or "other"."""
    words = {normalise_phrase(p) for p in phrases}
    for concept, names in CONCEPTS.items():
        if words & names:
            return concept
    return "other"


def _calibrated(phrase: str, config, name: str) -> float | None:
    """The value ``train.calibrate`` wrote under ``name`` (a dict by concept) for ``phrase``'s concept, or None."""
    value = (getattr(config, name, None) or {}).get(concept_of([phrase]))
    return None if value is None else float(value)


def min_share_for(phrase: str, config) -> float:
    """The calibrated share for this phrase's concept (``presence_min_share_by_concept``), else the checkpoint's
    ``presence_min_share``, else ``MIN_SHARE``."""
    share = concept_min_share(phrase, config)
    return share if share is not None else float(getattr(config, "presence_min_share", MIN_SHARE))


def concept_min_share(phrase: str, config) -> float | None:
    """The share calibrated for ``phrase``'s own concept (``presence_min_share_by_concept``), or None when its
    concept has none: a mask of such a phrase under it is "not there", as the presence answer says."""
    return _calibrated(phrase, config, "presence_min_share_by_concept")


# What a presence model reads of a mask's probabilities (over the valid model-input pixels, calibrated so that 0.5 is
# the concept's threshold): the share above each level, its logarithm (a few stray pixels and none differ there),
# the top probabilities' means and the mean.
PRESENCE_LEVELS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
PRESENCE_TOP = (1, 20, 100, 500)


def presence_features(probability: np.ndarray) -> np.ndarray:
    """``presence_model``'s inputs from the probabilities of a mask's valid pixels (any shape; float64 [23])."""
    p = np.asarray(probability, dtype=np.float64).ravel()
    if p.size == 0:
        p = np.zeros(1)
    shares = np.array([(p > level).mean() for level in PRESENCE_LEVELS])
    top = -np.sort(-p)
    means = [top[:k].mean() for k in PRESENCE_TOP]
    return np.concatenate([shares, np.log(shares + 1e-4), means, [p.mean()]])


def presence_model(phrase: str, config) -> dict | None:
    """The logistic presence model ``train.calibrate`` fitted for ``phrase``'s concept on the validation split
    (``presence_model_by_concept``: ``mean``, ``scale``, ``weight``, ``bias``), or None."""
    return (getattr(config, "presence_model_by_concept", None) or {}).get(concept_of([phrase]))


def presence_score(features: np.ndarray, model: dict) -> np.ndarray:
    """The presence model's logit for ``presence_features`` rows (``[..., 23]``): above 0 means there."""
    z = (features - np.asarray(model["mean"])) / np.asarray(model["scale"])
    return z @ np.asarray(model["weight"]) + model["bias"]


def model_says_present(probability: np.ndarray, model: dict) -> bool:
    """Whether a presence model finds the thing in these (calibrated) probabilities of the valid pixels; a mask with
    no pixel above 0.5 is never there, so a "yes" always comes with a region."""
    if not (np.asarray(probability) > 0.5).any():
        return False
    return float(presence_score(presence_features(probability), model)) > 0


def mask_threshold_for(phrase: str, config) -> float:
    """The probability above which a pixel is in ``phrase``'s mask: calibrated for its concept on the validation
    split (``mask_threshold_by_concept``, ``train.calibrate``), else 0.5. A decoder trained on few tree tiles is
    unsure of trees (their best threshold is lower), not of water."""
    threshold = _calibrated(phrase, config, "mask_threshold_by_concept")
    return threshold if threshold is not None else 0.5


def calibrated_logits(logits: torch.Tensor, phrases: list[str | None], config) -> torch.Tensor:
    """Mask logits ``[M, ...]`` shifted per row so that 0 (probability 0.5) is the row phrase's calibrated
    threshold (``mask_threshold_for``; a row without a phrase stays as it is): every "logit > 0" and
    "probability > 0.5" downstream then means the calibrated mask."""
    shifts = [math.log(t / (1 - t)) for t in (mask_threshold_for(p or "", config) for p in phrases)]
    if not any(shifts):
        return logits
    shift = torch.tensor(shifts, dtype=logits.dtype, device=logits.device)
    return logits - shift.view(-1, *([1] * (logits.ndim - 1)))


def asks_presence(question: str, two_dates: bool = False) -> bool:
    """Whether a question asks if something is there (or, for two dates, whether anything changed)."""
    q = question.strip()
    if not _ASKS.search(q):
        return False
    if two_dates:
        return bool(_CHANGE.search(q))
    return not _RELATION.search(q) and not _CHANGE.search(q)


# Words of a presence question that are not its subject: the question's frame, the image, and the place.
_FRAME = re.compile(
    r"\b(?:answer yes or no|is|are|do|does|did|can|could|has|have|was|were|there|any|anything|some|you|i|we|see|"
    r"spot|find|visible|anywhere|present|appear|appears|contain|contains|show|shows|covered|by|part|parts|areas?|"
    r"of|in|on|at|this|the|these|an|a|image|images|picture|photo|scene|tile|view|aerial|satellite|here|it|"
    r"from above)\b",
    re.IGNORECASE,
)


def question_subject(question: str) -> str | None:
    """The thing a presence question asks about, from its own words ("Is any part of this image covered by
    water?" -> "water"), or None when what is left is not a short phrase (then the model names it)."""
    words = _FRAME.sub(" ", re.sub(r"[^\w\s-]", " ", question)).split()
    return " ".join(words).lower() if 1 <= len(words) <= 3 else None


_YES_NO_QUESTION = re.compile(
    r"^\s*(?:answer yes or no:?\s*)?(?:is|are|do|does|did|can|could|has|have|had|was|were|will|would|should|"
    r"may|might|must)\b",
    re.IGNORECASE,
)
_ALTERNATIVE = re.compile(r"\bor\b(?!\s+no\b)", re.IGNORECASE)  # "is it urban or rural?" is not yes/no


# "Can you segment the largest field?" is a request, not a yes/no question ("Can you detect any change?" is one).
_REQUEST = re.compile(
    r"^\s*(?:can|could|would|will)\s+you\s+(?:please\s+)?(?:segment|outline|mask|show|mark|find|locate|box|draw|give|"
    r"highlight|detect|delineate|count|tell|list|describe|point|provide|produce|identify|caption|summari[sz]e|"
    r"estimate|measure|map|trace|label|output)\b(?!\s+(?:any|anything)\b)",  # "can you find any water?" asks
    re.IGNORECASE,
)


def asks_yes_no(question: str) -> bool:
    """Whether the answer should open with yes or no: a question led by an auxiliary verb, with no "A or B",
    that is not a request ("Can you outline the river?")."""
    q = question.strip()
    if _REQUEST.search(q):
        return False
    return bool(_YES_NO_QUESTION.search(q)) and not _ALTERNATIVE.search(q.replace("yes or no", ""))


def leading_yes_no(text: str) -> bool | None:
    """The yes / no an answer *starts* with ("Yes, there are changes." -> True); None when it starts with neither."""
    m = re.match(r"\W*(yes|no)\b", text or "", re.IGNORECASE)
    return None if m is None else m.group(1).lower() == "yes"


def asks_absence(question: str) -> bool:
    return bool(_ABSENCE.search(question))


def phrase_from_continuation(text: str) -> str | None:
    """The phrase of a continuation of ``<p>``: ``"water</p> [SEG]"`` -> ``"water"`` (None if not closed)."""
    if "</p>" not in text:
        return None
    phrase = " ".join(text.split("</p>", 1)[0].split())
    phrase = phrase.removeprefix("<p>").strip()  # a model that repeats the opener
    return phrase or None


def is_present(mask_pixels: int, valid_pixels: int, min_share: float = MIN_SHARE) -> bool:
    return valid_pixels > 0 and mask_pixels > min_share * valid_pixels


def change_min_share(config) -> float | None:
    """``change_presence_min_share`` (``python -m train.calibrate --change``): the share of the valid pixels the
    change mask must cover for two dates to have changed; None (uncalibrated) keeps the model's own yes or no."""
    value = getattr(config, "change_presence_min_share", None)
    return None if value is None else float(value)


def change_answer_text(changed: bool, absence_question: bool) -> str:
    """ "Yes." / "No: I find no change between the two dates." ("Did it stay the same?" flips the yes)."""
    yes = changed != absence_question
    if changed:
        return "Yes." if yes else "No."
    return f"{'Yes' if yes else 'No'}: I find no change between the two dates."


def answer_text(present: bool, phrase: str, absence_question: bool) -> str:
    """ "Yes." / "No: no water found." (the measured facts of the region follow a yes)."""
    phrase = normalise_phrase(phrase) or phrase  # "the road" -> "road"
    yes = present != absence_question
    if present:
        return "Yes." if yes else "No."
    return f"{'Yes' if yes else 'No'}: no {phrase} found."
