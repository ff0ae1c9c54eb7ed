"""RSVQA (LR / HR) in its released layout -> ``vqa`` records, one per active question with its answer.

    records = read_rsvqa("RSVQA_LR", split="test")            # LR_split_test_{questions,answers,images}.json
    records = read_rsvqa("RSVQA_HR", split="test_phili")      # USGS_split_test_phili_*.json, images in Data/

The question / answer pairing is ``data_gen.convert.rsvqa.question_answers`` (the converter's own; issue 12: one
reader per format): the split's ``*_questions.json`` with ``*_answers.json`` (``answers_ids``) beside it,
inactive questions and the questions of inactive images (``*_images.json``) left out and counted, flag-only split
files completed from ``all_questions.json`` / ``all_answers.json``. Images are ``{img_id}.tif`` under
``Images_LR/`` (LR) or ``Data/`` (HR), or ``--images``. Each record keeps RSVQA's question ``type`` (presence,
comp, count, rural_urban, area), so the summary gives the per-type accuracies and their mean (RSVQA's AA)
beside the overall accuracy (OA).
"""

from __future__ import annotations

from pathlib import Path

from data_gen.convert.report import FormatError
from data_gen.convert.rsvqa import question_answers
from eval.layout import find_image
from eval.record import BenchmarkError, Record, Records

IMAGE_FOLDERS = ("Images_LR", "Data", "Images")


def _questions_file(root: Path, split: str | None) -> Path:
    if root.is_file():
        if split:
            raise BenchmarkError(f"--split {split} needs the RSVQA folder, not one questions file")
        return root
    if not root.is_dir():
        raise BenchmarkError(f"{root} does not exist")
    if not split:
        raise BenchmarkError(f"{root}: give --split (train, val, test; test_phili for RSVQA-HR)")
    found = sorted(root.glob(f"*_split_{split}_questions.json"))
    if not found:
        raise BenchmarkError(
            f"{root} is not an RSVQA root: missing *_split_{split}_questions.json (with its _answers.json)"
        )
    return found[0]


def read_rsvqa(path: str | Path, images: str | Path | None = None, split: str | None = None) -> Records:
    """``path`` is a ``*_questions.json``, or the folder holding the split files (with ``split``)."""
    questions = _questions_file(Path(path), split)
    folder = questions.parent
    image_dir = (
        Path(images)
        if images
        else next((folder / d for d in IMAGE_FOLDERS if (folder / d).is_dir()), folder / IMAGE_FOLDERS[0])
    )
    records = Records()
    try:
        for qid, qa, skip in question_answers(questions):
            if qa is None:
                records.skipped[skip] += 1
                continue
            records.append(
                Record(
                    qid,
                    "vqa",
                    [str(find_image(image_dir, f"{qa.img_id}.tif"))],
                    qa.question,
                    texts=[qa.answer],
                    question_type=qa.type or None,
                )
            )
    except FormatError as error:
        raise BenchmarkError(str(error)) from error
    return records
