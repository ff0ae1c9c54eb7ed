"""The ``rsvlm`` console script.

    rsvlm ask IMAGE [IMAGE2] -q "question" [--model default|PATH] [--out answer.json] [--geojson FILE]
              [--mask-tif FILE] [--bands PRESET] [--max-windows N] [--time-budget S] [--coarse-to-fine on|off]
    rsvlm chat IMAGE [IMAGE2]            # a multi-turn conversation in the terminal
    rsvlm serve [--model PATH] [--host H] [--port P] [--max-file-size 1gb]  # the Gradio chat (demo/)
    rsvlm gen ...                                                  # instruction data (data_gen/README.md)
    rsvlm convert FORMAT SRC --images DIR --out out/ds             # a foreign instruction set (data_gen/convert/)
    rsvlm train --recipe default-cpu --data out/ds --out out/run   # fine-tune (train/README.md)
    rsvlm eval --benchmark NAME --data PATH --out DIR              # score a model (eval/README.md)

Errors in what the user gave (a bad raster, a missing folder, a malformed checkpoint) print one line on stderr
and exit with code 2; nothing is written.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
import warnings
from pathlib import Path

EXIT_USAGE = 2


class UserError(ValueError):
    """An error in what the user gave; printed as one line, exit code 2."""


def _add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", default="default", help="'default' (the embedded model) or a checkpoint folder"
    )
    parser.add_argument(
        "--bands",
        default=None,
        help="band preset (rgb, rgbn, s2-l1c, s2-l2a, landsat8) or 1-based indices like 4,3,2",
    )
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument(
        "--dates", default=None, help="labels of the two dates, e.g. 2009,2020 (default: from file names)"
    )


def _parse_bands(value: str | None):
    if value is None:
        return None
    if all(part.strip().isdigit() for part in value.split(",")):
        return [int(part) for part in value.split(",")]
    return value


def _check_output_paths(*paths: str | None) -> None:
    """Refuse before any work when an output folder does not exist, so nothing is half-done."""
    for path in paths:
        if path and not Path(path).expanduser().resolve().parent.is_dir():
            raise UserError(f"output folder does not exist: {Path(path).expanduser().resolve().parent}")


def cmd_ask(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from rsvlm.assistant import Assistant

    _check_output_paths(args.out, args.geojson, args.mask_tif)
    dates = tuple(args.dates.split(",")) if args.dates else None
    coarse = {"auto": None, "on": True, "off": False}[args.coarse_to_fine]
    assistant = Assistant.from_pretrained(
        args.model,
        max_tiles=args.max_windows,
        time_budget_s=args.time_budget if args.time_budget > 0 else None,
        coarse_to_fine=coarse,
    )
    session = assistant.session()
    with tqdm(desc="windows", unit="window", disable=None, leave=False) as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        answer = session.ask(
            args.question,
            images=args.images,
            bands=_parse_bands(args.bands),
            dates=dates,
            max_new_tokens=args.max_new_tokens,
            progress=progress,
        )
    if (args.mask_tif or args.geojson) and not answer.regions:
        # "Nothing found" is an answer: the outputs are written empty, so pipelines over many scenes go on.
        answer.warnings.append(
            "nothing was found: the outputs are empty (an all-zero mask GeoTIFF, a FeatureCollection without "
            "features)"
        )
    elif args.mask_tif and not any(region.mask is not None for region in answer.regions):
        answer.warnings.append(
            "the answer has boxes but no masks: --mask-tif is all zero (ask it to outline or segment something)"
        )
    payload = answer.to_json()
    text = json.dumps(payload, indent=2)
    print(text)
    from rsvlm.geo import atomic_write, write_geojson

    if args.out:
        with atomic_write(args.out) as tmp:
            Path(tmp).write_text(text + "\n")
    if args.geojson:
        write_geojson(args.geojson, answer.geojson_features())
    if args.mask_tif:
        answer.write_mask_geotiff(args.mask_tif)
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    from rsvlm.assistant import Assistant

    assistant = Assistant.from_pretrained(args.model)
    session = assistant.session()
    images = args.images
    print("rsvlm chat — an empty line or Ctrl-D ends the conversation.", file=sys.stderr)
    while True:
        try:
            question = input("you> ").strip()
        except EOFError:
            break
        if not question:
            break
        answer = session.ask(
            question, images=images, bands=_parse_bands(args.bands), max_new_tokens=args.max_new_tokens
        )
        images = None  # the session keeps the images (and their features) for later turns
        print(f"rsvlm> {answer.text}")
        for region in answer.regions:
            box = (
                ""
                if region.pixel_box is None
                else " box [" + ", ".join(f"{v:.0f}" for v in region.pixel_box) + "]"
            )
            area = (
                ""
                if region.area_m2 is None
                else f" area {region.area_m2:,.0f} m² ({region.area_m2 / 1e4:.2f} ha)"
            )
            print(f"  - {region.label or '(region)'}:{box}{area}")
        for warning in answer.warnings:
            print(f"  ! {warning}", file=sys.stderr)
    return 0


def _delegate(module: str):
    """`serve`, `gen`, `train` and `eval` live in their own packages; the console script only dispatches."""

    def run(args: argparse.Namespace) -> int:
        return int(importlib.import_module(module).main(args.rest) or 0)

    return run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rsvlm", description="A vision-language assistant for remote sensing"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress and timings")
    sub = parser.add_subparsers(dest="command", required=True)

    ask = sub.add_parser("ask", help="answer one question about one image (or two dates) as JSON")
    ask.add_argument(
        "images", nargs="+", metavar="IMAGE", help="a raster (GeoTIFF, COG, JP2, PNG, JPEG); two for change"
    )
    ask.add_argument("-q", "--question", required=True)
    ask.add_argument("--out", help="write the JSON answer here too")
    ask.add_argument("--geojson", help="write the answer's regions as GeoJSON (EPSG:4326)")
    ask.add_argument(
        "--mask-tif", help="write the answer's masks as a single-band GeoTIFF on the source grid"
    )
    ask.add_argument(
        "--max-windows",
        type=int,
        default=None,
        help="large scenes: at most this many windows read at full resolution (default: no cap)",
    )
    ask.add_argument(
        "--time-budget",
        type=float,
        default=60.0,
        help="large scenes: seconds for reading windows at full resolution, 0 for no limit (default 60)",
    )
    ask.add_argument(
        "--coarse-to-fine",
        choices=["auto", "on", "off"],
        default="auto",
        help="large scenes: read only windows on the overview's boundaries (auto: past 100 windows)",
    )
    _add_model_args(ask)
    ask.set_defaults(run=cmd_ask)

    chat = sub.add_parser("chat", help="talk about an image in the terminal")
    chat.add_argument("images", nargs="+", metavar="IMAGE")
    _add_model_args(chat)
    chat.set_defaults(run=cmd_chat)

    # These are parsed by their own packages (see main); listed here for `rsvlm --help`.
    sub.add_parser("serve", help="start the Gradio chat", add_help=False)
    sub.add_parser("gen", help="generate instruction data from labels, OSM and vectors", add_help=False)
    sub.add_parser("convert", help="convert a foreign instruction set for training", add_help=False)
    sub.add_parser("train", help="fine-tune on an instruction set", add_help=False)
    sub.add_parser("eval", help="score a model on the grounding benchmarks", add_help=False)
    return parser


def _quiet_third_party() -> None:
    """Keep stderr for our own one-line messages: no weight-loading bars, no CPU-kernel notes from bitsandbytes."""
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    warnings.simplefilter("ignore")  # library warnings that matter reach the user in the answer's warnings
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


DELEGATED = {
    "gen": "data_gen.cli",
    "convert": "data_gen.convert.cli",
    "train": "train.cli",
    "eval": "eval.cli",
    "serve": "demo.app",
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if argv and argv[0] in DELEGATED:
        # Hand the rest over untouched (argparse's REMAINDER would swallow or reject `--help` and flags).
        args = argparse.Namespace(
            command=argv[0], rest=argv[1:], verbose="-v" in argv[1:] or "--verbose" in argv[1:]
        )
        args.run = _delegate(DELEGATED[argv[0]])
    else:
        args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    if not args.verbose:
        _quiet_third_party()
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, PermissionError, IsADirectoryError, RuntimeError) as error:
        # Bad input of any kind (RasterError, UserError, BackboneError...) is one line for the user, not a traceback.
        message = " ".join(str(error).split()) or type(error).__name__
        print(f"rsvlm {args.command}: error: {message}", file=sys.stderr)
        if args.verbose:
            logging.exception("details")
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
