"""Dense mask decoding of a large scene: one language answer on the overview, its mask prompts on every window.

Flow::

    overview answer -> one prompt per region: seg_projector([SEG] state) + phrase_projector(<p>phrase</p>)  [M, P]
    overview masks  -> per window: inside / outside / on a boundary of what the overview found (coarse to fine)
    windows, ranked -> batches of B -> pixels [B, C, S, S] -> band adapter -> tower -> decoder contexts
                    -> mask decoder on B x M prompts -> logits [B*M, S, S] -> each window's core -> SparseMask [M]
    windows not read (budget, or sure from the overview) -> the overview's mask, upsampled, in their cores

No language model runs per window: a window costs one tower pass and M decoder passes (~10 ms each), so a scene
costs its overview answer plus tower time per window read. Each pixel is decided by exactly one window, the one
whose centre it is nearest (``window_cores``), so overlaps never OR two decisions together.

Windows are decoded *guided* by the overview (``scene_guide``, for decoders that support it): the decoder's tokens
(what to look for) are decided once on the overview, every window position attends to those tokens with the
encoding of its place in the scene, and the pixel cues are standardised by the overview's statistics. A window
then gives what a single full-resolution pass over the scene would, except what the tower sees differently near
its edge; decoded unguided, each window would attend only over itself and threshold its own context.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from rsvlm import geo, presence

logger = logging.getLogger(__name__)

Window = tuple[int, int, int, int]  # (col_off, row_off, width, height) in source pixels
# Overview probabilities in this band are "uncertain": the window is read at full resolution first.
UNCERTAIN = (0.2, 0.8)


@dataclass
class ScenePrompts:
    """The mask prompts of one overview answer: ``labels[i]`` and ``vectors[i]`` (``[M, P]``), and whether each
    was a ``[SEG]`` mask (else a box, whose boxes come from the stitched mask's components)."""

    labels: list[str]
    vectors: torch.Tensor
    is_mask: list[bool]

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class DecodedScene:
    """Per prompt the stitched mask on the scene grid, and what was (not) read at full resolution."""

    masks: list[geo.SparseMask]
    read: list[Window] = field(default_factory=list)
    not_read: dict[str, int] = field(default_factory=dict)  # reason -> windows
    windows_with_hits: int = 0
    cancelled: bool = False
    seconds: float = 0.0


def mask_prompts(model, states: torch.Tensor | None, phrases: list[str]) -> torch.Tensor:
    """``[M, P]`` prompts from ``[SEG]`` states and/or phrases (``model.mask_prompts``), in the decoder's dtype."""
    with torch.no_grad():
        return model.mask_prompts(states, phrases if model.config.phrase_prompt else None)


def scene_guide(model, context: tuple[torch.Tensor, ...], pixels: torch.Tensor, prompts: ScenePrompts):
    """The decoder's decision on the overview (its decoder ``context`` and model pixels ``[n, 3, S, S]``) for
    every prompt, applied to all windows; None for decoders that decode each window on its own (SAM)."""
    decoder = model.mask_decoder
    if not hasattr(decoder, "scene_guide") or not len(prompts):
        return None
    device = model.band_adapter.proj.weight.device
    with torch.no_grad():
        return decoder.scene_guide(context, pixels.to(device), prompts.vectors.to(device))


def tensor_reader(pixels: torch.Tensor, processor, valid: np.ndarray | None = None):
    """``read_pixels`` for ``decode_scene`` over a scene held in memory (``[C, H, W]`` in [0, 1]): each window
    cut out and preprocessed for the model; ``valid`` ``[H, W]`` (default: every pixel)."""
    valid = np.ones(pixels.shape[-2:], bool) if valid is None else valid

    def read(window: Window):
        x, y, w, h = window
        tensor, meta = processor.preprocess_image(pixels[:, y : y + h, x : x + w])
        return tensor, meta, valid[y : y + h, x : x + w]

    return read


def window_cores(windows: Sequence[Window], width: int, height: int) -> list[tuple[int, int, int, int]]:
    """A partition of the scene into one core ``(x0, y0, x1, y1)`` per window: the pixels nearer its centre than
    any other window's. Windows come from ``tiling.plan_windows`` (a grid of starts per axis)."""

    def cuts(starts: list[int], size_of: dict[int, int], extent: int) -> dict[int, tuple[int, int]]:
        bounds = {}
        for i, start in enumerate(starts):
            lo = 0 if i == 0 else (starts[i - 1] + size_of[starts[i - 1]] + start) // 2
            hi = extent if i == len(starts) - 1 else (start + size_of[start] + starts[i + 1]) // 2
            bounds[start] = (lo, hi)
        return bounds

    xs = sorted({w[0] for w in windows})
    ys = sorted({w[1] for w in windows})
    x_cut = cuts(xs, {w[0]: w[2] for w in windows}, width)
    y_cut = cuts(ys, {w[1]: w[3] for w in windows}, height)
    return [(x_cut[x][0], y_cut[y][0], x_cut[x][1], y_cut[y][1]) for x, y, _, _ in windows]


@dataclass
class OverviewMasks:
    """The overview answer's mask probabilities ``[M, h, w]`` on the overview grid, ``scale`` source pixels per
    overview pixel: what coarse-to-fine ranks windows by and what fills the windows not read."""

    probs: np.ndarray
    scale: float

    def footprint(self, box: tuple[int, int, int, int]) -> np.ndarray:
        """``[M, h', w']`` overview probabilities over a source box (x0, y0, x1, y1), one overview pixel around."""
        _, h, w = self.probs.shape
        r0, c0 = max(int(box[1] / self.scale) - 1, 0), max(int(box[0] / self.scale) - 1, 0)
        r1 = min(max(int(np.ceil(box[3] / self.scale)) + 1, r0 + 1), h)
        c1 = min(max(int(np.ceil(box[2] / self.scale)) + 1, c0 + 1), w)
        return self.probs[:, r0:r1, c0:c1]

    def kind(self, box: tuple[int, int, int, int]) -> tuple[str, float]:
        """``("boundary" | "inside" | "outside", uncertain share)`` of a window by what the overview found there."""
        part = self.footprint(box)
        if part.size == 0:
            return "outside", 0.0
        lo, hi = UNCERTAIN
        uncertain = float(((part > lo) & (part < hi)).mean())
        positive = part >= 0.5
        per_prompt_mixed = [p.any() and not p.all() for p in positive]
        if uncertain > 0 or any(per_prompt_mixed):
            return "boundary", uncertain + any(per_prompt_mixed)
        return ("inside" if positive.any() else "outside"), 0.0

    def fill(self, index: int, box: tuple[int, int, int, int]) -> np.ndarray:
        """The overview's mask of prompt ``index`` over a source box, nearest-upsampled: bool ``[y1-y0, x1-x0]``."""
        _, h, w = self.probs.shape
        rows = np.minimum(((np.arange(box[1], box[3]) + 0.5) / self.scale).astype(int), h - 1)
        cols = np.minimum(((np.arange(box[0], box[2]) + 0.5) / self.scale).astype(int), w - 1)
        return self.probs[index][np.ix_(rows, cols)] >= 0.5


def plan_reading(
    windows: Sequence[Window],
    cores: Sequence[tuple[int, int, int, int]],
    overview: OverviewMasks | None,
    *,
    coarse_to_fine: bool,
) -> tuple[list[int], dict[int, str]]:
    """Which windows to read, most informative first, and the kind of each (by the overview's masks).

    Boundary and uncertain windows come first (most uncertain first), then windows inside what the overview
    found, then the rest. Coarse to fine reads only the boundary windows: inside and outside are taken from the
    overview, so the cost follows the length of the boundaries, not the scene's area.
    """
    kinds: dict[int, str] = {}
    scores: dict[int, float] = {}
    for i, core in enumerate(cores):
        kinds[i], scores[i] = overview.kind(core) if overview is not None else ("boundary", 0.0)
    rank = {"boundary": 0, "inside": 1, "outside": 2}
    order = sorted(range(len(windows)), key=lambda i: (rank[kinds[i]], -scores[i], i))
    if coarse_to_fine:
        order = [i for i in order if kinds[i] == "boundary"]
    return order, kinds


def decode_scene(
    model,
    read_pixels: Callable[[Window], tuple[torch.Tensor, object, np.ndarray] | None],
    windows: Sequence[Window],
    prompts: ScenePrompts,
    scene_shape: tuple[int, int],
    *,
    overview: OverviewMasks | None = None,
    coarse_to_fine: bool = False,
    max_windows: int | None = None,
    time_budget_s: float | None = None,
    batch_size: int = 4,
    progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    inference=None,
    threshold: float = 0.0,
    guide=None,
) -> DecodedScene:
    """Apply ``prompts`` to the windows of a scene, batched through the tower, stitched on the scene grid.

    ``read_pixels(window)`` gives ``(pixels [C, S, S], ImageMeta, valid [h, w])`` or None for a window of nodata.
    ``progress(done, total)`` is called after each batch; ``should_stop()`` (a new question) ends the loop early;
    the budget (``max_windows`` and/or ``time_budget_s``) ends it too. Windows not read get the overview's mask.
    A pixel is in a mask where its logit is above ``threshold``. ``guide`` (``scene_guide``) decodes every
    window by the overview's decision; None decodes each window on its own.
    """
    start = time.perf_counter()
    height, width = scene_shape
    masks = [geo.SparseMask(height, width) for _ in range(len(prompts))]
    cores = window_cores(windows, width, height)
    ranked, kinds = plan_reading(windows, cores, overview, coarse_to_fine=coarse_to_fine)
    order = ranked if max_windows is None else ranked[: max(0, int(max_windows))]
    over_budget, in_plan = set(ranked[len(order) :]), set(ranked)
    total = len(order)
    result = DecodedScene(masks=masks)
    done: set[int] = set()
    position = 0
    stopped_by = None
    if progress is not None:
        progress(0, total)
    while position < total:
        if should_stop is not None and should_stop():
            stopped_by, result.cancelled = "cancelled", True
            break
        if time_budget_s is not None and time.perf_counter() - start > time_budget_s:
            stopped_by = "time budget"
            break
        batch = order[position : position + batch_size]
        position += len(batch)
        read = [(i, read_pixels(windows[i])) for i in batch]
        done.update(batch)
        read = [(i, r) for i, r in read if r is not None]
        if read and len(prompts):
            result.windows_with_hits += _decode_batch(
                model, read, windows, cores, prompts, masks, inference, threshold, guide, max(height, width)
            )
        result.read.extend(windows[i] for i, _ in read)
        if progress is not None:
            progress(position, total)
    for i, core in enumerate(cores):
        if i in done:
            continue
        if i in over_budget:
            reason = "window budget"
        elif i in in_plan:
            reason = stopped_by or "window budget"
        else:
            reason = kinds[i]  # coarse to fine: sure from the overview ("inside" or "outside")
        result.not_read[reason] = result.not_read.get(reason, 0) + 1
        if overview is not None:
            for k, mask in enumerate(masks):
                mask.add(overview.fill(k, core), core[0], core[1])
    result.seconds = time.perf_counter() - start
    logger.info(
        "scene %dx%d: read %d of %d windows in %.1f s", width, height, len(done), len(windows), result.seconds
    )
    return result


def _decode_batch(
    model, read, windows, cores, prompts: ScenePrompts, masks, inference, threshold, guide, extent
) -> int:
    """One tower pass over a batch of windows, then every prompt on every window, kept in the windows' cores;
    returns how many of the windows found something. ``extent``: the scene's longer side, the overview's frame."""
    pixels = torch.stack([r[0] for _, r in read])  # [B, C, S, S]
    m = len(prompts)
    with inference() if inference is not None else torch.inference_mode():
        device = model.band_adapter.proj.weight.device
        rgb = model.band_adapter(pixels.to(device, torch.float32))  # [B, 3, S, S]
        maps = model.vision(rgb)  # [B, D, h, w]
        decoder = model.mask_decoder
        extra = {}
        if guide is not None:
            contexts = [decoder.image_context(maps[b], rgb[b : b + 1], guide) for b in range(len(read))]
            extra = {
                "guide": guide.rows(list(range(m)) * len(read)),
                "frames": _frames(read, windows, extent, m),
            }
        else:
            contexts = [decoder.image_context(maps[b], rgb[b : b + 1]) for b in range(len(read))]
        sample_index = [b for b in range(len(read)) for _ in range(m)]
        vectors = prompts.vectors.to(device).repeat(len(read), 1)  # [B*M, P]
        logits = decoder(contexts, sample_index, vectors, **extra).float().cpu()  # [B*M, S, S]
    # Each prompt at its phrase's calibrated threshold, as the overview's masks are (rsvlm.presence).
    logits = presence.calibrated_logits(logits, list(prompts.labels) * len(read), model.config)
    hits = 0
    for b, (i, (_, meta, valid)) in enumerate(read):
        x, y, _, _ = windows[i]
        x0, y0, x1, y1 = cores[i]
        found = False
        for k in range(m):
            window_mask = meta.mask_to_source(logits[b * m + k] > threshold) & valid  # [h, w] source pixels
            core = window_mask[y0 - y : y1 - y, x0 - x : x1 - x]
            masks[k].add(core, x0, y0)
            found = found or bool(core.any())
        hits += found
    return hits


def _frames(read, windows, extent: int, m: int) -> torch.Tensor:
    """``[B*M, 4]``: where each window's model square (top-left placed, ``image_size / scale`` source pixels a
    side) lies in the overview's normalised frame, whose side is the scene's longer side."""
    rows = []
    for i, (_, meta, _) in read:
        x, y, _, _ = windows[i]
        side = meta.image_size / meta.scale
        rows.extend([[x / extent, y / extent, (x + side) / extent, (y + side) / extent]] * m)
    return torch.tensor(rows)
