"""Benchmark readers: every labelled format becomes the same ``Record`` (``eval/record.py``).

    records = read_benchmark("dior-rsvg", "path/to/DIOR_RSVG", split="test")

This module reads the VOC / GeoPixelD / LISA / change / ``rsvlm gen`` formats and keeps the registry of every
``--benchmark`` name; the official layouts of referring and reasoning segmentation (``eval/refer_seg.py``),
RSVQA (``eval/rsvqa.py``), GeoChat-Bench (``eval/geochat_bench.py``) and DOTA's ``labelTxt``
(``eval/dota.py``) have their own modules.
"""

from __future__ import annotations

import logging
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

from eval import dota, geochat_bench, refer_seg, rsvqa
from eval.layout import files, find_image, load_json
from eval.record import IMAGE_SUFFIXES, TASKS, BenchmarkError, Record, Records
from rsvlm.grounding import GRID, IMAGE_TOKEN, SEG_TOKEN, parse_answer

__all__ = ["READERS", "TASKS", "BenchmarkError", "Record", "Records", "plain_text", "read_benchmark"]

logger = logging.getLogger(__name__)

# ------------------------------------------------------------------------------------------------ VOC xml


def _num(node: ET.Element, tag: str) -> float:
    child = node.find(tag)
    if child is None or child.text is None:
        raise BenchmarkError(f"<{node.tag}> has no <{tag}>")
    return float(child.text)


def read_voc(path: str | Path, images: str | Path | None = None, split: str | None = None) -> list[Record]:
    """DIOR-RSVG style VOC xml: each ``<object>`` with ``<bndbox>`` (a ``grounding`` record) or ``<robndbox>``
    (DIOR / DOTA oriented box: an ``obb`` record); the expression is ``<description>``, else the class name.

    ``path`` is an xml file, a folder of them, or the dataset root (``Annotations/``, ``JPEGImages/``,
    ``train.txt`` / ``val.txt`` / ``test.txt``), where ``split`` picks the objects as RSVG's ``RSVGDataset``
    does: the split file lists indices into the objects of all annotation files, counted in file order."""
    path = Path(path)
    if path.is_dir() and (path / "Annotations").is_dir():
        return _read_rsvg_root(path, images, split)
    if split:
        raise BenchmarkError(f"--split {split} needs the dataset root holding Annotations/ and {split}.txt")
    return [r for xml in files(path, "*.xml") for r in _voc_records(xml, images)]


def _read_rsvg_root(root: Path, images: str | Path | None, split: str | None) -> list[Record]:
    image_dir = Path(images) if images else root / "JPEGImages"
    split_file = root / f"{split}.txt" if split else None
    missing = [str(p) for p in (image_dir, split_file) if p is not None and not p.exists()]
    if missing:
        raise BenchmarkError(f"{root} is not a DIOR-RSVG root: missing {', '.join(missing)}")
    # RSVG walks the folder with os.walk, whose order the file system decides; sorted names are the order
    # the released split files were made in (one image per file, numbered names).
    records = [r for xml in files(root / "Annotations", "*.xml") for r in _voc_records(xml, image_dir)]
    if split_file is None:
        return records
    try:
        wanted = {int(line) for line in split_file.read_text().split()}
    except ValueError as error:
        raise BenchmarkError(f"{split_file.name}: expected one object index per line ({error})") from error
    return [r for k, r in enumerate(records) if k in wanted]


def _voc_records(xml: Path, images: str | Path | None) -> list[Record]:
    """One record per ``<object>`` of one VOC file, in file order."""
    try:
        root = ET.parse(xml).getroot()
    except ET.ParseError as error:
        raise BenchmarkError(f"{xml.name} is not valid xml: {error}") from error
    filename = root.findtext("filename") or f"{xml.stem}.jpg"
    image = find_image(Path(images) if images else xml.parent, filename)
    records = []
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


