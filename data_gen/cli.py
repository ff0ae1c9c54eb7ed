"""`rsvlm gen`: generate an instruction dataset from labels, OSM and vectors; `rsvlm gen validate DIR` re-checks one.

    rsvlm gen --image scene.tif --labels labels.tif --taxonomy landcover.ai --out out/ds
    rsvlm gen --config gen.yaml --num-proc 2 --max-tiles 100      # flags override the YAML
    rsvlm gen --config gen.yaml --out /mnt/shared/ds --ray 10.0.0.1:6379   # shards as Ray tasks (rsvlm[ray])
    rsvlm gen validate out/ds                                       # exit 1 when any sample fails
    python -m data_gen.cli ...                                      # the same without the console script

Errors in the input are one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import sys

from data_gen.config import ALL_TASKS, GenConfig
from data_gen.driver import build_dataset
from data_gen.ray_driver import LOCAL, RayUnavailableError, build_dataset_on_ray

EXIT_FAIL = 1
EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not usage + message
        print(f"rsvlm gen: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="rsvlm gen",
        description="Generate instruction data (captions, VQA, grounding, reasoning, "
        "grounded conversation, change) from label rasters, OSM and vector labels.",
    )
    p.add_argument("--config", help="a YAML file of GenConfig options (flags override it)")
    p.add_argument("--image", help="imagery: a file, folder or glob")
    p.add_argument("--image2", help="second-date imagery for change tasks")
    p.add_argument("--labels", help="label raster(s) under --taxonomy")
    p.add_argument("--labels2", help="second-date label raster(s)")
    p.add_argument("--change-mask", dest="change_mask", help="binary change mask(s)")
    p.add_argument("--osm", help="an .osm.pbf / .osm extract")
    p.add_argument(
        "--vectors",
        help="vector labels: GeoJSON, shapefile, VOC/DIOR .xml boxes, box .csv, xBD or GeoPixelD .json",
    )
    p.add_argument("--taxonomy", help="a preset name or a taxonomy YAML")
    p.add_argument("--tasks", help=f"comma-separated families (default all: {','.join(ALL_TASKS)})")
    p.add_argument("--tile-size", dest="tile_size", type=int)
    p.add_argument("--num-proc", dest="num_proc", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--max-tiles", dest="max_tiles", type=int)
    p.add_argument(
        "--paraphrase", action="store_true", default=None, help="rewrite questions with the local LLM"
    )
    p.add_argument("--out", help="output folder (default out/dataset)")
    p.add_argument(
        "--ray",
        nargs="?",
        const=LOCAL,
        metavar="ADDRESS",
        help="run the shards on Ray (pip install 'rsvlm[ray]'): no ADDRESS starts a local Ray with --num-proc "
        "CPUs; 'auto' joins the cluster started on this machine; HOST:PORT or ray://HOST:PORT a remote one. "
        "Every worker must see --out and the inputs at the same paths",
    )
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def _config(args: argparse.Namespace) -> GenConfig:
    flags = {k: v for k, v in vars(args).items() if k not in ("config", "verbose", "ray") and v is not None}
    for key in ("tile_size", "num_proc", "max_tiles"):
        if key in flags and flags[key] < 1:
            raise ValueError(f"--{key.replace('_', '-')} must be at least 1, got {flags[key]}")
    if args.config:
        return GenConfig.from_yaml(args.config, **flags)
    return GenConfig.from_dict(flags, where="flags")


def _validate(argv: list[str]) -> int:
    p = _Parser(prog="rsvlm gen validate", description="Re-check every sample of a generated dataset.")
    p.add_argument("dir", help="the dataset folder (the --out of rsvlm gen)")
    p.add_argument("--max-lines", type=int, default=20, help="failures to print")
    args = p.parse_args(argv)
    from data_gen.validate import validate_dataset

    report = validate_dataset(args.dir)
    print(report.summary(args.max_lines))
    return 0 if report.ok else EXIT_FAIL


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "gen":
        argv = argv[1:]
    try:
        if argv and argv[0] == "validate":
            return _validate(argv[1:])
        args = build_parser().parse_args(argv)
        logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
        cfg = _config(args)
        if not (cfg.image or cfg.labels or cfg.osm or cfg.vectors):
            raise ValueError(
                "nothing to generate from: give --image (with --labels, --osm or --vectors) or --config"
            )
        out = build_dataset(cfg) if args.ray is None else build_dataset_on_ray(cfg, address=args.ray)
        print(f"dataset written to {out} (card: {out}/README.md); check it with: rsvlm gen validate {out}")
        return 0
    except SystemExit as e:
        return int(e.code or 0)
    except (ValueError, OSError, RayUnavailableError) as error:
        message = " ".join(str(error).split()) or type(error).__name__
        print(f"rsvlm gen: error: {message}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
