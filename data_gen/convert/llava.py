"""LLaVA-style conversation JSON (GeoChat_Instruct, VHM / LHRS-Instruct style) -> rsvlm rows.

    [{"id": "P0003_0004", "image": "P0003_0004.png",
      "conversations": [{"from": "human", "value": "<image>\\n[refer] where is <p>the white plane</p>?"},
                        {"from": "gpt", "value": "{<12><40><30><52>|<45>}"}]}, ...]

(a JSON list, or JSON Lines). Roles ``human``/``user`` become ``user``, ``gpt``/``assistant``/``bot`` become
``assistant``; a ``system`` turn is dropped (rsvlm's processor adds its own). Boxes are rewritten by the preset's
``BoxConvention`` (``boxes.py``) in every turn. ``<p>phrase</p>`` without a ``[SEG]`` (GeoChat marks the object
it grounds that way) keeps only the phrase: in rsvlm's protocol ``<p>`` is for masks, and a bare box is labelled by
the words before it. GeoChat's task tags at the start of a human turn are removed and replaced by what rsvlm's
own data says in words:

| tag | becomes | task |
|---|---|---|
| ``[refer]`` | "… Answer with its box." (or "oriented box" when the answer is an ``<obb>``) | grounding |
| ``[grounding]`` | "… Give a box for each object you mention." | grounding |
| ``[identify]`` | the question as is (its box names the region asked about) | vqa |

Any other ``[tag]`` is skipped as ``unknown tag``. Untagged rows are ``grounding`` when an answer holds a box,
``caption`` when the first question asks to describe the image, else ``vqa``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

from data_gen.convert.boxes import PRESETS, BoxConvention, BoxRangeError
from data_gen.convert.report import BOX_OUT_OF_RANGE, MALFORMED, UNKNOWN_TAG, FormatError, require_keys
from data_gen.convert.writer import Draft
from rsvlm.grounding import IMAGE_TOKEN

KEYS = ("image", "conversations")
ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "bot": "assistant"}
TAG = re.compile(r"^\s*(?:<image>\s*)?\[([A-Za-z_ -]+)\]\s*")
BARE_PHRASE = re.compile(r"<p>\s*(.*?)\s*</p>(?!\s*\[SEG\])", re.DOTALL)
DESCRIBE = re.compile(
    r"\b(describe|caption|summari[sz]e|what (?:does|is shown in) (?:this|the) image)\b", re.I
)
TAG_TASKS = {"refer": "grounding", "grounding": "grounding", "identify": "vqa"}


def load_entries(path: Path) -> list:
    """A JSON list, or JSON Lines (one object per line)."""
    text = path.read_text()
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        try:
            data = [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as error:
            raise FormatError(f"{path.name}: neither JSON nor JSON Lines ({error})") from None
    return data if isinstance(data, list) else [data]


def _tag_hint(tag: str, answer: str) -> str:
    if tag == "refer":
        return " Answer with its oriented box." if "<obb>" in answer else " Answer with its box."
    if tag == "grounding":
        return " Give a box for each object you mention."
    return ""


def convert_entry(entry: dict, convention: BoxConvention, index: int) -> Draft:
    """One conversation -> a draft row (with ``skip`` set when it cannot become one)."""
    rid = str(entry.get("id", index))
    draft = Draft(id=rid, task="vqa", meta={"format": f"llava-{convention.name}", "source_id": rid})
    turns = entry.get("conversations")
    image = entry.get("image")
    if not isinstance(turns, list) or not turns or not isinstance(image, str) or not image:
        draft.skip = MALFORMED
        return draft
    tags: list[str] = []
    conversation = []
    for turn in turns:
        if not isinstance(turn, dict) or not isinstance(turn.get("value"), str):
            draft.skip = MALFORMED
            return draft
        role = ROLES.get(str(turn.get("from", "")).lower())
        if role is None:
            if str(turn.get("from", "")).lower() == "system":
                continue
            draft.skip = MALFORMED
            return draft
        text = turn["value"]
        if role == "user" and (tag := TAG.match(text)):
            name = tag.group(1).strip().lower()
            if name not in TAG_TASKS:
                draft.skip = UNKNOWN_TAG
                draft.meta["tag"] = name
                return draft
            tags.append(name)
            text = text[: tag.start(1) - 1] + text[tag.end() :]  # keep a leading <image>
        try:
            text, _ = convention.rewrite(text)
        except BoxRangeError:
            draft.skip = BOX_OUT_OF_RANGE
            return draft
        text = BARE_PHRASE.sub(lambda m: m.group(1), text)
        conversation.append({"role": role, "content": text.strip()})
    if not any(t["role"] == "assistant" for t in conversation) or conversation[0]["role"] != "user":
        draft.skip = MALFORMED
        return draft
    # The tag hint is added once the answer is known (box or oriented box).
    user_turns = [k for k, t in enumerate(conversation) if t["role"] == "user"]
    for k, tag in zip(user_turns, tags, strict=False):
        answer = conversation[k + 1]["content"] if k + 1 < len(conversation) else ""
        conversation[k]["content"] += _tag_hint(tag, answer)
    if IMAGE_TOKEN not in conversation[0]["content"]:
        conversation[0]["content"] = f"{IMAGE_TOKEN}\n{conversation[0]['content']}"
    draft.conversations = conversation
    draft.images = [image]
    answers = " ".join(t["content"] for t in conversation if t["role"] == "assistant")
    if tags:
        draft.task = TAG_TASKS[tags[0]]
        draft.meta["tags"] = tags
    elif "<box>" in answers or "<obb>" in answers:
        draft.task = "grounding"
    elif DESCRIBE.search(conversation[0]["content"]):
        draft.task = "caption"
    return draft


def read(src: Path, preset: str) -> Iterator[Draft]:
    entries = load_entries(src)
    if not entries:
        raise FormatError(f"{src.name}: no entries")
    require_keys(entries[0], KEYS, "LLaVA-style conversation JSON", f"{src.name} entry 0")
    convention = PRESETS[preset]
    for index, entry in enumerate(entries):
        yield convert_entry(entry if isinstance(entry, dict) else {}, convention, index)
