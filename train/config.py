"""What one fine-tuning run does: a dataclass filled from a YAML recipe (``train/recipes/*.yaml``) and overrides.

    cfg = TrainConfig.from_yaml("train/recipes/default-cpu.yaml", data=["out/ds"], out="out/run", max_steps=100)

Every field has a default and an attribute docstring (litgpt style); an unknown key in a recipe or an override is
an error that names it, so a typo never trains silently with the default.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

RECIPES = Path(__file__).parent / "recipes"
SCHEDULES = ("cosine", "constant")
PRECISIONS = ("no", "bf16")


class TrainConfigError(ValueError):
    """A recipe or override the trainer cannot run with; the message names the key and what is allowed."""


@dataclass
class TrainConfig:
    model: str | dict[str, Any] = "default"
    """``"default"`` (a fresh ``RSVLMConfig()``: SmolLM2 + GeoEmbed V3), a mapping of ``RSVLMConfig`` overrides
    (``{lora_r: 16, text_model: /models/qwen2.5-3b}``), a YAML file holding such a mapping, or an rsvlm checkpoint
    folder (``config.json`` + ``model.safetensors``) whose trainable part training continues from."""
    data: list[str] = field(default_factory=list)
    """One or more ``rsvlm gen`` output folders (each has ``data/{split}-NNNNN.parquet``)."""
    mix: list[float] | None = None
    """Sampling weight of each ``data`` source (``[0.7, 0.3]``, or ``"0.7,0.3"``), seeded and resumable
    (``train/mixing.py``); ``None``: the sources are concatenated and shuffled as one."""
    tasks: list[str] | None = None
    """Task families to train on (``caption``, ``vqa``, ``grounding``, ``reasoning``, ``gcg``, ``change``); all when
    ``None``."""
    train_split: str = "train"
    """Split trained on."""
    eval_split: str = "validation"
    """Split evaluated on; a dataset without it trains without evaluation (with a warning)."""
    out: str = "out/train"
    """Run folder: ``checkpoints/step-NNNNNN/``, ``final/`` (a loadable rsvlm checkpoint), ``metrics.jsonl``."""

    max_steps: int | None = None
    """Optimizer steps of the whole run (the LR schedule spans them). ``None``: from ``epochs``."""
    epochs: float = 1.0
    """Passes over the train split when ``max_steps`` is ``None`` (fractions allowed)."""
    stop_after_steps: int | None = None
    """Stop this process after this optimizer step without ending the run (the schedule still spans ``max_steps``);
    a later start resumes. For runs split over jobs with a time limit, and for testing an interruption."""
    micro_batch_size: int = 2
    """Samples per forward pass per process."""
    grad_accum: int = 4
    """Micro-batches per optimizer step. Global batch = micro_batch_size x grad_accum x processes."""

    lr: float = 2e-4
    """Peak learning rate of the heads (projector, change fusion, seg projector, mask decoder, new-token rows)."""
    lora_lr: float | None = None
    """Peak learning rate of the LoRA matrices; ``None``: the same as ``lr``."""
    weight_decay: float = 0.0
    """AdamW weight decay on matrices (never on biases, norms or the new-token rows)."""
    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW betas."""
    warmup_steps: int = 10
    """Linear warm-up from 0 to the peak learning rate."""
    schedule: str = "cosine"
    """``cosine`` (decay to ``min_lr_ratio`` x peak at ``max_steps``) or ``constant`` after warm-up."""
    min_lr_ratio: float = 0.1
    """Floor of the cosine schedule as a fraction of the peak."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this; 0 turns clipping off."""

    eval_every: int = 50
    """Evaluate on ``eval_split`` every this many optimizer steps (0: only at the end)."""
    eval_at_start: bool = True
    """Also evaluate before the first step (not after a resume), so the log shows where training started."""
    eval_batches: int = 20
    """Micro-batches per evaluation (the same first ones each time); 0: the whole split."""
    save_every: int = 50
    """Write a checkpoint every this many optimizer steps (0: only at the end)."""
    keep_last: int = 2
    """Checkpoints kept in ``out/checkpoints`` (older ones are deleted after a new one is complete)."""
    log_every: int = 10
    """Log and append to ``metrics.jsonl`` every this many optimizer steps."""

    seed: int = 0
    """Seeds the heads' initialisation, the data order of every epoch and the LoRA dropout."""
    mixed_precision: str = "no"
    """``no`` (float32) or ``bf16`` (autocast; CUDA, or CPUs with native bf16)."""
    max_length: int = 1024
    """Longest token sequence. A longer sample is cut at the end (masks of cut-off ``[SEG]`` are dropped); one whose
    image tokens would be cut is skipped instead."""
    num_workers: int = 0
    """DataLoader worker processes decoding PNGs and tokenising (0: in the training process)."""
    num_threads: int | None = None
    """``torch.set_num_threads`` for CPU runs; ``None`` leaves torch's default."""
    cache_vision_features: bool = True
    """Keep the frozen vision tower's feature maps per image (keyed by pixel content) so later epochs skip it. Only
    used for RGB models (a trainable band adapter needs gradients through the tower)."""
    feature_cache_mb: int = 2048
    """Memory bound of that cache; images past it are encoded every time."""
    datasets_cache: str | None = None
    """``cache_dir`` for ``datasets.load_dataset`` (``None``: the Hugging Face default cache)."""

    # ------------------------------------------------------------------------------------------------------------

    def __post_init__(self) -> None:
        # PyYAML reads "3e-4" (no dot) as a string; numbers of float fields are taken in either spelling.
        for key in ("lr", "lora_lr", "weight_decay", "min_lr_ratio", "grad_clip", "epochs"):
            value = getattr(self, key)
            if isinstance(value, str):
                try:
                    setattr(self, key, float(value))
                except ValueError:
                    raise TrainConfigError(f"{key} must be a number (got {value!r})") from None
        if isinstance(self.data, (str, Path)):
            self.data = [str(self.data)]
        self.data = [str(d) for d in (self.data or [])]
        from train.mixing import MixError, parse_mix

        try:
            self.mix = parse_mix(self.mix, len(self.data))
        except MixError as error:
            raise TrainConfigError(str(error)) from None
        if isinstance(self.tasks, str):
            self.tasks = [t.strip() for t in self.tasks.split(",") if t.strip()]
        if self.tasks is not None:
            self.tasks = list(self.tasks)
        self.betas = tuple(float(b) for b in self.betas)
        if isinstance(self.model, Path):
            self.model = str(self.model)
        self.out = str(self.out)
        self.validate()

    def validate(self) -> None:
        """Fail before any work, with the key and the allowed values in the message."""
        from data_gen.config import ALL_TASKS

        positive = {"micro_batch_size": self.micro_batch_size, "grad_accum": self.grad_accum,
                    "keep_last": self.keep_last, "log_every": self.log_every, "max_length": self.max_length}  # fmt: skip
        for key, value in positive.items():
            if not isinstance(value, int) or value < 1:
                raise TrainConfigError(f"{key} must be a positive integer (got {value!r})")
        for key in ("eval_every", "save_every", "eval_batches", "warmup_steps", "num_workers"):
            value = getattr(self, key)
            if not isinstance(value, int) or value < 0:
                raise TrainConfigError(f"{key} must be an integer >= 0 (got {value!r})")
        for key in ("max_steps", "stop_after_steps"):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise TrainConfigError(f"{key} must be a positive integer or null (got {value!r})")
        if not self.epochs > 0:
            raise TrainConfigError(f"epochs must be > 0 (got {self.epochs!r})")
        for key in ("lr", "lora_lr"):
            value = getattr(self, key)
            if value is not None and not (isinstance(value, (int, float)) and value > 0):
                raise TrainConfigError(f"{key} must be a positive number (got {value!r})")
        if self.schedule not in SCHEDULES:
            raise TrainConfigError(f"schedule must be one of {', '.join(SCHEDULES)} (got {self.schedule!r})")
        if self.mixed_precision not in PRECISIONS:
            raise TrainConfigError(
                f"mixed_precision must be one of {', '.join(PRECISIONS)} (got {self.mixed_precision!r}); "
                "fp16 is not offered: the heads train in float32 and bf16 needs no loss scaling"
            )
        if not 0 <= self.min_lr_ratio <= 1:
            raise TrainConfigError(f"min_lr_ratio must lie in [0, 1] (got {self.min_lr_ratio!r})")
        if self.grad_clip < 0 or self.weight_decay < 0:
            raise TrainConfigError("grad_clip and weight_decay must be >= 0")
        if self.tasks is not None:
            bad = sorted(set(self.tasks) - set(ALL_TASKS))
            if bad or not self.tasks:
                raise TrainConfigError(
                    f"unknown task(s) {', '.join(bad) or '(empty list)'}; known: {', '.join(ALL_TASKS)}"
                )
        if not isinstance(self.model, (str, dict)):
            raise TrainConfigError(
                f"model must be 'default', a checkpoint folder, a YAML file or a mapping (got {self.model!r})"
            )

    # ------------------------------------------------------------------------------------------------------------

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def from_dict(cls, raw: dict[str, Any], where: str = "config") -> TrainConfig:
        unknown = sorted(set(raw) - set(cls.field_names()))
        if unknown:
            raise TrainConfigError(
                f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(cls.field_names())}"
            )
        try:
            return cls(**raw)
        except TypeError as error:  # a value of the wrong kind (a list where a number goes...)
            raise TrainConfigError(f"{where}: {error}") from None

    @classmethod
    def from_yaml(cls, path: str | Path | None, **overrides: Any) -> TrainConfig:
        """Read a recipe (a path, or a name in ``train/recipes`` such as ``default-cpu``) and apply overrides.

        Overrides whose value is ``None`` are ignored (unset CLI flags); ``model.KEY`` overrides set one field of
        the model mapping. ``path=None`` starts from the defaults.
        """
        raw: dict[str, Any] = {}
        where = "overrides"
        if path is not None:
            recipe = resolve_recipe(path)
            where = str(recipe)
            try:
                loaded = yaml.safe_load(recipe.read_text())
            except yaml.YAMLError as error:
                raise TrainConfigError(f"{recipe}: not valid YAML ({' '.join(str(error).split())})") from None
            if loaded is not None and not isinstance(loaded, dict):
                raise TrainConfigError(f"{recipe}: expected a mapping of options at the top level")
            raw = dict(loaded or {})
        for key, value in overrides.items():
            if value is None:
                continue
            if key.startswith("model."):
                model = raw.get("model", "default")
                if model == "default":
                    model = {}
                if not isinstance(model, dict):
                    raise TrainConfigError(
                        f"{key}: model.KEY overrides need the recipe's model to be a mapping or 'default'"
                    )
                raw["model"] = {**model, key.split(".", 1)[1]: value}
            else:
                raw[key] = value
        return cls.from_dict(raw, where=where)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values (tuples as lists), for the trainer state and the run log."""
        values = dataclasses.asdict(self)
        values["betas"] = list(self.betas)
        return values


def resolve_recipe(path: str | Path) -> Path:
    """A recipe path, or the name of one in ``train/recipes`` (``default-cpu``, ``lora``, ``qlora``)."""
    candidate = Path(path).expanduser()
    if candidate.is_file():
        return candidate
    named = RECIPES / f"{path}.yaml"
    if named.is_file():
        return named
    known = ", ".join(sorted(p.stem for p in RECIPES.glob("*.yaml")))
    raise TrainConfigError(f"recipe {str(path)!r} is neither a file nor a recipe name (known: {known})")


def parse_override(text: str) -> tuple[str, Any]:
    """``key=value`` from the command line; the value is read as YAML (``3e-4``, ``true``, ``[a, b]``, ``null``)."""
    key, sep, value = text.partition("=")
    key = key.strip().replace("-", "_") if not key.strip().startswith("model.") else key.strip()
    if not sep or not key:
        raise TrainConfigError(f"override {text!r} is not of the form key=value")
    name = key.split(".", 1)[0]
    if name not in TrainConfig.field_names():
        raise TrainConfigError(
            f"unknown key {name!r} in override {text!r}; known: {', '.join(TrainConfig.field_names())}"
        )
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError:
        parsed = value
    return key, parsed
