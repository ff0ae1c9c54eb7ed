"""``rsvlm eval``: score a model on a benchmark and write a per-sample log, a summary and a report.

    rsvlm eval --benchmark dior-rsvg --data DIOR-RSVG/Annotations --images DIOR-RSVG/JPEGImages --out runs/dior
    rsvlm eval --benchmark gen --data my_instructions/ --model checkpoints/run1 --limit 200 --out runs/mine
    rsvlm eval --benchmark dior-rsvg --data DIOR_RSVG --split test --predictions theirs.jsonl --out runs/theirs
    python -m eval.cli --benchmark levircd --data ../shared/data/change/levircd --out runs/levircd
    accelerate launch --multi_gpu --num_processes 2 -m eval.cli --benchmark rsvqa --data RSVQA_LR --split test --out runs/lr

Running again with the same ``--out`` resumes: records already in ``samples.jsonl`` are not asked again.
Under ``accelerate launch`` each process asks its share of the records and the main one writes the one summary
(``eval/shard.py``). Bad input is one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from eval.readers import READERS, read_benchmark

EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rsvlm eval", description=__doc__.split("\n\n")[0])
    parser.add_argument("--benchmark", required=True, choices=sorted(READERS), help="the format of --data")
    parser.add_argument("--data", required=True, help="annotation file or folder of the benchmark")
    parser.add_argument("--images", default=None, help="image folder, when images are not next to the labels")
    parser.add_argument(
        "--split", default=None, help="the benchmark's split (test, val, train) where its layout has splits"
    )
    parser.add_argument("--model", default="default", help="'default' (the embedded model) or a checkpoint")
    parser.add_argument(
        "--predictions",
        default=None,
        help="a JSONL file of another system's answers (eval/predictions.py): scored without running a model",
    )
    parser.add_argument("--limit", type=int, default=None, help="score only the first N records")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument(
        "--tile",
        action="store_true",
        help="answer images larger than the model input by overview + windows (default: whole image, resized, "
        "as the benchmarks' papers score)",
    )
    parser.add_argument(
        "--blank-baseline",
        action="store_true",
        help="also ask every record on its images blanked (a second model pass), reported as a baseline",
    )
    parser.add_argument("--out", required=True, help="folder for samples.jsonl, summary.json, report.md")
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse already printed its one-line usage error
        return EXIT_USAGE if exit_.code else 0
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.INFO if args.verbose else logging.WARNING,
            format="%(levelname)s %(name)s: %(message)s",
        )
    try:
        if args.limit is not None and args.limit < 1:
            raise ValueError(f"--limit must be at least 1, got {args.limit}")
        records = read_benchmark(args.benchmark, args.data, args.images, args.split)
        if not records:
            raise ValueError(f"{args.data} holds no {args.benchmark} records")
        if args.predictions:
            if args.blank_baseline:
                raise ValueError("--blank-baseline asks the model again; it cannot go with --predictions")
            from eval.predictions import score_predictions

            summary = score_predictions(
                records[: args.limit],
                args.predictions,
                args.out,
                benchmark=args.benchmark,
                skipped=dict(records.skipped),
            )
            print(json.dumps(summary["tasks"], indent=1))
            return 0
        from eval.run import evaluate
        from eval.shard import from_accelerate
        from rsvlm.assistant import Assistant

        shard = from_accelerate()
        assistant = Assistant.from_pretrained(args.model, tile_large_scenes=args.tile)
        if shard.device is not None:
            assistant.model.to(shard.device)
        summary = evaluate(
            assistant,
            records,
            args.out,
            benchmark=args.benchmark,
            model=str(args.model),
            limit=args.limit,
            max_new_tokens=args.max_new_tokens,
            blank_baseline=args.blank_baseline,
            shard=shard,
            skipped=dict(records.skipped),
        )
    except (ValueError, FileNotFoundError, PermissionError, IsADirectoryError, RuntimeError) as error:
        message = " ".join(str(error).split()) or type(error).__name__
        print(f"rsvlm eval: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    if summary is not None:  # the main process of a sharded run prints the one summary
        print(json.dumps(summary["tasks"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
