"""Benchmark readers: every labelled format becomes the same ``Record`` (images, question, target, task).

    records = read_benchmark("dior-rsvg", "path/to/Annotations", images="path/to/JPEGImages")

Targets are kept in source pixels of the first image, as JSON-able values (boxes, corner polygons, mask
polygons, a mask PNG path, reference texts), so a record can be written to the per-sample log and a target
mask is rasterised only when it is scored (``target_mask``), on the grid of the image actually read.

Tasks: ``grounding`` (box), ``obb`` (oriented box), ``refseg`` (one mask), ``gcg`` (grounded caption: text +
one mask per phrase), ``change_mask``, ``change_binary``, ``change_caption``, ``caption``, ``vqa``, ``count``.
"""

from __future__ import annotations

import json
import logging
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from rsvlm.grounding import GRID, IMAGE_TOKEN, SEG_TOKEN, parse_answer

logger = logging.getLogger(__name__)

TASKS = (
    "grounding",
    "obb",
    "refseg",
    "gcg",
    "change_mask",
    "change_binary",
    "change_caption",
    "caption",
    "vqa",
    "count",
)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


class BenchmarkError(ValueError):
    """A benchmark file or folder that cannot be read as the format asked for."""


@dataclass
class Record:
    """One question with its target, in the source pixels of ``images[0]``."""

    id: str
    task: str
    images: list[str]
    question: str
    box: list[float] | None = None  # [x1, y1, x2, y2]
    obb: list[list[float]] | None = None  # four corners [[x, y], ...]
    polygons: list[list[list[list[float]]]] | None = None  # per target mask: rings [[x, y], ...]
    mask_paths: list[str] | None = None  # per target mask: a PNG (non-zero = target)
    texts: list[str] = field(default_factory=list)  # reference captions / answers
    number: float | None = None  # counting target
    answer: bool | None = None  # yes/no target (change_binary)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def num_masks(self) -> int:
        return len(self.mask_paths or self.polygons or [])

    def target_masks(self, shape: tuple[int, int]) -> list[np.ndarray]:
        """The target masks [H, W] bool, rasterised on ``shape`` (the grid of the image read)."""
        height, width = shape
        masks = []
        for path in self.mask_paths or []:
            mask = np.asarray(Image.open(path)) > 0
            if mask.ndim == 3:
                mask = mask.any(-1)
            if mask.shape != (height, width):
                raise BenchmarkError(
                    f"{Path(path).name} is {mask.shape[::-1]} pixels, the image {(width, height)}"
                )
            masks.append(mask)
        for rings in self.polygons or []:
            canvas = Image.new("1", (width, height), 0)
            draw = ImageDraw.Draw(canvas)
            for ring in rings:
                if len(ring) >= 3:
                    draw.polygon([(float(x), float(y)) for x, y in ring], fill=1, outline=1)
            masks.append(np.asarray(canvas, dtype=bool))
        return masks

    def target_mask(self, shape: tuple[int, int]) -> np.ndarray:
        """All target masks as one (the union): what a single-mask answer is scored against."""
        union = np.zeros(shape, bool)
        for mask in self.target_masks(shape):
            union |= mask
        return union


# ------------------------------------------------------------------------------------------------ VOC xml


def _find_image(folder: Path, name: str) -> Path:
    candidate = folder / name
    if candidate.exists():
        return candidate
    for suffix in IMAGE_SUFFIXES:
        if (folder / f"{Path(name).stem}{suffix}").exists():
            return folder / f"{Path(name).stem}{suffix}"
    return candidate  # missing: the runner reports it for this record


def _files(path: Path, pattern: str) -> list[Path]:
    if not path.exists():
        raise BenchmarkError(f"{path} does not exist")
    files = sorted(path.glob(pattern)) if path.is_dir() else [path]
    if not files:
        raise BenchmarkError(f"no {pattern} files in {path}")
    return files


def _num(node: ET.Element, tag: str) -> float:
    child = node.find(tag)
    if child is None or child.text is None:
        raise BenchmarkError(f"<{node.tag}> has no <{tag}>")
    return float(child.text)


