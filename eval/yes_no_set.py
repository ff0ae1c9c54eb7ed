"""A balanced yes/no presence set from ``rsvlm gen`` test splits, for ``rsvlm eval --benchmark gen``.

    python -m eval.yes_no_set out/stage-b/by_source/*/data/test-00000.parquet --out out/yes-no/data.parquet
    rsvlm eval --benchmark gen --data out/yes-no/data.parquet --model default --out out/eval-yes-no
    python -m eval.yes_no_set out/yes-no/data.parquet --score out/eval-yes-no/samples.jsonl

Why: a gen test split asks "is there any X?" a handful of times per source, mostly with "yes", so its yes/no
accuracy says little. This collects every presence question (``rsvlm.presence.asks_presence``) with a yes/no
reference from any turn of any row, one question per row (turned into the row's first turn, so the gen reader
scores it), and keeps as many "no" as "yes" per source and kind (one image / two dates), drawn with a fixed seed.
Questions about a taxonomy's catch-all class ("Do you see background?") are left out: "background" is what is not
any class, not a thing a person asks to find, and the decoder is not trained on it.

``--score`` reads what ``rsvlm eval`` answered and prints accuracy per kind and source: the gen summary scores
two-date questions under their rows' tasks (a change caption's turn is scored as a caption), so it cannot say.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections import defaultdict
from pathlib import Path

from eval.metrics import leading_yes_no
from rsvlm import presence
from rsvlm.atomic import atomic_path

CATCH_ALL = {"background", "other", "clutter", "land", "unlabeled", "unlabelled", "no data"}


def presence_rows(rows: list[dict], source: str) -> list[tuple[tuple, bool, dict]]:
    """``((source, dates), yes, row with one question)`` for every presence turn with a yes/no reference."""
    out = []
    for row in rows:
        turns = row["conversations"]
        if len(turns) < 2 or not row["images"]:
            continue
        first = turns[0]["content"]
        image_part = first.rsplit("\n", 1)[0] + "\n" if "\n" in first else ""
        two_dates = len(row["images"]) == 2
        for k in range(0, len(turns) - 1, 2):
            question = turns[k]["content"].rsplit("\n", 1)[-1] if k == 0 else turns[k]["content"]
            answer = turns[k + 1]["content"]
            yes = leading_yes_no(answer)
            if yes is None or "[SEG]" in answer or not presence.asks_presence(question, two_dates):
                continue
            if not two_dates and presence.question_subject(question) in CATCH_ALL:
                continue
            single = {
                **row,
                "id": f"{row['id']}-t{k // 2}",
                "conversations": [
                    {"role": "user", "content": image_part + question},
                    {"role": "assistant", "content": answer},
                ],
                "masks": [],
            }
            out.append(((source, "two dates" if two_dates else "one image"), yes, single))
    return out


def balanced(candidates: list[tuple[tuple, bool, dict]], seed: int, per_group: int) -> list[dict]:
    groups: dict[tuple, dict[bool, list[dict]]] = defaultdict(lambda: {True: [], False: []})
    for key, yes, row in candidates:
        groups[key][yes].append(row)
    rng = random.Random(seed)
    kept = []
    for key in sorted(groups):
        yes, no = groups[key][True], groups[key][False]
        n = min(len(yes), len(no), per_group)
        for pool in (yes, no):
            rng.shuffle(pool)
            kept.extend(pool[:n])
    return kept


def score(samples: list[dict], rows: list[dict]) -> dict[tuple[str, str], tuple[int, int, int]]:
    """``(kind, source) -> (right, asked, answered yes)``, kind "one image" / "two dates", and per kind under
    source "all"; right = the answer's leading yes / no is the reference's (no leading yes / no is wrong)."""
    by_id = {row["id"]: row for row in rows}
    tally: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
    for sample in samples:
        row = by_id.get(sample["id"])
        if row is None:
            raise ValueError(
                f"sample {sample['id']!r} is not in the set: score it against the set it was run on"
            )
        kind = "two dates" if len(row["images"]) == 2 else "one image"
        reference = leading_yes_no(row["conversations"][1]["content"])
        said = leading_yes_no(sample.get("answer") or "")
        for key in ((kind, "all"), (kind, row["source"])):
            tally[key][0] += said == reference
            tally[key][1] += 1
            tally[key][2] += said is True
    return {key: tuple(v) for key, v in tally.items()}


def print_scores(scores: dict[tuple[str, str], tuple[int, int, int]]) -> None:
    for (kind, source), (right, asked, yes) in sorted(
        scores.items(), key=lambda kv: (kv[0][0], kv[0][1] != "all", kv[0][1])
    ):
        name = kind if source == "all" else f"  {source}"
        print(f"{name:<32} {right}/{asked} = {right / asked:.3f}  (answered yes {yes})")


def main(argv: list[str] | None = None) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = argparse.ArgumentParser(prog="python -m eval.yes_no_set", description=__doc__.split("\n\n")[0])
    p.add_argument("parquet", nargs="+", help="gen test shards; the source is the folder above data/")
    p.add_argument("--out", help="the parquet file to write")
    p.add_argument(
        "--score", help="an rsvlm eval samples.jsonl of this set (the one parquet given): print its accuracy"
    )
    p.add_argument(
        "--per-group", type=int, default=50, help="at most this many yes (and as many no) per group"
    )
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.score:
        if len(args.parquet) != 1:
            p.error("--score takes the one set the samples were asked from")
        try:
            samples = [json.loads(line) for line in open(args.score) if line.strip()]
            print_scores(score(samples, pq.read_table(args.parquet[0]).to_pylist()))
        except (OSError, ValueError) as exc:
            print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
            return 2
        return 0
    if not args.out:
        p.error("--out is required to build a set")
    candidates, schema = [], None
    for path in map(Path, args.parquet):
        table = pq.read_table(path)
        schema = schema or table.schema
        source = path.parent.parent.name if path.parent.name == "data" else path.stem
        candidates.extend(presence_rows(table.to_pylist(), source))
    rows = balanced(candidates, args.seed, args.per_group)
    if not rows:
        print("error: no presence question has both yes and no references in these files", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), tmp)
    kept_ids = {row["id"] for row in rows}
    counts: dict[tuple, int] = defaultdict(int)
    for key, _, row in candidates:
        counts[key] += row["id"] in kept_ids
    for key, n in sorted(counts.items()):
        if n:
            print(f"{key[0]:<20} {key[1]:<10} {n} ({n // 2} yes, {n // 2} no)")
    print(f"{len(rows)} questions written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
