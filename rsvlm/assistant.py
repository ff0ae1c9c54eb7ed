"""The assistant: sessions over georeferenced images, answers with CRS-correct regions, large-scene search.

    assistant = Assistant.from_pretrained("default")
    session = assistant.session()
    answer = session.ask("Outline the buildings.", images=["scene.tif"])
    answer.text, answer.regions[0].geometry, answer.regions[0].area_m2

A session keeps the conversation and the encoded features of its images, so later turns about the same image
do not run the vision tower again. An image larger than the model input is answered by one language pass on a
decimated overview; the mask prompts of that answer (one per ``[SEG]`` or box) are then decoded on the scene's
full-resolution windows, batched through the tower with no generation per window, and stitched on the source
grid (``rsvlm.scene``). Memory stays bounded by the batch of windows and the blocks the masks cover.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rsvlm import decided, geo, presence, scene
from rsvlm.answer_facts import mask_pixels, measured_facts, strip_model_quantities
from rsvlm.grounding import (
    SEG_TOKEN,
    Region,
    attach_masks,
    format_single_image_prompt,
    format_two_date_prompt,
    parse_answer,
)
from rsvlm.placement import to_source
from rsvlm.tiling import describe_large_scene, merge_regions, plan_windows

logger = logging.getLogger(__name__)

DEFAULT_CHECKPOINT = Path(__file__).parent / "default"
# Pixels past which a scene without internal overviews is refused rather than scanned for an overview.
OVERVIEW_SCAN_LIMIT = 400_000_000
# Scenes cut into more windows than this are decoded coarse to fine by default (2,300² px at 256 px windows).
COARSE_TO_FINE_WINDOWS = 100
# Components of a box prompt's stitched mask past this many are dropped (largest kept), with a warning.
MAX_BOXES = 500


@dataclass(frozen=True)
class WindowBudget:
    """How much of a large scene one answer reads at full resolution: windows (None: no cap) and seconds
    (None: no limit). ``Session.ask(..., budget=...)`` sets it per question (a chat's "Options"); without it the
    assistant's ``max_tiles`` and ``time_budget_s`` apply."""

    max_windows: int | None = None
    seconds: float | None = None


@dataclass
class Answer:
    """One reply: display text, grounded regions (pixel + CRS geometry), and every warning met on the way."""

    text: str
    regions: list[Region] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    raw_text: str = ""
    crs: str | None = None
    transform: tuple[float, ...] | None = None
    image_shape: tuple[int, int] | None = None
    timings: dict[str, float] = field(default_factory=dict)
    tiles: int = 1  # windows read at full resolution
    windows: int = 1  # windows a large scene was cut into (``tiles`` of them were read)

    def to_json(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "regions": [_region_json(r) for r in self.regions],
            "warnings": self.warnings,
            "raw_text": self.raw_text,
            "crs": self.crs,
            "transform": [float(v) for v in self.transform] if self.transform else None,
            "image_shape": list(self.image_shape) if self.image_shape else None,
            "tiles": self.tiles,
            "windows": self.windows,
            "timings_s": {k: round(v, 3) for k, v in self.timings.items()},
        }

    def geojson_features(self) -> list[dict[str, Any]]:
        features = []
        for index, region in enumerate(self.regions):
            if region.geometry is None:
                continue
            properties = {"label": region.label, "index": index, "area_m2": region.area_m2}
            if region.area_m2 is not None:
                properties["area_ha"] = region.area_m2 / 10_000
            features.append({"type": "Feature", "geometry": region.geometry, "properties": properties})
        return features

    def write_mask_geotiff(self, path: str | Path) -> None:
        """All masks burnt into one single-band GeoTIFF on the source grid: value i+1 for the i-th masked region.

        Written block by block (tiled, sparse, deflate), so a large scene's stitched masks are never expanded to
        the scene's size. An answer without masks (nothing found) writes an all-zero mask on the same grid.
        """
        if self.image_shape is None or self.transform is None:
            raise geo.RasterError("this answer has no source grid to write a mask GeoTIFF on")
        masked = [r.mask for r in self.regions if r.mask is not None]
        from affine import Affine

        sparse = [
            m if isinstance(m, geo.SparseMask) else geo.SparseMask.from_dense(m, shape=self.image_shape)
            for m in masked
        ] or [geo.SparseMask(*self.image_shape)]  # nothing found: an all-zero mask on the same grid
        geo.write_masks_geotiff(path, sparse, Affine(*self.transform[:6]), self.crs)


def _region_json(region: Region) -> dict[str, Any]:
    return {
        "label": region.label,
        "box_grid": region.box.as_list() if region.box else None,
        "obb_grid": region.obb.as_list() if region.obb else None,
        "pixel_box": [round(v, 2) for v in region.pixel_box] if region.pixel_box else None,
        "pixel_polygon": [[round(x, 2), round(y, 2)] for x, y in region.pixel_polygon]
        if region.pixel_polygon
        else None,
        "has_mask": region.mask is not None,
        "mask_pixels": mask_pixels(region.mask) if region.mask is not None else None,
        "geometry": region.geometry,
        "area_m2": None if region.area_m2 is None else round(region.area_m2, 2),
        "area_ha": None if region.area_m2 is None else round(region.area_m2 / 10_000, 4),
        "score": region.score,
    }


class Assistant:
    """A model + processor with the geo plumbing around them. Thread-safe for separate sessions."""

    def __init__(
        self,
        model,
        processor,
        *,
        max_tiles: int | None = None,
        # A quarter of a window: each pixel's deciding window then sees at least 32 px of context past the core's
        # edge. At 1/8 the trained decoder's stitched mask disagreed with one pass 1.49x more at window borders
        # than elsewhere; at 1/4 1.10x, for about 1.36x the windows (``tests/test_default_model.py``).
        tile_overlap: float = 0.25,
        dtype: str | torch.dtype = "auto",
        tile_large_scenes: bool = True,
        time_budget_s: float | None = 60.0,
        coarse_to_fine: bool | None = None,
        window_batch: int = 4,
    ):
        self.model = model
        self.processor = processor
        # A large scene's budget: windows read at full resolution (None: no cap) and seconds spent reading them
        # (None: no limit). What the budget leaves unread is taken from the overview and named in the warnings.
        self.max_tiles = max_tiles
        self.time_budget_s = time_budget_s
        # True: read only the windows on the overview masks' boundaries (or uncertain); None: when the scene has
        # more than COARSE_TO_FINE_WINDOWS windows; False: every window (a budget still applies).
        self.coarse_to_fine = coarse_to_fine
        self.window_batch = window_batch
        self.tile_overlap = tile_overlap
        # False: an image larger than the model input is answered whole, resized (as benchmarks are scored);
        # True: by an overview and full-resolution windows (large scenes).
        self.tile_large_scenes = tile_large_scenes
        self.dtype = inference_dtype(dtype, model)
        if self.dtype != torch.float32:
            _cast_for_inference(model, self.dtype)
        # One generation at a time: concurrent users share two cores, and interleaving only slows everyone.
        self.lock = threading.Lock()
        self.warnings: list[str] = []

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path = "default", **kwargs: Any) -> Assistant:
        """``"default"``: the embedded model (trained adapter in ``rsvlm/default/``); else a checkpoint folder."""
        from rsvlm.configuration_rsvlm import RSVLMConfig
        from rsvlm.modeling_rsvlm import RSVLMForConditionalGeneration

        warnings: list[str] = []
        if str(name_or_path) == "default":
            if (DEFAULT_CHECKPOINT / "config.json").is_file():
                model = RSVLMForConditionalGeneration.from_pretrained(DEFAULT_CHECKPOINT)
            else:
                note = "the embedded default has no trained adapter yet: answers come from untrained adapters"
                logger.warning(note)
                warnings.append(note)
                model = RSVLMForConditionalGeneration(RSVLMConfig())
        else:
            path = Path(name_or_path).expanduser()
            if not (path / "config.json").is_file():
                raise ValueError(f"{path} is not an rsvlm checkpoint (no config.json there)")
            model = RSVLMForConditionalGeneration.from_pretrained(path)
        processor = model.get_processor()
        model.eval()
        assistant = cls(model, processor, **kwargs)
        assistant.warnings = warnings
        return assistant

    def inference(self) -> contextlib.AbstractContextManager:
        """No autograd, and bf16 autocast where the LLM was cast (the tower and heads follow at half the cost)."""
        stack = contextlib.ExitStack()
        stack.enter_context(torch.inference_mode())
        if self.dtype != torch.float32:
            stack.enter_context(torch.autocast(self.model.device.type, dtype=self.dtype))
        return stack

    @property
    def image_size(self) -> int:
        return int(self.model.config.image_size)

    def session(self) -> Session:
        return Session(self)


