"""Format rate: did each answer carry the element its question asked for, in the text protocol?

    python -m eval.protocol runs/*/samples.jsonl

A mask task (``refseg``, ``gcg``, ``change_mask``) wants ``<p>…</p> [SEG]`` (or "None here" when the reference
says the thing is absent); ``grounding`` a ``<box>``; ``obb`` an ``<obb>``; a yes/no question (``change_binary``,
or a ``vqa`` reference that starts with yes or no) an answer that starts with yes or no; anything else a non-empty
answer. Parsing is ``rsvlm.grounding.parse_answer``'s, so a malformed tag does not count.
"""

from __future__ import annotations

import argparse
import json
import re
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
    if task == "obb":
        return any(r.obb is not None for r in parsed.regions)
    if task == "change_binary" or any(_YES_NO.match(r) for r in refs):
        return bool(_YES_NO.match(raw))
    return bool(parsed.text.strip())


def format_rates(paths: list[str]) -> dict[str, dict[str, float]]:
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for path in paths:
        with open(path) as f:
            for line in f:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a torn last line of a killed run
                ok = format_ok(record)
                for key in (record.get("task", "?"), "all"):
                    counts[key][0] += ok
                    counts[key][1] += 1
    return {k: {"rate": ok / n, "n": n} for k, (ok, n) in sorted(counts.items())}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m eval.protocol", description=__doc__.split("\n\n")[0])
    p.add_argument("samples", nargs="+", help="samples.jsonl files written by rsvlm eval")
    args = p.parse_args(argv)
    for task, value in format_rates(args.samples).items():
        print(f"{task:14s} {value['rate']:.3f}  (n={value['n']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
