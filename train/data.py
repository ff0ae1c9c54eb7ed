"""Instruction data for training: ``rsvlm gen`` parquet shards -> decoded samples -> model batches.

    data = SFTData(["out/ds"], split="train", tasks=["grounding", "gcg"])
    plan = epoch_batches(len(data), global_batch=8, seed=0, epoch=0)   # [[row, ...], ...], same for a seed
    batch, skipped = BatchBuilder(data, processor, max_length=1024).build(plan[0])

Rows are read with ``datasets`` (images and masks stay PNG bytes until a batch needs them). Only ``masks`` are
``[SEG]`` targets; ``ref_masks`` (masks behind box answers) are not read. A row that cannot train — ``[SEG]`` count
different from its masks, ``<image>`` count different from its images, an image or mask that does not decode, a
mask of another size than its image — is skipped and counted with a warning; it never stops a run.

The order of an epoch is a permutation drawn from ``(seed, epoch)`` only, so a resumed run replays the same
batches and can start after the ones already consumed.
"""

from __future__ import annotations

import io
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rsvlm.grounding import IMAGE_TOKEN, SEG_TOKEN
from rsvlm.processing_rsvlm import IGNORE_INDEX, ProcessorInputError

logger = logging.getLogger(__name__)

COLUMNS = ("id", "images", "conversations", "masks", "task")


class DataError(ValueError):
    """A dataset folder the trainer cannot read (no shards for a split, wrong schema); the message says which."""


@dataclass
class Example:
    """One decoded row: images ``[3, H, W]`` float32 in [0, 1] (1 or 2 dates), masks ``[H, W]`` float32 in
    ``[SEG]`` order, on the grid of the last image."""

    id: str
    conversation: list[dict[str, str]]
    images: list[np.ndarray]
    masks: list[np.ndarray]


