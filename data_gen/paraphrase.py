"""Optional paraphrase pass: rewrite the user questions through the local LLM for more phrasing variety.

Off by default (``GenConfig.paraphrase``). Only the question text of user turns is rewritten, never the answers;
a rewrite is kept only when it keeps every number and protocol tag of the original (adding none), every value filled
into its template (class names, referring expressions) and every answer-format word (box, mask, segment), stays a
question or request (a small model often answers or restates instead), does not loop, stays one line and keeps
a sane length; otherwise the original stays. The model (``rsvlm.backbones.load_llm``) is
imported lazily, so data generation without paraphrasing never needs torch or transformers.
"""

from __future__ import annotations

import logging
import re
import string
from collections.abc import Callable
from dataclasses import replace

from data_gen.tile import Sample
from rsvlm.grounding import IMAGE_TOKEN

log = logging.getLogger(__name__)

_PROTECTED = re.compile(r"<[^>]+>|\[SEG\]|-?\d+(?:[.,]\d+)*")
_PROMPT = (
    "Rewrite the following question about an aerial image in different words. Keep its meaning, keep every "
    "number, and answer with the rewritten question only.\nQuestion: {q}\nRewritten question:"
)

_generator: Callable[[str], str] | None = None


def protected_tokens(text: str) -> list[str]:
    return sorted(_PROTECTED.findall(text))


# Words that set the answer's form (box, rotated box, mask): a rewrite that drops one asks for something else.
_FORMAT_WORDS = ("box", "rotated", "oriented", "rectangle", "mask", "segment", "outline", "highlight", "mark")
# A small LLM often answers or restates instead of rewriting ("The road lies in the image."): a statement.
_STATEMENT_START = re.compile(r"^(the|a|an|this|it|there|these|those|i|we|yes|no)\b", re.IGNORECASE)


def _repeats(text: str, n: int = 4) -> bool:
    """True when some n-word sequence occurs twice (the degenerate loops of a small greedy decoder)."""
    words = re.findall(r"\w+", text.lower())
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return len(grams) != len(set(grams))


def template_fields(question: str, qtype: str) -> list[str]:
    """The values filled into the template of ``qtype`` that produced ``question`` (class names, referring
    expressions, OSM names): a rewrite must keep them verbatim, or a referring question may lose the attribute
    that made it unambiguous. Empty when no template matches (reasoning questions have no fields)."""
    from data_gen.tasks.phrasing import TEMPLATES

    for template in TEMPLATES.get(qtype, ()):
        pattern, names = "", []
        for literal, name, _, _ in string.Formatter().parse(template):
            pattern += re.escape(literal)
            if name:
                pattern += f"(?P<f{len(names)}>.+?)"
                names.append(name)
        m = re.fullmatch(pattern, question.strip())
        if m:
            return [v for v in m.groupdict().values() if v]
    return []


def accept(original: str, rewrite: str, keep: tuple[str, ...] | list[str] = ()) -> bool:
    """True when ``rewrite`` may replace ``original``: same numbers and tags, every ``keep`` string and format
    word, a question or request (not a statement or a cut-off), no loops, one line, similar length."""
    rewrite = rewrite.strip()
    if not rewrite or "\n" in rewrite or rewrite == original:
        return False
    if protected_tokens(rewrite) != protected_tokens(original):
        return False
    if not 0.5 * len(original) <= len(rewrite) <= 2.0 * len(original) + 20:
        return False
    if rewrite[-1] not in "?." or _STATEMENT_START.match(rewrite):  # a question or a request, whole
        return False
    if _repeats(rewrite) and not _repeats(original):
        return False
    low = rewrite.lower()
    if any(k.lower() not in low for k in keep):
        return False
    return all(w not in original.lower() or w in low for w in _FORMAT_WORDS)


def _llm_generator(max_new_tokens: int = 48) -> Callable[[str], str]:
    global _generator
    if _generator is None:
        import torch

        from rsvlm.backbones import load_llm

        model, tok = load_llm("smollm2-135m-instruct")

        def generate(question: str) -> str:
            messages = [{"role": "user", "content": _PROMPT.format(q=question)}]
            ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")
            if not isinstance(ids, torch.Tensor):
                ids = ids["input_ids"]
            with torch.no_grad():
                out = model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False)
            return tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip().split("\n")[0]

        _generator = generate
    return _generator


def _split_prefix(content: str) -> tuple[str, str]:
    """('<image>\\n' or the two-date lines, the question) so only the question is rewritten."""
    if IMAGE_TOKEN not in content:
        return "", content
    head, _, question = content.rpartition(IMAGE_TOKEN)
    nl = question.find("\n")
    return head + IMAGE_TOKEN + question[: nl + 1], question[nl + 1 :]


def paraphrase_samples(
    samples: list[Sample], seed: int = 0, generate: Callable[[str], str] | None = None
) -> list[Sample]:
    """Samples with user questions paraphrased where the rewrite passes ``accept``; counts go to the log."""
    generate = generate or _llm_generator()
    kept = changed = 0
    out = []
    for s in samples:
        turns = []
        types = list(s.meta.get("types", []))
        for turn in s.conversations:
            if turn["role"] != "user":
                turns.append(turn)
                continue
            qtype = types.pop(0) if types else ""
            prefix, question = _split_prefix(turn["content"])
            rewrite = generate(question)
            if accept(question, rewrite, template_fields(question, qtype)):
                turns.append({"role": "user", "content": prefix + rewrite.strip()})
                changed += 1
            else:
                turns.append(turn)
                kept += 1
        out.append(replace(s, conversations=turns, meta={**s.meta, "paraphrased": True}))
    log.info("paraphrase: %d questions rewritten, %d kept (rewrite rejected)", changed, kept)
    return out
