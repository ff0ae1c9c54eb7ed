"""Caption tokenisation exactly as pycocoevalcap does it, in pure Python.

pycocoevalcap's ``PTBTokenizer`` runs Stanford CoreNLP 3.4.1 (``edu.stanford.nlp.process.PTBTokenizer
-preserveLines -lowerCase``) and then drops the tokens in its ``PUNCTUATIONS`` list. Every caption metric
(BLEU, METEOR, ROUGE-L, CIDEr-D) scores the space-joined result, so a different tokenizer changes the scores.
This module reproduces that output without Java:

    ptb_tokenize("The building's roof, 1,000 m.")  ->  ["the", "building", "'s", "roof", "1,000", "m"]

What CoreNLP does, and so what this does: lower case (accents kept: "café"); clitics split off ("building 's",
"do n't", "ca n't", "can not"); commas inside numbers kept ("1,000"), decimals kept ("2.5"); hyphenated and
slashed words kept whole ("two-storey", "roads/paths"); ``& % $ #`` are tokens of their own; brackets become
``-lrb-`` / ``-rrb-`` / ``-lsb-`` ... and, lower-cased, are *not* in pycocoevalcap's drop list (which has
``-LRB-``), so they stay in the scored text; quotes, ``. , ; : ? !``, ``-``, ``--`` and ``...`` are dropped.
``tests/eval/test_ptb.py`` holds CoreNLP's own outputs on these cases, and a slow test compares both on every
LEVIR-CC reference caption (all 50,385 agree). One known difference: CoreNLP's "rock 'n' roll" special case.
"""

from __future__ import annotations

import re

# pycocoevalcap/tokenizer/ptbtokenizer.py PUNCTUATIONS, after CoreNLP has lower-cased (so "-LRB-" never occurs).
DROPPED = {"''", "'", "``", "`", ".", "?", "!", ",", ":", "-", "--", "...", ";", '"'}
_BRACKETS = {"(": "-lrb-", ")": "-rrb-", "[": "-lsb-", "]": "-rsb-", "{": "-lcb-", "}": "-rcb-"}

_TOKEN = re.compile(
    r"""
    (?:[^\W\d_]\.){2,}                  # abbreviations with inner periods: u.s.
  | \d+(?:[,.]\d+)+(?:-\w+)*            # numbers with thousands commas or decimals: 1,000  2.5
  | n't\b                               # the negation clitic, split off below
  | '(?:s|re|ve|ll|d|m)(?![^\W_])       # the other clitics
  | \w+(?:[-/]\w+|'(?!(?:s|re|ve|ll|d|m)(?![^\W_]))\w+)*  # words: two-storey, roads/paths, 3-4, o'clock
  | \.\.\.|--
  | \S
    """,
    re.VERBOSE,
)


def ptb_tokenize(text: str) -> list[str]:
    """The tokens pycocoevalcap scores for one caption (CoreNLP PTB tokens, lower case, punctuation dropped)."""
    text = text.lower()
    text = re.sub(r"\bcannot\b", "can not", text)
    text = re.sub(r"(\w)n't\b", r"\1 n't", text)
    tokens = [_BRACKETS.get(t, t) for t in _TOKEN.findall(text)]
    return [t for t in tokens if t not in DROPPED]


def ptb_text(text: str) -> str:
    """The space-joined tokens, as pycocoevalcap hands them to its scorers."""
    return " ".join(ptb_tokenize(text))
