"""Fixtures for the trainer tests: a tiny instruction dataset made by ``data_gen`` from a code-written GeoTIFF and
label raster, and a ``TrainConfig`` on the tiny random backbones of ``tests/conftest.py``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.data_gen.source_fixtures import write_raster

SIZE = 128  # scene side in pixels: 2 x 2 tiles of 64, one block each
# landcover.ai: 0 background, 1 building, 2 woodland, 3 water, 4 road
COLOURS = {0: (150, 120, 90), 1: (225, 225, 225), 2: (40, 95, 40), 3: (30, 60, 125), 4: (175, 175, 175)}


def scene_labels() -> np.ndarray:
    lab = np.zeros((SIZE, SIZE), np.uint8)
    lab[:, :40] = 2
    lab[:, 90:] = 3
    lab[60:66, :] = 4
    lab[10:30, 48:70] = 1
    lab[80:100, 44:60] = 1
    lab[100:120, 70:86] = 1
    return lab


def scene_rgb(lab: np.ndarray) -> np.ndarray:
    img = np.zeros((3, SIZE, SIZE), np.uint8)
    for value, colour in COLOURS.items():
        for band in range(3):
            img[band][lab == value] = colour[band]
    noise = np.random.default_rng(0).integers(0, 20, img.shape)
    return (img.astype(np.int16) + noise).clip(0, 255).astype(np.uint8)


def make_dataset(folder: Path, tasks=("caption", "vqa", "grounding", "gcg")) -> Path:
    """``rsvlm gen`` on a 128 x 128 UTM GeoTIFF: 4 tiles of 64 px, 2 blocks to train, 2 to validation."""
    from data_gen.config import GenConfig
    from data_gen.driver import build_dataset

    lab = scene_labels()
    image = write_raster(folder / "scene" / "image.tif", scene_rgb(lab))
    labels = write_raster(folder / "scene" / "labels.tif", lab)
    cfg = GenConfig(
        image=str(image),
        labels=str(labels),
        taxonomy="landcover.ai",
        tile_size=64,
        block_size=1,
        split_fractions=(0.5, 0.5, 0.0),
        tasks=tuple(tasks),
        out=str(folder / "ds"),
    )
    return build_dataset(cfg)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("train_data"))


@pytest.fixture(scope="session")
def mixed_dataset(tmp_path_factory) -> Path:
    """Rows with and without masks, one image and two dates: the processes' batches differ in what they use."""
    tasks = ("caption", "vqa", "grounding", "gcg", "change")
    return make_dataset(tmp_path_factory.mktemp("mixed_data"), tasks=tasks)


@pytest.fixture(scope="session")
def mixed_settings(tiny_model_spec) -> dict:
    """A recipe for two-process runs on ``mixed_dataset``: dropout off (each process draws its own masks, so with
    it on no two layouts could agree), evaluation every 2 steps, 6 steps."""
    return dict(
        model={**tiny_model_spec, "lora_dropout": 0.0}, micro_batch_size=2, lr=3e-3, warmup_steps=1,
        max_length=512, eval_every=2, eval_at_start=False, log_every=1, num_threads=1, max_steps=6,
    )  # fmt: skip


@pytest.fixture(scope="session")
def mixed_ddp_run(mixed_dataset, mixed_settings, tmp_path_factory) -> Path:
    """DDP on 2 CPU processes over ``mixed_dataset``: the reference the sharded launches are compared with."""
    from tests.train.test_distributed import finish, launch

    out = tmp_path_factory.mktemp("mixed_ddp") / "run"
    finish(launch(mixed_settings, mixed_dataset, out, grad_accum=1, save_every=0), timeout=420)
    return out


@pytest.fixture(scope="session")
def tiny_model_spec(tiny_llm_dir, tiny_vit_dir) -> dict:
    """The ``model:`` mapping of a recipe for the tiny random backbones (``RSVLMConfig.tiny`` sizes)."""
    return {
        "text_model": str(tiny_llm_dir),
        "vision_model": str(tiny_vit_dir),
        "image_size": 64,
        "num_image_tokens": 4,
        "decoder_dim": 32,
        "decoder_depth": 1,
        "decoder_heads": 2,
        "highres_dim": 8,
        "lora_r": 4,
        "lora_alpha": 8,
        "lora_dropout": 0.1,
        "lora_target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"],
        "system_prompt": "",
    }


@pytest.fixture
def make_config(tiny_dataset, tiny_model_spec, tmp_path):
    """``make_config(**overrides) -> TrainConfig`` for the tiny model and dataset, writing under ``tmp_path``."""
    from train.config import TrainConfig

    def make(**overrides):
        values = dict(
            model=tiny_model_spec,
            data=[str(tiny_dataset)],
            out=str(tmp_path / "run"),
            micro_batch_size=2,
            grad_accum=2,
            lr=3e-3,
            warmup_steps=2,
            max_length=512,
            eval_every=0,
            eval_at_start=False,
            eval_batches=4,
            save_every=0,
            log_every=5,
            num_threads=1,
            datasets_cache=str(tmp_path / "hf_cache"),
        )
        values.update(overrides)
        return TrainConfig(**values)

    return make
