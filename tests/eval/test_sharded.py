"""``accelerate launch -m eval.cli`` on two CPU processes (gloo) with the tiny random model: the merged summary is
the one-process summary, and a run whose shards were killed part-way (one mid-line) resumes and ends the same."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
PAIRS = 6
ENV = {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


@pytest.fixture(scope="module")
def change_set(tmp_path_factory) -> Path:
    """LEVIR-CD layout (A/, B/, label/ with 0 / 255 labels), random pixels: the random mask decoder's masks
    overlap each label by different amounts, so the figures being equal says something."""
    root = tmp_path_factory.mktemp("cd")
    rng = np.random.default_rng(0)
    for d in ("A", "B", "label"):
        (root / d).mkdir()
    for k in range(PAIRS):
        for d in ("A", "B"):
            Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(root / d / f"p{k}.png")
        label = np.zeros((48, 48), np.uint8)
        label[: 8 * (k + 1)] = 255
        Image.fromarray(label).save(root / "label" / f"p{k}.png")
    return root


def _eval_args(data: Path, model: Path, out: Path) -> list[str]:
    return ["-m", "eval.cli", "--benchmark", "levircd", "--data", str(data), "--model", str(model),
            "--max-new-tokens", "3", "--out", str(out)]  # fmt: skip


def run_one_process(data: Path, model: Path, out: Path) -> None:
    done = subprocess.run([sys.executable, *_eval_args(data, model, out)], cwd=REPO, env={**os.environ, **ENV},
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]


def run_two_processes(data: Path, model: Path, out: Path) -> str:
    # `--multi_gpu` spawns the processes (torchrun); ACCELERATE_USE_CPU makes each join a gloo group on the CPU.
    port = str(29500 + (os.getpid() + len(out.name) + 517) % 1000)
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", port, *_eval_args(data, model, out)]  # fmt: skip
    env = {**os.environ, **ENV, "ACCELERATE_USE_CPU": "true"}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    return done.stdout


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_two_processes_merge_to_the_one_process_summary_and_a_killed_run_resumes(
    change_set, tiny_checkpoint, tmp_path
):
    run_one_process(change_set, tiny_checkpoint, tmp_path / "one")
    one = json.loads((tmp_path / "one/summary.json").read_text())
    assert one["tasks"]["change_mask"]["n"] == PAIRS and 0 < one["tasks"]["change_mask"]["oa"] < 1

    printed = run_two_processes(change_set, tiny_checkpoint, tmp_path / "two")
    two = json.loads((tmp_path / "two/summary.json").read_text())
    assert two == one
    assert json.loads(printed) == one["tasks"]  # printed once, by the main process
    merged = rows(tmp_path / "two/samples.jsonl")
    assert [r["id"] for r in merged] == [f"p{k}" for k in range(PAIRS)]
    assert not list((tmp_path / "two").glob("samples.shard*"))  # folded into samples.jsonl
    strip = ("seconds",)
    assert [{k: v for k, v in r.items() if k not in strip} for r in merged] == [
        {k: v for k, v in r.items() if k not in strip} for r in rows(tmp_path / "one/samples.jsonl")
    ]

    # Killed part-way: shard 0 (p0, p2, p4) wrote p0; shard 1 (p1, p3, p5) wrote p1 and was cut inside p3's line.
    # The rows kept are marked, so the resumed run shows which records it asked again.
    killed = tmp_path / "killed"
    killed.mkdir()
    by_id = {r["id"]: {**r, "kept": True} for r in merged}
    (killed / "samples.shard0-of-2.jsonl").write_text(json.dumps(by_id["p0"]) + "\n")
    (killed / "samples.shard1-of-2.jsonl").write_text(
        json.dumps(by_id["p1"]) + "\n" + json.dumps(by_id["p3"])[:40]
    )
    run_two_processes(change_set, tiny_checkpoint, killed)
    assert json.loads((killed / "summary.json").read_text()) == one
    resumed = rows(killed / "samples.jsonl")
    assert [r["id"] for r in resumed] == [f"p{k}" for k in range(PAIRS)]
    assert [r["id"] for r in resumed if r.get("kept")] == ["p0", "p1"]  # the torn p3 was asked again
    assert not list(killed.glob("samples.shard*"))
