"""A counting set from ``rsvlm gen`` test splits ("How many buildings are there?"), for ``rsvlm eval --benchmark gen``.

    python -m eval.count_set out/corpus/*/data/test-*.parquet --out out/count/data.parquet
    rsvlm eval --benchmark gen --data out/count/data.parquet --model default --out out/eval-count

Why: counting questions sit in later turns of gen conversations, next to box lists and change summaries that also
carry counts, so a gen test split scores few of them as counts. This collects every one-image turn that asks for
a count (``rsvlm.asked.asks_count``) and has data_gen's ``count`` fact (instances of a vector source, or 8-connected
patches of a class above data_gen's speck size), one question per row (turned into the row's first turn, answered
by the fact's number), at most ``--per-source`` per source, drawn with a fixed seed. Questions about a taxonomy's
catch-all class ("How many patches of background?") are left out, as in ``eval.yes_no_set``.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections import defaultdict
from pathlib import Path

from eval.yes_no_set import CATCH_ALL
from rsvlm import asked
from rsvlm.atomic import atomic_path


def count_rows(rows: list[dict], source: str) -> list[dict]:
    """One row per counting turn with a ``count`` fact: the question as the first turn, its number as the answer."""
    out = []
    for row in rows:
        turns, images = row["conversations"], row["images"]
        if len(images) != 1 or not turns:
            continue
        meta = json.loads(row["meta"]) if isinstance(row["meta"], str) else row["meta"]
        image_part = turns[0]["content"].rsplit("\n", 1)[0] + "\n" if "\n" in turns[0]["content"] else ""
        for fact in meta.get("facts", []):
            user = (
                fact.get("turn", 0) - 1
            )  # a fact's turn is the answer's index; its question comes before it
            if fact.get("kind") != "count" or user < 0 or user >= len(turns):
                continue
            question = turns[user]["content"].rsplit("\n", 1)[-1]
            if not asked.asks_count(question) or "box" in question.lower():
                continue
            if any(word in question.lower().split() for word in CATCH_ALL):
                continue
            out.append(
                {
                    **row,
                    "id": f"{row['id']}-t{user // 2}",
                    "task": "count",
                    "conversations": [
                        {"role": "user", "content": image_part + question},
                        {"role": "assistant", "content": f"{int(fact['count'])}."},
                    ],
                    "masks": [],
                }
            )
    return out


def main(argv: list[str] | None = None) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = argparse.ArgumentParser(prog="python -m eval.count_set", description=__doc__.split("\n\n")[0])
    p.add_argument("parquet", nargs="+", help="gen test shards; the source is the folder above data/")
    p.add_argument("--out", required=True, help="the parquet file to write")
    p.add_argument("--per-source", type=int, default=30, help="at most this many questions per source")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    by_source: dict[str, list[dict]] = defaultdict(list)
    schema = None
    for path in map(Path, args.parquet):
        table = pq.read_table(path)
        schema = schema or table.schema
        source = path.parent.parent.name if path.parent.name == "data" else path.stem
        by_source[source].extend(count_rows(table.to_pylist(), source))
    rng = random.Random(args.seed)
    rows = []
    for source in sorted(by_source):
        pool = by_source[source]
        rng.shuffle(pool)
        rows.extend(pool[: args.per_source])
        if pool:
            print(f"{source:<20} {min(len(pool), args.per_source)} of {len(pool)}")
    if not rows:
        print("error: no counting question with a count fact in these files", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), tmp)
    print(f"{len(rows)} questions written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
