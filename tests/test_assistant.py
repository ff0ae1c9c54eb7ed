"""The Assistant on a tiny random checkpoint: sessions, feature reuse, two dates, large scenes, geometry."""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from shapely.geometry import box as shapely_box
from shapely.geometry import shape

from rsvlm import decided, geo
from rsvlm.assistant import Assistant
from rsvlm.testing import scripted_generation

DATA = Path(__file__).parent / "data"
NAIP_2020 = DATA / "naip_2020_256.tif"
NAIP_2009 = DATA / "naip_2009_256.tif"


@pytest.fixture
def assistant(tiny_checkpoint) -> Assistant:
    return Assistant.from_pretrained(tiny_checkpoint, max_tiles=4)


def scripted(assistant: Assistant, text: str, masks: list[np.ndarray] = (), prompts: list[str] | None = None):
    """Make the model 'say' ``text`` (and give these masks) so the geo plumbing is checked on known output;
    the prompts it was given are appended to ``prompts``."""
    tokenizer = assistant.processor.tokenizer
    size = assistant.image_size

    def generate(**kwargs):
        if prompts is not None:
            prompts.append(tokenizer.decode(kwargs["input_ids"][0]))
        return scripted_generation(tokenizer, text, masks, size)

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
    # The budget, out of 11 x 7 windows of 128 px, 96 px apart.
    assert answer.tiles == 4 and answer.windows == 77
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


def _write_scene(path: Path, width: int, height: int, nodata_left: int = 0) -> Path:
    from rasterio.transform import from_origin

    rng = np.random.default_rng(0)
    data = rng.integers(1, 255, (3, height, width), dtype=np.uint8)
    data[:, :, :nodata_left] = 0
    with rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=3, dtype="uint8", nodata=0,
                       crs="EPSG:32633", transform=from_origin(500000, 5000000, 2, 2)) as dst:  # fmt: skip
        dst.write(data)
    return path


def test_follow_up_on_a_large_scene_reuses_the_overview_and_generates_once_per_turn(assistant, tmp_path):
    """Windows are decoded from the overview answer's prompts (tower + mask decoder): the language model runs
    once per question, on the overview, whose features the follow-up reuses."""
    path = _write_scene(tmp_path / "scene.tif", 1000, 700)
    prompts: list[str] = []
    scripted(assistant, "A car <box>[100, 100, 200, 200]</box>.", prompts=prompts)
    session = assistant.session()
    session.ask("Find the cars.", images=[path])
    assert session.encode_count == 5  # the overview and the 4 windows of the budget
    session.ask("And the trucks?")
    assert session.encode_count == 9  # the windows again (not cached), the overview not
    assert len(prompts) == 2 and prompts[1].count("<|im_start|>user") == 2


def test_large_scene_with_nodata_windows_and_every_window_read(tiny_checkpoint, tmp_path):
    path = _write_scene(tmp_path / "edge.tif", 400, 300, nodata_left=140)
    assistant = Assistant.from_pretrained(tiny_checkpoint, max_tiles=100)
    scripted(assistant, "A car <box>[100, 100, 200, 200]</box>.")
    answer = assistant.session().ask("Find the cars.", images=[path])
    # The 3 windows of the first column hold only nodata: skipped (not an error), so 9 windows decoded.
    assert answer.windows == 12 and answer.tiles == 9
    assert not any("not read at full resolution" in w for w in answer.warnings)
    assert all(region.pixel_box[2] > 140 for region in answer.regions)  # nothing is found in nodata alone


