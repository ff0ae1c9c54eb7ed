"""Yes/no presence answers decided by the mask decoder, not by the language model's guess.

"Is there any water?" / "Did this area change?": the 135M LLM's own yes or no is close to a coin toss on images it
has not seen (2 of 8 on the held-out presence questions), while the phrase-prompted mask decoder finds water,
buildings and change far more reliably. So for a presence question the assistant asks the LLM only *what* the
question is about (it continues an answer forced to start with ``<p>`` and names the phrase it would outline),
decodes that phrase's mask, and answers yes when the mask covers more than ``MIN_SHARE`` of the valid pixels. The
mask goes back as the answer's region, so the yes comes with where and how much, measured like every other number.

Only questions that ask whether something is there (``asks_presence``) are answered this way; a yes/no about a
relation ("is the road north of the river?") stays the model's.
"""

from __future__ import annotations

import re

# The share of valid pixels a mask must cover to count as "there": the stage A evaluation's presence threshold.
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


def asks_presence(question: str, two_dates: bool = False) -> bool:
    """Whether a question asks if something is there (or, for two dates, whether anything changed)."""
    q = question.strip()
    if not _ASKS.search(q):
        return False
    if two_dates:
        return bool(_CHANGE.search(q))
    return not _RELATION.search(q) and not _CHANGE.search(q)


def asks_absence(question: str) -> bool:
    return bool(_ABSENCE.search(question))


def leading_yes_no(text: str) -> bool | None:
    """The yes / no an answer starts with, or None."""
    m = re.match(r"\W*(yes|no)\b", text or "", re.IGNORECASE)
    return None if m is None else m.group(1).lower() == "yes"


def phrase_from_continuation(text: str) -> str | None:
    """The phrase of a continuation of ``<p>``: ``"water</p> [SEG]"`` -> ``"water"`` (None if not closed)."""
    if "</p>" not in text:
        return None
    phrase = " ".join(text.split("</p>", 1)[0].split())
    phrase = phrase.removeprefix("<p>").strip()  # a model that repeats the opener
    return phrase or None


def is_present(mask_pixels: int, valid_pixels: int) -> bool:
    return valid_pixels > 0 and mask_pixels > MIN_SHARE * valid_pixels


def answer_text(present: bool, phrase: str, absence_question: bool) -> str:
    """ "Yes." / "No: no water found." (the measured facts of the region follow a yes)."""
    yes = present != absence_question
    if present:
        return "Yes." if yes else "No."
    return f"{'Yes' if yes else 'No'}: no {phrase} found."
