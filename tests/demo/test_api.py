"""The chat's API through ``gradio_client``, against the app launched on loopback with the real embedded default:
grounding, two dates, 8 clients at once, the upload limit, a session's folder after it closes, the README example.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import rasterio
import torch
from gradio_client import Client, handle_file
from pyproj import Transformer

from demo.app import build_demo, serve
from rsvlm.assistant import Assistant

pytestmark = pytest.mark.slow

ROOT = Path(__file__).parents[2]
DATA = ROOT / "tests" / "data"
NAIP_2020 = str(DATA / "naip_2020_256.tif")
NAIP_2009 = str(DATA / "naip_2009_256.tif")
SAMPLES = ROOT / "rsvlm" / "samples"
LIMIT = 1_000_000  # bytes: every sample is under it


@pytest.fixture(scope="module")
def server():
    previous = os.environ.get("GRADIO_HEARTBEAT_INTERVAL")
    os.environ["GRADIO_HEARTBEAT_INTERVAL"] = "0.5"  # a closed client is noticed in a second, not 15
    torch.set_num_threads(1)
    demo = build_demo(Assistant.from_pretrained("default"), max_new_tokens=48, max_file_size=LIMIT)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    serve(demo, port=port, prevent_thread_lock=True, quiet=True, max_file_size=LIMIT)
    yield demo, f"http://127.0.0.1:{port}/"
    demo.close()
    demo.chat_app.sessions.close_all()
    if previous is None:
        os.environ.pop("GRADIO_HEARTBEAT_INTERVAL", None)
    else:
        os.environ["GRADIO_HEARTBEAT_INTERVAL"] = previous


def client(url: str) -> Client:
    return Client(url, verbose=False)  # files come back downloaded to a local temp folder


def value(output):
    """An output the handler sent as ``gr.update(value=..., visible=...)`` comes as a dict."""
    if isinstance(output, dict) and output.get("__type__") == "update":
        output = output["value"]
    return output["path"] if isinstance(output, dict) and "path" in output else output


def text_of(message: dict) -> str:
    content = message["content"]
    return content if isinstance(content, str) else " ".join(part.get("text", "") for part in content)


def reply(chat: list[dict]) -> str:
    """The answer's text: the last message that is neither a status line nor the notes."""
    answers = [m for m in chat if m["role"] == "assistant" and not m.get("metadata")]
    return next(text_of(m) for m in reversed(answers) if not text_of(m).startswith("**Notes**"))


def load_and_ask(url: str, paths: list[str], question: str):
    c = client(url)
    loaded = c.predict([handle_file(p) for p in paths], "auto", "", api_name="/load")
    asked = c.predict(question, "", "", 100, 60, api_name="/ask")
    exported = c.predict(api_name="/export")
    c.close()
    return loaded, asked, exported


def test_the_api_is_four_named_endpoints(server):
    _, url = server
    c = client(url)
    endpoints = c.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert sorted(endpoints) == ["/ask", "/export", "/load", "/reset"]
    outputs = [r["label"] for e in endpoints.values() for r in e["returns"]]
    assert not [label for label in outputs if re.fullmatch(r"value_\d+", label or "")]
    assert [p["label"] for p in endpoints["/ask"]["parameters"]] == [
        "Question", "Date 1 label", "Date 2 label", "Window budget", "Time budget (s)",
    ]  # fmt: skip
    c.close()


