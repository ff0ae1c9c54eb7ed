"""The vision feature cache gives the tower's exact maps, encodes each distinct image once, and stays bounded."""

from __future__ import annotations

import torch

from train.feature_cache import CachedVisionTower, install_feature_cache, remove_feature_cache


def test_cache_is_exact_and_counts_hits(tiny_model) -> None:
    tower = tiny_model.vision
    pixels = torch.rand(3, 3, 64, 64)
    expected = torch.cat([tower(p[None]) for p in pixels])  # one image at a time, as the cache encodes them
    cached = install_feature_cache(tiny_model, max_mb=64)
    assert isinstance(tiny_model.vision, CachedVisionTower) and cached.out_channels == tower.out_channels
    assert torch.equal(cached(pixels), expected) and (cached.hits, cached.misses) == (0, 3)
    again = cached(pixels[[2, 0]])
    assert torch.equal(again, expected[[2, 0]]) and (cached.hits, cached.misses) == (2, 3)
    other = pixels[0].clone()
    other[0, 0, 0] += 1e-3  # one changed pixel is another image
    cached(other[None])
    assert cached.misses == 4

    # The model reads the same features through the cache.
    features = tiny_model.encode_images(pixels[:1])
    remove_feature_cache(tiny_model)
    assert tiny_model.vision is tower
    assert torch.equal(tiny_model.encode_images(pixels[:1]).tokens, features.tokens)


def test_cache_bound_and_gradient_bypass(tiny_model) -> None:
    cached = CachedVisionTower(tiny_model.vision, max_mb=0)
    pixels = torch.rand(2, 3, 64, 64)
    cached(pixels)
    cached(pixels)
    assert cached.hits == 0 and cached.misses == 4 and not cached.cache  # nothing fits in 0 MiB
    grad_input = torch.rand(1, 3, 64, 64, requires_grad=True)
    bypass = CachedVisionTower(tiny_model.vision)
    out = bypass(grad_input)
    out.sum().backward()  # gradients reach the input through the tower: the cache stepped aside
    assert grad_input.grad is not None and grad_input.grad.abs().sum() > 0 and not bypass.cache


def test_not_installed_when_the_band_adapter_trains(tiny_llm_dir, tiny_vit_dir) -> None:
    from rsvlm.configuration_rsvlm import RSVLMConfig
    from rsvlm.modeling_rsvlm import RSVLMForConditionalGeneration

    model = RSVLMForConditionalGeneration(
        RSVLMConfig.tiny(str(tiny_llm_dir), str(tiny_vit_dir), in_channels=4)
    )
    assert install_feature_cache(model) is None and not isinstance(model.vision, CachedVisionTower)
