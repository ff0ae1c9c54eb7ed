"""The Assistant on a tiny random checkpoint: sessions, feature reuse, two dates, large scenes, geometry."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from shapely.geometry import box as shapely_box
from shapely.geometry import shape

from rsvlm import geo
from rsvlm.assistant import Assistant
from rsvlm.modeling_rsvlm import GenerationResult

DATA = Path(__file__).parent / "data"
NAIP_2020 = DATA / "naip_2020_256.tif"
NAIP_2009 = DATA / "naip_2009_256.tif"


@pytest.fixture
def assistant(tiny_checkpoint) -> Assistant:
    return Assistant.from_pretrained(tiny_checkpoint, max_tiles=4)


def scripted(assistant: Assistant, text: str, masks: list[np.ndarray] = ()):
    """Make the model 'say' ``text`` (and give these masks) so the geo plumbing is checked on known output."""
    tokenizer = assistant.processor.tokenizer
    size = assistant.image_size

    def generate(**kwargs):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        logits = (
            torch.stack([torch.where(torch.as_tensor(m), 10.0, -10.0) for m in masks])
            if masks
            else torch.zeros(0, size, size)
        )
        return GenerationResult(sequences=torch.tensor([ids]), masks=[logits], timings={"ttft": 0.0})

    assistant.model.generate = generate


def test_one_turn_on_a_real_geotiff_returns_text(assistant):
    answer = assistant.session().ask("Describe this image.", images=[NAIP_2020], max_new_tokens=8)
    payload = answer.to_json()
    assert isinstance(payload["text"], str)
    assert payload["crs"] == "EPSG:26914"
    assert answer.tiles == 1


def test_later_turns_reuse_the_encoded_image(assistant):
    session = assistant.session()
    session.ask("Describe this image.", images=[NAIP_2020], max_new_tokens=4)
    session.ask("Anything else?", max_new_tokens=4)
    session.ask("And the roads?", max_new_tokens=4)
    assert session.encode_count == 1
    assert [m["role"] for m in session.history] == ["user", "assistant"] * 3
    session.ask("A new image starts over.", images=[NAIP_2009], max_new_tokens=4)
    assert session.encode_count == 2 and len(session.history) == 2


def test_two_dates_are_aligned_and_labelled_from_file_names(assistant):
    session = assistant.session()
    session.ask("What changed?", images=[NAIP_2009, NAIP_2020], max_new_tokens=4)
    assert session.dates == ("2009", "2020")
    assert session.images[1].data.shape[1:] == session.images[0].data.shape[1:]
    assert session.history[0]["content"].startswith("Image 1 (2009): <image>\nImage 2 (2020): <image>")


def test_answer_geometry_falls_inside_the_source_footprint_and_round_trips(assistant):
    scripted(assistant, "The field is at <box>[100, 200, 500, 600]</box> next to <p>the pond</p> [SEG].",
             masks=[np.pad(np.ones((20, 30), bool), ((40, 68), (10, 88)))])  # fmt: skip
    answer = assistant.session().ask("Where?", images=[NAIP_2020])
    assert [r.label for r in answer.regions] == ["The field", "the pond"]
    with rasterio.open(NAIP_2020) as src:
        footprint = geo.pixel_box_to_geometry((0, 0, src.width, src.height), src.transform, src.crs)
        transform, crs = src.transform, src.crs
    field, pond = answer.regions
    # 0-1000 grid on a 128 px input of a 256 px image: grid 100 -> source pixel 25.6
    assert field.pixel_box == pytest.approx((25.6, 51.2, 128.0, 153.6))
    assert shape(footprint).buffer(1e-9).contains(shape(field.geometry))
    back = geo.geometry_to_pixels(field.geometry, transform, crs)
    xs, ys = zip(*shape(back).exterior.coords) if hasattr(back, "keys") else zip(*back.exterior.coords)
    assert min(xs) == pytest.approx(25.6, abs=0.5) and max(ys) == pytest.approx(153.6, abs=0.5)
    assert field.area_m2 == pytest.approx((128.0 - 25.6) * (153.6 - 51.2) * 25.0, rel=0.01)  # 5 m pixels
    # the mask is 20 × 30 model pixels = 40 × 60 source pixels of 25 m²
    assert pond.mask.shape == (256, 256) and pond.mask.sum() == 2400
    assert pond.area_m2 == pytest.approx(2400 * 25.0, rel=0.02)
    assert shape(footprint).buffer(1e-9).contains(shape(pond.geometry))


def test_image_without_crs_gets_pixel_geometry_and_a_warning(assistant, tmp_path):
    from PIL import Image

    with rasterio.open(NAIP_2020) as src:
        Image.fromarray(np.moveaxis(src.read([1, 2, 3]), 0, -1)).save(tmp_path / "plain.png")
    scripted(assistant, "A roof <box>[0, 0, 500, 500]</box>.")
    answer = assistant.session().ask("Where?", images=[tmp_path / "plain.png"])
    assert answer.regions[0].geometry is None
    assert answer.regions[0].pixel_box == pytest.approx((0, 0, 128, 128))
    assert any("no CRS" in w for w in answer.warnings)


def test_large_scene_is_answered_by_bounded_tiles(assistant, tmp_path):
    from rasterio.transform import from_origin

    path = tmp_path / "scene.tif"
    rng = np.random.default_rng(0)
    with rasterio.open(path, "w", driver="GTiff", width=1000, height=700, count=3, dtype="uint8",
                       crs="EPSG:32633", transform=from_origin(500000, 5000000, 1, 1)) as dst:  # fmt: skip
        dst.write(rng.integers(0, 255, (3, 700, 1000), dtype=np.uint8))
    scripted(assistant, "A car <box>[100, 100, 200, 200]</box>.")
    session = assistant.session()
    answer = session.ask("Find the cars.", images=[path])
    assert session.images[0].scale > 1  # only an overview of the scene is held
    assert answer.tiles == 4  # the budget, out of 54 windows
    footprint = shapely_box(
        *rasterio.warp.transform_bounds("EPSG:32633", "EPSG:4326", 500000, 4999300, 501000, 5000000)
    )
    assert answer.regions and all(footprint.buffer(1e-7).contains(shape(r.geometry)) for r in answer.regions)


def test_raster_too_large_to_search_is_refused_with_its_size(assistant, tmp_path):
    from rasterio.transform import from_origin

    path = tmp_path / "huge.tif"
    with rasterio.open(path, "w", driver="GTiff", width=100_000, height=100_000, count=1, dtype="uint8",
                       crs="EPSG:32633", transform=from_origin(0, 0, 1, 1), tiled=True, sparse_ok=True):  # fmt: skip
        pass
    with pytest.raises(geo.RasterError, match="100000 x 100000"):
        assistant.session().ask("Anything?", images=[path])


def test_concurrent_sessions_each_get_their_answer(assistant):
    results: dict[int, object] = {}

    def run(i: int) -> None:
        results[i] = assistant.session().ask("Describe.", images=[NAIP_2020], max_new_tokens=4)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [0, 1, 2]
    assert len({r.text for r in results.values()}) == 1  # greedy decoding: same question, same answer


def test_empty_question_and_missing_image_are_clear_errors(assistant):
    session = assistant.session()
    with pytest.raises(ValueError, match="empty"):
        session.ask("  ", images=[NAIP_2020])
    with pytest.raises(ValueError, match="no image"):
        session.ask("Describe.")
    with pytest.raises(ValueError, match="two dates"):
        session.ask("Describe.", images=[NAIP_2020] * 3)


def test_inference_precision_is_chosen_for_the_hardware_or_by_the_user(tiny_checkpoint):
    exact = Assistant.from_pretrained(tiny_checkpoint, dtype="float32")
    assert exact.dtype == torch.float32 and exact.model.causal_lm.dtype == torch.float32
    auto = Assistant.from_pretrained(tiny_checkpoint)
    assert auto.model.causal_lm.dtype == auto.dtype
    answer = auto.session().ask("Describe.", images=[NAIP_2020], max_new_tokens=4)
    assert isinstance(answer.text, str)
