"""Referring and reasoning segmentation in their official layouts -> ``refseg`` records.

    records = read_rrsisd("RRSIS-D", split="test")         # REFER refs + COCO instances (RMSIN / LAVT)
    records = read_refsegrs("RefSegRS", split="test")      # images/, masks/, output_phrase_{split}.txt
    records = read_earthreason("RSReasonSeg", split="val")  # {split}/images/, labels/, QAs/

Formats, as their benchmarks' own loaders read them:

- **RRSIS-D** (``REFER(data_root, "rrsisd", "unc")`` in RMSIN, LAVT and SegEarth-R1): ``rrsisd/refs(unc).p`` is a
  pickled list of refs ``{ref_id, ann_id, image_id, split, sentences: [{raw, sent, ...}]}`` and
  ``rrsisd/instances.json`` the COCO ``images`` / ``annotations``; images in ``images/rrsisd/JPEGImages/``. The
  pickle is read by an unpickler that builds plain containers only (it refuses every class), and a JSON dump of the
  same list (``refs(unc).json``) is read instead when it is there. One record per ref **and sentence**, as the LAVT
  test loop scores every sentence of a ref; the mask is the ref's annotation decoded as REFER's ``getMask``
  (pycocotools, polygons or RLE). ``split`` as REFER's ``getRefIds``: ``test`` keeps every split containing "test".
- **RefSegRS** (SegEarth-R1's ``RefSegRSDataset``): ``output_phrase_{split}.txt`` lines ``<image id> <phrase>``,
  image ``images/<id>.tif``, mask ``masks/<id>.tif`` (255 = target).
- **EarthReason** (SegEarth-R1's ``ReasonSegDataset``): per split ``images/``, ``labels/*.png`` (non-zero = target)
  and ``QAs/*.json`` ``{"questions": [...], "answer": [...]}``, paired by file name; scored on the first question,
  as its validation does.

An annotation whose geometry cannot be decoded is left out and counted (``Records.skipped``), never guessed.
"""

from __future__ import annotations

import json
import math
import pickle
import re
from pathlib import Path
from typing import Any

from eval.layout import files, find_image, load_json, require
from eval.record import BenchmarkError, Record, Records

BROKEN_GEOMETRY = "broken geometry"


def _segment_question(expression: str) -> str:
    return f"Segment {' '.join(str(expression).split())}."


def _reason_question(text: str) -> str:
    return f"{' '.join(str(text).split())} Please output the segmentation mask."


# ------------------------------------------------------------------------------------------------ RRSIS-D


class PlainUnpickler(pickle.Unpickler):
    """Builds only what a pickle can say without naming a class (dicts, lists, strings, numbers); any class or
    function it names is refused, so a refs file cannot run code while it is read."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"it names {module}.{name}; only plain containers and numbers are read")


def load_refs(path: Path) -> list[dict[str, Any]]:
    """REFER's refs list, from its JSON dump or its pickle (read by ``PlainUnpickler``)."""
    if path.suffix == ".json":
        refs = load_json(path)
    else:
        try:
            with path.open("rb") as f:
                refs = PlainUnpickler(f, encoding="utf-8", errors="replace").load()
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError) as error:
            raise BenchmarkError(f"{path.name} is not a REFER refs pickle: {error}") from error
    keys = ("ref_id", "ann_id", "image_id", "split", "sentences")
    if not isinstance(refs, list) or not all(isinstance(r, dict) and all(k in r for k in keys) for r in refs):
        raise BenchmarkError(f"{path.name}: expected a list of refs with {', '.join(keys)}")
    return refs


def valid_segmentation(segmentation: Any) -> bool:
    """A COCO segmentation pycocotools can decode: flat polygons of at least three finite [x, y] points, or RLE
    dicts with a ``size`` and ``counts``."""
    parts = [segmentation] if isinstance(segmentation, dict) else segmentation
    if not isinstance(parts, list) or not parts:
        return False
    if all(isinstance(p, dict) for p in parts):
        return all(
            isinstance(p.get("size"), list)
            and len(p["size"]) == 2
            and isinstance(p.get("counts"), (str, list))
            for p in parts
        )
    return all(
        isinstance(p, list)
        and len(p) >= 6
        and len(p) % 2 == 0
        and all(isinstance(v, (int, float)) and math.isfinite(v) for v in p)
        for p in parts
    )