def read_voc(path: str | Path, images: str | Path | None = None) -> list[Record]:
    """DIOR-RSVG style VOC xml: each ``<object>`` with ``<bndbox>`` (a ``grounding`` record) or ``<robndbox>``
    (DIOR / DOTA oriented box: an ``obb`` record); the expression is ``<description>``, else the class name."""
    records = []
    for xml in _files(Path(path), "*.xml"):
        try:
            root = ET.parse(xml).getroot()
        except ET.ParseError as error:
            raise BenchmarkError(f"{xml.name} is not valid xml: {error}") from error
        filename = root.findtext("filename") or f"{xml.stem}.jpg"
        image = _find_image(Path(images) if images else xml.parent, filename)
        for k, obj in enumerate(root.iter("object")):
            name = (obj.findtext("name") or "object").strip()
            expression = (obj.findtext("description") or "").strip() or f"the {name}"
            rid = f"{xml.stem}#{k}"
            if (rb := obj.find("robndbox")) is not None:
                corners = [
                    [_num(rb, f"x_{c}"), _num(rb, f"y_{c}")]
                    for c in ("left_top", "right_top", "right_bottom", "left_bottom")
                ]
                question = f"Give the oriented box of {expression}."
                records.append(Record(rid, "obb", [str(image)], question, obb=corners, texts=[name]))
            elif (bb := obj.find("bndbox")) is not None:
                box = [_num(bb, t) for t in ("xmin", "ymin", "xmax", "ymax")]
                question = f"Give the box of {expression}."
                records.append(Record(rid, "grounding", [str(image)], question, box=box, texts=[expression]))
    return records


# ------------------------------------------------------------------------------------------------ GeoPixelD


def read_geopixeld(path: str | Path, images: str | Path | None = None) -> list[Record]:
    """GeoPixelD: a json list of ``{image, polygons, conversations}``; the polygons file holds one list of
    rings per ``<p>…</p> [SEG]`` phrase, in order -> a ``gcg`` record (caption text + one mask per phrase).
    Image and polygon files are looked up by name next to the json (or in ``images``)."""
    path = Path(path)
    entries = _load_json(path)
    if isinstance(entries, dict):
        entries = [entries]
    folder = Path(images) if images else path.parent
    records = []
    for entry in entries:
        try:
            image = _find_image(folder, Path(entry["image"]).name)
            poly_file = folder / Path(entry["polygons"]).name
            turns = entry["conversations"]
            question = next(t["value"] for t in turns if t["from"] == "human")
            answer = next(t["value"] for t in turns if t["from"] != "human")
        except (KeyError, TypeError, StopIteration) as error:
            raise BenchmarkError(f"{path.name}: an entry lacks image / polygons / conversations") from error
        polygons = _load_json(poly_file)["polygons"]
        if len(polygons) != answer.count(SEG_TOKEN):
            raise BenchmarkError(
                f"{poly_file.name}: {len(polygons)} masks for {answer.count(SEG_TOKEN)} [SEG]"
            )
        records.append(
            Record(
                str(entry.get("id", image.stem)),
                "gcg",
                [str(image)],
                question,
                polygons=polygons,
                texts=[answer],
            )
        )
    return records


def _load_json(path: Path) -> Any:
    if not path.exists():
        raise BenchmarkError(f"{path} does not exist")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise BenchmarkError(f"{path.name} is not valid JSON: {error}") from error


# ------------------------------------------------------------------------------------------------ LISA / GRES


def read_reasoning(path: str | Path, images: str | Path | None = None) -> list[Record]:
    """LISA / GRES reasoning segmentation: per image a json with ``text`` (one or more queries) and polygon
    ``shapes``; shapes labelled ``target`` form the mask (``ignore`` shapes are left out, as LISA does).
    One ``refseg`` record per query; a query with no target shape has an empty target ("none here")."""
    records = []
    for file in _files(Path(path), "*.json"):
        data = _load_json(file)
        shapes = data.get("shapes", [])
        name = next((s.get("image_name") for s in shapes if s.get("image_name")), f"{file.stem}.jpg")
        image = _find_image(Path(images) if images else file.parent, name)
        rings = [s["points"] for s in shapes if s.get("label", "target") != "ignore" and s.get("points")]
        texts = data.get("text") or []
        texts = [texts] if isinstance(texts, str) else texts
        for k, text in enumerate(texts):
            question = f"{text} Please output the segmentation mask."
            records.append(Record(f"{file.stem}#{k}", "refseg", [str(image)], question, polygons=[rings]))
    return records


