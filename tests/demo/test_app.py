"""The Gradio chat on a real tiny assistant: handlers driven directly, and one loopback launch."""

from __future__ import annotations

import json
import socket
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from demo.app import ChatApp, build_demo, main
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
    return build_demo(assistant, max_new_tokens=6).chat_app


def scripted(assistant: Assistant, text: str, masks=(), pieces: int = 3) -> None:
    """The model 'says' ``text`` (streamed in ``pieces`` parts) with these masks, as in tests/test_assistant.py."""
    tokenizer = assistant.processor.tokenizer
    size = assistant.image_size

    def generate(**kwargs):
        streamer = kwargs.get("streamer")
        if streamer is not None:
            step = max(1, len(text) // pieces)
            for start in range(0, len(text), step):
                streamer(text[start : start + step])
        return scripted_generation(tokenizer, text, masks, size)

    assistant.model.generate = generate


def run_ask(app: ChatApp, question: str, chat, state) -> list[tuple]:
    return list(app.ask(question, chat, state))


def upload(app: ChatApp, paths, state=None, chat=None, bands="auto", dates=("", "")):
    return app.upload(paths, bands, dates[0], dates[1], chat, state)


def test_upload_previews_the_geotiff_and_questions_grow_the_chat(app):
    state, preview, chat, *_ = upload(app, [NAIP_2020])
    # shown enlarged 2x (whole pixels repeated) so labels stay readable
    assert preview.shape == (512, 512, 3) and preview.dtype == np.uint8 and preview.std() > 0
    assert np.array_equal(preview[0::2, 0::2], preview[1::2, 1::2])
    assert len(chat) == 1 and "EPSG:26914" in chat[0]["content"]
    steps = run_ask(app, "Describe this image.", chat, state)
    chat, state = steps[-1][0], steps[-1][6]
    assert [m["role"] for m in chat] == ["assistant", "user", "assistant"]
    assert steps[-1][7] == ""  # the question box is cleared
    chat = run_ask(app, "Anything else?", chat, state)[-1][0]
    assert [m["role"] for m in chat][-4:] == ["user", "assistant"] * 2
    assert state.session.encode_count == 1  # the follow-up reused the encoded image
    assert len(state.session.history) == 4


def test_a_scripted_answer_is_streamed_drawn_tabled_and_downloadable(app, assistant):
    mask = np.zeros((128, 128), bool)
    mask[40:60, 10:40] = True
    text = "The field is at <box>[100, 200, 500, 600]</box> next to <p>the pond</p> [SEG]."
    scripted(assistant, text, masks=[mask])
    state, plain, chat, *_ = upload(app, [NAIP_2020])
    steps = run_ask(app, "Where is the field?", chat, state)
    streamed = [s[0][-1]["content"] for s in steps[1:-1]]
    assert len(streamed) >= 2 and streamed[0] != streamed[-1]  # the answer grew piece by piece
    chat, overlay, table, geojson, mask_button, warnings, state, _ = steps[-1]
    assert "<box>" not in chat[-1]["content"] and "field" in chat[-1]["content"]
    assert [row[1] for row in table] == ["The field", "the pond"]
    assert (
        table[1][2] == "mask"
        and table[0][3] > 0
        and table[0][4] == pytest.approx(table[0][3] / 1e4, rel=1e-3)
    )
    # the box (source px 25.6..128 x 51.2..153.6, shown 2x) is outlined, the pond (source rows 80..120, cols
    # 20..80) is tinted, and far from both nothing changed
    assert overlay.shape == plain.shape and not np.array_equal(overlay, plain)
    assert not np.array_equal(overlay[103, 60:250], plain[103, 60:250])
    assert not np.array_equal(overlay[200, 80], plain[200, 80])
    assert np.array_equal(overlay[500, 500], plain[500, 500])
    features = json.loads(Path(geojson["value"]).read_text())["features"]
    assert [f["properties"]["label"] for f in features] == ["The field", "the pond"]
    lon, lat = features[0]["geometry"]["coordinates"][0][0]
    assert -100 < lon < -98 and 46 < lat < 48  # EPSG:4326, NAIP tile m_4709963 in North Dakota
    assert Path(geojson["value"]).parent == state.folder
    with rasterio.open(mask_button["value"]) as src:
        assert src.crs.to_epsg() == 26914 and src.read(1).max() == 1
    assert not [p for p in state.folder.iterdir() if p.name.startswith(".")]  # no temp files left behind
    state.close()
    assert not state.folder.exists()


def test_a_corrupt_upload_is_one_line_in_the_chat_and_the_app_keeps_working(app, tmp_path):
    bad = tmp_path / "broken.tif"
    bad.write_bytes(b"II*\x00 this is not a tiff at all" * 10)
    state, preview, chat, *_ = upload(app, [str(bad)])
    assert preview is None and not state.paths
    message = chat[-1]["content"]
    assert message.startswith("⚠️") and "\n" not in message and "Traceback" not in message
    steps = run_ask(app, "Describe this image.", chat, state)
    assert "upload an image" in steps[-1][0][-1]["content"]
    state, preview, chat, *_ = upload(app, [NAIP_2020], state=state, chat=chat)
    assert preview is not None
    assert run_ask(app, "Describe this image.", chat, state)[-1][0][-1]["role"] == "assistant"


def test_model_failures_and_empty_questions_are_one_line_errors(app, assistant):
    state, _, chat, *_ = upload(app, [NAIP_2020])
    assert run_ask(app, "  ", chat, state)[-1][0][-1]["content"].startswith("⚠️")

    def broken(**kwargs):
        raise RuntimeError("out of memory\nwith a long tail")

    assistant.model.generate = broken
    last = run_ask(app, "Describe this image.", chat, state)[-1][0][-1]["content"]
    assert last == "⚠️ out of memory"


def test_two_dates_are_shown_side_by_side_and_sessions_are_isolated(app):
    pair, preview, *_ = upload(app, [NAIP_2009, NAIP_2020], dates=("2009", "2020"))
    assert preview.shape[0] == 512 and preview.shape[1] > 2 * 512
    assert pair.dates == ("2009", "2020")
    single, _, chat_b, *_ = upload(app, [NAIP_2020])
    chat_a = run_ask(app, "What changed?", [], pair)[-1][0]
    assert pair.session.history[0]["content"].startswith("Image 1 (2009)")
    assert single.session.history == [] and len(chat_b) == 1 and len(chat_a) == 2
    assert pair.folder != single.folder
    for state in (pair, single):
        state.close()


def test_upload_of_three_files_or_a_bad_preset_is_refused(app):
    _, _, chat, *_ = upload(app, [NAIP_2020, NAIP_2009, NAIP_2020])
    assert "two dates" in chat[-1]["content"]
    _, preview, chat, *_ = upload(app, [NAIP_2020], bands="landsat8")
    assert preview is None and chat[-1]["content"].startswith("⚠️")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_app_serves_its_page_on_loopback(assistant):
    demo = build_demo(assistant)
    port = _free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback only, never a proxy
        with opener.open(f"http://127.0.0.1:{port}/", timeout=20) as response:
            assert response.status == 200
            page = response.read().decode("utf-8", "replace")
        assert "rsvlm" in page
    finally:
        demo.close()


def test_serve_with_a_bad_model_is_one_line_and_exit_2(tmp_path, capsys):
    assert main(["--model", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("rsvlm serve:") and "\n" not in err


def test_a_png_without_crs_is_answered_in_pixels_with_a_warning(app, assistant, tmp_path):
    from PIL import Image

    png = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (100, 120, 3), dtype=np.uint8)).save(png)
    state, preview, chat, *_ = upload(app, [str(png)])
    assert preview.shape == (400, 480, 3) and "no CRS" in chat[-1]["content"]
    scripted(assistant, "A car at <box>[100, 100, 300, 300]</box>.")
    chat, overlay, table, geojson, _, warnings, *_ = run_ask(app, "Where?", chat, state)[-1]
    assert table[0][1] == "A car" and table[0][3] is None  # no CRS: no area
    assert "no CRS" in warnings and not geojson["visible"]
    state.close()