def read_geopixeld(
    path: str | Path, images: str | Path | None = None, split: str | None = None
) -> list[Record]:
    """GeoPixelD: a json list of ``{image, polygons, conversations}``; the polygons file holds one list of
    rings per ``<p>…</p> [SEG]`` phrase, in order -> a ``gcg`` record (caption text + one mask per phrase).
    Image and polygon files are looked up by name next to the json (or in ``images``)."""
    path = Path(path)
    entries = load_json(path)
    if isinstance(entries, dict):
        entries = [entries]
    folder = Path(images) if images else path.parent
    records = []
    for entry in entries:
        try:
            image = find_image(folder, Path(entry["image"]).name)
            poly_file = folder / Path(entry["polygons"]).name
            turns = entry["conversations"]
            question = next(t["value"] for t in turns if t["from"] == "human")
            answer = next(t["value"] for t in turns if t["from"] != "human")
        except (KeyError, TypeError, StopIteration) as error:
            raise BenchmarkError(f"{path.name}: an entry lacks image / polygons / conversations") from error
        polygons = load_json(poly_file)["polygons"]
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


# ------------------------------------------------------------------------------------------------ LISA / GRES


def read_reasoning(
    path: str | Path, images: str | Path | None = None, split: str | None = None
) -> list[Record]:
    """LISA / ReasonSeg (and LISAT / GRES-style) reasoning segmentation, read as LISA's ``get_mask_from_json``
    and ``ValDataset``: per image a json with ``text`` and polygon ``shapes``; a shape labelled ``flag`` is
    skipped, every label containing "ignore" (any case) marks pixels scored for neither side, every other
    shape is target. One ``refseg`` record per image, on its **first** text (LISA validates on
    ``sents[0]``); an image with no target shape has an empty target ("none here"). ``split`` names a
    sub-folder (``val``, ``test``) of ``path``."""
    root = Path(path) / split if split else Path(path)
    records = []
    for file in files(root, "*.json"):
        data = load_json(file)
        shapes = [s for s in data.get("shapes", []) if str(s.get("label", "")).lower() != "flag"]
        name = next((s.get("image_name") for s in shapes if s.get("image_name")), f"{file.stem}.jpg")
        image = find_image(Path(images) if images else file.parent, name)
        is_ignore = [("ignore" in str(s.get("label", "")).lower()) for s in shapes]
        rings = [s["points"] for s, ign in zip(shapes, is_ignore) if not ign and s.get("points")]
        ignore = [s["points"] for s, ign in zip(shapes, is_ignore) if ign and s.get("points")]
        texts = data.get("text") or []
        texts = [texts] if isinstance(texts, str) else texts
        if not texts:
            continue
        question = f"{texts[0]} Please output the segmentation mask."
        records.append(
            Record(
                file.stem, "refseg", [str(image)], question, polygons=[rings], ignore_polygons=ignore or None
            )
        )
    return records


# ------------------------------------------------------------------------------------------------ change


def read_levircc(
    path: str | Path, images: str | Path | None = None, split: str | None = None
) -> list[Record]:
    """LEVIR-CC captions: ``{"pairs": {id: {A, B, split, captions}}}`` (this repo's sample) or the official
    ``LevirCCcaptions.json`` ``{"images": [{filepath, filename, split, sentences: [{raw}]}]}``; paths relative
    to the data folder. ``split`` (``train`` / ``val`` / ``test``) keeps that split's pairs only, as the
    LEVIR-CC papers score ``test``."""
    path = Path(path)
    data = load_json(path)
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
            if split and pair.get("split") != split:
                continue
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
            if split and item.get("split", item.get("filepath")) != split:
                continue
            sub = f"{item.get('filepath', '')}"
            a, b = (resolve(str(Path(sub) / d / item["filename"])) for d in ("A", "B"))
            refs = [s["raw"].strip() for s in item.get("sentences", [])]
            records.append(
                Record(Path(item["filename"]).stem, "change_caption", [a, b], question, texts=refs)
            )
    else:
        raise BenchmarkError(f"{path.name}: expected a 'pairs' or 'images' key (LEVIR-CC captions)")
    return records