def shard_files(folder: str | Path, split: str) -> list[str]:
    """The parquet shards of one split in an ``rsvlm gen`` output folder (``data/{split}-NNNNN.parquet``)."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise DataError(f"dataset folder {root} does not exist")
    data_dir = root / "data" if (root / "data").is_dir() else root
    return [str(p) for p in sorted(data_dir.glob(f"{split}-*.parquet"))]


def _row_sources(per_folder: list[list[str]]) -> np.ndarray:
    """The source (folder) index of every row, in the order ``load_dataset`` reads the files."""
    import pyarrow.parquet as pq

    counts = [(k, pq.ParquetFile(f).metadata.num_rows) for k, files in enumerate(per_folder) for f in files]
    return np.repeat([k for k, _ in counts], [n for _, n in counts]).astype(np.int64)


def _row_problem(conversation: list[dict], images: list, masks: list) -> str | None:
    """Why a row cannot train, from its text and list lengths alone (no image decoding), else ``None``."""
    if not conversation or not any(m.get("role") == "assistant" for m in conversation):
        return "no assistant turn"
    text = "".join(m.get("content") or "" for m in conversation)
    if not 1 <= len(images) <= 2:
        return f"{len(images)} images (1 or 2 are trained on)"
    if text.count(IMAGE_TOKEN) != len(images):
        return "<image> count differs from the images"
    seg = sum((m.get("content") or "").count(SEG_TOKEN) for m in conversation if m.get("role") == "assistant")
    if seg != len(masks) or text.count(SEG_TOKEN) != seg:
        return "[SEG] count differs from the masks"
    return None


class SFTData:
    """The rows of one split of one or more ``rsvlm gen`` folders, optionally filtered to some task families.

    ``skipped`` counts rows dropped, by reason (filled when the split is read and as rows are decoded).
    """

    def __init__(
        self,
        folders: Sequence[str | Path],
        split: str = "train",
        tasks: Sequence[str] | None = None,
        cache_dir: str | None = None,
    ) -> None:
        from datasets import Image, List, load_dataset
        from datasets.utils import logging as datasets_logging

        if not folders:
            raise DataError("no dataset given: pass --data FOLDER (an `rsvlm gen` output)")
        per_folder = [shard_files(folder, split) for folder in folders]
        files = [f for folder_files in per_folder for f in folder_files]
        self.split = split
        self.skipped: Counter[str] = Counter()
        self.source_names = [str(f) for f in folders]
        self.sources = np.zeros(0, dtype=np.int64)  # index into source_names of every row, for --mix
        if not files:
            self.dataset = None
            return
        bars_were_on = datasets_logging.is_progress_bar_enabled()
        datasets_logging.disable_progress_bar()  # the trainer's own bars say what is happening
        try:
            dataset = load_dataset("parquet", data_files={split: files}, split=split, cache_dir=cache_dir)
            missing = sorted(set(COLUMNS) - set(dataset.column_names))
            if missing:
                raise DataError(f"the {split} shards lack column(s) {missing}: not an `rsvlm gen` dataset")
            dataset = dataset.select_columns(list(COLUMNS))
            features = dataset.features.copy()
            for column in ("images", "masks"):  # keep PNG bytes; a batch decodes only what it uses
                features[column] = List(Image(decode=False))
            dataset = dataset.cast(features)
        except DataError:
            raise
        except Exception as error:  # a corrupt shard or another schema: say which folder, in one line
            raise DataError(
                f"cannot read the {split} shards of {', '.join(map(str, folders))}: {error}"
            ) from None
        finally:
            if bars_were_on:
                datasets_logging.enable_progress_bar()
        sources = _row_sources(per_folder)
        if len(sources) != len(dataset):
            raise DataError(f"the {split} shards hold {len(dataset)} rows but their metadata {len(sources)}")
        if tasks is not None:
            wanted = set(tasks)
            keep = [i for i, task in enumerate(dataset["task"]) if task in wanted]
            dataset = dataset.select(keep)
            sources = sources[keep]
        problems = [
            _row_problem(c, i, m)
            for c, i, m in zip(dataset["conversations"], dataset["images"], dataset["masks"], strict=True)
        ]
        for reason in problems:
            if reason:
                self.skipped[reason] += 1
        if self.skipped:
            logger.warning(
                "%s: skipped %d row(s): %s",
                split,
                sum(self.skipped.values()),
                ", ".join(f"{n} x {r}" for r, n in self.skipped.items()),
            )
        usable = [i for i, p in enumerate(problems) if p is None]
        self.dataset = dataset.select(usable)
        self.sources = sources[usable]

    def __len__(self) -> int:
        return 0 if self.dataset is None else len(self.dataset)

    def example(self, index: int) -> tuple[Example | None, str | None]:
        """Decode row ``index``; ``(None, reason)`` when an image or mask does not decode or does not fit."""
        row = self.dataset[int(index)]
        try:
            images = [decode_image(entry) for entry in row["images"]]
            masks = [decode_mask(entry) for entry in row["masks"]]
        except Exception as error:  # PIL raises many types on corrupt bytes
            logger.debug("row %s: %s", row["id"], error)
            return None, "undecodable image or mask"
        if len({im.shape[1:] for im in images}) > 1:
            return None, "two dates of different sizes"
        if any(m.shape != images[-1].shape[1:] for m in masks):
            return None, "mask size differs from its image"
        return Example(row["id"], row["conversations"], images, masks), None


def decode_image(entry: dict[str, Any] | bytes) -> np.ndarray:
    """PNG bytes (or ``{"bytes": ...}``) -> ``[3, H, W]`` float32 in [0, 1]."""
    from PIL import Image

    data = entry["bytes"] if isinstance(entry, dict) else entry
    with Image.open(io.BytesIO(data)) as image:
        array = np.asarray(image.convert("RGB"))  # [H, W, 3] uint8
    return np.ascontiguousarray(array.transpose(2, 0, 1), dtype=np.float32) / 255.0


def decode_mask(entry: dict[str, Any] | bytes) -> np.ndarray:
    """1-bit (or 8-bit) PNG -> ``[H, W]`` float32 in {0, 1}."""
    from PIL import Image

    data = entry["bytes"] if isinstance(entry, dict) else entry
    with Image.open(io.BytesIO(data)) as image:
        return (np.asarray(image.convert("L")) > 127).astype(np.float32)


# ---------------------------------------------------------------------------------------------------- order


def epoch_batches(num_rows: int, global_batch: int, seed: int, epoch: int) -> list[list[int]]:
    """Row indices of each global batch of one epoch: a permutation from ``(seed, epoch)`` cut into full batches.

    The last incomplete batch is dropped, so every process gets the same number of samples per step.
    """
    if num_rows < global_batch:
        raise DataError(
            f"the split has {num_rows} usable rows, fewer than one global batch ({global_batch}): lower "
            "micro_batch_size or add data"
        )
    order = np.random.default_rng([seed, epoch]).permutation(num_rows)
    count = num_rows // global_batch
    return [order[k * global_batch : (k + 1) * global_batch].tolist() for k in range(count)]


def eval_batches(num_rows: int, batch_size: int, limit: int = 0) -> list[list[int]]:
    """Evaluation batches in row order (the same rows every time); ``limit`` > 0 keeps the first ones."""
    batches = [list(range(s, min(s + batch_size, num_rows))) for s in range(0, num_rows, batch_size)]
    return batches[:limit] if limit else batches


# ---------------------------------------------------------------------------------------------------- batches


class BatchBuilder:
    """Decoded examples -> one model batch through the model's processor, cut to ``max_length`` tokens.

    Cutting never enters the image tokens: a sample whose ``<image>`` tokens reach past ``max_length`` is skipped.
    A cut that drops supervised ``[SEG]`` tokens drops their masks too, so tokens and masks stay paired.
    """

    def __init__(self, data: SFTData, processor, max_length: int) -> None:
        self.data = data
        self.processor = processor
        self.max_length = int(max_length)

    def build(self, rows: Sequence[int]) -> tuple[dict[str, Any] | None, Counter[str]]:
        """``(batch or None when every row was skipped, skip reasons)``."""
        skipped: Counter[str] = Counter()
        examples = []
        for row in rows:
            example, reason = self.data.example(row)
            if example is None:
                skipped[reason] += 1
            else:
                examples.append(example)
        batch = None
        while examples:
            try:
                batch = self._process(examples)
            except ProcessorInputError as error:  # name the sample, drop it, keep the rest of the batch
                bad = self._first_bad(examples)
                logger.debug("sample %s: %s", examples[bad].id, error)
                skipped["rejected by the processor"] += 1
                examples.pop(bad)
                continue
            too_long = batch.pop("_too_long")
            if not too_long:
                break
            skipped[f"image tokens beyond max_length={self.max_length}"] += len(too_long)
            examples = [e for k, e in enumerate(examples) if k not in too_long]
            batch = None
        return batch, skipped

    def _first_bad(self, examples: list[Example]) -> int:
        for k, example in enumerate(examples):
            try:
                self._process([example])
            except ProcessorInputError:
                return k
        return 0

    def _process(self, examples: list[Example]) -> dict[str, Any]:
        out = self.processor(
            [e.conversation for e in examples],
            [e.images for e in examples],
            masks=[e.masks for e in examples],
        )
        input_ids = out["input_ids"]  # [B, T]
        limit = self.max_length
        image_id = self.processor.image_token_id
        too_long = []
        if input_ids.shape[1] > limit:
            too_long = [
                k for k in range(input_ids.shape[0]) if bool((input_ids[k, limit:] == image_id).any())
            ]
        batch: dict[str, Any] = {
            "input_ids": input_ids[:, :limit],
            "attention_mask": out["attention_mask"][:, :limit],
            "labels": out["labels"][:, :limit],
            "pixel_values": out["pixel_values"],
            "num_images_per_sample": out["num_images_per_sample"],
        }
        # The model decodes a mask at each supervised [SEG] (labels == [SEG]); keep that many masks per sample.
        seg_id = self.processor.seg_token_id
        kept = (batch["labels"] == seg_id).sum(-1).tolist()
        batch["seg_masks"] = [m[:n] for m, n in zip(out["seg_masks"], kept, strict=True)]
        if not (batch["labels"] != IGNORE_INDEX).any():
            logger.debug("a batch with no supervised token after cutting to %d", limit)
        batch["_too_long"] = too_long
        return batch


class BatchSource(torch.utils.data.Dataset):
    """A list of row batches as a map-style dataset of ready batches, so a ``DataLoader`` can build them in
    worker processes (``batch_size=None``). Item ``k`` is ``(batch or None, skip reasons)``."""

    def __init__(self, builder: BatchBuilder, batches: list[list[int]]) -> None:
        self.builder = builder
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, k: int) -> tuple[dict[str, Any] | None, dict[str, int]]:
        batch, skipped = self.builder.build(self.batches[k])
        return batch, dict(skipped)


def keep_as_is(item: Any) -> Any:
    """DataLoader collate function that leaves a built batch alone (module level, so workers can pickle it)."""
    return item


def loader(
    builder: BatchBuilder, batches: list[list[int]], num_workers: int, seed: int
) -> torch.utils.data.DataLoader:
    """A DataLoader over ready batches. Its own generator keeps it off the global torch RNG, so creating one at a
    resume does not shift the LoRA dropout stream."""
    return torch.utils.data.DataLoader(
        BatchSource(builder, batches),
        batch_size=None,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=keep_as_is,
        generator=torch.Generator().manual_seed(seed),
        persistent_workers=False,
    )
