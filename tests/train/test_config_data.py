"""TrainConfig (recipes, overrides, one-line errors) and train.data (decoding, bad rows, order, cutting)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from PIL import Image

from train.config import RECIPES, TrainConfig, TrainConfigError, parse_override
from train.data import BatchBuilder, SFTData, decode_image, decode_mask, epoch_batches, eval_batches

pytestmark = pytest.mark.usefixtures("single_thread")


# ---------------------------------------------------------------------------------------------------- config


def test_recipes_load_and_name_real_fields() -> None:
    names = sorted(p.stem for p in RECIPES.glob("*.yaml"))
    assert {"default-cpu", "lora", "qlora"} <= set(names)
    for name in names:
        cfg = TrainConfig.from_yaml(name, data=["somewhere"])
        assert cfg.data == ["somewhere"]
    cpu = TrainConfig.from_yaml("default-cpu")
    assert cpu.model["lora_r"] == 8 and cpu.model["image_size"] == 256 and cpu.mixed_precision == "no"
    assert TrainConfig.from_yaml("qlora").model["load_in_4bit"] is True
    assert TrainConfig.from_yaml("lora").mixed_precision == "bf16"


def test_overrides_and_model_keys(tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"model": {"lora_r": 8}, "lr": 1e-4}))
    key, value = parse_override("model.lora_r=16")
    cfg = TrainConfig.from_yaml(recipe, **{key: value}, **dict([parse_override("lr=3e-4")]), max_steps=None)
    assert cfg.model == {"lora_r": 16} and cfg.lr == pytest.approx(3e-4) and cfg.max_steps is None
    assert parse_override("tasks=[vqa, gcg]") == ("tasks", ["vqa", "gcg"])
    assert TrainConfig.from_yaml(None, **{"model.image_size": 128}).model == {"image_size": 128}


@pytest.mark.parametrize(
    "raw, match",
    [
        ({"learning_rate": 1e-4}, "unknown key.*learning_rate"),
        ({"mixed_precision": "fp16"}, "mixed_precision must be one of no, bf16"),
        ({"micro_batch_size": 0}, "micro_batch_size must be a positive integer"),
        ({"tasks": ["vqa", "dance"]}, "unknown task.*dance"),
        ({"schedule": "linear"}, "schedule must be one of"),
        ({"max_steps": -3}, "max_steps must be a positive integer"),
    ],
)
def test_config_errors_are_one_line(raw, match) -> None:
    with pytest.raises(TrainConfigError, match=match) as info:
        TrainConfig.from_dict(raw, where="recipe.yaml")
    assert "\n" not in str(info.value)


def test_recipe_errors(tmp_path: Path) -> None:
    with pytest.raises(TrainConfigError, match="neither a file nor a recipe name.*default-cpu"):
        TrainConfig.from_yaml("no-such-recipe")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a\n- b\n")
    with pytest.raises(TrainConfigError, match="mapping"):
        TrainConfig.from_yaml(bad)
    with pytest.raises(TrainConfigError, match="not of the form key=value"):
        parse_override("lr")
    with pytest.raises(TrainConfigError, match="unknown key 'lerning_rate'"):
        parse_override("lerning_rate=1")


# ---------------------------------------------------------------------------------------------------- data


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def test_decode_image_and_mask() -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    image = decode_image({"bytes": _png(rgb)})
    assert image.shape == (3, 5, 7) and image.dtype == np.float32
    assert np.allclose(image, rgb.transpose(2, 0, 1) / 255.0)
    mask = np.zeros((5, 7), bool)
    mask[1:3, 2:6] = True
    assert np.array_equal(decode_mask(_png(mask)), mask.astype(np.float32))


def test_reads_the_generated_dataset(tiny_dataset: Path, tmp_path: Path) -> None:
    data = SFTData([tiny_dataset], "train", cache_dir=str(tmp_path / "c"))
    rows = pq.read_table(sorted((tiny_dataset / "data").glob("train-*.parquet"))[0]).to_pylist()
    assert (
        len(data) == sum(len(pq.read_table(p)) for p in (tiny_dataset / "data").glob("train-*.parquet"))
        and not data.skipped
    )
    with_masks = next(i for i in range(len(data)) if len(data.dataset[i]["masks"]))
    example, reason = data.example(with_masks)
    assert reason is None and example.images[0].shape == (3, 64, 64)
    seg = sum(m["content"].count("[SEG]") for m in example.conversation)
    assert seg == len(example.masks) > 0 and set(np.unique(example.masks[0])) <= {0.0, 1.0}
    assert rows[0]["ref_masks"] is not None  # present in the schema, never used as [SEG] targets
    only = SFTData([tiny_dataset], "train", tasks=["gcg"], cache_dir=str(tmp_path / "c"))
    assert 0 < len(only) < len(data) and set(only.dataset["task"]) == {"gcg"}


def _corrupt_copy(src: Path, dst: Path) -> Path:
    """A copy of the train shards with one row's masks removed and one row's image bytes broken."""
    (dst / "data").mkdir(parents=True)
    table = pq.read_table(sorted((src / "data").glob("train-*.parquet"))[0])
    rows = table.to_pylist()
    seg_row = next(i for i, r in enumerate(rows) if r["masks"])
    rows[seg_row]["masks"] = []
    other = next(i for i, r in enumerate(rows) if i != seg_row and not r["masks"])
    rows[other]["images"] = [{"bytes": b"not a png", "path": None}]
    fixed = pa.Table.from_pylist(rows, schema=table.schema)
    pq.write_table(fixed, dst / "data" / "train-00000.parquet")
    return dst


def test_bad_rows_are_counted_and_skipped(tiny_dataset: Path, tmp_path: Path, caplog, processor) -> None:
    folder = _corrupt_copy(tiny_dataset, tmp_path / "bad")
    with caplog.at_level("WARNING"):
        data = SFTData([folder], "train", cache_dir=str(tmp_path / "c"))
    assert data.skipped == {"[SEG] count differs from the masks": 1}
    assert "skipped 1 row" in caplog.text
    total = len(pq.read_table(folder / "data" / "train-00000.parquet"))
    assert len(data) == total - 1

    builder = BatchBuilder(data, processor, max_length=4096)
    batch, skipped = builder.build(list(range(len(data))))
    assert skipped == {"undecodable image or mask": 1}
    assert batch["input_ids"].shape[0] == len(data) - 1
    assert [m.shape[0] for m in batch["seg_masks"]] == (batch["labels"] == processor.seg_token_id).sum(
        -1
    ).tolist()


@pytest.fixture(scope="module")
def processor(tiny_llm_dir):
    """The processor the tiny model would build (64 px, 4 image tokens), without building the model."""
    from transformers import AutoTokenizer

    from rsvlm.processing_rsvlm import RSVLMProcessor

    return RSVLMProcessor(AutoTokenizer.from_pretrained(tiny_llm_dir), image_size=64, num_image_tokens=4)


def test_cutting_to_max_length_keeps_images_and_pairs_masks(
    tiny_dataset: Path, tmp_path: Path, processor
) -> None:
    data = SFTData([tiny_dataset], "train", tasks=["gcg"], cache_dir=str(tmp_path / "c"))
    full, _ = BatchBuilder(data, processor, max_length=4096).build([0])
    seg_positions = (full["labels"][0] == processor.seg_token_id).nonzero().flatten().tolist()
    assert len(seg_positions) >= 2
    limit = seg_positions[1]  # cuts off the second [SEG] and everything after
    cut, skipped = BatchBuilder(data, processor, max_length=limit).build([0])
    assert not skipped and cut["input_ids"].shape[1] == limit
    assert cut["seg_masks"][0].shape[0] == 1
    assert torch.equal(cut["seg_masks"][0][0], full["seg_masks"][0][0])
    image_end = int((full["input_ids"][0] == processor.image_token_id).nonzero().max())
    batch, skipped = BatchBuilder(data, processor, max_length=image_end).build([0])  # cuts the image tokens
    assert batch is None and skipped == {f"image tokens beyond max_length={image_end}": 1}


def test_epoch_order_is_a_deterministic_permutation() -> None:
    a = epoch_batches(23, 4, seed=3, epoch=0)
    assert a == epoch_batches(23, 4, seed=3, epoch=0)
    assert len(a) == 5 and all(len(b) == 4 for b in a)
    flat = [i for b in a for i in b]
    assert len(set(flat)) == 20 and set(flat) <= set(range(23))
    assert a != epoch_batches(23, 4, seed=3, epoch=1) and a != epoch_batches(23, 4, seed=4, epoch=0)
    assert eval_batches(5, 2) == [[0, 1], [2, 3], [4]] and eval_batches(5, 2, limit=1) == [[0, 1]]
    with pytest.raises(ValueError, match="fewer than one global batch"):
        epoch_batches(3, 4, seed=0, epoch=0)


def test_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        SFTData([tmp_path / "nope"], "train")
    (tmp_path / "empty" / "data").mkdir(parents=True)
    assert len(SFTData([tmp_path / "empty"], "train")) == 0


def test_worker_processes_build_the_same_batches(tiny_dataset: Path, tmp_path: Path, processor) -> None:
    from train.data import loader

    data = SFTData([tiny_dataset], "train", cache_dir=str(tmp_path / "c"))
    builder = BatchBuilder(data, processor, max_length=512)
    plan = epoch_batches(len(data), 2, seed=0, epoch=0)[:3]
    inline = [b for b, _ in loader(builder, plan, num_workers=0, seed=0)]
    forked = [b for b, _ in loader(builder, plan, num_workers=1, seed=0)]
    for a, b in zip(inline, forked, strict=True):
        assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(
            a["pixel_values"], b["pixel_values"]
        )
        assert all(torch.equal(x, y) for x, y in zip(a["seg_masks"], b["seg_masks"], strict=True))
