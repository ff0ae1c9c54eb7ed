"""FSDP2 on CPU, two gloo processes.

- ``fully_shard`` driven directly, as accelerate's ``TRANSFORMER_BASED_WRAP`` does: ``train.fsdp`` gathers what
  the trainer writes and cuts a resume back into shards, and the weights match the unsharded model step for step;
- the trainer's own launch (``accelerate launch --config_file train/accelerate/fsdp.yaml``), with accelerate's
  accelerator-only check let through on CPU: the same weights as DDP, and a stopped run resumes exactly."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.usefixtures("single_thread")


def test_fsdp_checkpoint_is_whole_and_a_sharded_resume_matches_the_unsharded_model(
    tiny_llm_dir, tiny_vit_dir, tmp_path
):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    port = str(29500 + os.getpid() % 1000)
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", port,
               str(REPO / "tests/train/fsdp_worker.py"), str(tiny_llm_dir), str(tiny_vit_dir), str(tmp_path / "ck")]  # fmt: skip
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    reports = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert sorted(r["rank"] for r in reports) == [0, 1]
    for report in reports:
        print(report)
        assert report["sharded_parameters"] > 20  # LoRA, new-token rows and heads really are DTensor shards
        assert report["keys_equal"] and report["written_whole"]
        assert report["moved"] > 1e-3  # three steps moved the weights away from step two's checkpoint
        assert report["max_difference"] <= 1e-5


def launch_fsdp(settings: dict, data: Path, out: Path, **extra) -> subprocess.Popen:
    """The trainer under ``accelerate launch --config_file train/accelerate/fsdp.yaml`` on 2 CPU processes.

    accelerate turns FSDP on only on accelerators; ``fsdp_on_cpu/sitecustomize.py`` lets it on CPU processes too,
    so the trainer's own FSDP path (accelerate's ``fully_shard`` of the shipped config, the gathered checkpoints,
    the re-sharded resume, lockstep evaluation) runs here as it would on GPUs."""
    import yaml

    recipe = out.parent / f"{out.name}.yaml"
    recipe.write_text(yaml.safe_dump({**settings, "grad_accum": 1, **extra}))
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'tests/train/fsdp_on_cpu'}:{REPO}", "OMP_NUM_THREADS": "1",
           "TOKENIZERS_PARALLELISM": "false", "ACCELERATE_USE_CPU": "true"}  # fmt: skip
    port = str(29300 + (os.getpid() + len(out.name)) % 200)
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", "train/accelerate/fsdp.yaml",
               "--fsdp_transformer_layer_cls_to_wrap", "LlamaDecoderLayer", "--num_processes", "2",
               "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", port,
               "-m", "train.cli", "--recipe", str(recipe), "--data", str(data), "--out", str(out),
               f"datasets_cache={out.parent / 'hf'}"]  # fmt: skip
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)  # fmt: skip


def test_the_trainers_fsdp_launch_equals_ddp_and_resumes_exactly(
    mixed_dataset, mixed_settings, mixed_ddp_run, tmp_path
):
    from tests.train.test_distributed import TOLERANCE, finish, max_difference, weights

    whole = tmp_path / "whole"
    output = finish(launch_fsdp(mixed_settings, mixed_dataset, whole, save_every=0), timeout=420)
    sharded = re.search(r"FSDP: (\d+) parameters sharded over 2 processes", output)
    assert sharded and int(sharded.group(1)) > 20
    difference = max_difference(weights(whole), weights(mixed_ddp_run))
    print(f"max |w(FSDP, the trainer's launch) - w(DDP)|, 2 processes = {difference:.3g}")  # measured 0
    assert difference <= TOLERANCE

    out = tmp_path / "stopped"
    finish(launch_fsdp(mixed_settings, mixed_dataset, out, save_every=1, keep_last=10, stop_after_steps=2))
    output = finish(launch_fsdp(mixed_settings, mixed_dataset, out, save_every=1, keep_last=10), timeout=420)
    assert "resumed from" in output and "step 2," in output
    difference = max_difference(weights(out), weights(whole))
    # Measured 0.
    print(f"max |w(stopped + resumed) - w(uninterrupted)|, FSDP, 2 processes = {difference:.3g}")
    assert difference <= TOLERANCE


def test_fsdp_with_skipped_rows_in_training_and_evaluation_equals_ddp(
    mixed_dataset, mixed_settings, tmp_path
):
    """A process whose micro-batch or evaluation batch was all skipped (two-date rows beyond ``max_length`` 60)
    runs a stand-in forward, since every sharded forward gathers parameters from all processes."""
    from tests.train.test_distributed import TOLERANCE, finish, launch, max_difference, weights

    skipping = {**mixed_settings, "micro_batch_size": 1, "max_length": 60}
    finish(launch(skipping, mixed_dataset, tmp_path / "ddp", grad_accum=1, save_every=0))
    output = finish(launch_fsdp(skipping, mixed_dataset, tmp_path / "fsdp", save_every=0), timeout=420)
    assert "image tokens beyond max_length=60" in output and "eval step 2" in output
    difference = max_difference(weights(tmp_path / "fsdp"), weights(tmp_path / "ddp"))
    print(f"max |w(FSDP) - w(DDP)|, rows skipped = {difference:.3g}")  # measured 0
    assert difference <= TOLERANCE
