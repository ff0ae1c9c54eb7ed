"""The training loop on the tiny random model and a data_gen dataset: learning, eval, checkpoints, exact resume."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from train import checkpoint as ckpt
from train.sft import read_metrics, train

pytestmark = pytest.mark.usefixtures("single_thread")


def _train_records(result):
    return [r for r in result.history if "loss" in r]


def _eval_records(result):
    return [r for r in result.history if r.get("split") == "validation"]


def test_training_lowers_the_loss_and_the_final_model_answers(make_config, tmp_path: Path) -> None:
    cfg = make_config(max_steps=30, lr=5e-3, eval_at_start=True, save_every=10, keep_last=2)
    result = train(cfg)
    out = Path(cfg.out)
    assert result.step == 30 and result.final_dir == out / "final"

    losses = [r["loss"] for r in _train_records(result)]
    assert len(losses) == 6 and np.mean(losses[-2:]) < 0.9 * np.mean(losses[:2]), losses
    first, last = _eval_records(result)[0], _eval_records(result)[-1]
    assert first["step"] == 0 and last["step"] == 30 and first["samples"] == 8 and first["masks"] > 0
    assert last["ce"] < first["ce"], (first, last)
    assert 0.0 <= last["mask_iou"] <= 1.0
    assert read_metrics(out / "metrics.jsonl") == result.history

    # keep_last=2 of the checkpoints at 10, 20, 30; each one complete.
    assert [s for s, _ in ckpt.list_checkpoints(out / "checkpoints")] == [20, 30]
    assert not list((out / "checkpoints").glob(".tmp-*"))

    from rsvlm.assistant import Assistant

    final = load_file(out / "final" / "model.safetensors")
    last_ckpt = load_file(out / "checkpoints" / "step-000030" / "model.safetensors")
    assert final.keys() == last_ckpt.keys() and all(torch.equal(final[k], last_ckpt[k]) for k in final)
    assistant = Assistant.from_pretrained(out / "final")
    image = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
    from PIL import Image

    Image.fromarray(image).save(tmp_path / "tile.png")
    answer = assistant.session().ask("Describe the image.", images=[tmp_path / "tile.png"], max_new_tokens=6)
    assert isinstance(answer.text, str) and answer.raw_text is not None


def test_checkpoints_hold_no_pickle(make_config) -> None:
    cfg = make_config(max_steps=2, save_every=1, keep_last=5)
    train(cfg)
    out = Path(cfg.out)
    files = [p for p in out.rglob("*") if p.is_file()]
    assert any(p.name == "optimizer.safetensors" for p in files)
    suffixes = {p.suffix for p in files}
    assert suffixes <= {".safetensors", ".json", ".jsonl", ".jinja"}, suffixes
    for path in files:
        head = path.read_bytes()[:2]
        assert head[:1] != b"\x80" and head != b"PK", path  # pickle protocol 2+ / torch.save zip
        assert b"torch._utils" not in path.read_bytes() and b"cnumpy" not in path.read_bytes(), path
    state = ckpt.optimizer_from_files(out / "checkpoints" / "step-000002", _optimizer_names(out))
    assert state["state"] and all("exp_avg" in s for s in state["state"].values())


def _optimizer_names(out: Path) -> list[str]:
    import json

    return json.loads((out / "checkpoints" / "step-000002" / "optimizer.json").read_text())["param_names"]


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(path / "final" / "model.safetensors")


def test_interrupted_run_resumes_to_identical_weights(make_config, tmp_path: Path) -> None:
    """Cosine schedule, LoRA dropout on, eval in the middle: stopping after step 3 and starting again must land on
    the very same weights as one uninterrupted 8-step run."""
    common = dict(max_steps=8, eval_every=2, eval_batches=1, save_every=3, log_every=1)
    assert train(make_config(out=str(tmp_path / "whole"), **common)).step == 8
    first = train(make_config(out=str(tmp_path / "split"), stop_after_steps=3, **common))
    assert first.step == 3 and first.final_dir is None
    assert first.checkpoint == tmp_path / "split" / "checkpoints" / "step-000003"
    second = train(make_config(out=str(tmp_path / "split"), **common))
    assert second.resumed_from == first.checkpoint and second.step == 8

    a, b = _weights(tmp_path / "whole"), _weights(tmp_path / "split")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:5]
    # The split run's log equals the whole run's (records after the checkpoint were not duplicated).
    split_log = read_metrics(tmp_path / "split" / "metrics.jsonl")
    whole_log = read_metrics(tmp_path / "whole" / "metrics.jsonl")
    keys = ("step", "split", "loss", "ce")
    assert [tuple(r.get(k) for k in keys) for r in split_log] == [
        tuple(r.get(k) for k in keys) for r in whole_log
    ]


def test_a_finished_short_run_extends_exactly(make_config, tmp_path: Path) -> None:
    """max_steps=k, then the same command with max_steps=N (constant schedule) = one N-step run."""
    common = dict(schedule="constant", warmup_steps=0, save_every=0)
    whole = train(make_config(out=str(tmp_path / "whole"), max_steps=6, **common))
    short = train(make_config(out=str(tmp_path / "ext"), max_steps=3, **common))
    assert short.final_dir is not None
    longer = train(make_config(out=str(tmp_path / "ext"), max_steps=6, **common))
    assert longer.resumed_from.name == "step-000003"
    a, b = _weights(tmp_path / "whole"), _weights(tmp_path / "ext")
    assert whole.step == longer.step == 6 and all(torch.equal(a[k], b[k]) for k in a)


def test_half_written_checkpoints_are_ignored(make_config, tmp_path: Path) -> None:
    cfg = make_config(max_steps=6, stop_after_steps=2, save_every=0)
    first = train(cfg)
    root = Path(cfg.out) / "checkpoints"
    # A rename that never happened, and a step folder missing its trainer state (killed mid-copy by hand).
    shutil.copytree(first.checkpoint, root / ".tmp-step-000004-999999")
    partial = root / "step-000005"
    shutil.copytree(first.checkpoint, partial)
    (partial / "trainer_state.json").unlink()
    assert ckpt.latest_checkpoint(root) == first.checkpoint
    second = train(make_config(max_steps=6, save_every=0))
    assert second.resumed_from == first.checkpoint and second.step == 6
    assert not (root / ".tmp-step-000004-999999").exists()  # cleaned up after the next complete checkpoint


def test_optimizer_state_round_trips_exactly(tmp_path: Path) -> None:
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(3, 2)), torch.nn.Parameter(torch.randn(4))]
    optimizer = torch.optim.AdamW([{"params": params[:1], "lr": 1e-2}, {"params": params[1:], "lr": 1e-3}])
    for _ in range(3):
        optimizer.zero_grad()
        (params[0].square().sum() + params[1].sin().sum()).backward()
        optimizer.step()
    ckpt.optimizer_to_files(optimizer, ["a", "b"], tmp_path)
    state = ckpt.optimizer_from_files(tmp_path, ["a", "b"])
    fresh = torch.optim.AdamW([{"params": params[:1], "lr": 0.5}, {"params": params[1:], "lr": 0.5}])
    fresh.load_state_dict(state)
    original = optimizer.state_dict()
    loaded = fresh.state_dict()
    assert [g["lr"] for g in loaded["param_groups"]] == [1e-2, 1e-3]
    for index, values in original["state"].items():
        for name, value in values.items():
            assert torch.equal(loaded["state"][index][name], value), (index, name)
    with pytest.raises(ValueError, match="other trainable parameters"):
        ckpt.optimizer_from_files(tmp_path, ["a", "c"])


def test_rng_state_round_trips() -> None:
    import random

    state = ckpt.rng_state()
    expected = (random.random(), np.random.rand(), torch.rand(3))
    ckpt.set_rng_state(state)
    again = (random.random(), np.random.rand(), torch.rand(3))
    assert expected[:2] == again[:2] and torch.equal(expected[2], again[2])