def read_change_masks(
    path: str | Path, images: str | Path | None = None, split: str | None = None
) -> list[Record]:
    """LEVIR-CD / DSIFN / WHU-CD layout: ``A/``, ``B/`` and ``label/`` with the same file names (under
    ``split/`` when given: LEVIR-CD ships ``train/``, ``val/``, ``test/``); labels are 0 / 255, read as BIT
    (``label // 255``). One ``change_mask`` record per pair."""
    root = Path(path) / split if split else Path(path)
    label_dir = next((root / d for d in ("label", "labels", "OUT", "gt") if (root / d).is_dir()), None)
    if not (root / "A").is_dir() or not (root / "B").is_dir() or label_dir is None:
        raise BenchmarkError(f"{root} needs A/, B/ and label/ folders (LEVIR-CD layout)")
    question = "Segment the areas that changed between the two images."
    records = []
    for label in sorted(p for p in label_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        a, b = find_image(root / "A", label.name), find_image(root / "B", label.name)
        records.append(Record(label.stem, "change_mask", [str(a), str(b)], question, mask_paths=[str(label)]))
    if not records:
        raise BenchmarkError(f"no label images in {label_dir}")
    return records


# ------------------------------------------------------------------------------------------------ rsvlm gen


_DATE_LINE = re.compile(r"^Image \d+ \([^)]*\):\s*<image>\s*$", re.MULTILINE)


def _user_question(text: str) -> str:
    return " ".join(_DATE_LINE.sub(" ", text).replace(IMAGE_TOKEN, " ").split())


def read_gen(path: str | Path, images: str | Path | None = None, split: str | None = None) -> list[Record]:
    """An instruction set written by ``rsvlm gen`` (parquet; a folder of them is read whole). The first
    question / answer pair of each row becomes a record; its images and target masks are written to ``images``
    (default: a ``.eval_inputs`` folder next to the data), because the assistant reads files. A row with a CRS and
    a transform gets its images as GeoTIFFs on that grid, as a user's file would be (the assistant then knows the
    ground sample distance and answers in m²); the others, and every mask, as PNGs."""
    from datasets import load_dataset

    root = Path(path)
    parquets = files(root, "**/*.parquet")
    cache = Path(images) if images else (root if root.is_dir() else root.parent) / ".eval_inputs"
    cache.mkdir(parents=True, exist_ok=True)
    dataset = load_dataset("parquet", data_files=[str(f) for f in parquets], split="train")
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
            image_paths.append(str(_write_gen_image(img.convert("RGB"), cache / f"{safe}_{k}", row)))
        width, height = row["images"][0].size
        mask_paths = []
        # Only the first answer is scored, so only its own [SEG] masks (the first ones) are its references: a
        # yes/no first turn of a row whose later turn segments something is a yes/no record, not a mask one.
        for k, mask in enumerate((row["masks"] or [])[: answer.count("[SEG]")]):
            p = cache / f"{safe}_mask{k}.png"
            mask.convert("L").save(p)
            mask_paths.append(str(p))
        records.append(
            _gen_record(
                rid, row["task"], image_paths, _user_question(question), answer, mask_paths, width, height
            )
        )
    return records


def _write_gen_image(image, stem: Path, row: dict) -> Path:
    """``stem``.tif on the row's grid when it has a CRS and a 6-number transform, else ``stem``.png."""
    crs, transform = row.get("crs"), row.get("transform")
    if not crs or transform is None or len(transform) != 6:
        path = stem.with_suffix(".png")
        image.save(path)
        return path
    import numpy as np
    import rasterio
    from affine import Affine

    path = stem.with_suffix(".tif")
    pixels = np.asarray(image).transpose(2, 0, 1)  # [3, H, W]
    profile = dict(driver="GTiff", count=3, height=pixels.shape[1], width=pixels.shape[2], dtype="uint8")
    with rasterio.open(path, "w", crs=crs, transform=Affine(*transform), photometric="RGB", **profile) as dst:
        dst.write(pixels)
    return path


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
    "rrsisd": refer_seg.read_rrsisd,
    "refsegrs": refer_seg.read_refsegrs,
    "earthreason": refer_seg.read_earthreason,
    "rsvqa": rsvqa.read_rsvqa,
    "geochat-bench": geochat_bench.read_geochat_bench,
    "dota": dota.read_dota,
}


def read_benchmark(
    name: str, path: str | Path, images: str | Path | None = None, split: str | None = None
) -> Records:
    """Records of a named benchmark format (see ``READERS``); ``split`` where the format has splits. The
    entries left out (a broken geometry, ...) are counted in ``records.skipped``."""
    if name not in READERS:
        raise BenchmarkError(f"unknown benchmark {name!r}; choose from {', '.join(sorted(READERS))}")
    if split and name in ("geopixeld", "gen"):
        raise BenchmarkError(f"{name} has no splits; point --data at the split's file or folder")
    records = READERS[name](path, images, split)
    records = records if isinstance(records, Records) else Records(records)
    logger.info(
        "%s: %d records from %s (%d left out)", name, len(records), path, sum(records.skipped.values())
    )
    return records
