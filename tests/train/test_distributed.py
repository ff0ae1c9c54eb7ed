"""Two CPU processes (``accelerate launch``, DDP over gloo) on the tiny model: the same weights as one process with
twice the gradient accumulation, and a killed 2-process run resumed under 2 processes ends where an uninterrupted
one does."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from data_gen.convert import convert
from tests.convert.test_convert_llava import write_images
from train.config import TrainConfig
from train.sft import train

REPO = Path(__file__).resolve().parents[2]
ROWS = 8  # a multiple of both global batches (2 and 4), so epochs end on the same rows in both runs
TOLERANCE = 1e-5

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ddp")
    names = [f"t{k}.png" for k in range(ROWS)]
    write_images(root / "images", names)
    entries = [{"id": f"r{k}", "image": name, "conversations": [
        {"from": "human", "value": f"<image>\nWhere is tile {k}?"},
        {"from": "gpt", "value": f"Tile {k} is at [{10 * k}, 20, {10 * k + 300}, 400]."}]}
        for k, name in enumerate(names)]  # fmt: skip
    (root / "set.json").write_text(json.dumps(entries))
    assert convert("llava-1000", root / "set.json", root / "images", root / "ds").written == ROWS
    return root / "ds"


@pytest.fixture(scope="module")
def settings(tiny_model_spec) -> dict:
    # Dropout off: each process draws its own masks, so with it on no two layouts could agree.
    return dict(
        model={**tiny_model_spec, "lora_dropout": 0.0}, micro_batch_size=2, lr=3e-3, warmup_steps=1,
        max_length=512, eval_every=0, eval_at_start=False, log_every=1, num_threads=1, max_steps=4,
    )  # fmt: skip


def launch(settings: dict, data: Path, out: Path, grad_accum: int, **extra) -> subprocess.Popen:
    recipe = out.parent / f"{out.name}.yaml"
    recipe.write_text(yaml.safe_dump({**settings, "grad_accum": grad_accum, **extra}))
    # `--cpu` would pick accelerate's one-process launcher; `--multi_gpu` spawns the processes (torchrun) and
    # ACCELERATE_USE_CPU makes each one join a gloo group on the CPU.
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "ACCELERATE_USE_CPU": "true"}  # fmt: skip
    port = str(29500 + (os.getpid() + len(out.name)) % 1000)
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", port, "-m", "train.cli", "--recipe", str(recipe), "--data", str(data), "--out", str(out),
               f"datasets_cache={out.parent / 'hf'}"]  # fmt: skip
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)  # fmt: skip


def finish(process: subprocess.Popen, timeout: float = 240) -> str:
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output[-4000:]
    return output


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "final" / "model.safetensors")


def max_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


@pytest.fixture(scope="module")
def two_process_run(dataset, settings, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("two") / "run"
    finish(launch(settings, dataset, out, grad_accum=1, save_every=0))
    return out


def test_two_processes_equal_one_with_twice_the_accumulation(
    two_process_run, dataset, settings, tmp_path
) -> None:
    state = json.loads(next((two_process_run / "checkpoints").glob("step-*/trainer_state.json")).read_text())
    assert state["num_processes"] == 2 and state["step"] == 4
    one = train(TrainConfig(**settings, grad_accum=2, data=[str(dataset)], out=str(tmp_path / "one"),
                            save_every=1, keep_last=5, datasets_cache=str(tmp_path / "hf")))  # fmt: skip
    assert one.step == 4
    difference = max_difference(weights(two_process_run), weights(tmp_path / "one"))
    print(f"max |w(2 processes) - w(1 process, 2x accumulation)| = {difference:.3g}")
    assert difference <= TOLERANCE
    # The weights moved between steps: runs that learned nothing would pass the comparison too.
    step_one = load_file(tmp_path / "one" / "checkpoints" / "step-000001" / "model.safetensors")
    assert max_difference(step_one, weights(tmp_path / "one")) > 100 * TOLERANCE


def test_a_killed_two_process_run_resumes_to_the_same_weights(
    two_process_run, dataset, settings, tmp_path
) -> None:
    out = tmp_path / "run"
    process = launch(settings, dataset, out, grad_accum=1, save_every=1, keep_last=5)
    deadline = time.monotonic() + 240
    while not (out / "checkpoints" / "step-000002").is_dir():  # a complete checkpoint is renamed into place
        assert process.poll() is None and time.monotonic() < deadline, process.stdout.read()[-4000:]
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)  # the launcher and both workers, mid-run
    process.wait()
    assert not (out / "final").exists(), "the run ended before it was killed"
    output = finish(launch(settings, dataset, out, grad_accum=1, save_every=1, keep_last=5))
    assert "resumed from" in output
    difference = max_difference(weights(two_process_run), weights(out))
    print(f"max |w(killed + resumed) - w(uninterrupted)|, 2 processes = {difference:.3g}")
    assert difference == 0.0


def test_two_processes_equal_one_on_batches_using_different_parts(mixed_dataset, settings, tmp_path) -> None:
    """Rows with and without masks, one image and two dates, so the processes' batches use different parts of the
    model at each step: still the weights of one process with twice the accumulation."""
    mixed = {**settings, "max_steps": 5}
    two = tmp_path / "two"
    finish(launch(mixed, mixed_dataset, two, grad_accum=1, save_every=0))
    train(TrainConfig(**mixed, grad_accum=2, data=[str(mixed_dataset)], out=str(tmp_path / "one"), save_every=0,
                      datasets_cache=str(tmp_path / "hf")))  # fmt: skip
    difference = max_difference(weights(two), weights(tmp_path / "one"))
    print(f"max |w(2 processes) - w(1 process, 2x accumulation)|, mixed batches = {difference:.3g}")
    assert difference <= TOLERANCE


def test_a_micro_batch_whose_rows_were_all_skipped_still_runs_the_others_forward(
    mixed_dataset, mixed_settings, tmp_path
) -> None:
    """``max_length`` 60 drops the two-date rows (their image tokens do not fit), so with one row per process a
    process often has nothing to train on while the other has. It runs a stand-in row at weight zero: DDP syncs
    buffers in every forward, so a process that skipped its forward used to leave the other waiting forever."""
    skipping = {**mixed_settings, "micro_batch_size": 1, "max_length": 60, "eval_every": 0}
    two = tmp_path / "two"
    output = finish(launch(skipping, mixed_dataset, two, grad_accum=1, save_every=0))
    assert "image tokens beyond max_length=60" in output
    train(TrainConfig(**skipping, grad_accum=2, data=[str(mixed_dataset)], out=str(tmp_path / "one"), save_every=0,
                      datasets_cache=str(tmp_path / "hf")))  # fmt: skip
    difference = max_difference(weights(two), weights(tmp_path / "one"))
    print(f"max |w(2 processes) - w(1 process, 2x accumulation)|, rows skipped = {difference:.3g}")
    assert difference <= TOLERANCE