# ------------------------------------------------------------------------------------------------ change


def read_levircc(path: str | Path, images: str | Path | None = None) -> list[Record]:
    """LEVIR-CC captions: ``{"pairs": {id: {A, B, captions}}}`` (this repo's sample) or the official
    ``{"images": [{filepath, filename, sentences: [{raw}]}]}``; paths relative to the data folder."""
    path = Path(path)
    data = _load_json(path)
    roots = [Path(images)] if images else [path.parent.parent, path.parent]

    def resolve(rel: str) -> str:
        for root in roots:
            if (root / rel).exists():
                return str(root / rel)
        return str(roots[0] / rel)

    question = "Describe the changes between the two images."
    records = []
    if "pairs" in data:
        for pid, pair in data["pairs"].items():
            records.append(
                Record(
                    pid,
                    "change_caption",
                    [resolve(pair["A"]), resolve(pair["B"])],
                    question,
                    texts=pair["captions"],
                )
            )
    elif "images" in data:
        for item in data["images"]:
            sub = f"{item.get('filepath', '')}"
            a, b = (resolve(str(Path(sub) / d / item["filename"])) for d in ("A", "B"))
            refs = [s["raw"].strip() for s in item.get("sentences", [])]
            records.append(
                Record(Path(item["filename"]).stem, "change_caption", [a, b], question, texts=refs)
            )
    else:
        raise BenchmarkError(f"{path.name}: expected a 'pairs' or 'images' key (LEVIR-CC captions)")
    return records