def inference_dtype(dtype: str | torch.dtype, model) -> torch.dtype:
    """``"auto"``: bfloat16 where the hardware does it natively (CUDA with bf16, CPUs with AVX512-BF16 or AMX),
    else float32. On such CPUs decoding is bandwidth-bound, and half the bytes is ~1.5x the tokens/s."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype != "auto":
        return getattr(torch, dtype)
    if getattr(model.config, "load_in_4bit", False) or model.causal_lm.dtype != torch.float32:
        return torch.float32  # the user chose the LLM's precision already
    device = model.device
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    return torch.bfloat16 if cpu_has_native_bf16() else torch.float32


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: bf16 matrix work at full speed (False on older torch, which cannot tell)."""
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:
        return False


def _cast_for_inference(model, dtype: torch.dtype) -> None:
    model.causal_lm.to(dtype)
    model.vision.to(memory_format=torch.channels_last)  # oneDNN's fast bf16 convolutions want NHWC


class Session:
    """A conversation about one image (or one pair of dates)."""

    def __init__(self, assistant: Assistant, feature_cache_size: int | None = None):
        self.assistant = assistant
        self.history: list[dict[str, str]] = []
        self.images: list[geo.GeoImage] = []
        self.dates: tuple[str, str] | None = None
        self.bands: str | list[int] | None = None
        self._features: OrderedDict[tuple, Any] = OrderedDict()
        # Encoded features of the images the language model reads (an image, a large scene's overview, a second
        # date) stay cached, so a follow-up question re-runs only the language model. A large scene's windows are
        # not kept (one is ~1-3 MB, a 10,000² scene has 2,000): they cost a tower pass each, no generation.
        self._cache_size = feature_cache_size if feature_cache_size is not None else 4
        self.encode_count = 0  # images the vision tower encoded (tests and benchmarks read it)
        self._cancel = threading.Event()

    # ------------------------------------------------------------------------------------------------------------
    def ask(
        self,
        question: str,
        images: list[str | Path | geo.GeoImage] | None = None,
        *,
        bands: str | list[int] | None = None,
        dates: tuple[str, str] | None = None,
        max_new_tokens: int = 128,
        streamer=None,
        progress: Callable[[int, int], None] | None = None,
        budget: WindowBudget | None = None,
    ) -> Answer:
        """One turn. ``streamer(text_piece)`` gets the answer's text as it is generated (for a large scene: the
        overview answer, before any window is read); ``progress(done, total)`` the windows of a large scene as
        they are decoded. ``cancel()`` from another thread ends a large scene's window pass early; an exception
        raised by ``streamer`` ends the generation (and propagates). ``dates`` without ``images`` relabels the
        session's two dates (see ``set_dates``)."""
        if not question or not question.strip():
            raise ValueError("the question is empty")
        self._cancel.clear()
        if images:
            self.set_images(images, bands=bands, dates=dates)
        elif dates is not None:
            self.set_dates(dates)
        if not self.images:
            raise ValueError("no image: give one image (or two dates) with the first question")
        first = self.images[0]
        if self._is_large(first.source_shape) and len(self.images) == 1:
            return self._ask_large_scene(
                question, max_new_tokens=max_new_tokens, streamer=streamer, progress=progress, budget=budget
            )
        answer, *_ = self._turn(
            question, self.images, max_new_tokens=max_new_tokens, streamer=streamer, remember=True
        )
        return answer

    def reset(self) -> None:
        self.history.clear()

    def cancel(self) -> None:
        """End a running large-scene answer after its current batch of windows (a chat's Stop button); the answer
        returns what was decoded so far and says what was not read."""
        self._cancel.set()

    # ------------------------------------------------------------------------------------------------------------
    def set_images(
        self,
        images: list[str | Path | geo.GeoImage],
        *,
        bands: str | list[int] | None = None,
        dates: tuple[str, str] | None = None,
    ) -> None:
        """Read one image (or two dates, aligned) for the questions to come; a new conversation. Raises
        ``RasterError`` (a ``ValueError``) on a bad file, so a chat can refuse an upload before any question.
        Two dates without ``dates`` are labelled from their file names (20090818 -> 2009-08-18), else 'date N'."""
        if len(images) > 2:
            raise ValueError(f"give one image, or two dates for change questions (got {len(images)})")
        self.bands = bands
        loaded = [self._load(img, bands) for img in images]
        if len(loaded) == 2:
            loaded[1] = geo.align_pair(loaded[0], loaded[1])
            self.dates = dates or (_date_label(loaded[0], 1), _date_label(loaded[1], 2))
        self.images = loaded
        self.history.clear()  # a new image starts a new conversation
        # ...and drops the old features: an in-memory upload has no path, so two of the same size would share a key.
        self._features.clear()

    def set_dates(self, dates: tuple[str, str]) -> None:
        """New labels for the two dates. The labels are part of the first user turn only, so that turn is written
        again with them and the conversation goes on (the images' encoded features stay cached)."""
        if len(self.images) == 2 and tuple(dates) != self.dates:
            self.dates = (dates[0], dates[1])
            if self.history and self.history[0]["role"] == "user":
                first = self.history[0]["content"]
                question = first.split("\n", 2)[2] if first.count("\n") >= 2 else first
                self.history[0] = {**self.history[0], "content": format_two_date_prompt(question, self.dates)}

    def _load(self, image, bands) -> geo.GeoImage:
        if isinstance(image, geo.GeoImage):
            return image
        info = geo.inspect_raster(image)
        if self._is_large(info.shape):
            if not info.overviews and info.pixels > OVERVIEW_SCAN_LIMIT:
                # An overview of a raster without internal overviews scans every block (minutes past this size).
                raise geo.RasterError(
                    f"{Path(image).name} is {info.width} x {info.height} pixels with no internal overviews, too large "
                    f"to search whole; build overviews first (rio overview --build 2^1..8 {Path(image).name})"
                )
            # A large scene: keep only an overview in memory; windows are read on demand.
            return geo.read_image(image, bands=bands, overview_size=self.assistant.image_size)
        return geo.read_image(image, bands=bands)

    def _is_large(self, shape: tuple[int, int]) -> bool:
        """Answered by overview + windows: larger than twice the model input, unless tiling is off and the image
        can be read whole (``geo.DEFAULT_MAX_PIXELS``); a bigger one is tiled regardless, never allocated."""
        if max(shape) <= 2 * self.assistant.image_size:
            return False
        return self.assistant.tile_large_scenes or shape[0] * shape[1] > geo.DEFAULT_MAX_PIXELS

    def _model_pixels(self, image: geo.GeoImage) -> np.ndarray:
        """[C, H, W] in [0, 1]: the RGB composite for an RGB tower, else as many bands as the band adapter takes."""
        channels = int(self.assistant.model.config.in_channels)
        return image.rgb() if channels == 3 else image.bands_for_model(channels)

    def _encode(self, pixel_values: torch.Tensor, key: tuple) -> Any:
        if key in self._features:
            self._features.move_to_end(key)
            return self._features[key]
        model = self.assistant.model
        num = torch.tensor([pixel_values.shape[0]])
        with self.assistant.inference():
            features = model.encode_images(pixel_values.to(model.device), num)
        self.encode_count += 1
        self._features[key] = features
        while len(self._features) > self._cache_size:
            self._features.popitem(last=False)
        return features

    def _turn(
        self,
        question,
        images: list[geo.GeoImage],
        *,
        max_new_tokens,
        streamer=None,
        remember: bool,
        history: list[dict[str, str]] | None = None,
        state_facts: bool = True,
        overview: bool = False,
    ) -> tuple[Answer, Any, Any, Any]:
        """One model turn on these images -> (answer, its ``GenerationResult``, the reference image's
        ``ImageMeta``, the ``ImageFeatures`` it read). ``history`` defaults to the session's; a large scene's tiles pass []
        (the conversation so far is about the overview, whose image a tile must not stand in for).

        The text keeps no quantity the model wrote; with ``state_facts`` it ends with what was measured on the
        returned regions (``rsvlm.answer_facts``), the same numbers as the regions table and the GeoJSON."""
        assistant = self.assistant
        processor = assistant.processor
        warnings = list(assistant.warnings)
        for image in images:
            warnings.extend(image.warnings)
        tensors, metas = zip(*(processor.preprocess_image(self._model_pixels(img)) for img in images))
        pixel_values = torch.stack(tensors)
        key = tuple(
            (img.path, img.window, img.scale, img.band_names and tuple(img.band_names)) for img in images
        )
        features = self._encode(pixel_values, key)

        history = self.history if history is None else history
        if history:
            user_text = question
        elif len(images) == 2:
            user_text = format_two_date_prompt(question, self.dates or ("date 1", "date 2"))
        else:
            user_text = format_single_image_prompt(question)
        conversation = [*history, {"role": "user", "content": user_text}]
        inputs = processor.prompt_for_generation(conversation)
        reference = images[-1] if len(images) == 2 else images[0]
        meta = metas[-1] if len(images) == 2 else metas[0]
        valid = int(reference.valid.sum()) if reference.valid is not None else None
        valid = valid or int(np.prod(reference.data.shape[1:]))
        turn = decided.Turn(assistant, inputs["input_ids"], features, reference, meta, warnings, valid)

        if (
            len(images) == 1
            and not overview
            and decided.answered_by_decoder(question, assistant.model.config)
        ):
            # "Outline the buildings.": the answer is the decoder's mask of the user's own noun whatever the model
            # writes (decided.cut_asked_element), so the language model is not run for it.
            start = time.perf_counter()
            regions, text = decided.decide(turn, question, [], "", False, False)
            result = None
            raw = " ".join([text, *(f"<p>{r.label}</p> {SEG_TOKEN}" for r in regions)])
            timings = {"ttft": time.perf_counter() - start}
            if streamer is not None:
                streamer(text)
        else:
            result, raw, regions, text = self._model_answer(turn, inputs, max_new_tokens, streamer)
            regions, text = decided.decide(turn, question, regions, text, len(images) == 2, overview)
            timings = dict(result.timings)
        if remember:
            self.history = [*conversation, {"role": "assistant", "content": raw}]
        if state_facts:
            text = _join(text, measured_facts(regions, valid))
        answer = Answer(
            text=text,
            regions=regions,
            warnings=_unique(warnings),
            raw_text=raw,
            crs=reference.crs.to_string() if reference.crs else None,
            transform=tuple(reference.transform)[:6],
            image_shape=tuple(reference.data.shape[1:]),
            timings=timings,
        )
        return answer, result, meta, features

    def _model_answer(self, turn: decided.Turn, inputs, max_new_tokens, streamer):
        """The language model's answer -> (its ``GenerationResult``, raw text, regions on the source pixels, text
        with no quantity the model wrote); each ``[SEG]``'s mask at its phrase's calibrated threshold."""
        assistant = self.assistant
        with assistant.lock, assistant.inference():
            result = assistant.model.generate(
                input_ids=inputs["input_ids"].to(assistant.model.device),
                attention_mask=inputs["attention_mask"].to(assistant.model.device),
                image_features=turn.features,
                max_new_tokens=max_new_tokens,
                streamer=streamer,
                stop_loops=True,
            )
        raw = assistant.processor.decode(result.sequences[0])
        parsed = parse_answer(raw)
        masks = []
        if result.masks and result.masks[0] is not None and len(result.masks[0]):
            phrases = {r.seg_index: r.label for r in parsed.regions if r.seg_index is not None}
            logits = presence.calibrated_logits(  # rsvlm.presence.mask_threshold_for
                result.masks[0].float(),
                [phrases.get(k) for k in range(len(result.masks[0]))],
                assistant.model.config,
            )
            masks = [np.asarray((m > 0).cpu()) for m in logits]
        attach_masks(parsed, masks)
        turn.warnings.extend(parsed.warnings)
        regions = [to_source(region, turn.reference, turn.meta, turn.warnings) for region in parsed.regions]
        return result, raw, regions, _model_text(parsed.text, turn.warnings)

    # ------------------------------------------------------------------------------------------------------------
    def _ask_large_scene(
        self, question: str, *, max_new_tokens: int, streamer=None, progress=None, budget: WindowBudget | None
    ) -> Answer:
        """One language pass on the overview, then its mask prompts decoded on the scene's windows, stitched.

        Memory is bounded by a batch of windows' pixels and features, and each region's mask as the 256² blocks
        it covers (``geo.SparseMask``), never the scene grid.
        """
        start = time.perf_counter()
        assistant = self.assistant
        overview = self.images[0]
        overview_answer, generation, meta, features = self._turn(
            question, [overview], max_new_tokens=max_new_tokens, streamer=streamer, remember=True,
            state_facts=False, overview=True,
        )  # fmt: skip
        height, width = overview.source_shape  # type: ignore[misc]
        # Source pixels -> CRS (no CRS: the identity). From the file's header when there is one: undoing the
        # overview's decimation in floating point would give -0.9999999999 for -1.
        grid_transform = (
            geo.inspect_raster(overview.path).transform
            if overview.path is not None
            else overview.transform @ ~overview.pixel_transform
        )
        windows = plan_windows(width, height, assistant.image_size, assistant.tile_overlap)
        warnings = list(overview_answer.warnings)
        prompts = self._scene_prompts(overview_answer, generation, warnings)
        timings = dict(overview_answer.timings)
        if not len(prompts):
            # Nothing grounded on the overview: nothing to decode (a question without regions, or nothing found).
            timings["scene_s"] = time.perf_counter() - start
            return _replace_answer(
                overview_answer, grid_transform, (height, width), windows=len(windows), tiles=0, timings=timings,
                warnings=warnings, text=overview_answer.text or "Found nothing.",
            )  # fmt: skip
        if budget is None:
            budget = WindowBudget(assistant.max_tiles, assistant.time_budget_s)
        coarse = assistant.coarse_to_fine
        if coarse is None:
            coarse = len(windows) > COARSE_TO_FINE_WINDOWS
        overview_masks = self._overview_masks(prompts, generation, features, meta, overview)
        with assistant.inference():
            guide = scene.scene_guide(assistant.model, features.contexts[0], features.pixels[0], prompts)
        decoded = scene.decode_scene(
            assistant.model,
            self._window_pixels,
            windows,
            prompts,
            (height, width),
            overview=overview_masks,
            coarse_to_fine=coarse,
            max_windows=budget.max_windows,
            time_budget_s=budget.seconds,
            batch_size=assistant.window_batch,
            progress=progress,
            should_stop=self._cancel.is_set,
            inference=assistant.inference,
            guide=guide,
        )
        self.encode_count += len(decoded.read)
        regions = self._scene_regions(prompts, decoded, grid_transform, overview.crs, warnings)
        warnings.extend(_not_read_warnings(decoded, len(windows), overview))
        summary = describe_large_scene(
            regions,
            decoded.windows_with_hits,
            len(decoded.read),
            len(windows),
            how=_how_read(decoded, coarse),
        )
        text = f"{summary}\nOverview: {overview_answer.text}" if overview_answer.text else summary
        text = _join(text, measured_facts(regions, height * width))
        timings["windows_s"] = decoded.seconds
        timings["scene_s"] = time.perf_counter() - start
        return _replace_answer(
            overview_answer, grid_transform, (height, width), windows=len(windows), tiles=len(decoded.read),
            timings=timings, warnings=warnings, text=text, regions=regions,
        )  # fmt: skip

    def _scene_prompts(self, overview_answer: Answer, generation, warnings: list[str]) -> scene.ScenePrompts:
        """One prompt per region of the overview answer: a ``[SEG]`` region's own state and phrase (the phrase
        alone when the result carries no states), a box's label as a phrase (``phrase_prompt`` models only)."""
        model = self.assistant.model
        states = getattr(generation, "seg_states", None)
        phrases = getattr(generation, "seg_phrases", None) or []
        labels, vectors, is_mask = [], [], []
        skipped = []
        for region in overview_answer.regions:
            if region.seg_index is not None:
                index = region.seg_index
                phrase = phrases[index] if index < len(phrases) else region.label
                state = states[index : index + 1] if states is not None and index < len(states) else None
            elif region.box is not None or region.obb is not None or region.mask is not None:
                phrase, state = region.label, None  # a box, or a mask cut from a phrase (rsvlm.asked)
            else:
                continue
            if state is None and not model.config.phrase_prompt:
                skipped.append(region.label or "(region)")
                continue
            with self.assistant.inference():
                vectors.append(scene.mask_prompts(model, state, [phrase]).float())
            labels.append(region.label)
            is_mask.append(region.seg_index is not None)
        if skipped:
            warnings.append(
                f"{len(skipped)} region(s) of the overview ({', '.join(skipped[:3])}) could not be searched at full "
                "resolution: this model prompts masks from [SEG] states only"
            )
        tensor = torch.cat(vectors) if vectors else torch.zeros(0, 1)
        return scene.ScenePrompts(labels=labels, vectors=tensor, is_mask=is_mask)

    def _overview_masks(
        self, prompts, generation, features, meta, overview: geo.GeoImage
    ) -> scene.OverviewMasks:
        """Each prompt's mask probabilities on the overview's pixels: from the decoder on the overview's own
        features (the same computation ``generate`` ran for its [SEG]s, which a scripted answer replaces)."""
        model = self.assistant.model
        with self.assistant.inference():
            logits = (
                model.mask_decoder(features.contexts, [0] * len(prompts), prompts.vectors.to(model.device))
                .float()
                .cpu()
            )  # [M, S, S]
        rows = list(logits)
        generated = generation.masks[0] if generation.masks and generation.masks[0] is not None else None
        seg_rows = [i for i, m in enumerate(prompts.is_mask) if m]
        if generated is not None and len(generated) == len(seg_rows):
            for row, mask in zip(seg_rows, generated):
                rows[row] = mask.float().cpu()
        logits = presence.calibrated_logits(torch.stack(rows), prompts.labels, model.config)
        probs = np.stack([meta.mask_to_source(torch.sigmoid(m).cpu()) for m in logits])  # [M, h, w]
        if overview.valid is not None:
            probs = probs * overview.valid
        return scene.OverviewMasks(probs=probs, scale=float(overview.scale))

    def _window_pixels(self, window):
        """A window's model input ``(pixels [C, S, S], ImageMeta, valid [h, w])``; None for nodata."""
        tile = self._read_tile(window)
        if not tile.valid.any():
            return None
        pixels, meta = self.assistant.processor.preprocess_image(self._model_pixels(tile))
        return pixels, meta, tile.valid

    def _scene_regions(self, prompts, decoded, transform, crs, warnings: list[str]) -> list[Region]:
        """The stitched masks as regions: a ``[SEG]`` prompt's mask is one region (merged per label); a box
        prompt gives one box per connected part of its mask, largest first."""
        masks = [Region(label=label, mask=mask, score=1.0)
                 for label, mask, is_mask in zip(prompts.labels, decoded.masks, prompts.is_mask) if is_mask]  # fmt: skip
        regions = merge_regions(masks, transform=transform, crs=crs)
        for label, mask, is_mask in zip(prompts.labels, decoded.masks, prompts.is_mask):
            if is_mask or not mask.any():
                continue
            parts = mask.pixel_polygons()
            if len(parts) > MAX_BOXES:
                warnings.append(f"{len(parts):,} {label!r} found; the {MAX_BOXES} largest are returned")
                parts = parts[:MAX_BOXES]
            for part in parts:
                box = tuple(float(v) for v in part.bounds)
                region = Region(label=label, pixel_box=box, score=1.0)  # type: ignore[arg-type]
                if crs is not None:
                    region.geometry = geo.pixel_box_to_geometry(box, transform, crs)
                    region.area_m2 = float(geo.area_m2(region.geometry))
                regions.append(region)
        return regions

    def _read_tile(self, window: tuple[int, int, int, int]) -> geo.GeoImage:
        """A window of the scene at full resolution: sliced from memory when the session holds the whole scene
        (an in-memory upload), else read from the file (nodata windows come back empty, not as errors)."""
        image = self.images[0]
        if image.scene_stretch is None:  # windows take the overview's stretch, so they look like one scene
            image.scene_stretch = image.band_stretch_limits()
        full = image.scale == 1 and image.window == (0, 0, image.width, image.height)
        if image.path is not None and not full:
            tile = geo.read_image(image.path, bands=self.bands, window=window, allow_empty=True)
            tile.scene_stretch = image.scene_stretch
            return tile
        x, y, w, h = window
        from affine import Affine

        return geo.GeoImage(
            data=image.data[:, y : y + h, x : x + w],
            valid=image.valid[y : y + h, x : x + w],
            band_names=list(image.band_names),
            crs=image.crs,
            transform=image.transform @ Affine.translation(x, y),
            path=image.path,
            window=(x, y, w, h),
            source_shape=image.source_shape,
            preset=image.preset,
            nodata=image.nodata,
            scene_stretch=image.scene_stretch,
        )


