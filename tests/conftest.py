"""Shared fixtures: tiny random backbones written to folders by ``rsvlm.testing`` (nothing is downloaded)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rsvlm.testing import write_tiny_llm, write_tiny_sam, write_tiny_tokenizer, write_tiny_vit


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory) -> Path:
    return write_tiny_tokenizer(tmp_path_factory.mktemp("tiny_tokenizer"))


@pytest.fixture(scope="session")
def tiny_llm_dir(tmp_path_factory, tiny_tokenizer_dir) -> Path:
    return write_tiny_llm(tmp_path_factory.mktemp("tiny_llm"), tiny_tokenizer_dir)


@pytest.fixture(scope="session")
def tiny_vit_dir(tmp_path_factory) -> Path:
    return write_tiny_vit(tmp_path_factory.mktemp("tiny_vit"))


@pytest.fixture(scope="session")
def tiny_sam_dir(tmp_path_factory) -> Path:
    return write_tiny_sam(tmp_path_factory.mktemp("tiny_sam"))


@pytest.fixture
def tiny_config(tiny_llm_dir, tiny_vit_dir):
    from rsvlm.configuration_rsvlm import RSVLMConfig

    return RSVLMConfig.tiny(text_model=str(tiny_llm_dir), vision_model=str(tiny_vit_dir))


@pytest.fixture
def single_thread():
    """Tiny models run fastest on one thread; on a shared 2-core box two threads mostly wait on each other."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def tiny_model(tiny_config, single_thread):
    from rsvlm.modeling_rsvlm import RSVLMForConditionalGeneration

    torch.manual_seed(0)
    return RSVLMForConditionalGeneration(tiny_config)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tiny_llm_dir, tiny_vit_dir) -> Path:
    """A saved tiny rsvlm checkpoint (128 px input) for the Assistant and the CLI."""
    from rsvlm.configuration_rsvlm import RSVLMConfig
    from rsvlm.modeling_rsvlm import RSVLMForConditionalGeneration

    torch.manual_seed(0)
    config = RSVLMConfig.tiny(text_model=str(tiny_llm_dir), vision_model=str(tiny_vit_dir), image_size=128)
    path = tmp_path_factory.mktemp("tiny_checkpoint")
    RSVLMForConditionalGeneration(config).save_pretrained(path)
    return path
