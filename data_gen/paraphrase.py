"""Optional paraphrase pass: rewrite the user questions through the local LLM for more phrasing variety.

Off by default (``GenConfig.paraphrase``). Only the question text of user turns is rewritten, never the answers;
a rewrite is kept only when it keeps every number and every protocol tag of the original, does not add any, stays
one line and keeps a sane length; otherwise the original stays. The model (``rsvlm.backbones.load_llm``) is
imported lazily, so data generation without paraphrasing never needs torch or transformers.
"""

from __future__ import annotations

import logging
import re
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


def accept(original: str, rewrite: str) -> bool:
    """True when ``rewrite`` may replace ``original``: same numbers and tags, one line, similar length."""
    rewrite = rewrite.strip()
    if not rewrite or "\n" in rewrite or rewrite == original:
        return False
    if protected_tokens(rewrite) != protected_tokens(original):
        return False
    return 0.5 * len(original) <= len(rewrite) <= 2.0 * len(original) + 20


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
        for turn in s.conversations:
            if turn["role"] != "user":
                turns.append(turn)
                continue
            prefix, question = _split_prefix(turn["content"])
            rewrite = generate(question)
            if accept(question, rewrite):
                turns.append({"role": "user", "content": prefix + rewrite.strip()})
                changed += 1
            else:
                turns.append(turn)
                kept += 1
        out.append(replace(s, conversations=turns, meta={**s.meta, "paraphrased": True}))
    log.info("paraphrase: %d questions rewritten, %d kept (rewrite rejected)", changed, kept)
    return out
