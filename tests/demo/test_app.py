"""The Gradio chat on a real tiny assistant: handlers driven directly (as the page calls them), and one loopback
launch. The real default behind a real server is in test_api.py, in a browser in test_browser.py."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin

from demo import examples
from demo.app import build_demo, main, parse_args
from demo.chat import ChatApp, for_the_page
from demo.uploads import one_line, parse_size
from rsvlm.assistant import Assistant
from rsvlm.testing import scripted_generation

DATA = Path(__file__).parents[1] / "data"
NAIP_2020 = str(DATA / "naip_2020_256.tif")
NAIP_2009 = str(DATA / "naip_2009_256.tif")


@pytest.fixture(scope="module")
def assistant(tiny_checkpoint) -> Assistant:
    torch.set_num_threads(1)
    return Assistant.from_pretrained(tiny_checkpoint, max_tiles=4)


@pytest.fixture
def app(assistant) -> ChatApp:
    assistant.model.__dict__.pop("generate", None)  # undo any scripted answer of an earlier test
    chat_app = build_demo(assistant, max_new_tokens=6, max_file_size=3_000_000).chat_app
    yield chat_app
    chat_app.sessions.close_all()


def scripted(assistant: Assistant, text: str, masks=(), pieces: int = 3, delay: float = 0.0) -> None:
    """The model 'says' ``text`` (streamed in ``pieces`` parts) with these masks, as in tests/test_assistant.py."""
    tokenizer = assistant.processor.tokenizer
    size = assistant.image_size

    def generate(**kwargs):
        streamer = kwargs.get("streamer")
        if streamer is not None:
            step = max(1, len(text) // pieces)
            for start in range(0, len(text), step):
                time.sleep(delay)
                streamer(text[start : start + step])
        return scripted_generation(tokenizer, text, masks, size)

    assistant.model.generate = generate


def user(name: str = "a") -> SimpleNamespace:
    return SimpleNamespace(session_hash=name)


def upload(app: ChatApp, tmp_path: Path, *sources: str, request=None, preset="auto", indices=""):
    """As Gradio hands an upload over: a copy in its cache folder, which the handler moves away."""
    cache = tmp_path / f"gradio-cache-{time.monotonic_ns()}"
    cache.mkdir()
    copies = []
    for source in sources:
        copy = cache / Path(source).name
        copy.write_bytes(Path(source).read_bytes())
        copies.append(str(copy))
    files, status, view, slider, chat, table, date1, date2 = app.load(
        copies, preset, indices, request or user()
    )
    return SimpleNamespace(
        files=files, status=status, view=view, slider=slider, chat=chat, table=table, dates=(date1, date2)
    )


def ask(app: ChatApp, question: str, request=None, dates=("", ""), windows=100, seconds=60) -> list[tuple]:
    return list(app.ask(question, dates[0], dates[1], windows, seconds, request or user()))


def texts(chat: list[dict]) -> list[str]:
    return [m["content"] for m in chat]


def test_upload_is_moved_into_the_session_folder_previewed_and_questions_grow_the_chat(app, tmp_path):
    loaded = upload(app, tmp_path, NAIP_2020)
    state = app.chat(user())
    # the session reads its own link of the upload, in its own folder
    assert [Path(p).parent.parent.parent for p in state.paths] == [state.folder]
    preview = loaded.view["value"]
    assert preview.shape == (512, 512, 3) and np.array_equal(preview[0::2, 0::2], preview[1::2, 1::2])
    assert loaded.slider["visible"] is False
    # the status says the source GSD (5 m, not the preview's), the CRS, georeferenced, and the model
    assert (
        "5.00 m/pixel" in loaded.status and "EPSG:26914" in loaded.status and "georeferenced" in loaded.status
    )
    dtype = str(app.assistant.dtype).removeprefix("torch.")
    assert loaded.status.startswith("**Model** default") and f"{dtype} on CPU" in loaded.status
    assert loaded.table["label"] == "Regions"
    steps = ask(app, "Describe this image.")
    chat = steps[-1][0]
    # greeting, question, status, answer, then the answer's notes if it has any (the random model's text may hold a
    # number, which is dropped with a note)
    assert [m["role"] for m in chat[:4]] == ["assistant", "user", "assistant", "assistant"]
    assert all(str(m["content"]).startswith("**Notes**") for m in chat[4:])
    assert chat[2]["metadata"]["status"] == "done" and chat[2]["metadata"]["title"].startswith("Answered in")
    ask(app, "Anything else?")
    assert state.session.encode_count == 1  # the follow-up reused the encoded image
    assert len(state.session.history) == 4


def test_a_scripted_answer_is_streamed_drawn_tabled_and_exported_under_generated_names(
    app, assistant, tmp_path
):
    mask = np.zeros((128, 128), bool)
    mask[40:60, 10:40] = True
    text = "The field is at <box>[100, 200, 500, 600]</box> next to <p>the pond</p> [SEG]."
    scripted(assistant, text, masks=[mask])
    plain = upload(app, tmp_path, NAIP_2020).view["value"]
    steps = ask(app, "Where is the field?")
    streamed = [s[0][-1]["content"] for s in steps[1:-1] if s[0][-1]["content"]]
    assert len(streamed) >= 2 and streamed[0] != streamed[-1]  # the answer grew piece by piece
    chat, view, slider, table = steps[-1]
    assert "<box>" not in chat[-1]["content"] and "field" in chat[-1]["content"]
    rows = table["value"]["data"]
    assert [row[1] for row in rows] == ["The field", "the pond"]
    assert rows[1][2] == "mask" and rows[0][3] > 0 and rows[0][4] == pytest.approx(rows[0][3] / 1e4, rel=1e-3)
    assert 46 < rows[0][5] < 48 and -100 < rows[0][6] < -98  # centroid lat / lon, NAIP tile in North Dakota
    assert table["label"] == "Regions: 2, " + f"{(rows[0][3] + rows[1][3]) / 1e4:,.2f} ha in all"
    overlay = view["value"]
    assert overlay.shape == plain.shape and not np.array_equal(overlay, plain)
    assert not np.array_equal(overlay[200, 80], plain[200, 80])  # the pond is tinted
    assert np.array_equal(overlay[500, 500], plain[500, 500])  # far from both nothing changed

    geojson, mask_tif, table_csv = app.export(user())
    folder = app.chat(user()).folder
    assert [Path(f["value"]).name for f in (geojson, mask_tif, table_csv)] == [
        "answer-1.geojson",
        "answer-1-mask.tif",
        "answer-1-regions.csv",
    ]
    assert all(Path(f["value"]).parent == folder for f in (geojson, mask_tif, table_csv))
    features = json.loads(Path(geojson["value"]).read_text())["features"]
    assert [f["properties"]["label"] for f in features] == ["The field", "the pond"]
    with rasterio.open(mask_tif["value"]) as src:
        assert src.crs.to_epsg() == 26914 and src.read(1).max() == 1  # the one masked region
    lines = Path(table_csv["value"]).read_text().splitlines()
    assert lines[0] == "#,label,shape,area m2,area ha,centroid lat,centroid lon" and len(lines) == 3
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]  # no temp files left behind


def test_an_answer_without_regions_says_so_in_the_table(app, assistant, tmp_path):
    scripted(assistant, "Fields and a road.")
    upload(app, tmp_path, NAIP_2020)
    table = ask(app, "Describe this image.")[-1][3]
    assert table["value"]["data"] == [] and table["label"] == "Regions: no regions in this answer"


def test_a_text_file_named_tif_is_one_line_with_its_own_name_and_is_cleared(app, tmp_path):
    bad = tmp_path / "notes.tif"
    bad.write_text("this is a text file, not a GeoTIFF\n" * 20)
    loaded = upload(app, tmp_path, str(bad))
    assert loaded.files is None and loaded.view["value"] is None  # cleared from the upload box
    message = loaded.chat[-1]["content"]
    assert message.startswith("⚠️") and "\n" not in message and "notes.tif" in message
    assert "/" not in message.replace("m/pixel", "") and str(tmp_path) not in message  # no server path
    assert message.count("notes.tif") == 1, message
    assert not app.chat(user()).paths and not list((app.chat(user()).folder / "uploads").glob("*/*"))
    chat = ask(app, "Describe this image.")[-1][0]
    assert "upload an image" in chat[-1]["content"] and "example" in chat[-1]["content"]
    assert upload(app, tmp_path, NAIP_2020).view["value"] is not None  # the app keeps working


def test_server_paths_are_reduced_to_file_names():
    path = "/tmp/gradio/0af3/scene.tif"
    error = ValueError(f"{path}: '{path}' not recognized as a supported file format.\nmore")
    assert one_line(error) == "scene.tif: not recognized as a supported file format."
    assert one_line(ValueError(f"{path}: {path} is not a raster"), [path]) == "scene.tif is not a raster"


def test_errors_are_one_line_and_each_its_own_message(app, assistant, tmp_path):
    upload(app, tmp_path, NAIP_2020)
    ask(app, "  ")

    def broken(**kwargs):
        raise RuntimeError("out of memory\nwith a long tail")

    assistant.model.generate = broken
    chat = ask(app, "What is in the top left?")[-1][0]  # a question the language model answers
    assert texts(chat)[-3:] == ["⚠️ the question is empty", "What is in the top left?", "⚠️ out of memory"]
    assert not any(m.get("metadata") for m in chat)  # no status line left pending


def test_two_dates_slide_before_after_and_date_labels_apply_to_the_next_question(app, tmp_path):
    loaded = upload(app, tmp_path, NAIP_2009, NAIP_2020)
    before, after = loaded.slider["value"]
    assert loaded.slider["visible"] and not loaded.view["visible"] and before.shape == after.shape
    assert loaded.dates == ("2009", "2020")  # from the file names, shown editable in Options
    state = app.chat(user())
    ask(app, "What changed?")
    assert state.session.history[0]["content"].startswith("Image 1 (2009)")
    chat = ask(app, "And now?", dates=("2009-08-18", ""))[-1][0]  # typed after the upload
    assert "Dates now 2009-08-18 and 2020" in texts(chat)[-5]
    assert state.session.history[0]["content"].startswith("Image 1 (2009-08-18)")
    assert len(state.session.history) == 4  # the conversation went on, its first turn relabelled
    assert state.session.history[0]["content"].endswith("\nWhat changed?")
    slider = ask(app, "Again?", dates=("2009-08-18", "2020"))[-1][2]
    assert slider["visible"] and len(slider["value"]) == 2


def test_sessions_are_isolated_and_their_folders_go_when_they_close(app, tmp_path):
    upload(app, tmp_path, NAIP_2009, NAIP_2020, request=user("pair"))
    upload(app, tmp_path, NAIP_2020, request=user("single"))
    ask(app, "What changed?", request=user("pair"))
    pair, single = app.chat(user("pair")), app.chat(user("single"))
    assert single.session.history == [] and len(pair.session.history) == 2
    assert pair.folder != single.folder and pair.folder.parent == single.folder.parent == app.sessions.root
    cached = [original for original, _ in pair.cached]
    assert len(cached) == 2 and all(Path(c).exists() for c in cached)
    app.close_session(user("pair"))
    assert not pair.folder.exists() and single.folder.exists() and len(app.sessions) == 1
    assert not any(Path(c).exists() for c in cached)  # Gradio's cache copies of its uploads went too
    assert all(Path(p).exists() for p in single.paths)


def test_three_files_a_bad_preset_bad_indices_or_a_too_large_file_are_refused(app, tmp_path):
    assert "two dates" in upload(app, tmp_path, NAIP_2020, NAIP_2009, NAIP_2020).chat[-1]["content"]
    loaded = upload(app, tmp_path, NAIP_2020, preset="landsat8")
    assert loaded.view["value"] is None and "“Band indices”" in loaded.chat[-1]["content"]
    assert "bands=[" not in loaded.chat[-1]["content"]  # said as the page's control, not as code
    assert "1-based" in upload(app, tmp_path, NAIP_2020, indices="four").chat[-1]["content"]
    assert upload(app, tmp_path, NAIP_2020, indices="4,1,2").view["value"] is not None
    big = tmp_path / "big.tif"
    big.write_bytes(b"\0" * 3_100_000)
    message = upload(app, tmp_path, str(big)).chat[-1]["content"]
    assert message == "⚠️ big.tif is 3.0 MB; the limit is 2.9 MB (the server's --max-file-size)"


def _scene(path: Path, size: int = 600) -> str:
    data = np.random.default_rng(0).integers(0, 255, (3, size, size), dtype=np.uint8)
    profile = {"driver": "GTiff", "width": size, "height": size, "count": 3, "dtype": "uint8"}
    with rasterio.open(
        path, "w", **profile, crs="EPSG:32618", transform=from_origin(500000, 4000000, 1, 1)
    ) as dst:
        dst.write(data)
    return str(path)


def test_a_large_scene_shows_its_windows_and_the_budget_is_an_option(app, assistant, tmp_path):
    mask = np.ones((128, 128), bool)
    scripted(assistant, "<p>the field</p> [SEG].", masks=[mask])
    upload(app, tmp_path, _scene(tmp_path / "scene.tif"))
    steps = ask(app, "Outline the field.", windows=3)
    titles = [s[0][2]["metadata"]["title"] for s in steps if len(s[0]) > 2 and s[0][2].get("metadata")]
    assert any("Reading full-resolution windows" in t and "/3" in t for t in titles)
    assert "3 of 36 windows read at full resolution" in titles[-1]  # 600² px in 128 px windows
    notes = steps[-1][0][-1]["content"]
    assert notes.startswith("**Notes**") and "(raise “Window budget” in Options)" in notes
    chat = ask(app, "Outline the field.", windows=0)[-1][0]
    overview_only = [m for m in chat if m.get("metadata")][-1]["metadata"]["title"]
    assert "0 of 36 windows" in overview_only


def test_stop_ends_a_running_answer_and_keeps_what_was_written(app, assistant, tmp_path):
    scripted(assistant, "A long answer about fields, roads and a pond. " * 4, pieces=40, delay=0.05)
    upload(app, tmp_path, NAIP_2020)
    steps = app.ask("What is in this image?", "", "", 100, 60, user())  # the language model answers
    for step in steps:
        if step[0][-1]["content"]:
            app.stop(user())
    chat = step[0]
    assert chat[-2]["metadata"]["title"].startswith("Stopped after")
    assert chat[-1]["content"].endswith(" …") and len(chat[-1]["content"]) < 150
    assert not app.chat(user()).busy


def test_a_question_while_an_answer_runs_is_refused_and_stays_in_its_box(app):
    box, sent, send, stop = app.claim("Outline the buildings.", user())
    assert (box, sent, send["interactive"], stop["visible"]) == ("", "Outline the buildings.", False, True)
    with pytest.raises(gr.Error, match="still running"):
        app.claim("And the roads?", user())
    app.release(user())
    box, *_ = app.claim_suggestion("Describe this image.", user())
    assert box == {"__type__": "update"}  # a suggestion leaves what was being typed


def test_suggestions_follow_what_is_loaded_and_examples_are_licence_clean_samples(app, tmp_path):
    upload(app, tmp_path, NAIP_2009, NAIP_2020)
    assert "What changed between the two dates?" in [u["value"] for u in app.suggest(user())]
    upload(app, tmp_path, NAIP_2020)
    assert not [u["value"] for u in app.suggest(user()) if "changed" in u["value"]]
    sources = (examples.SAMPLES / "SOURCES.md").read_text()
    for example in examples.EXAMPLES:
        for name, path in zip(example.files, example.paths):
            assert name in sources and Path(path).stat().st_size < 1_000_000
    assert any(len(e.files) == 2 for e in examples.EXAMPLES) and any(
        e.bands == "rgbn" for e in examples.EXAMPLES
    )


def test_a_gallery_click_loads_the_example_and_its_question_is_asked(app):
    app.claim_example(SimpleNamespace(index=1), user())  # Change · NAIP 2009 vs 2020
    loaded = app.load_example(user())
    assert loaded[3]["visible"] and app.chat(user()).names == list(examples.EXAMPLES[1].files)
    chat = ask(app, examples.EXAMPLES[1].question)[-1][0]
    assert chat[1]["content"] == "Segment the changed areas."


def test_a_png_without_crs_is_answered_in_pixels_and_says_it_is_not_georeferenced(app, assistant, tmp_path):
    from PIL import Image

    png = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (100, 120, 3), dtype=np.uint8)).save(png)
    loaded = upload(app, tmp_path, str(png))
    assert loaded.view["value"].shape == (400, 480, 3) and "not georeferenced" in loaded.status
    scripted(assistant, "A car at <box>[100, 100, 300, 300]</box>.")
    chat, _, _, table = ask(app, "Where?")[-1]
    assert table["value"]["data"][0][1] == "A car" and table["value"]["data"][0][3] is None  # no CRS: no area
    geojson, mask_tif, table_csv = app.export(user())
    assert not geojson["visible"] and not mask_tif["visible"] and table_csv["visible"]


def test_warnings_name_the_page_controls():
    text = "3 of 9 windows were not read (3 left by the window budget (max_tiles))"
    assert for_the_page(text).endswith("(raise “Window budget” in Options))")


def test_serve_flags_default_to_loopback_and_a_size_limit():
    args = parse_args([])
    assert args.host == "127.0.0.1" and args.max_file_size == parse_size("1gb") == 2**30
    assert parse_args(["--max-file-size", "200mb"]).max_file_size == 200 * 2**20
    with pytest.raises(SystemExit):
        parse_args(["--max-file-size", "lots"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_app_serves_its_page_on_loopback(assistant):
    from demo.app import serve

    demo = build_demo(assistant)
    port = _free_port()
    serve(demo, port=port, prevent_thread_lock=True, quiet=True, max_file_size=123_456)
    try:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback only, never a proxy
        with opener.open(f"http://127.0.0.1:{port}/", timeout=20) as response:
            assert response.status == 200
            page = response.read().decode("utf-8", "replace")
        assert "rsvlm" in page
        with opener.open(f"http://127.0.0.1:{port}/config", timeout=20) as response:
            config = json.loads(response.read())
        assert config["max_file_size"] == 123_456  # the browser refuses larger files before sending them
    finally:
        demo.close()
        demo.chat_app.sessions.close_all()


def test_serve_with_a_bad_model_is_one_line_and_exit_2(tmp_path, capsys):
    assert main(["--model", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("rsvlm serve:") and "\n" not in err


def test_the_stop_event_reaches_a_worker_that_outlives_its_page(app, assistant, tmp_path):
    """A page that goes away mid-answer (the generator closed) stops its worker at the next token."""
    scripted(assistant, "word " * 60, pieces=60, delay=0.02)
    upload(app, tmp_path, NAIP_2020)
    steps = app.ask("Describe this image.", "", "", 100, 60, user())
    next(steps), next(steps)
    steps.close()
    state = app.chat(user())
    assert state.stop.is_set() and not state.busy
    deadline = time.monotonic() + 10
    while any(t.name == "rsvlm-turn" for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(t.name == "rsvlm-turn" for t in threading.enumerate())
