"""RSVQA (LR / HR) -> rsvlm ``vqa`` rows: one row per active question with its answer.

RSVQA splits one set over three files with a shared prefix, e.g. ``LR_split_train_questions.json``,
``LR_split_train_answers.json`` (and ``..._images.json``, not needed):

    {"questions": [{"id": 0, "img_id": 0, "question": "Is there a road?", "type": "presence",
                    "answers_ids": [0], "active": true}, ...]}
    {"answers": [{"id": 0, "question_id": 0, "answer": "yes", "active": true}, ...]}

SRC is the questions file; the answers file is found by replacing ``questions`` with ``answers`` in its name.
Images are ``{img_id}.tif`` under ``--images`` (RSVQA's ``Images_LR/`` or ``Data/``). The split is the word
``train`` / ``val`` / ``test`` in the file name (``test_phili`` counts as test). Questions marked
``"active": false`` (RSVQA's own removals) are skipped as ``inactive question``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

from data_gen.convert.report import MALFORMED, FormatError, require_keys
from data_gen.convert.writer import Draft, split_name
from rsvlm.grounding import IMAGE_TOKEN

QUESTION_KEYS = ("id", "img_id", "question", "answers_ids")


def _load(path: Path, key: str) -> list:
    if not path.is_file():
        raise FormatError(f"{path} not found (RSVQA needs the questions and the answers file side by side)")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise FormatError(f"{path.name}: not JSON ({error})") from None
    require_keys(data, (key,), "RSVQA", path.name)
    return data[key]


def read(src: Path) -> Iterator[Draft]:
    if "questions" not in src.name:
        raise FormatError(
            f"{src.name}: pass RSVQA's *_questions.json (its *_answers.json is found next to it)"
        )
    questions = _load(src, "questions")
    answers = {a.get("id"): a for a in _load(src.with_name(src.name.replace("questions", "answers")), "answers")
               if isinstance(a, dict)}  # fmt: skip
    if questions:
        require_keys(questions[0], QUESTION_KEYS, "an RSVQA question", f"{src.name} question 0")
    found = re.search(r"(train|val|test)", src.stem.lower())
    split = split_name(found.group(1) if found else "train")
    for q in questions:
        if not isinstance(q, dict) or not all(k in q for k in QUESTION_KEYS):
            yield Draft(id="?", task="vqa", skip=MALFORMED)
            continue
        rid = f"rsvqa-{q['id']}"
        if q.get("active") is False:
            yield Draft(id=rid, task="vqa", skip="inactive question")
            continue
        answer = next((answers[i] for i in q["answers_ids"] if i in answers), None)
        if answer is None or not str(answer.get("answer", "")).strip():
            yield Draft(id=rid, task="vqa", skip="no answer")
            continue
        yield Draft(
            id=rid,
            task="vqa",
            images=[f"{q['img_id']}.tif"],
            split=split,
            conversations=[
                {"role": "user", "content": f"{IMAGE_TOKEN}\n{str(q['question']).strip()}"},
                {"role": "assistant", "content": str(answer["answer"]).strip()},
            ],
            meta={"format": "rsvqa", "source_id": str(q["id"]), "types": [q.get("type", "")]},
        )