def test_a_grounding_turn_returns_text_an_overlay_and_geojson_inside_the_footprint(server):
    _, url = server
    loaded, (chat, overlay, _, regions), (geojson, mask_tif, table_csv) = load_and_ask(
        url, [NAIP_2020], "Outline the water."
    )
    assert "EPSG:26914" in loaded[1] and "5.00 m/pixel" in loaded[1]
    assert reply(chat) and "water" in reply(chat).lower()
    assert Path(value(overlay)).is_file()
    assert value(regions)["data"], "the default outlines the water of this tile (tests/test_default_model.py)"
    features = json.loads(Path(value(geojson)).read_text())["features"]
    with rasterio.open(NAIP_2020) as src:
        to_lonlat = Transformer.from_crs(src.crs, "EPSG:4326", always_xy=True)
        left, bottom, right, top = src.bounds
        lons, lats = to_lonlat.transform([left, right, left, right], [bottom, bottom, top, top])
    points = [p for f in features for ring in f["geometry"]["coordinates"] for p in _rings(ring)]
    assert points and all(min(lons) <= x <= max(lons) and min(lats) <= y <= max(lats) for x, y in points)
    assert Path(value(mask_tif)).is_file() and Path(value(table_csv)).read_text().startswith("#,label")


def _rings(coordinates):
    """Points of a Polygon's ring, or of each ring of a MultiPolygon's polygon."""
    if coordinates and isinstance(coordinates[0][0], (int, float)):
        return coordinates
    return [p for ring in coordinates for p in ring]


def test_a_two_date_turn_returns_a_change_mask_on_the_later_date(server):
    _, url = server
    loaded, (chat, _, slider, regions), (_, mask_tif, _) = load_and_ask(
        url, [NAIP_2009, NAIP_2020], "Segment the changed areas."
    )
    assert value(loaded[6]) == "2009" and value(loaded[7]) == "2020"
    assert len(value(slider)) == 2 and all(Path(value(image)).is_file() for image in value(slider))
    assert "2009" in reply(chat) or "changed" in reply(chat)
    with rasterio.open(value(mask_tif)) as mask, rasterio.open(NAIP_2009) as reference:
        assert mask.crs == reference.crs and (mask.width, mask.height) == (reference.width, reference.height)
        assert mask.read(1).any(), "the default segments the changes of this pair"


def test_eight_clients_at_once_each_get_their_own_answer(server):
    _, url = server
    files = [NAIP_2020, str(SAMPLES / "haiti_rgbn_256.tif")]
    jobs = [([files[i % 2]], f"Describe this image, please ({i}).") for i in range(8)]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda job: load_and_ask(url, *job), jobs))
    for (paths, question), (loaded, (chat, *_), _) in zip(jobs, results):
        name = Path(paths[0]).name
        assert name in loaded[1]
        assert text_of(chat[0]).startswith(f"Loaded {name}")  # its own upload, nobody else's
        assert [text_of(m) for m in chat if m["role"] == "user"] == [question]
        assert reply(chat)


def test_an_upload_over_the_limit_is_refused_in_one_line_and_the_app_keeps_serving(server, tmp_path):
    _, url = server
    big = tmp_path / "huge.tif"
    big.write_bytes(b"\0" * (LIMIT + 1))
    c = client(url)
    with pytest.raises(Exception) as refused:
        c.predict([handle_file(str(big))], "auto", "", api_name="/load")
    message = str(refused.value).strip()
    assert "\n" not in message and re.search("size|large|limit", message, re.I), message
    loaded = c.predict([handle_file(NAIP_2020)], "auto", "", api_name="/load")
    assert "naip_2020_256.tif" in loaded[1]
    c.close()


def test_a_sessions_folder_is_gone_after_it_closes(server):
    demo, url = server
    root = demo.chat_app.sessions.root
    before = set(root.iterdir())
    c = client(url)
    c.predict([handle_file(NAIP_2020)], "auto", "", api_name="/load")
    (folder,) = set(root.iterdir()) - before
    assert list(folder.glob("uploads/*/naip_2020_256.tif"))
    c.close()
    deadline = time.monotonic() + 20
    while folder.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not folder.exists()


def test_the_readme_example_runs(server, tmp_path, capsys):
    _, url = server
    readme = (ROOT / "README.md").read_text()
    code = readme.split("<!-- api-example -->")[1].split("```python")[1].split("```")[0]
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        exec(compile(code.replace("http://127.0.0.1:7860/", url), "README.md", "exec"), {})
    finally:
        os.chdir(cwd)
    printed = capsys.readouterr().out
    assert "water" in printed and ".geojson" in printed
