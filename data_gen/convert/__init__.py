"""Foreign instruction sets -> the ``rsvlm gen`` schema (parquet), so ``rsvlm train --data`` reads them.

    report = convert("geochat", "GeoChat_Instruct.json", images="images/", out="out/geochat")
    print(report.summary())            # rows read, written, skipped by reason; images not found (first ten)

One module per format; each yields ``Draft`` rows (protocol text, image paths, mask geometries) and the
``ShardWriter`` (``writer.py``) finds images, rasterises masks and writes shards. ``out/conversion.json`` keeps the
report next to the data.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

from tqdm.auto import tqdm

from data_gen.convert import geopixeld, levircc, llava, reasoning, rsvqa
from data_gen.convert.report import FormatError, Report
from data_gen.convert.writer import Draft, ShardWriter

Reader = Callable[[Path, Path | None], Iterator[Draft]]

FORMATS: dict[str, tuple[Reader, str]] = {
    "geochat": (lambda s, i: llava.read(s, "geochat"),
                "LLaVA-style JSON with GeoChat {<x1><y1><x2><y2>|<θ>} boxes on 0-100 and [refer]/[grounding]/[identify]"),
    "llava-unit": (lambda s, i: llava.read(s, "unit"), "LLaVA-style JSON with [x1, y1, x2, y2] boxes on 0-1"),
    "llava-1000": (lambda s, i: llava.read(s, "1000"), "LLaVA-style JSON with [x1, y1, x2, y2] boxes on 0-1000"),
    "geopixeld": (geopixeld.read, "GeoPixelD grounded captions (index, per-image file or folder) -> gcg + masks"),
    "lisa": (lambda s, i: reasoning.read(s), "LISA / GRES / EarthReason-style reasoning JSON (polygons -> masks)"),
    "levircc": (lambda s, i: levircc.read(s), "LEVIR-CC change captions (official, text-only or pairs JSON)"),
    "rsvqa": (lambda s, i: rsvqa.read(s), "RSVQA LR/HR *_questions.json (+ its *_answers.json)"),
}  # fmt: skip


def convert(
    fmt: str,
    src: str | Path,
    images: str | Path | None,
    out: str | Path,
    shard_size: int = 1000,
    license: str = "",
) -> Report:
    """Convert ``src`` (format ``fmt``) into ``out/data/{split}-NNNNN.parquet``; returns the report."""
    if fmt not in FORMATS:
        raise FormatError(f"unknown format {fmt!r}; known: {', '.join(FORMATS)}")
    src = Path(src).expanduser()
    if not src.exists():
        raise FileNotFoundError(f"{src} does not exist")
    image_dir = Path(images).expanduser() if images else None
    if image_dir is not None and not image_dir.is_dir():
        raise FileNotFoundError(f"--images {image_dir} is not a folder")
    roots = [image_dir] if image_dir else []
    roots.append(src if src.is_dir() else src.parent)  # images next to the annotations, as many sets ship
    report = Report(fmt, str(src))
    reader, _ = FORMATS[fmt]
    drafts = reader(src, image_dir)
    first = next(drafts, None)  # a file of another format fails here, before anything is written
    writer = ShardWriter(Path(out).expanduser(), report, roots, shard_size, source=f"{fmt}:{src.name}",
                         license=license)  # fmt: skip
    if first is not None:
        for draft in tqdm(_chain(first, drafts), desc=f"convert {fmt}", unit="row", leave=False):
            writer.add(draft)
    writer.close()
    report.check()
    (writer.out / "conversion.json").write_text(json.dumps(report.to_dict(), indent=1) + "\n")
    return report


def _chain(first: Draft, rest: Iterator[Draft]) -> Iterator[Draft]:
    yield first
    yield from rest
