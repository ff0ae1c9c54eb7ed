"""`rsvlm train` / `python -m train.cli`: a run from a recipe file, and one-line errors with exit code 2."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from rsvlm.cli import main as rsvlm_main
from train.cli import main as train_main

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture
def recipe(tmp_path: Path, tiny_model_spec) -> Path:
    path = tmp_path / "tiny.yaml"
    values = {"model": tiny_model_spec, "micro_batch_size": 2, "grad_accum": 1, "eval_at_start": False,
              "eval_batches": 1, "num_threads": 1, "datasets_cache": str(tmp_path / "hf")}  # fmt: skip
    path.write_text(yaml.safe_dump(values))
    return path


def test_rsvlm_train_runs_a_recipe(recipe: Path, tiny_dataset: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    argv = ["train", "--recipe", str(recipe), "--data", str(tiny_dataset), "lr=1e-3", "model.lora_r=2"]
    code = rsvlm_main([*argv, "--out", str(out), "--max-steps", "2", "save_every=1", "keep_last=1"])
    assert code == 0
    assert f"step 2: final model in {out / 'final'}" in capsys.readouterr().out
    state = yaml.safe_load((out / "checkpoints" / "step-000002" / "trainer_state.json").read_text())
    assert state["config"]["lr"] == 1e-3 and state["config"]["model"]["lora_r"] == 2
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step-000002"]
    from safetensors.torch import load_file

    lora = [v for k, v in load_file(out / "final" / "model.safetensors").items() if "lora_A" in k]
    assert lora and all(t.shape[0] == 2 for t in lora)  # r from the override
    assert all(torch.isfinite(t).all() for t in lora)


@pytest.mark.parametrize(
    "extra, match",
    [
        (["learning_rate=1"], "unknown key 'learning_rate'"),
        (["mixed_precision=fp16"], "mixed_precision must be one of no, bf16"),
        (["lr"], "not of the form key=value"),
        (["model.lora_rank=4"], "unknown RSVLMConfig field"),
    ],
)
def test_errors_are_one_line_exit_2(recipe, tiny_dataset, tmp_path, capsys, extra, match) -> None:
    argv = ["--recipe", str(recipe), "--data", str(tiny_dataset), "--out", str(tmp_path / "o"), *extra]
    assert train_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("rsvlm train: error:")
    import re

    assert re.search(match, err), err
    assert not (tmp_path / "o" / "checkpoints").exists()


def test_missing_data_and_recipe(recipe, tmp_path, capsys) -> None:
    assert (
        train_main(["--recipe", str(recipe), "--data", str(tmp_path / "none"), "--out", str(tmp_path / "o")])
        == 2
    )
    assert "does not exist" in capsys.readouterr().err
    assert train_main(["--recipe", "no-such", "--data", str(tmp_path)]) == 2
    assert "neither a file nor a recipe name" in capsys.readouterr().err
    assert train_main(["--recipe", str(recipe)]) == 2  # no --data anywhere
    assert "no dataset given" in capsys.readouterr().err
    assert train_main(["--help"]) == 0 and "--recipe" in capsys.readouterr().out


def test_the_loop_does_not_import_its_entry_point() -> None:
    """train.cli imports train.sft to run it; the reverse would close an import circle."""
    import ast

    import train.sft

    tree = ast.parse(Path(train.sft.__file__).read_text(encoding="utf-8"))
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {a.name for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names}
    assert "train.cli" not in imported