# ----------------------------------------------------------------------------------------------------------------
# Small helpers


def _replace_answer(answer: Answer, transform, shape, **changes) -> Answer:
    """A large scene's answer: the overview answer's, on the source grid, with these fields changed."""
    from dataclasses import replace

    return replace(
        answer,
        transform=tuple(transform)[:6],
        image_shape=shape,
        regions=changes.pop("regions", []),
        warnings=_unique(changes.pop("warnings")),
        **changes,
    )


def _how_read(decoded: scene.DecodedScene, coarse: bool) -> str | None:
    if not decoded.not_read:
        return None
    if coarse:
        return f"coarse to fine read the {len(decoded.read):,} on the overview's boundaries"
    return f"the budget read the {len(decoded.read):,} most uncertain"


def _not_read_warnings(decoded: scene.DecodedScene, total: int, overview: geo.GeoImage) -> list[str]:
    """What was not read at full resolution, and why, in one warning."""
    if not decoded.not_read:
        return []
    missing = sum(decoded.not_read.values())
    why = {
        "outside": "where the overview found nothing",
        "inside": "inside what the overview found",
        "window budget": "left by the window budget (max_tiles)",
        "time budget": "left by the time budget (time_budget_s)",
        "cancelled": "left when the answer was cancelled",
    }
    parts = ", ".join(f"{n:,} {why.get(reason, reason)}" for reason, n in decoded.not_read.items())
    gsd = overview.gsd
    detail = f"~{gsd:.1f} m per pixel" if gsd else f"{overview.scale:.0f}× coarser than the scene"
    return [
        f"{missing:,} of the scene's {total:,} windows were not read at full resolution ({parts}); their masks "
        f"come from the overview ({detail})"
    ]


def _model_text(text: str, warnings: list[str]) -> str:
    """The model's text without the quantities it stated (a warning lists them): numbers are measured instead."""
    cleaned, dropped = strip_model_quantities(text)
    if dropped:
        shown = ", ".join(repr(d) for d in dropped[:3]) + (", …" if len(dropped) > 3 else "")
        warnings.append(
            f"dropped {len(dropped)} number(s) the language model wrote ({shown}): the numbers in this answer "
            "are measured on the regions it returns"
        )
    return cleaned


def _join(text: str, facts: str) -> str:
    return f"{text}\n{facts}" if text and facts else (text or facts)


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


_DATE = re.compile(r"(19|20)\d{2}[-_]?(0[1-9]|1[0-2])[-_]?([0-2]\d|3[01])|(19|20)\d{2}")


def _date_label(image: geo.GeoImage, index: int) -> str:
    """A date found in the file name (20090818 -> 2009-08-18), else 'date N'."""
    name = Path(image.path).name if image.path else ""
    match = _DATE.search(name)
    if not match:
        return f"date {index}"
    digits = re.sub(r"[-_]", "", match.group(0))
    return f"{digits[:4]}-{digits[4:6]}-{digits[6:8]}" if len(digits) == 8 else digits


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))
