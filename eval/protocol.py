"""Format rate: did each answer carry the element its question asked for, in the text protocol?

    python -m eval.protocol runs/*/samples.jsonl              # the model's own text
    python -m eval.protocol --delivered runs/*/samples.jsonl  # what the assistant delivered (its regions, its text)

A mask task (``refseg``, ``gcg``, ``change_mask``) wants ``<p>…</p> [SEG]`` (or "None here" when the reference
says the thing is absent); ``grounding`` a ``<box>``; ``obb`` an ``<obb>``; a yes/no question (``change_binary``,
or a ``vqa`` reference that starts with yes or no) an answer that starts with yes or no; anything else a non-empty
answer. Parsing is ``rsvlm.grounding.parse_answer``'s, so a malformed tag does not count.

``--delivered`` asks the same of what the user gets: the assistant cuts missing masks, boxes and oriented boxes
from the named phrase's mask and answers presence from it (``rsvlm.asked``, ``rsvlm.presence``), so an answer
counts when its regions carry the element (logged as ``elements`` by ``eval.run``) or its text starts with yes/no.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import defaultdict

from rsvlm.grounding import parse_answer

_YES_NO = re.compile(r"^\W*(yes|no)\b", re.IGNORECASE)


def _refs(record: dict) -> list[str]:
    refs = record.get("refs") or []
    return [r for r in refs if isinstance(r, str)] if isinstance(refs, list) else [str(refs)]


def format_ok(record: dict) -> bool:
    raw = record.get("raw_text") or ""
    parsed = parse_answer(raw)
    task = record.get("task", "")
    refs = _refs(record)
    if task in ("refseg", "gcg", "change_mask"):
        absent = any(r.strip().lower().startswith("none here") for r in refs)
        return parsed.num_seg > 0 or (absent and raw.strip().lower().startswith("none here"))
    if task == "grounding":
        return any(r.box is not None for r in parsed.regions)
    if task in ("obb", "obb_multi"):
        return any(r.obb is not None for r in parsed.regions)
    if task == "change_binary" or any(_YES_NO.match(r) for r in refs):
        return bool(_YES_NO.match(raw))
    return bool(parsed.text.strip())


def delivered_ok(record: dict) -> bool:
    """``format_ok`` of the assistant's delivered answer: its regions' elements and its final text."""
    elements = record.get("elements")
    if elements is None:
        raise ValueError(
            f"record {record.get('id')} has no 'elements' (logged by eval.run since this version)"
        )
    text = record.get("answer") or ""
    task = record.get("task", "")
    refs = _refs(record)
    if task in ("refseg", "gcg", "change_mask"):
        absent = any(r.strip().lower().startswith("none here") for r in refs)
        return elements["masks"] > 0 or (absent and text.strip().lower().startswith(("none here", "no")))
    if task == "grounding":
        return elements["boxes"] > 0 or elements["obbs"] > 0
    if task in ("obb", "obb_multi"):
        return elements["obbs"] > 0
    if task == "change_binary" or any(_YES_NO.match(r) for r in refs):
        return bool(_YES_NO.match(text))
    return bool(text.strip())


def format_rates(paths: list[str], delivered: bool = False) -> dict[str, dict[str, float]]:
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for path in paths:
        with open(path) as f:
            for line in f:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a torn last line of a killed run
                ok = delivered_ok(record) if delivered else format_ok(record)
                for key in (record.get("task", "?"), "all"):
                    counts[key][0] += ok
                    counts[key][1] += 1
    return {k: {"rate": ok / n, "n": n} for k, (ok, n) in sorted(counts.items())}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m eval.protocol", description=__doc__.split("\n\n")[0])
    p.add_argument("samples", nargs="+", help="samples.jsonl files written by rsvlm eval")
    p.add_argument(
        "--delivered", action="store_true", help="score the delivered answers, not the model's text"
    )
    args = p.parse_args(argv)
    try:
        rates = format_rates(args.samples, delivered=args.delivered)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for task, value in rates.items():
        print(f"{task:14s} {value['rate']:.3f}  (n={value['n']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
