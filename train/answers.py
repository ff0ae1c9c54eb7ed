"""Stage B data: the corpus's conversations as the language model should learn them, as an ``rsvlm gen`` dataset.

    python -m train.answers --corpus out/corpus --out out/stage-b [--cap 1500] [--max-turns 2]

What changes from the corpus, and why:
- **No quantities from the LLM.** The assistant states numbers itself, measured on the masks it returns
  (``rsvlm.answer_facts``), so the LLM must not learn to make them up. A turn that asks for the area or the count
  of a class of a dense label raster is answered with that class's mask instead (``<p>buildings</p> [SEG]``, the
  mask from the labels raster): the model learns to *show* what is to be measured. Other quantity turns (counts of
  vector instances, ``change_quantify``) are dropped, and percentages in the kept answers ("about a third
  (34 %)") lose their number.
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

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from rsvlm.atomic import atomic_path, write_text_atomic
from train.corpus import DEFAULT_RECIPE

QUANTITY_TYPES = {"area", "count", "change_quantify"}
_PERCENT = re.compile(r"\s*\(\d+(?:\.\d+)?\s?%\)")
SPLITS = ("train", "validation", "test")


def quantity_as_mask(row: dict, turn: int, facts: list[dict], taxonomy) -> tuple[str, dict | None] | None:
    """The answer of an area / count turn as the mask of what it measures: ``(text, mask PNG entry)``, the text
    "None here." (and no mask) when the class is absent, or None when the turn cannot be rewritten."""
    from data_gen.driver import _png_entry, decode_png

    fact = next((f for f in facts if f.get("turn") == turn and f.get("kind") in ("area", "count")), None)
    where = (fact or {}).get("where") or []
    if (
        taxonomy is None
        or len(where) != 1
        or where[0].get("raster") != "labels"
        or "labels" not in row["raster_names"]
    ):
        return None
    values = where[0]["values"]
    info = taxonomy.classes.get(values[0]) if values else None
    if info is None:
        return None
    plural = (
        next((s for s in info.synonyms if s.endswith("s") and " " not in s), None) if info.thing else None
    )
    phrase = plural or info.name
    labels = decode_png(row["rasters"][row["raster_names"].index("labels")])
    mask = np.isin(labels, values)
    if not mask.any():
        return f"None here: I see no {phrase}.", None
    return f"<p>{phrase}</p> [SEG]", _png_entry(mask)


def rewrite_row(row: dict, max_turns: int, taxonomy=None) -> dict | None:
    """The row without quantities from the LLM, cut to ``max_turns`` user turns; None when nothing is left."""
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
        if len(kept) // 2 >= max_turns:
            continue
        content = _PERCENT.sub("", answer["content"])
        if qtype in QUANTITY_TYPES:
            rewritten = (
                quantity_as_mask(row, k + 1, meta.get("facts") or [], taxonomy)
                if qtype != "change_quantify"
                else None
            )
            if rewritten is None:
                continue
            content, mask = rewritten
            seg_masks = [mask] if mask is not None else []
        if None in seg_masks:
            return None
        if not kept and "<image>" not in user["content"]:
            # The images are introduced in the first user turn; a later kept turn must carry them instead.
            prefix = turns[0]["content"].rsplit("\n", 1)[0] + "\n" if "<image>" in turns[0]["content"] else ""
            user = {"role": "user", "content": prefix + user["content"]}
        kept += [user, {"role": "assistant", "content": content}]
        masks += seg_masks
        kept_types.append(qtype)
    if not kept or "<image>" not in kept[0]["content"]:
        return None
    meta["types"] = kept_types
    meta.pop("facts", None)  # the quotes they point at are gone
    return {**row, "conversations": kept, "masks": masks, "meta": json.dumps(meta)}


def _write(path: Path, rows: list[dict], schema) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist(
        [{k: v for k, v in r.items() if k != "_source"} for r in rows], schema=schema
    )
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def build(
    corpus: Path,
    out: Path,
    cap: int,
    max_turns: int,
    seed: int,
    sources: list[str] | None = None,
    recipe=None,
) -> dict:
    from data_gen.sources.taxonomy import load_taxonomy
    from train.heads_data import source_taxonomy

    counts: dict[str, Counter] = {}
    writers: dict[str, list[dict]] = {s: [] for s in SPLITS}
    schema = None
    names = sources or sorted(p.name for p in corpus.iterdir() if (p / "data").is_dir())
    for name in names:
        counts[name] = Counter()
        gen = ((recipe or {}).get("sources", {}).get(name) or {}).get("gen", {})
        tax_name = source_taxonomy(gen)
        taxonomy = load_taxonomy(tax_name) if tax_name else None
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
                new = rewrite_row(row, max_turns, taxonomy)
                if new is None:
                    counts[name]["skipped"] += 1
                    continue
                writers[split].append({**new, "_source": name})
                counts[name][f"{split}/{row['task']}"] += 1
                taken += 1
    for split, rows in writers.items():
        if not rows:
            continue
        random.Random(f"{seed}:{split}").shuffle(rows)
        _write(out / "data" / f"{split}-00000.parquet", rows, schema)
        if split != "train":  # per-source held-out sets, for evaluating each source on its own
            for name in names:
                mine = [r for r in rows if r["_source"] == name]
                if mine:
                    _write(out / "by_source" / name / "data" / f"{split}-00000.parquet", mine, schema)
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
    p.add_argument(
        "--recipe", default=str(DEFAULT_RECIPE), help="the corpus recipe (for each source's taxonomy)"
    )
    args = p.parse_args(argv)
    corpus = Path(args.corpus)
    if not corpus.is_dir():
        print(
            f"error: corpus folder {corpus} does not exist (run python -m train.corpus first)",
            file=sys.stderr,
        )
        return 2
    import yaml

    recipe = yaml.safe_load(open(args.recipe))
    summary = build(corpus, Path(args.out), args.cap, args.max_turns, args.seed, args.sources, recipe)
    total = sum(v for c in summary.values() for k, v in c.items() if k != "skipped")
    print(f"{total:,} rows from {len(summary)} sources written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