def read_change_masks(path: str | Path, images: str | Path | None = None) -> list[Record]:
    """LEVIR-CD / DSIFN / WHU-CD layout: ``A/``, ``B/`` and ``label/`` with the same file names; the label is
    binary change (any non-zero value). One ``change_mask`` record per pair."""
    root = Path(path)
    label_dir = next((root / d for d in ("label", "labels", "OUT", "gt") if (root / d).is_dir()), None)
    if not (root / "A").is_dir() or not (root / "B").is_dir() or label_dir is None:
        raise BenchmarkError(f"{root} needs A/, B/ and label/ folders (LEVIR-CD layout)")
    question = "Segment the areas that changed between the two images."
    records = []
    for label in sorted(p for p in label_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        a, b = _find_image(root / "A", label.name), _find_image(root / "B", label.name)
        records.append(Record(label.stem, "change_mask", [str(a), str(b)], question, mask_paths=[str(label)]))
    if not records:
        raise BenchmarkError(f"no label images in {label_dir}")
    return records


# ------------------------------------------------------------------------------------------------ rsvlm gen


_DATE_LINE = re.compile(r"^Image \d+ \([^)]*\):\s*<image>\s*$", re.MULTILINE)


def _user_question(text: str) -> str:
    return " ".join(_DATE_LINE.sub(" ", text).replace(IMAGE_TOKEN, " ").split())


def read_gen(path: str | Path, images: str | Path | None = None) -> list[Record]:
    """An instruction set written by ``rsvlm gen`` (parquet; a folder of them is read whole). The first
    question / answer pair of each row becomes a record; its images and target masks are written as PNGs to
    ``images`` (default: a ``.eval_inputs`` folder next to the data), because the assistant reads files."""
    from datasets import load_dataset

    root = Path(path)
    files = _files(root, "**/*.parquet")
    cache = Path(images) if images else (root if root.is_dir() else root.parent) / ".eval_inputs"
    cache.mkdir(parents=True, exist_ok=True)
    dataset = load_dataset("parquet", data_files=[str(f) for f in files], split="train")
    records = []
    for row in dataset:
        turns = row["conversations"]
        question = next((t["content"] for t in turns if t["role"] == "user"), None)
        answer = next((t["content"] for t in turns if t["role"] == "assistant"), None)
        if question is None or answer is None or not row["images"]:
            continue
        rid = str(row["id"])
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", rid)
        image_paths = []
        for k, img in enumerate(row["images"]):
            p = cache / f"{safe}_{k}.png"
            img.convert("RGB").save(p)
            image_paths.append(str(p))
        width, height = row["images"][0].size
        mask_paths = []
        for k, mask in enumerate(row["masks"] or []):
            p = cache / f"{safe}_mask{k}.png"
            mask.convert("L").save(p)
            mask_paths.append(str(p))
        records.append(
            _gen_record(
                rid, row["task"], image_paths, _user_question(question), answer, mask_paths, width, height
            )
        )
    return records


def _gen_record(
    rid: str,
    task: str,
    images: list[str],
    question: str,
    answer: str,
    masks: list[str],
    width: int,
    height: int,
) -> Record:
    """Which metric a generated sample gets follows from its answer: masks, a box, an obb, yes/no, a count."""
    from eval.metrics import first_number, yes_no

    parsed = parse_answer(answer)
    plain = _plain(answer)
    sx, sy = width / GRID, height / GRID
    if masks:
        if len(images) == 2:
            return Record(rid, "change_mask", images, question, mask_paths=masks, texts=[plain])
        kind = "gcg" if task.startswith("gcg") or len(masks) > 1 and len(plain.split()) > 8 else "refseg"
        if kind == "refseg":
            return Record(rid, kind, images, question, mask_paths=masks, texts=[plain])
        return Record(rid, kind, images, question, mask_paths=masks, texts=[answer])
    boxes = [r.box for r in parsed.regions if r.box is not None]
    obbs = [r.obb for r in parsed.regions if r.obb is not None]
    if obbs:
        corners = [[float(x) * sx, float(y) * sy] for x, y in obbs[0].corners()]
        return Record(rid, "obb", images, question, obb=corners, texts=[plain])
    if boxes:
        b = boxes[0]
        return Record(rid, "grounding", images, question, box=[b.x1 * sx, b.y1 * sy, b.x2 * sx, b.y2 * sy])
    yn = yes_no(plain)
    if len(images) == 2:
        if yn is not None:
            return Record(rid, "change_binary", images, question, answer=yn, texts=[plain])
        return Record(rid, "change_caption", images, question, texts=[plain])
    if task == "count" or (task != "caption" and re.fullmatch(r"\s*\d+(\.\d+)?\s*\.?\s*", plain)):
        number = first_number(plain)
        if number is not None:
            return Record(rid, "count", images, question, number=number, texts=[plain])
    if task.startswith("caption"):
        return Record(rid, "caption", images, question, texts=[plain])
    return Record(rid, "vqa", images, question, texts=[plain])


def _plain(text: str) -> str:
    """Text without protocol tags, for text metrics."""
    text = re.sub(r"<box>.*?</box>|<obb>.*?</obb>", " ", text)
    text = re.sub(r"</?p>|\[SEG\]|<image>", " ", text)
    return " ".join(text.split())


plain_text = _plain


# ------------------------------------------------------------------------------------------------ registry

READERS: dict[str, Callable[..., list[Record]]] = {
    "dior-rsvg": read_voc,
    "voc": read_voc,
    "geopixeld": read_geopixeld,
    "lisa": read_reasoning,
    "gres": read_reasoning,
    "levircc": read_levircc,
    "levircd": read_change_masks,
    "dsifn": read_change_masks,
    "gen": read_gen,
}


def read_benchmark(name: str, path: str | Path, images: str | Path | None = None) -> list[Record]:
    """Records of a named benchmark format (see ``READERS``)."""
    if name not in READERS:
        raise BenchmarkError(f"unknown benchmark {name!r}; choose from {', '.join(sorted(READERS))}")
    records = READERS[name](path, images)
    logger.info("%s: %d records from %s", name, len(records), path)
    return records
