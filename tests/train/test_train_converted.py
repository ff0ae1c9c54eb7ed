"""A converted GeoChat-style set trains: `rsvlm convert geochat` output read by the trainer, one optimizer step on
the tiny random model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from data_gen.convert import convert
from tests.convert.test_convert_llava import geochat_entries, write_images
from train.config import TrainConfig
from train.sft import train

pytestmark = pytest.mark.usefixtures("single_thread")


def test_a_converted_geochat_row_trains_one_step(tmp_path: Path, tiny_model_spec) -> None:
    write_images(tmp_path / "images", ["a.png", "b.png"])
    (tmp_path / "geochat.json").write_text(json.dumps(geochat_entries()))
    report = convert("geochat", tmp_path / "geochat.json", tmp_path / "images", tmp_path / "ds")
    assert report.written == 4
    cfg = TrainConfig(
        model=tiny_model_spec, data=[str(tmp_path / "ds")], out=str(tmp_path / "run"), max_steps=1,
        micro_batch_size=2, grad_accum=1, max_length=512, eval_every=0, eval_at_start=False, save_every=0,
        num_threads=1, datasets_cache=str(tmp_path / "hf_cache"),
    )  # fmt: skip
    result = train(cfg)
    assert result.step == 1 and result.final_dir is not None and not result.skipped
    (record,) = [r for r in result.history if "loss" in r]
    assert record["loss"] > 0 and record["samples_per_s"]
