"""FSDP2 checkpoints on CPU: two gloo processes shard the tiny model, ``train.fsdp`` gathers what the trainer
writes and cuts a resume back into shards, and the weights match the unsharded model step for step.

(``accelerate`` only enables FSDP on accelerators, so this drives ``fully_shard`` itself, as accelerate's
``TRANSFORMER_BASED_WRAP`` does, with the same load-then-shard order as ``train.sft``.)"""

from __future__ import annotations

import json
import os
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
