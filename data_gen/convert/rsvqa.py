"""RSVQA (LR / HR) -> rsvlm ``vqa`` rows: one row per active question with its answer.

RSVQA splits one set over three files with a shared prefix, e.g. ``LR_split_train_questions.json``,
``LR_split_train_answers.json`` and ``LR_split_train_images.json``:

    {"questions": [{"id": 0, "img_id": 0, "question": "Is there a road?", "type": "presence",
                    "answers_ids": [0], "active": true}, ...]}
    {"answers": [{"id": 0, "question_id": 0, "answer": "yes", "active": true}, ...]}
    {"images": [{"id": 0, "questions_ids": [0, 1, ...], "active": true}, ...]}

SRC is the questions file; the answers and images files are found by replacing ``questions`` in its name.
Images are ``{img_id}.tif`` under ``--images`` (RSVQA's ``Images_LR/`` or ``Data/``). The split is the word
``train`` / ``val`` / ``test`` in the file name (``test_phili`` counts as test). Questions marked
``"active": false`` (RSVQA's own removals) are skipped as ``inactive question``, and so are the questions of an
image the images file marks inactive (RSVQA's ``VQALoader`` reads active images only). A split file whose entries
are only ``{"id", "active"}`` flags takes the text from ``all_questions.json`` / ``all_answers.json`` beside it.

``question_answers`` is the pairing both this converter and ``rsvlm eval --benchmark rsvqa`` read.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from data_gen.convert.report import MALFORMED, FormatError, require_keys
from data_gen.convert.writer import Draft, split_name
from rsvlm.grounding import IMAGE_TOKEN

QUESTION_KEYS = ("id", "img_id", "question", "answers_ids")


@dataclass(frozen=True)
class QuestionAnswer:
    id: int | str
    img_id: int | str
    question: str
    answer: str
    type: str


def _load(path: Path, key: str) -> list:
    if not path.is_file():
        raise FormatError(f"{path} not found (RSVQA needs the questions and the answers file side by side)")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise FormatError(f"{path.name}: not JSON ({error})") from None
    require_keys(data, (key,), "RSVQA", path.name)
    return data[key]


def _is_flag(entry) -> bool:
    return isinstance(entry, dict) and not set(entry) - {"id", "active"}


def _with_text(entries: list, pool: Path, key: str) -> list:
    """Flag-only split entries (``{"id", "active"}``) completed from the set-wide file (``all_questions.json``)."""
    if not any(_is_flag(e) for e in entries) or not pool.is_file():
        return entries
    full = {e.get("id"): e for e in _load(pool, key) if isinstance(e, dict)}
    return [{**full.get(e.get("id"), {}), **e} if _is_flag(e) else e for e in entries]


def question_answers(src: Path) -> Iterator[tuple[str, QuestionAnswer | None, str | None]]:
    """Each question of an RSVQA questions file: (its id, the question with its answer or None, why it is left
    out or None)."""
    if "questions" not in src.name:
        raise FormatError(
            f"{src.name}: pass RSVQA's *_questions.json (its *_answers.json is found next to it)"
        )
    questions = _with_text(_load(src, "questions"), src.with_name("all_questions.json"), "questions")
    answer_file = src.with_name(src.name.replace("questions", "answers"))
    answer_list = _with_text(_load(answer_file, "answers"), src.with_name("all_answers.json"), "answers")
    answers = {a.get("id"): a for a in answer_list if isinstance(a, dict)}
    images_file = src.with_name(src.name.replace("questions", "images"))
    inactive_images = (
        {
            i.get("id")
            for i in _load(images_file, "images")
            if isinstance(i, dict) and i.get("active") is False
        }
        if images_file.is_file()
        else set()
    )
    if questions:
        require_keys(questions[0], QUESTION_KEYS, "an RSVQA question", f"{src.name} question 0")
    for q in questions:
        if not isinstance(q, dict) or not all(k in q for k in QUESTION_KEYS):
            yield "?", None, MALFORMED
            continue
        rid = str(q["id"])
        if q.get("active") is False or q["img_id"] in inactive_images:
            yield rid, None, "inactive question"
            continue
        answer = next((answers[i] for i in q["answers_ids"] if i in answers), None)
        if answer is None or not str(answer.get("answer", "")).strip():
            yield rid, None, "no answer"
            continue
        text = str(q["question"]).strip()
        yield (
            rid,
            QuestionAnswer(q["id"], q["img_id"], text, str(answer["answer"]).strip(), q.get("type", "")),
            None,
        )


def read(src: Path) -> Iterator[Draft]:
    found = re.search(r"(train|val|test)", src.stem.lower())
    split = split_name(found.group(1) if found else "train")
    for qid, qa, skip in question_answers(src):
        rid = f"rsvqa-{qid}"
        if qa is None:
            yield Draft(id=rid if qid != "?" else "?", task="vqa", skip=skip)
            continue
        yield Draft(
            id=rid,
            task="vqa",
            images=[f"{qa.img_id}.tif"],
            split=split,
            conversations=[
                {"role": "user", "content": f"{IMAGE_TOKEN}\n{qa.question}"},
                {"role": "assistant", "content": qa.answer},
            ],
            meta={"format": "rsvqa", "source_id": str(qa.id), "types": [qa.type]},
        )
