"""The runner end to end on a real tiny assistant: scripted answers get known scores; resume; the CLI."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from eval.cli import main as eval_main
from eval.readers import Record
from eval.run import REPORT, SAMPLES, SUMMARY, evaluate, read_log
from rsvlm.assistant import Assistant
from rsvlm.cli import main as rsvlm_main
from rsvlm.testing import scripted_generation

DATA = Path(__file__).resolve().parents[2] / "../shared/data"


@pytest.fixture
def assistant(tiny_checkpoint) -> Assistant:
    return Assistant.from_pretrained(tiny_checkpoint)


def script(assistant: Assistant, answers: dict[str, tuple[str, list[np.ndarray]]], calls: list[str]):
    """The model 'says' the scripted text (and masks) of whichever key occurs in the prompt."""
    tokenizer = assistant.processor.tokenizer
    size = assistant.image_size

    def generate(**kwargs):
        prompt = tokenizer.decode(kwargs["input_ids"][0])
        key = next(k for k in answers if k in prompt)
        calls.append(key)
        text, masks = answers[key]
        return scripted_generation(tokenizer, text, masks, size)

    assistant.model.generate = generate


@pytest.fixture
def records(tmp_path, assistant) -> list[Record]:
    size = assistant.image_size  # the source image is the model input size, so grid -> pixels is exact
    image = tmp_path / "scene.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (size, size, 3), dtype=np.uint8)).save(image)
    quarter = np.zeros((size, size), bool)
    quarter[: size // 2, : size // 2] = True
    Image.fromarray(quarter).save(tmp_path / "quarter.png")
    half = np.zeros((size, size), bool)
    half[: size // 2] = True
    Image.fromarray(half).save(tmp_path / "half.png")
    h = size / 2
    return [
        Record("hit", "grounding", [str(image)], "Give the box of alpha.", box=[0, 0, h, h]),
        Record("miss", "grounding", [str(image)], "Give the box of beta.", box=[h, h, size, size]),
        Record("seg", "refseg", [str(image)], "Segment gamma.", mask_paths=[str(tmp_path / "half.png")]),
        Record("yes", "vqa", [str(image)], "Is delta true?", texts=["yes"]),
        # Not "How many epsilon?": a count is the number of patches of the decoder's mask (rsvlm.asked).
        Record("two", "count", [str(image)], "What figure is epsilon?", number=3),
    ], quarter


def test_scripted_answers_get_known_scores_and_a_resumed_run_asks_only_the_rest(assistant, records, tmp_path):
    records, quarter = records
    answers = {
        "alpha": ("<box>[0, 0, 500, 500]</box>", []),  # exactly the target: IoU 1
        "beta": ("<box>[0, 0, 500, 500]</box>", []),  # disjoint from the target: IoU 0
        "gamma": ("<p>gamma</p> [SEG]", [quarter]),  # a quarter predicted, a half there: IoU 0.5
        "delta": ("Yes.", []),  # VQAv2 normalisation compares the whole answer
        "epsilon": ("There are two.", []),  # off by one
    }
    calls: list[str] = []
    script(assistant, answers, calls)
    out = tmp_path / "run"
    first = evaluate(assistant, records, out, benchmark="unit", limit=2)
    assert calls == ["alpha", "beta"] and first["samples"] == 2
    summary = evaluate(assistant, records, out, benchmark="unit", model="tiny")
    # Resumed: the first two were not asked again. (Not "Is there delta?": a presence question's yes/no is the
    # decoder's, rsvlm.presence, and this test scores the scripted answers.)
    assert calls == ["alpha", "beta", "gamma", "delta", "epsilon"]
    tasks = summary["tasks"]
    accs = {f"acc@{t}": 0.5 for t in (0.25, 0.5, 0.6, 0.7, 0.75, 0.8, 0.9)}
    h2 = (assistant.image_size / 2) ** 2  # one exact box and one disjoint one of the same size
    assert tasks["grounding"] == pytest.approx(
        {**accs, "miou": 0.5, "cumiou": h2 / (3 * h2), "n": 2, "errors": 0, "unscored": 0}
    )
    assert tasks["refseg"]["giou"] == pytest.approx(0.5) and tasks["refseg"]["ciou"] == pytest.approx(0.5)
    assert tasks["vqa"]["accuracy"] == 1.0 and tasks["count"]["mae"] == 1.0
    rows = read_log(out / SAMPLES)
    assert [r["id"] for r in rows] == ["hit", "miss", "seg", "yes", "two"]
    assert json.loads((out / SUMMARY).read_text())["tasks"]["vqa"]["n"] == 1
    report = (out / REPORT).read_text()
    assert "## grounding" in report and "| miss | 0.0000 |" in report
    # A torn last line (a run killed mid-write) is run again, not trusted.
    text = (out / SAMPLES).read_text().splitlines()
    (out / SAMPLES).write_text("\n".join(text[:-1]) + "\n" + text[-1][:20])
    evaluate(assistant, records, out)
    assert calls[-1] == "epsilon" and len(calls) == 6
    assert [r["id"] for r in read_log(out / SAMPLES)] == ["hit", "miss", "seg", "yes", "two"]


def test_a_missing_image_is_one_scored_error_not_a_crash(assistant, tmp_path):
    script(assistant, {"": ("<box>[0, 0, 10, 10]</box>", [])}, [])
    records = [
        Record("gone", "grounding", [str(tmp_path / "gone.png")], "Give the box of x.", box=[0, 0, 5, 5])
    ]
    summary = evaluate(assistant, records, tmp_path / "run")
    assert summary["tasks"]["grounding"]["errors"] == 1 and summary["tasks"]["grounding"]["miou"] == 0.0


def test_cli_errors_are_one_line_with_exit_2(tmp_path, capsys):
    assert (
        rsvlm_main(["eval", "--benchmark", "levircd", "--data", str(tmp_path), "--out", str(tmp_path)]) == 2
    )
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "A/, B/ and label/" in err
    assert eval_main(["--benchmark", "nope", "--data", "x", "--out", "y"]) == 2


def test_cli_scores_real_levircd_pairs_with_the_tiny_model(tiny_checkpoint, tmp_path):
    data = DATA / "change/levircd"
    if not data.exists():
        pytest.skip("../shared/data is not available")
    argv = ["--benchmark", "levircd", "--data", str(data), "--model", str(tiny_checkpoint)]
    argv += ["--limit", "1", "--max-new-tokens", "4", "--out", str(tmp_path / "run")]
    assert eval_main(argv) == 0
    summary = json.loads((tmp_path / "run" / SUMMARY).read_text())
    scores = summary["tasks"]["change_mask"]
    assert scores["n"] == 1 and scores["errors"] == 0 and 0.0 <= scores["oa"] <= 1.0


def test_change_captions_and_gcg_on_real_records(assistant, tmp_path):
    from eval.readers import read_benchmark

    if not DATA.exists():
        pytest.skip("../shared/data is not available")
    caps = read_benchmark("levircc", DATA / "change_captions/levircc_pairs_captions.json")
    gcg = read_benchmark("geopixeld", DATA / "grounding/GeoPixelD.json")
    # Change captions: both pairs get the first pair's first reference; GCG: one phrase, no scripted mask. The 800 px
    # GeoPixelD scene is larger than twice the tiny model's input: one language call on its overview, then the
    # [SEG]'s phrase decoded by the (random) mask decoder on every window, stitched into one region.
    calls: list[str] = []
    script(
        assistant,
        {
            "Describe the changes": (caps[0].texts[0], []),
            "interleaved": ("The <p>court</p> [SEG] is green.", []),
        },
        calls,
    )
    summary = evaluate(assistant, caps[:2] + gcg, tmp_path / "run")
    assert calls == ["Describe the changes"] * 2 + ["interleaved"]
    t = summary["tasks"]
    assert t["change_caption"]["n"] == 2 and 0.5 < t["change_caption"]["bleu1"] < 1.0
    assert t["gcg"]["mask_miou"] < 0.5 and t["gcg"]["mask_recall@0.5"] == 0.0  # one random mask for 4 courts
    rows = read_log(tmp_path / "run" / SAMPLES)
    assert len(rows[-1]["mask_ious"]) == 4 and rows[-1]["num_pred_masks"] == 1


def test_summarise_captions_by_hand():
    from eval.run import summarise

    rows = [
        {"id": "1", "task": "caption", "text": "a b", "refs": ["a b"]},
        {"id": "2", "task": "caption", "text": "c d", "refs": ["c d"]},
    ]
    s = summarise(rows)["caption"]
    assert s["cider_d"] == pytest.approx(5.0) and s["bleu2"] == pytest.approx(1.0) and s["rouge_l"] == 1.0


def test_the_blanked_image_baseline_is_the_model_again_on_flat_images(
    assistant, records, tmp_path, monkeypatch
):
    import eval.run
    from eval.baselines import blanked_image

    records, _ = records
    records = [records[0], records[3]]  # a box and a yes/no
    blank = {"pending": False}

    def recording_blank(path):
        image = blanked_image(path)
        assert image.path is None and np.ptp(image.data, axis=(1, 2)).max() == 0  # flat, per band
        blank["pending"] = True
        return image

    monkeypatch.setattr(eval.run, "blanked_image", recording_blank)
    tokenizer, size = assistant.processor.tokenizer, assistant.image_size
    said: list[str] = []

    def generate(**kwargs):
        text = (
            "<box>[500, 500, 1000, 1000]</box> No."
            if blank["pending"]
            else (
                "<box>[0, 0, 500, 500]</box>"
                if "alpha" in tokenizer.decode(kwargs["input_ids"][0])
                else "Yes."
            )
        )
        said.append("blank" if blank["pending"] else "image")
        blank["pending"] = False
        return scripted_generation(tokenizer, text, [], size)

    assistant.model.generate = generate
    out = tmp_path / "run"
    summary = evaluate(assistant, records, out, blank_baseline=True)
    assert said == ["image", "image", "blank", "blank"]
    assert summary["tasks"]["grounding"]["miou"] == 1.0 and summary["tasks"]["vqa"]["accuracy"] == 1.0
    blanked = summary["baselines"]["blanked image"]
    assert (
        blanked["grounding"]["miou"] == 0.0 and blanked["vqa"]["accuracy"] == 0.0 and blanked["vqa"]["n"] == 1
    )
    assert [r["id"] for r in read_log(out / "blank.jsonl")] == ["hit", "yes"]
    assert "| blanked image | 0.0000" in (out / REPORT).read_text()
    evaluate(assistant, records, out, blank_baseline=True)  # resumed: neither pass asks again
    assert len(said) == 4


def test_answers_that_do_not_parse_are_misses_never_crashes(assistant, tmp_path):
    size = assistant.image_size
    image = tmp_path / "scene.png"
    Image.new("RGB", (size, size), (90, 120, 60)).save(image)
    Image.fromarray(np.ones((size, size), bool)).save(tmp_path / "all.png")
    records = [
        Record("box", "grounding", [str(image)], "Give the box of alpha.", box=[0, 0, 10, 10]),
        Record(
            "obb", "obb", [str(image)], "Give the oriented box of beta.", obb=[[0, 0], [9, 0], [9, 9], [0, 9]]
        ),
        Record("seg", "refseg", [str(image)], "Segment gamma.", mask_paths=[str(tmp_path / "all.png")]),
        Record("count", "count", [str(image)], "How many delta?", number=4),
        Record("yes", "vqa", [str(image)], "Is there epsilon?", texts=["yes"]),
    ]
    script(
        assistant,
        {
            "alpha": ("<box>[12, 40", []),  # torn box
            "beta": (
                "<obb>[1, 2, x, 4]</obb> <box>[900, 10, 5, 1]</box>",
                [],
            ),  # not numbers; flipped corners
            "gamma": ("<p>gamma</p> [SEG] [SEG]", []),  # [SEG]s without mask logits
            "delta": ("many, many", []),
            "epsilon": ("", []),
        },
        [],
    )
    # The assistant then asks the decoder for the mask the answer lacks (rsvlm.asked); here it finds nothing.
    assistant.model.decode_masks = lambda seg, index, features, phrases: torch.full((1, size, size), -10.0)
    summary = evaluate(assistant, records, tmp_path / "run")
    t = summary["tasks"]
    assert t["grounding"]["miou"] == 0.0 and t["obb"]["miou"] == 0.0 and t["refseg"]["giou"] == 0.0
    assert t["count"]["mae"] == 4.0 and t["vqa"]["accuracy"] == 0.0
    assert all(s["n"] == 1 and s["errors"] == 0 for s in t.values())  # every record scored, as a miss
    warnings = {r["id"]: " ".join(r["warnings"]) for r in read_log(tmp_path / "run" / SAMPLES)}
    assert "dropped malformed oriented box" in warnings["obb"] and "no mask for [SEG]" in warnings["seg"]


def test_one_process_resumes_the_shard_logs_of_a_two_process_run(assistant, records, tmp_path):
    records, _ = records
    records = records[:2]
    out = tmp_path / "run"
    out.mkdir()
    kept = {
        "id": "miss",
        "task": "grounding",
        "iou": 0.0,
        "area_counts": [0.0, 1.0],
        "refs": [],
        "kept": True,
    }
    (out / "samples.shard1-of-2.jsonl").write_text(json.dumps(kept) + "\n")
    calls: list[str] = []
    script(assistant, {"alpha": ("<box>[0, 0, 500, 500]</box>", [])}, calls)
    summary = evaluate(assistant, records, out)
    assert calls == ["alpha"]  # "miss" was in shard 1's log
    assert [(r["id"], r.get("kept")) for r in read_log(out / SAMPLES)] == [("hit", None), ("miss", True)]
    assert not list(out.glob("samples.shard*")) and summary["tasks"]["grounding"]["n"] == 2
