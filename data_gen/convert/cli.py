"""`rsvlm convert`: a foreign instruction set -> the ``rsvlm gen`` schema, for ``rsvlm train --data``.

    rsvlm convert geochat GeoChat_Instruct.json --images share/images --out out/geochat
    rsvlm convert geopixeld GeoPixelD.json --images GeoPixelD/train --out out/geopixeld
    rsvlm convert levircc LevirCCcaptions.json --images Levir-CC-dataset/images --out out/levircc
    python -m data_gen.convert.cli --list                     # the formats and what each assumes

Prints rows read, written and skipped by reason; a source that is not the named format is one line naming the
keys it lacks, exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import sys

EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    from data_gen.convert import FORMATS

    formats = "\n".join(f"  {name:<11} {about}" for name, (_, about) in FORMATS.items())
    p = argparse.ArgumentParser(
        prog="rsvlm convert",
        description="Convert a foreign instruction set into rsvlm's training schema (parquet).",
        epilog=f"formats:\n{formats}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("format", nargs="?", choices=sorted(FORMATS), metavar="FORMAT", help="see the list below")
    p.add_argument("src", nargs="?", help="the annotation file (or folder)")
    p.add_argument("--images", help="folder the source's image paths are relative to")
    p.add_argument("--out", help="output folder (gets data/{split}-NNNNN.parquet and conversion.json)")
    p.add_argument("--shard-size", type=int, default=1000, help="rows per parquet shard")
    p.add_argument("--license", default="", help="licence string stored in every row")
    p.add_argument("--list", action="store_true", help="list the formats and exit")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    if args.list:
        print(parser.epilog)
        return 0
    if not (args.format and args.src and args.out):
        print("rsvlm convert: error: FORMAT, SRC and --out are required", file=sys.stderr)
        return EXIT_USAGE
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING)
    from data_gen.convert import convert

    try:
        report = convert(args.format, args.src, args.images, args.out, args.shard_size, args.license)
    except (ValueError, FileNotFoundError, FileExistsError) as error:
        print(f"rsvlm convert: error: {' '.join(str(error).split())}", file=sys.stderr)
        return EXIT_USAGE
    print(report.summary())
    print(f"wrote {args.out}/data (train with: rsvlm train --recipe default-cpu --data {args.out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