def read_rrsisd(path: str | Path, images: str | Path | None = None, split: str | None = None) -> Records:
    """RRSIS-D (or any REFER-style set named ``rrsisd``): ``path`` is REFER's data root (holding ``rrsisd/`` and
    ``images/rrsisd/JPEGImages/``) or its ``rrsisd/`` folder."""
    path = Path(path)
    data_root, ann_dir = (path, path / "rrsisd") if (path / "rrsisd").is_dir() else (path.parent, path)
    refs_file = next((ann_dir / n for n in ("refs(unc).json", "refs(unc).p") if (ann_dir / n).exists()), None)
    image_dir = Path(images) if images else data_root / "images/rrsisd/JPEGImages"
    missing = [str(ann_dir / "refs(unc).p")] if refs_file is None else []
    missing += [str(p) for p in (ann_dir / "instances.json", image_dir) if not p.exists()]
    if missing:
        raise BenchmarkError(f"{path} is not an RRSIS-D (REFER) root: missing {', '.join(missing)}")
    instances = load_json(ann_dir / "instances.json")
    if not isinstance(instances, dict) or "annotations" not in instances or "images" not in instances:
        raise BenchmarkError("instances.json: expected COCO 'images' and 'annotations'")
    anns = {a["id"]: a for a in instances["annotations"] if isinstance(a, dict) and "id" in a}
    image_names = {i["id"]: i.get("file_name") for i in instances["images"] if isinstance(i, dict)}
    records = Records()
    for ref in load_refs(refs_file):
        if split and not (("test" in str(ref["split"])) if split == "test" else ref["split"] == split):
            continue
        ann = anns.get(ref["ann_id"])
        sentences = [s for s in ref["sentences"] if isinstance(s, dict) and (s.get("raw") or s.get("sent"))]
        if ann is None or not valid_segmentation(ann.get("segmentation")):
            records.skipped[BROKEN_GEOMETRY if ann is not None else "ref without its annotation"] += len(
                sentences
            )
            continue
        name = image_names.get(ref["image_id"]) or ref.get("file_name") or f"{ref['image_id']}.jpg"
        image = str(find_image(image_dir, str(name)))
        for k, sentence in enumerate(sentences):
            records.append(
                Record(
                    f"{ref['ref_id']}#{k}",
                    "refseg",
                    [image],
                    _segment_question(sentence.get("raw") or sentence["sent"]),
                    coco_segmentation=ann["segmentation"],
                    texts=[str(sentence.get("raw") or sentence["sent"])],
                )
            )
    return records


# ------------------------------------------------------------------------------------------------ RefSegRS

_PHRASE_LINE = re.compile(r"(\d+)\s+(.*)")


def read_refsegrs(path: str | Path, images: str | Path | None = None, split: str | None = None) -> Records:
    """RefSegRS: one record per phrase line; without ``split`` every ``output_phrase_*.txt`` is read."""
    root = Path(path)
    phrase_files = [f"output_phrase_{split}.txt"] if split else []
    require(root, ["images", "masks", *phrase_files], "RefSegRS")
    image_dir = Path(images) if images else root / "images"
    records = Records()
    per_image: dict[str, int] = {}
    for phrase_file in files(root / phrase_files[0] if split else root, "output_phrase_*.txt"):
        for line in phrase_file.read_text().splitlines():
            match = _PHRASE_LINE.match(line.strip())
            if not line.strip():
                continue
            if match is None:
                records.skipped["phrase line without an image id"] += 1
                continue
            image_id, phrase = match.groups()
            k = per_image[image_id] = per_image.get(image_id, -1) + 1
            records.append(
                Record(
                    f"{image_id}#{k}",
                    "refseg",
                    [str(find_image(image_dir, f"{image_id}.tif"))],
                    _segment_question(phrase),
                    mask_paths=[str(root / "masks" / f"{image_id}.tif")],
                    texts=[phrase.strip()],
                )
            )
    return records


# ------------------------------------------------------------------------------------------------ EarthReason

NO_TARGET_ANSWER = "There is no target object in the image."  # SegEarth-R1's answer when "answer" is empty


def read_earthreason(path: str | Path, images: str | Path | None = None, split: str | None = None) -> Records:
    """EarthReason (``RSReasonSeg``): ``path`` is the split folder, or the root with ``split``."""
    root = Path(path) / split if split else Path(path)
    require(root, ["images", "labels", "QAs"], "EarthReason split")
    image_dir = Path(images) if images else root / "images"
    records = Records()
    for qa_file in files(root / "QAs", "*.json"):
        try:
            qa = json.loads(qa_file.read_text())
            question = qa["questions"][0]
            answers = qa.get("answer") or []
        except (json.JSONDecodeError, KeyError, IndexError, TypeError):
            records.skipped["QA file without a question"] += 1
            continue
        label = root / "labels" / f"{qa_file.stem}.png"
        if not label.exists():
            records.skipped["QA without its label mask"] += 1
            continue
        records.append(
            Record(
                qa_file.stem,
                "refseg",
                [str(find_image(image_dir, f"{qa_file.stem}.jpg"))],
                _reason_question(question),
                mask_paths=[str(label)],
                texts=[str(answers[0]) if answers else NO_TARGET_ANSWER],
            )
        )
    return records
