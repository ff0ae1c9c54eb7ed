"""Vision side: band adapter init, uniform tower interface (DINOv2, ViT with CLS, GeoEmbed), projector, fusion."""

from __future__ import annotations

import json

import pytest
import torch

from rsvlm.vision import BandAdapter, ChangeFusion, Projector, VisionTower


def test_band_adapter_passes_rgb_and_averages_other_band_counts():
    x = torch.rand(2, 3, 8, 8)
    assert torch.allclose(BandAdapter(3)(x), x, atol=1e-6)
    x4 = torch.rand(2, 4, 8, 8)
    out = BandAdapter(4)(x4)
    assert out.shape == (2, 3, 8, 8)
    assert torch.allclose(out, x4.mean(1, keepdim=True).expand(-1, 3, -1, -1), atol=1e-6)
    with pytest.raises(ValueError, match="in_channels=4"):
        BandAdapter(4)(x)


def test_dinov2_tower_from_folder(tiny_vit_dir):
    tower = VisionTower.from_name(tiny_vit_dir)
    assert tower.out_channels == 32 and tower.stride == 8
    # mean/std come from the folder's preprocessor_config.json
    assert torch.allclose(tower.image_mean.flatten(), torch.tensor([0.5, 0.5, 0.5]))
    assert torch.allclose(tower.image_std.flatten(), torch.tensor([0.25, 0.25, 0.25]))
    assert not any(p.requires_grad for p in tower.parameters())
    pixels = torch.rand(2, 3, 64, 64)
    maps = tower(pixels)
    assert maps.shape == (2, 32, 8, 8)
    # the map is the patch grid: changing one corner patch changes mostly that cell
    moved = pixels.clone()
    moved[:, :, :8, :8] = 1.0 - moved[:, :, :8, :8]
    diff = (tower(moved) - maps).abs().mean(1)  # [B, 8, 8]
    assert diff[:, 0, 0].mean() > diff[:, 4:, 4:].mean()
    # sizes off the patch grid are resized to it
    assert tower(torch.rand(1, 3, 60, 60)).shape == (1, 32, 8, 8)


def test_vit_tower_drops_cls_and_interpolates_positions():
    from transformers import ViTConfig, ViTModel

    vit = ViTModel(
        ViTConfig(
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
            image_size=64,
            patch_size=16,
        ),
        add_pooling_layer=False,
    )
    tower = VisionTower(vit)
    assert tower(torch.rand(1, 3, 64, 64)).shape == (1, 32, 4, 4)
    assert tower(torch.rand(1, 3, 128, 128)).shape == (1, 32, 8, 8)  # needs interpolate_pos_encoding


def test_geoembed_tower_uses_its_own_statistics():
    geoembed = pytest.importorskip("rsvlm.geoembed")
    net = geoembed.GeoEmbedResNet.tiny()
    tower = VisionTower(net)
    assert tower.stride == 8 and tower.out_channels == net.out_channels
    assert torch.allclose(tower.image_mean.flatten(), torch.tensor(net.image_mean, dtype=torch.float32))
    maps = tower(torch.rand(2, 3, 64, 64))
    assert maps.shape == (2, net.out_channels, 8, 8)
    tower.train()
    assert not tower.backbone.training  # batch-norm statistics stay frozen


def test_tower_rejects_backbone_without_interface():
    with pytest.raises(ValueError, match="out_channels"):
        VisionTower(torch.nn.Linear(3, 8))
    with pytest.raises(ValueError, match="int out_channels and stride"):
        VisionTower(torch.nn.Conv2d(3, 8, 3))  # has both names, but stride is a tuple


def test_projector_pools_to_the_token_grid():
    projector = Projector(32, 48, grid=2)
    tokens = projector(torch.rand(3, 32, 8, 8))
    assert tokens.shape == (3, 4, 48)
    # a change confined to the top-left quadrant only moves the first token
    base = torch.rand(1, 32, 8, 8)
    moved = base.clone()
    moved[:, :, :4, :4] += 1.0
    delta = (projector(moved) - projector(base)).abs().sum(-1)[0]
    assert delta[0] > 0 and torch.allclose(delta[1:], torch.zeros(3), atol=1e-6)


def test_change_fusion_sees_the_difference():
    fusion = ChangeFusion(16)
    f1 = torch.rand(2, 16, 4, 4)
    f2 = torch.rand(2, 16, 4, 4)
    out = fusion(f1, f2)
    assert out.shape == (2, 16, 4, 4)
    assert not torch.allclose(out, fusion(f2.clone(), f2))  # depends on the first date
    out.sum().backward()
    assert fusion.reduce.weight.grad is not None


VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32,
              patch_size=8)  # fmt: skip
TEXT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, vocab_size=64,
            max_position_embeddings=16)  # fmt: skip


def _save(model, folder, mean=(0.25, 0.5, 0.75)):
    model.save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(
        json.dumps({"image_mean": list(mean), "image_std": [0.5] * 3})
    )
    return folder


def _tower_folders(root):
    from transformers import (
        CLIPConfig,
        CLIPModel,
        CLIPVisionConfig,
        CLIPVisionModel,
        SiglipConfig,
        SiglipModel,
        SiglipVisionConfig,
        SiglipVisionModel,
        ViTConfig,
        ViTModel,
    )

    torch.manual_seed(0)
    return {  # name: (folder, leading non-patch tokens)
        "clip_vision": (_save(CLIPVisionModel(CLIPVisionConfig(**VISION)), root / "clip_vision"), 1),
        "clip": (_save(CLIPModel(CLIPConfig(text_config=TEXT, vision_config=VISION)), root / "clip"), 1),
        "siglip_vision": (_save(SiglipVisionModel(SiglipVisionConfig(**VISION)), root / "siglip_vision"), 0),
        "siglip": (
            _save(SiglipModel(SiglipConfig(text_config=TEXT, vision_config=VISION)), root / "siglip"),
            0,
        ),
        "vit": (_save(ViTModel(ViTConfig(**VISION), add_pooling_layer=False), root / "vit"), 1),
    }


def test_transformers_towers_by_local_folder(tmp_path):
    pixels = torch.rand(2, 3, 32, 32)
    for name, (folder, leading) in _tower_folders(tmp_path).items():
        tower = VisionTower.from_name(folder)
        assert (tower.out_channels, tower.stride) == (32, 8), name
        assert torch.allclose(tower.image_mean.flatten(), torch.tensor([0.25, 0.5, 0.75])), name
        maps = tower(pixels)
        assert maps.shape == (2, 32, 4, 4), name
        # the map is exactly the patch tokens of the vision transformer: CLS dropped (CLIP, ViT), none for SigLIP
        with torch.no_grad():
            hidden = tower.net(pixel_values=(pixels - tower.image_mean) / tower.image_std).last_hidden_state
        assert hidden.shape[1] == 16 + leading, name
        expected = hidden[:, leading:].transpose(1, 2).reshape(2, 32, 4, 4)
        torch.testing.assert_close(maps, expected, msg=name)
        assert tower(torch.rand(1, 3, 64, 64)).shape == (1, 32, 8, 8), name  # positions interpolated
