"""eval.gpu_check: skips cleanly without CUDA; its pieces run on CPU so the script cannot rot unseen."""

from __future__ import annotations

import pytest
import torch

from eval import gpu_check

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def backbones(tmp_path_factory):
    return gpu_check.build_tiny_backbones(tmp_path_factory.mktemp("gpu_check"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA path")
def test_without_cuda_it_says_skipped_and_exits_0(capsys):
    assert gpu_check.main([]) == 0
    assert capsys.readouterr().out.strip() == "no CUDA device: skipped"


def test_bf16_autocast_check_runs_on_cpu(backbones):
    figures = gpu_check.check_bf16_autocast(*backbones, device="cpu")
    assert figures["check"] == "bf16_autocast_forward_backward" and figures["loss"] > 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU message")
def test_qlora_check_on_cpu_is_a_clear_error(backbones):
    with pytest.raises(ValueError, match="needs a CUDA GPU"):
        gpu_check.check_qlora_step(*backbones)
