"""Stage B data: the corpus's conversations as the language model should learn them, as an ``rsvlm gen`` dataset.

    python -m train.answers --corpus out/corpus --out out/stage-b [--cap 1500] [--max-turns 2]

What changes from the corpus, and why:
- **No quantities from the LLM.** Turns that ask for an area, a share or a count (``area``, ``count``,
  ``change_quantify``) are dropped, and percentages in the kept answers ("about a third (34 %)") lose their
  number: the assistant states numbers itself, measured on the masks it returns (``rsvlm.assistant``), so the LLM
  must not learn to make them up.
- **Short conversations.** At most ``max_turns`` user turns per row (the first ones), so a training sequence stays
  under ~300 tokens and an end-to-end step fits 2 CPU cores.
- **Balanced sources.** At most ``cap`` rows per source and split (Dubai alone has 22,000), drawn by a seeded
  shuffle.
Masks of dropped turns' ``[SEG]`` tokens are dropped with them, so every row keeps one mask per ``[SEG]``.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from rsvlm.atomic import atomic_path, write_text_atomic

QUANTITY_TYPES = {"area", "count", "change_quantify"}
_PERCENT = re.compile(r"\s*\(\d+(?:\.\d+)?\s?%\)")
SPLITS = ("train", "validation", "test")


def rewrite_row(row: dict, max_turns: int) -> dict | None:
    """The row without quantity turns, cut to ``max_turns`` user turns; None when nothing is left."""
    meta = json.loads(row["meta"]) if row.get("meta") else {}
    types = list(meta.get("types") or [])
    turns = row["conversations"]
    kept, masks, kept_types = [], [], []
    mask_iter = iter(row["masks"] or [])
    user_index = -1
    for k in range(0, len(turns) - 1, 2):
        user, answer = turns[k], turns[k + 1]
        if user["role"] != "user" or answer["role"] != "assistant":
            return None  # not the alternating layout data_gen writes
        user_index += 1
        seg_masks = [next(mask_iter, None) for _ in range(answer["content"].count("[SEG]"))]
        qtype = types[user_index] if user_index < len(types) else ""
        if qtype in QUANTITY_TYPES or len(kept) // 2 >= max_turns:
            continue
        if None in seg_masks:
            return None
        if not kept and "<image>" not in user["content"]:
            # The images are introduced in the first user turn; a later kept turn must carry them instead.
            prefix = turns[0]["content"].rsplit("\n", 1)[0] + "\n" if "<image>" in turns[0]["content"] else ""
            user = {"role": "user", "content": prefix + user["content"]}
        kept += [user, {"role": "assistant", "content": _PERCENT.sub("", answer["content"])}]
        masks += seg_masks
        kept_types.append(qtype)
    if not kept or "<image>" not in kept[0]["content"]:
        return None
    meta["types"] = kept_types
    meta.pop("facts", None)  # the quotes they point at are gone
    return {**row, "conversations": kept, "masks": masks, "meta": json.dumps(meta)}


def build(corpus: Path, out: Path, cap: int, max_turns: int, seed: int, sources: list[str] | None = None) -> dict:
    counts: dict[str, Counter] = {}
    writers: dict[str, list[dict]] = {s: [] for s in SPLITS}
    schema = None
    names = sources or sorted(p.name for p in corpus.iterdir() if (p / "data").is_dir())
    for name in names:
        counts[name] = Counter()
        for split in SPLITS:
            files = sorted((corpus / name / "data").glob(f"{split}-*.parquet"))
            if not files:
                continue
            tables = [pq.read_table(f) for f in files]
            schema = schema or tables[0].schema
            rows = [r for t in tables for r in t.to_pylist()]
            random.Random(f"{seed}:{name}:{split}").shuffle(rows)
            taken = 0
            for row in rows:
                if taken >= cap:
                    break
                new = rewrite_row(row, max_turns)
                if new is None:
                    counts[name]["skipped"] += 1
                    continue
                writers[split].append(new)
                counts[name][f"{split}/{row['task']}"] += 1
                taken += 1
    (out / "data").mkdir(parents=True, exist_ok=True)
    for split, rows in writers.items():
        if not rows:
            continue
        random.Random(f"{seed}:{split}").shuffle(rows)
        table = pa.Table.from_pylist(rows, schema=schema)
        with atomic_path(out / "data" / f"{split}-00000.parquet") as tmp:
            pq.write_table(table, tmp)
    summary = {name: dict(sorted(c.items())) for name, c in counts.items()}
    write_text_atomic(out / "answers.json", json.dumps(summary, indent=1))
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.answers", description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", default="out/corpus")
    p.add_argument("--out", default="out/stage-b")
    p.add_argument("--cap", type=int, default=1500, help="rows per source and split")
    p.add_argument("--max-turns", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sources", nargs="*")
    args = p.parse_args(argv)
    corpus = Path(args.corpus)
    if not corpus.is_dir():
        print(f"error: corpus folder {corpus} does not exist (run python -m train.corpus first)", file=sys.stderr)
        return 2
    summary = build(corpus, Path(args.out), args.cap, args.max_turns, args.seed, args.sources)
    total = sum(v for c in summary.values() for k, v in c.items() if k != "skipped")
    print(f"{total:,} rows from {len(summary)} sources written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
