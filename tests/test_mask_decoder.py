"""Mask decoders: the light two-way decoder (single image and pair) and the SamModel adapter, same interface."""

from __future__ import annotations

import torch

from rsvlm.mask_decoder import LightMaskDecoder, PositionEmbeddingRandom, SamMaskDecoderAdapter


def _light(size: int = 64) -> LightMaskDecoder:
    torch.manual_seed(0)
    return LightMaskDecoder(in_channels=24, dim=32, depth=2, heads=2, highres_dim=8, image_size=size)


def test_position_embedding_shape_and_range():
    pe = PositionEmbeddingRandom(16)(5, 7)
    assert pe.shape == (1, 35, 16)
    assert pe.abs().max() <= 1.0


def test_a_window_frame_gives_its_cells_the_whole_grid_s_encodings():
    """A 4x4 window at cells (2..6, 4..8) of an 8x8 grid, framed in the grid, gets exactly those cells' codes."""
    pe = PositionEmbeddingRandom(16)
    whole = pe(8, 8)[0].view(8, 8, 16)
    window = pe(4, 4, torch.tensor([[4 / 8, 2 / 8, 8 / 8, 6 / 8]]))[0].view(4, 4, 16)  # (x0, y0, x1, y1)
    torch.testing.assert_close(window, whole[2:6, 4:8])


def test_a_decoder_guided_by_its_own_image_decodes_as_unguided():
    """On a scene that is its own overview the guided path is the plain one, to the bit."""
    decoder = _light().eval()
    decoder.highres = LightMaskDecoder(24, 32, highres_dim=8, highres_cues=True).highres
    pixels, prompts = torch.rand(1, 3, 64, 64), torch.randn(3, 32)
    context = decoder.image_context(torch.rand(24, 8, 8), pixels)
    guide = decoder.scene_guide(context, pixels, prompts)
    guided = decoder.image_context(context[0], pixels, guide)
    frames = torch.tensor([[0.0, 0.0, 1.0, 1.0]] * 3)
    torch.testing.assert_close(
        decoder([guided], [0, 0, 0], prompts, guide=guide, frames=frames),
        decoder([context], [0, 0, 0], prompts),
        rtol=0,
        atol=0,
    )


def test_a_guided_window_depends_on_its_pixels_and_the_overview_not_its_cut():
    """Guided, a position's logit is the same in a window and in the whole scene, whatever else either holds
    (a tower map cell is local given the overview's tokens); unguided it depends on the rest of the input."""
    decoder = _light().eval()
    pixels, prompts = torch.rand(1, 3, 64, 64), torch.randn(1, 32)
    guide = decoder.scene_guide(decoder.image_context(torch.rand(24, 8, 8), pixels), pixels, prompts)
    scene_map = torch.rand(24, 16, 16)  # a full-resolution scene twice the overview's side
    other = scene_map.clone()
    other[:, 8:, 8:] = torch.rand(24, 8, 8)  # different content in its bottom-right quarter

    def top_left(feature_map, frame=None, guided=True):
        decoder.image_size = feature_map.shape[-1] * 8
        context = (feature_map, torch.zeros(8, 2 * feature_map.shape[-1], 2 * feature_map.shape[-1]))
        extra = {"guide": guide, "frames": torch.tensor([frame])} if guided else {}
        return decoder([context], [0], prompts, **extra)[
            0, :48, :48
        ]  # clear of the window's right/bottom edge

    whole = top_left(scene_map, [0.0, 0.0, 1.0, 1.0])
    torch.testing.assert_close(top_left(scene_map[:, :8, :8], [0.0, 0.0, 0.5, 0.5]), whole)
    torch.testing.assert_close(top_left(other, [0.0, 0.0, 1.0, 1.0]), whole)
    assert not torch.allclose(top_left(other, guided=False), top_left(scene_map, guided=False))


def test_light_decoder_one_mask_per_prompt():
    decoder = _light()
    single = decoder.image_context(torch.rand(24, 8, 8), torch.rand(1, 3, 64, 64))
    pair = decoder.image_context(torch.rand(24, 8, 8), torch.rand(2, 3, 64, 64))
    assert single[1].shape == (8, 16, 16) and pair[1].shape == (8, 16, 16)  # high-res branch at stride 4
    prompts = torch.randn(3, 32, requires_grad=True)
    masks = decoder([single, pair], [0, 1, 1], prompts)
    assert masks.shape == (3, 64, 64)
    # each prompt drives its own mask
    assert not torch.allclose(masks[1], masks[2])
    masks.sum().backward()
    assert prompts.grad is not None and prompts.grad.abs().sum() > 0
    assert decoder.pair_fuse.weight.grad is not None  # the pair context went through the pair fusion


def test_light_decoder_works_on_a_stride_16_map():
    decoder = _light()
    context = decoder.image_context(torch.rand(24, 4, 4), torch.rand(1, 3, 64, 64))
    assert decoder([context], [0], torch.randn(1, 32)).shape == (1, 64, 64)


def test_light_decoder_has_fine_edges_from_the_pixel_branch():
    decoder = _light()
    pixels = torch.rand(1, 3, 64, 64)
    context = decoder.image_context(torch.rand(24, 8, 8), pixels)
    flipped = pixels.clone()
    flipped[..., 30:34, 30:34] = 1 - flipped[..., 30:34, 30:34]  # smaller than one tower cell
    context2 = decoder.image_context(context[0], flipped)
    prompt = torch.randn(1, 32)
    delta = (decoder([context2], [0], prompt) - decoder([context], [0], prompt)).abs()[0]
    assert delta[26:38, 26:38].mean() > 10 * delta[:16, :16].mean()


def test_sam_adapter_drives_a_tiny_sam(tiny_sam_dir):
    from rsvlm.backbones import load_sam

    adapter = SamMaskDecoderAdapter(load_sam(tiny_sam_dir), image_size=48)
    assert adapter.prompt_dim == 16
    trainable = {n for n, p in adapter.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("sam.mask_decoder.") for n in trainable)
    contexts = [
        adapter.image_context(None, torch.rand(1, 3, 48, 48)),
        adapter.image_context(None, torch.rand(2, 3, 48, 48)),
    ]
    assert contexts[0][0].shape == (16, 8, 8)
    prompts = torch.randn(3, 16, requires_grad=True)
    masks = adapter(contexts, [0, 0, 1], prompts)
    assert masks.shape == (3, 48, 48)
    masks.sum().backward()
    assert prompts.grad.abs().sum() > 0
    adapter.train()
    assert not adapter.sam.vision_encoder.training and adapter.sam.mask_decoder.training
