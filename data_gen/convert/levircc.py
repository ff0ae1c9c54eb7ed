"""LEVIR-CC change captions -> rsvlm ``change`` rows: both dates, one row per distinct caption.

Three layouts are read (a ``.gz`` is opened transparently):

- the official ``LevirCCcaptions.json``: ``{"images": [{"filepath": "train", "filename": "train_000001.png",
  "split": "train", "sentences": [{"raw": "..."}, ...]}, ...]}``, images under ``--images`` as
  ``{filepath}/A/{filename}`` and ``{filepath}/B/{filename}`` (or ``A/``, ``B/`` directly);
- text-only caption sets ``{"splits": {split: [id, ...]}, "captions": {id: [caption, ...]}}``, images
  ``{split}/A/{id}.png`` or ``A/{id}.png`` under ``--images``;
- ``{"pairs": {id: {"A": path, "B": path, "split": ..., "captions": [...]}}}`` with paths relative to
  ``--images`` (this project's sample in ``../shared/data``).

The user turn is ``format_two_date_prompt`` with the dates named "before" and "after" (LEVIR-CC gives no dates).
Identical captions of one pair ("the scene is the same as before" x 5) are written once.
"""

from __future__ import annotations

import gzip
import json
import random
from collections.abc import Iterator
from pathlib import Path

from data_gen.convert.report import MALFORMED, FormatError
from data_gen.convert.writer import Draft, split_name
from rsvlm.grounding import format_two_date_prompt

QUESTIONS = (
    "Describe the changes between the two images.",
    "What changed between the two dates?",
    "Summarise what is different in the second image.",
    "Describe how the area changed.",
)
LAYOUTS = ("images", "captions", "pairs")


def load_json(path: Path):
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt") as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as error:
        raise FormatError(f"{path.name}: not JSON ({error})") from None


def _drafts(pid: str, a: list[str], b: list[str], captions: list, split: str) -> Iterator[Draft]:
    """``a`` / ``b``: candidate paths of each date (the writer takes the first that exists)."""
    seen = []
    for caption in captions:
        text = " ".join(str(caption).split())
        if text and text not in seen:
            seen.append(text)
    if not seen:
        yield Draft(id=pid, task="change", skip="no caption")
        return
    question = format_two_date_prompt(random.Random(pid).choice(QUESTIONS), ("before", "after"))
    for k, caption in enumerate(seen):
        yield Draft(
            id=f"{pid}#{k}",
            task="change",
            images=[a, b],
            split=split,
            conversations=[{"role": "user", "content": question}, {"role": "assistant", "content": caption}],
            meta={"format": "levircc", "source_id": pid, "references": seen},
        )


def _pair(split_dir: str, name: str) -> tuple[list[str], list[str]]:
    return ([f"{split_dir}/A/{name}", f"A/{name}"], [f"{split_dir}/B/{name}", f"B/{name}"])


def read(src: Path) -> Iterator[Draft]:
    data = load_json(src)
    if not isinstance(data, dict) or not any(k in data for k in LAYOUTS):
        found = ", ".join(sorted(data)) if isinstance(data, dict) else type(data).__name__
        raise FormatError(
            f"{src.name}: not LEVIR-CC captions: missing key 'images' (official), 'captions' (+ 'splits') or "
            f"'pairs' (found {found})"
        )
    if "images" in data:
        for item in data["images"]:
            if not isinstance(item, dict) or "filename" not in item:
                yield Draft(id="?", task="change", skip=MALFORMED)
                continue
            name, sub = item["filename"], str(item.get("filepath") or item.get("split") or "")
            a, b = _pair(sub, name)
            refs = [s.get("raw", "") for s in item.get("sentences", []) if isinstance(s, dict)]
            yield from _drafts(Path(name).stem, a, b, refs, split_name(item.get("split") or sub))
    elif "captions" in data:
        split_of = {pid: s for s, ids in (data.get("splits") or {}).items() for pid in ids}
        for pid, captions in data["captions"].items():
            split = split_of.get(pid, pid.split("_", 1)[0])
            a, b = _pair(split, f"{pid}.png")
            yield from _drafts(pid, a, b, captions if isinstance(captions, list) else [], split_name(split))
    else:
        for pid, pair in data["pairs"].items():
            if not isinstance(pair, dict) or "A" not in pair or "B" not in pair:
                yield Draft(id=str(pid), task="change", skip=MALFORMED)
                continue
            split = split_name(pair.get("split"))
            yield from _drafts(str(pid), [pair["A"]], [pair["B"]], pair.get("captions") or [], split)
