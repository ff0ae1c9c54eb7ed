"""``rsvlm train``: fine-tune on ``rsvlm gen`` data from a recipe. The entry point of ``train/``, above the loop
(``train.sft``); ``python -m train.cli`` and ``accelerate launch -m train.cli`` run the same.

    rsvlm train --recipe default-cpu --data out/ds --out out/run [--max-steps 100] [key=value ...]
    rsvlm train --recipe train/recipes/lora.yaml --data out/ds1 out/ds2 --out out/run lr=1e-4 model.lora_r=16

``--recipe`` is a YAML path or a name in ``train/recipes`` (``default-cpu``, ``lora``, ``qlora``). ``key=value``
overrides any ``TrainConfig`` field (values read as YAML); ``model.KEY=value`` overrides one ``RSVLMConfig``
field of the recipe's model. Re-running the same command after an interruption resumes from the newest complete
checkpoint in ``--out``. Errors in what was given print one line and exit with code 2.
"""

from __future__ import annotations

import argparse
import logging
import sys

EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rsvlm train",
        description="Fine-tune rsvlm on instruction data (resumes from OUT/checkpoints when present)",
    )
    parser.add_argument("--recipe", required=True, help="recipe YAML, or a name in train/recipes")
    parser.add_argument("--data", nargs="+", help="one or more `rsvlm gen` output folders")
    parser.add_argument("--out", help="run folder (checkpoints, final model, metrics.jsonl)")
    parser.add_argument("--max-steps", type=int, help="optimizer steps of the whole run")
    parser.add_argument("--mix", help="comma-separated sampling weight per --data source (e.g. 0.7,0.3)")
    parser.add_argument("--tasks", help="comma-separated task families to train on (default: all)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="TrainConfig overrides")
    return parser


def _setup_logging(verbose: bool) -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("train").setLevel(logging.DEBUG if verbose else logging.INFO)


def main(argv: list[str] | None = None) -> int:
    from train.config import TrainConfig, parse_override

    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:  # --help (0) or a usage error (2, argparse printed why)
        return int(exit_.code or 0)
    # `--data a b key=value`: nargs="+" swallows trailing overrides; hand them back.
    fields = set(TrainConfig.field_names())
    for item in list(args.data or []):
        name = item.split("=", 1)[0]
        if "=" in item and (name.replace("-", "_") in fields or name.startswith("model.")):
            args.data.remove(item)
            args.overrides.append(item)
    _setup_logging(args.verbose)
    try:
        overrides = dict(parse_override(item) for item in args.overrides)
        flags = {
            "data": args.data,
            "out": args.out,
            "max_steps": args.max_steps,
            "tasks": args.tasks,
            "mix": args.mix,
        }
        cfg = TrainConfig.from_yaml(
            args.recipe, **overrides, **{k: v for k, v in flags.items() if v is not None}
        )
        from train.sft import train

        result = train(cfg)
    except KeyboardInterrupt:
        print("rsvlm train: interrupted (re-run the same command to resume)", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, PermissionError, IsADirectoryError) as error:
        message = " ".join(str(error).split()) or type(error).__name__
        print(f"rsvlm train: error: {message}", file=sys.stderr)
        if args.verbose:
            logging.exception("details")
        return EXIT_USAGE
    where = result.final_dir or result.checkpoint
    print(f"step {result.step}: {'final model' if result.final_dir else 'checkpoint'} in {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