def test_large_scene_without_crs_reports_source_pixels(assistant, tmp_path):
    from PIL import Image

    rgb = np.random.default_rng(1).integers(0, 255, (400, 600, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "big.png")
    scripted(assistant, "A <p>roof</p> [SEG].", masks=[np.ones((128, 128), bool)])
    assistant.max_tiles = None
    answer = assistant.session().ask("Where?", images=[tmp_path / "big.png"])
    assert answer.crs is None and answer.image_shape == (400, 600) and answer.tiles == answer.windows
    assert all(r.geometry is None and r.area_m2 is None for r in answer.regions)
    assert all(r.mask.shape == (400, 600) for r in answer.regions)


def test_large_scene_held_in_memory_is_tiled_from_the_array(assistant):
    rgb = np.random.default_rng(2).integers(0, 255, (600, 700, 3), dtype=np.uint8)
    image = geo.GeoImage.from_array(
        rgb, crs="EPSG:32633", transform=rasterio.transform.from_origin(5e5, 5e6, 1, 1)
    )
    scripted(assistant, "A car <box>[100, 100, 200, 200]</box>.")
    answer = assistant.session().ask("Find the cars.", images=[image])
    assert answer.tiles == 4 and answer.image_shape == (600, 700) and answer.regions
    assert all(r.geometry is not None for r in answer.regions)


def test_a_new_in_memory_image_is_encoded_again(assistant):
    """Uploads have no path: a second one of the same size must not get the first one's features."""
    rng = np.random.default_rng(4)
    session = assistant.session()
    for _ in range(2):
        session.ask(
            "Describe.", images=[geo.GeoImage.from_array(rng.integers(0, 255, (64, 64, 3)))], max_new_tokens=2
        )
    assert session.encode_count == 2


def test_without_tiling_a_larger_image_is_answered_whole(tiny_checkpoint, tmp_path):
    from rasterio.transform import from_origin

    path = tmp_path / "chip.tif"
    with rasterio.open(path, "w", driver="GTiff", width=800, height=600, count=3, dtype="uint8",
                       crs="EPSG:32633", transform=from_origin(500000, 5000000, 0.5, 0.5)) as dst:  # fmt: skip
        dst.write(np.random.default_rng(0).integers(0, 255, (3, 600, 800), dtype=np.uint8))
    assistant = Assistant.from_pretrained(tiny_checkpoint, tile_large_scenes=False)
    scripted(
        assistant,
        "The roof <p>roof</p> [SEG].",
        masks=[np.pad(np.ones((16, 16), bool), ((0, 112), (0, 112)))],
    )
    answer = assistant.session().ask("Segment the roof.", images=[path])
    assert answer.tiles == 1 and answer.image_shape == (600, 800)
    roof = answer.regions[0]
    assert roof.mask.shape == (600, 800)
    assert roof.pixel_box == pytest.approx((0, 0, 100, 100), abs=1)  # 16 of 128 model px = 100 source px


def _two_answers(assistant, first: str, probe: str, decoded: np.ndarray, prompts: list[str]):
    """The model says ``first``, then ``probe`` when its answer is forced to open with <p>; the decoder's mask of
    the probe's phrase is ``decoded`` (model-input pixels; bool, or float probabilities)."""
    tokenizer = assistant.processor.tokenizer
    size = assistant.image_size

    def generate(**kwargs):
        prompt = tokenizer.decode(kwargs["input_ids"][0])
        prompts.append(prompt)
        return scripted_generation(tokenizer, probe if prompt.endswith("<p>") else first, [], size)

    def decode_masks(seg_hidden, sample_index, features, phrases):
        prompts.append(f"decode {phrases}")
        if decoded.dtype != bool:  # probabilities
            return torch.logit(torch.as_tensor(decoded).clamp(1e-4, 1 - 1e-4))[None]
        return torch.where(torch.as_tensor(decoded), 10.0, -10.0)[None]

    assistant.model.generate = generate
    assistant.model.decode_masks = decode_masks


@pytest.mark.parametrize("covered, expected", [(True, "Yes."), (False, "No: no water found.")])
def test_presence_yes_or_no_follows_the_mask_of_the_phrase_the_model_names(assistant, covered, expected):
    from rsvlm.answer_facts import format_area

    size = assistant.image_size
    decoded = np.zeros((size, size), bool)
    if covered:
        decoded[: size // 2] = True
    prompts: list[str] = []
    _two_answers(assistant, "No, there is no water.", "water</p> [SEG]", decoded, prompts)
    answer = assistant.session().ask("Is there any water in this image?", images=[NAIP_2020])
    assert answer.text.startswith(expected) and prompts[-1] == "decode ['water']"
    if covered:  # the yes comes with the mask, and the stated area is that mask's
        assert len(answer.regions) == 1 and answer.regions[0].label == "water"
        assert format_area(answer.regions[0].area_m2) in answer.text
    else:
        assert not answer.regions


def test_a_relation_yes_no_stays_the_models(assistant):
    prompts: list[str] = []
    _two_answers(
        assistant, "Yes, the road is north of it.", "road</p> [SEG]", np.zeros((4, 4), bool), prompts
    )
    answer = assistant.session().ask("Is the road north of the river?", images=[NAIP_2020])
    assert answer.text.startswith("Yes, the road") and len(prompts) == 1  # no probe


def test_boxes_asked_for_but_missing_are_cut_from_the_mask_of_the_requests_own_noun(assistant):
    size = assistant.image_size
    decoded = np.zeros((size, size), bool)
    decoded[2:10, 4:20] = True  # the larger patch
    decoded[30:34, 40:44] = True
    prompts: list[str] = []
    _two_answers(assistant, "The ponds are in the north.", "the water</p> [SEG]", decoded, prompts)
    answer = assistant.session().ask("Box all the ponds.", images=[NAIP_2020])
    assert prompts[-1] == "decode ['ponds']"  # the user's noun, not the phrase the model would name
    assert [r.label for r in answer.regions] == ["ponds", "ponds"]
    assert all(r.pixel_box is not None and r.geometry is not None for r in answer.regions)
    big, small = (r.pixel_box for r in answer.regions)
    assert (big[2] - big[0]) * (big[3] - big[1]) > (small[2] - small[0]) * (small[3] - small[1])
    assert "2 boxes" in answer.text


def test_a_per_question_window_budget_overrides_the_assistants(assistant, tmp_path):
    from rsvlm.assistant import WindowBudget

    path = _write_scene(tmp_path / "scene.tif", 600, 600)
    scripted(assistant, "<p>the field</p> [SEG].", masks=[np.ones((128, 128), bool)])
    session = assistant.session()
    assert session.ask("Outline the field.", images=[path]).tiles == 4  # the assistant's max_tiles
    assert session.ask("Again.", budget=WindowBudget(max_windows=2)).tiles == 2
    answer = session.ask("Again.", budget=WindowBudget(max_windows=0))
    assert answer.tiles == 0 and any("window budget" in w for w in answer.warnings)


def test_new_date_labels_relabel_the_conversation_on_the_same_images(assistant):
    session = assistant.session()
    session.set_images([NAIP_2009, NAIP_2020])
    assert session.dates == ("2009", "2020")  # from the file names
    session.ask("What changed?", max_new_tokens=4)
    session.ask(
        "Where?", dates=("2009", "2020"), max_new_tokens=4
    )  # the same labels: the conversation goes on
    assert len(session.history) == 4
    session.ask("And now?", dates=("2009-08-18", "2020-08-31"), max_new_tokens=4)
    assert len(session.history) == 6  # the conversation goes on; its first turn carries the new labels
    first = session.history[0]["content"]
    assert first.startswith("Image 1 (2009-08-18)") and "Image 2 (2020-08-31)" in first
    assert first.endswith("\nWhat changed?") and first.count("<image>") == 2
    assert session.encode_count == 1  # the features of the pair stayed cached


@contextlib.contextmanager
def _calibration(assistant, **values):
    """The checkpoint's config carries these calibration values for the duration of a test."""
    for name, value in values.items():
        setattr(assistant.model.config, name, value)
    try:
        yield
    finally:
        for name in values:
            delattr(assistant.model.config, name)


def test_a_calibrated_presence_share_in_the_config_is_used(assistant):
    size = assistant.image_size
    decoded = np.zeros((size, size), bool)
    decoded[:1, : size // 2] = True  # under 1 % of the image: a few stray pixels
    prompts: list[str] = []
    _two_answers(assistant, "Yes.", "water</p> [SEG]", decoded, prompts)
    with _calibration(assistant, presence_min_share=0.03):
        answer = assistant.session().ask("Is there any water in this image?", images=[NAIP_2020])
    assert answer.text.startswith("No: no water found.")


def test_did_it_change_is_a_yes_no_not_a_request_for_boxes(assistant):
    prompts: list[str] = []
    _two_answers(assistant, "Yes, a small part changed.", "x</p> [SEG]", np.zeros((4, 4), bool), prompts)
    answer = assistant.session().ask("Can you detect any change here?", images=[NAIP_2009, NAIP_2020])
    assert (
        answer.text.startswith("Yes, a small part changed.") and len(prompts) == 1
    )  # "detect" asks no boxes here


@pytest.mark.parametrize(
    "question, rows, expected",
    [
        ("Did this area change?", 40, "Yes."),
        ("Did this area change?", 2, "No: I find no change between the two dates."),
        ("Did the area stay the same?", 2, "Yes: I find no change between the two dates."),
        ("Did the area stay the same?", 40, "No."),
    ],
)
def test_a_calibrated_change_share_answers_did_it_change(assistant, question, rows, expected):
    """With ``change_presence_min_share`` the change mask's share says whether two dates changed, whatever the
    model said; a "changed" comes with the changed areas."""
    size = assistant.image_size
    decoded = np.zeros((size, size), bool)
    decoded[:rows] = True
    prompts: list[str] = []
    _two_answers(assistant, "No.", "x</p> [SEG]", decoded, prompts)
    with _calibration(assistant, change_presence_min_share=0.1):
        answer = assistant.session().ask(question, images=[NAIP_2009, NAIP_2020])
    assert answer.text.startswith(expected)
    assert prompts[-1] == "decode ['the changed areas']"
    assert bool(answer.regions) == (rows == 40)


def _prefer(assistant, word: str) -> None:
    """The model's next-token scores favour ``word`` (the forced yes/no reads them)."""
    tokenizer = assistant.processor.tokenizer
    favoured = tokenizer(word, add_special_tokens=False)["input_ids"][0]

    def next_token_logits(input_ids, attention_mask=None, image_features=None):
        logits = torch.zeros(len(tokenizer) + 8)
        logits[favoured] = 5.0
        return logits

    assistant.model.next_token_logits = next_token_logits


@pytest.mark.parametrize("word", ["Yes", "No"])
def test_a_yes_no_question_answered_without_one_opens_with_the_models_choice(assistant, word):
    prompts: list[str] = []
    _two_answers(assistant, "Here it is.", "x</p> [SEG]", np.zeros((4, 4), bool), prompts)
    _prefer(assistant, word)
    answer = assistant.session().ask("Can you detect any change here?", images=[NAIP_2009, NAIP_2020])
    assert answer.text.startswith(f"{word}.")


def test_where_on_two_dates_decodes_the_changed_areas(assistant):
    size = assistant.image_size
    decoded = np.zeros((size, size), bool)
    decoded[10:40, 10:40] = True
    prompts: list[str] = []
    _two_answers(assistant, "The scene changes on the left.", "x</p> [SEG]", decoded, prompts)
    answer = assistant.session().ask("Which parts of the scene are different?", images=[NAIP_2009, NAIP_2020])
    assert prompts[-1] == "decode ['the changed areas']"
    assert len(answer.regions) == 1 and answer.regions[0].mask.any()


def test_a_count_is_the_number_of_patches_of_the_mask_not_the_models_number(assistant):
    size = assistant.image_size
    decoded = np.zeros((size, size), bool)
    decoded[2:10, 4:20] = True
    decoded[30:34, 40:44] = True
    decoded[60, 60] = True  # a speck is not a pond
    prompts: list[str] = []
    _two_answers(assistant, "<p>the background</p> [SEG] There are 7 ponds.", "x</p> [SEG]", decoded, prompts)
    answer = assistant.session().ask("How many ponds are there?", images=[NAIP_2020])
    assert answer.text.startswith("2 separate patches of ponds.") and "7" not in answer.text
    assert len(answer.regions) == 1 and prompts == ["decode ['ponds']"]  # the question's noun; no generation
    config = assistant.model.config
    assert decided.answered_by_decoder("How many ponds are there?", config)
    assert not decided.answered_by_decoder("How many are there?", config)  # no noun: the model's mask's
    assert not decided.answered_by_decoder("Is the number of ponds above 3?", config)  # a yes or no


def test_touching_buildings_are_counted_one_by_one_and_the_region_has_as_many_patches(assistant):
    from tests.test_instances import two_touching_houses

    size = assistant.image_size
    probability = np.full((size, size), 0.05, np.float32)
    probability[:64, :64] = two_touching_houses(64)
    _two_answers(assistant, "<p>buildings</p> [SEG]", "x</p> [SEG]", probability, [])
    answer = assistant.session().ask("How many buildings are there?", images=[NAIP_2020])
    assert answer.text.startswith("2 separate patches of buildings.")
    assert len(answer.regions) == 1 and "2 patches" in answer.text  # the facts line counts the returned mask
    # Land covers stay patches of the plain mask: the same map is one patch of water.
    _two_answers(assistant, "<p>water</p> [SEG]", "x</p> [SEG]", probability, [])
    water = assistant.session().ask("How many patches of water are there?", images=[NAIP_2020])
    assert water.text.startswith("1 separate patch of water.")


def test_a_count_of_specks_only_is_none_found_with_no_region(assistant):
    """Specks are not patches: "No ponds found." comes with no region whose pixels would say otherwise."""
    size = assistant.image_size
    decoded = np.zeros((size, size), bool)
    decoded[60, 60] = decoded[5, 9] = True
    _two_answers(assistant, "<p>ponds</p> [SEG]", "x</p> [SEG]", decoded, [])
    answer = assistant.session().ask("How many ponds are there?", images=[NAIP_2020])
    assert answer.text.startswith("No ponds found.") and "pixel" not in answer.text and not answer.regions


def test_an_empty_mask_for_a_mask_question_is_none_here_in_plain_words(assistant):
    prompts: list[str] = []
    size = assistant.image_size
    _two_answers(
        assistant, "<p>all the vegetation</p> [SEG]", "all the vegetation</p> [SEG]",
        np.zeros((size, size), bool), prompts,
    )  # fmt: skip
    answer = assistant.session().ask("Give a mask of all patches of vegetation.", images=[NAIP_2020])
    assert answer.text.startswith("None here: I find no vegetation.") and not answer.regions


def test_boxes_asked_for_come_from_the_answers_own_mask_without_a_probe(assistant):
    size = assistant.image_size
    mask = np.zeros((size, size), bool)
    mask[2:10, 4:20] = True
    prompts: list[str] = []
    scripted(assistant, "<p>the ponds</p> [SEG]", masks=[mask], prompts=prompts)
    answer = assistant.session().ask("Where are the ponds? Answer with boxes.", images=[NAIP_2020])
    assert len(prompts) == 1 and len(answer.regions) == 1 and answer.regions[0].pixel_box is not None


def test_a_ranked_referring_expression_returns_that_one_patch(assistant):
    size = assistant.image_size
    decoded = np.zeros((size, size), bool)
    decoded[2:30, 2:30] = True  # the largest, top left
    decoded[100:110, 100:110] = True  # the second largest, bottom right
    prompts: list[str] = []
    _two_answers(assistant, "<p>the second largest pond</p> [SEG]", "x</p> [SEG]", decoded, prompts)
    answer = assistant.session().ask(
        "Box the second largest patch of water in the bottom right.", images=[NAIP_2020]
    )
    assert prompts[-1] == "decode ['water']" and len(answer.regions) == 1
    x1, y1, x2, y2 = answer.regions[0].pixel_box
    assert (
        x1 > 128 and y1 > 128
    )  # the bottom-right patch, not the largest one (source pixels are 2x model ones)


def test_a_grounded_caption_without_masks_is_built_from_the_land_covers_the_decoder_finds(assistant):
    from rsvlm import asked

    size = assistant.image_size
    scripted(assistant, "The image shows a background of background.")

    def decode_masks(seg_hidden, sample_index, features, phrases):
        logits = torch.full((len(phrases), size, size), -10.0)
        logits[phrases.index("water"), : size // 2] = 10.0  # half the image
        logits[phrases.index("roads"), size // 2 :, :10] = 10.0  # a strip, about 4 %
        logits[phrases.index("trees"), -1, -1] = 10.0  # one pixel: below the 2 % a phrase needs
        return logits

    assistant.model.decode_masks = decode_masks
    answer = assistant.session().ask(
        "Provide a detailed caption with segmentation masks.", images=[NAIP_2020]
    )
    assert [r.label for r in answer.regions] == ["water", "roads"]
    assert answer.text.startswith("This scene contains water and roads.")
    assert asked.asks_grounded_caption("Please produce a grounded conversation-style caption.")
    assert not asked.asks_grounded_caption("Describe this image.")


@pytest.mark.parametrize("share, kept", [(0.05, False), (0.005, True)])
def test_a_class_mask_under_its_concepts_calibrated_share_is_none_here(assistant, share, kept):
    """ "Outline the trees." finds trees exactly where "are there trees?" would say yes."""
    size = assistant.image_size
    mask = np.zeros((size, size), bool)
    mask[: size // 8, : size // 8] = True  # 1.6 % of the image
    _decoder_of(assistant, {"trees": mask}, [])
    with _calibration(assistant, presence_min_share_by_concept={"tree": share}):
        answer = assistant.session().ask("Outline the trees.", images=[NAIP_2020])
    if kept:
        assert len(answer.regions) == 1 and answer.regions[0].mask.any()
    else:
        assert answer.text.startswith("None here: I find no trees.") and not answer.regions


def test_a_request_to_see_a_calibrated_class_is_the_decoders_without_the_language_model(assistant):
    """ "Outline the buildings.": the answer is the decoder's mask of the user's noun whatever the model would
    write, so no generation runs; the turn is remembered in the protocol's form and a follow-up generates."""
    size = assistant.image_size
    mask = np.zeros((size, size), bool)
    mask[: size // 2, : size // 2] = True
    prompts: list[str] = []
    scripted(assistant, "The image shows a field.", prompts=prompts)
    _decoder_of(assistant, {"buildings": mask}, prompts)
    session = assistant.session()
    streamed: list[str] = []
    answer = session.ask("Outline the buildings.", images=[NAIP_2020], streamer=streamed.append)
    assert prompts == ["decode ['buildings']"]  # the decoder ran, the language model did not
    assert answer.text.startswith("Here it is.") and streamed == ["Here it is."]
    assert [r.label for r in answer.regions] == ["buildings"] and answer.regions[0].mask.any()
    assert session.history[-1] == {"role": "assistant", "content": "Here it is. <p>buildings</p> [SEG]"}
    # More than where a class is: the language model answers first.
    session.ask("Outline the largest building.")
    assert any("Outline the largest building." in p for p in prompts if not p.startswith("decode"))
    config = assistant.model.config
    assert decided.answered_by_decoder("Where are the trees?", config)
    assert not decided.answered_by_decoder(
        "Outline the fields.", config
    )  # no calibrated class: the model names it
    assert decided.answered_by_decoder("Is there any water?", config)  # its yes or no is the mask's anyway
    assert not decided.answered_by_decoder(
        "Is the road north of the river?", config
    )  # a relation: the model's


def test_a_presence_question_naming_its_subject_runs_no_generation(assistant):
    size = assistant.image_size
    water = np.zeros((size, size), bool)
    water[: size // 2] = True
    prompts: list[str] = []
    scripted(assistant, "No.", prompts=prompts)
    _decoder_of(assistant, {"water": water}, prompts)
    answer = assistant.session().ask("Is there any water?", images=[NAIP_2020])
    assert prompts == ["decode ['water']"] and answer.text.startswith("Yes") and answer.regions


def test_a_description_is_the_decoders_land_covers_each_pixel_counted_once(assistant):
    """ "Describe this image.": no generation; the covers the decoder finds, cut so that no pixel is in two."""
    size = assistant.image_size
    water, trees = np.zeros((size, size), bool), np.zeros((size, size), bool)
    water[:, : size // 2] = True
    trees[:, size // 4 :] = True  # overlaps the water's right half: those pixels go to one of the two
    prompts: list[str] = []
    scripted(assistant, "The image is spread across the whole scene.", prompts=prompts)
    _decoder_of(assistant, {"water": water, "trees": trees}, prompts)
    assistant.session().ask("Describe this image.", images=[NAIP_2020])
    assert len(prompts) == 1 and not prompts[0].startswith(
        "decode"
    )  # by default the language model describes
    prompts.clear()
    with _calibration(assistant, describe_from_land_cover=True):  # as the embedded default's config says
        answer = assistant.session().ask("Describe this image.", images=[NAIP_2020])
    assert len(prompts) == 1 and prompts[0].startswith(
        "decode"
    )  # the decoder ran, the language model did not
    assert [r.label for r in answer.regions] == ["water", "trees"]
    first, second = (np.asarray(r.mask) for r in answer.regions)
    assert not (first & second).any() and (first | second).mean() > 0.95
    assert answer.text.startswith("Most of this image is water, about half. The rest is trees at about half.")


@pytest.mark.parametrize("threshold, expected", [(None, "No: no forest found."), (0.3, "Yes.")])
def test_a_concepts_calibrated_pixel_threshold_decides_its_mask(assistant, threshold, expected):
    size = assistant.image_size
    probability = np.full((size, size), 0.05, np.float32)
    probability[: size // 2] = 0.4  # unsure, as a decoder trained on few tree tiles is of trees
    _two_answers(assistant, "Yes.", "forest</p> [SEG]", probability, [])
    calibration = {"mask_threshold_by_concept": {"tree": threshold}} if threshold else {}
    with _calibration(assistant, **calibration):
        answer = assistant.session().ask("Is there any forest?", images=[NAIP_2020])
    assert answer.text.startswith(expected)


def _decoder_of(assistant, masks_by_phrase: dict[str, np.ndarray], prompts: list[str]):
    """The decoder gives each phrase its mask in ``masks_by_phrase`` (model-input pixels), others nothing."""
    size = assistant.image_size

    def decode_masks(seg_hidden, sample_index, features, phrases):
        prompts.append(f"decode {phrases}")
        empty = np.zeros((size, size), bool)
        masks = np.stack([masks_by_phrase.get(p, empty) for p in phrases])
        return torch.where(torch.as_tensor(masks), 10.0, -10.0)

    assistant.model.decode_masks = decode_masks


def test_a_reasoning_question_is_answered_by_the_affordance_mask_not_the_models_phrase(assistant):
    size = assistant.image_size
    water = np.zeros((size, size), bool)
    water[:, : size // 2] = True
    road = np.zeros((size, size), bool)
    road[:20, size // 2 :] = True  # beside the water: at 10 m a model pixel, "within 3 m" is 1 pixel
    prompts: list[str] = []
    scripted(assistant, "<p>bouldaber</p> [SEG]", masks=[np.ones((size, size), bool)])
    _decoder_of(assistant, {"water": water, "roads": road}, prompts)
    answer = assistant.session().ask("Where could a boat be launched?", images=[NAIP_2020])
    assert prompts[-1] == "decode ['water', 'roads', 'bare land', 'grass']"
    assert answer.text.startswith("Here it is: it is water that touches a road or open ground.")
    (edge,) = answer.regions
    assert edge.label == "the water's edge next to accessible land"
    rows, cols = np.nonzero(edge.mask)  # source pixels are 2x the model's
    assert rows.max() < 2 * 21 and cols.min() >= 2 * (size // 2 - 1) and cols.max() < size
    # No trees decoded: shade is "none here", with no region, and a yes/no form of it says no.
    answer = assistant.session().ask("Where is there natural shade?", images=[NAIP_2020])
    assert answer.text.startswith("None here: I find no trees.") and not answer.regions
    answer = assistant.session().ask("Is there any shade where a hiker could rest?", images=[NAIP_2020])
    assert answer.text.startswith("No.") and not answer.regions


@pytest.mark.parametrize("bias, found", [(-50.0, False), (50.0, True)])
def test_a_concepts_presence_model_decides_whether_it_is_there(assistant, bias, found):
    """Where calibration fitted a presence model for the concept, its answer (not the share) says whether the thing
    is there, for the presence question and for "outline" alike; a yes always comes with the mask."""
    from rsvlm.presence import presence_features

    size = assistant.image_size
    mask = np.zeros((size, size), bool)
    mask[: size // 16, : size // 16] = True  # 0.4 % of the image: under the share of 5 %
    n = len(presence_features(np.zeros(4)))
    judge = {"mean": [0.0] * n, "scale": [1.0] * n, "weight": [0.0] * n, "bias": bias}
    _decoder_of(assistant, {"trees": mask, "water": mask}, [])
    calibration = dict(
        presence_min_share_by_concept={"tree": 0.05}, presence_model_by_concept={"tree": judge}
    )
    with _calibration(assistant, **calibration):
        presence_answer = assistant.session().ask("Are there any trees?", images=[NAIP_2020])
        outline = assistant.session().ask("Outline the trees.", images=[NAIP_2020])
        water = assistant.session().ask("Is there any water?", images=[NAIP_2020])
    assert presence_answer.text.startswith("Yes." if found else "No: no trees found.")
    assert bool(presence_answer.regions) == found and bool(outline.regions) == found
    assert water.text.startswith("Yes.")  # no model for water: the global share (0.2 %) decides
