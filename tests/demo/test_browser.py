"""The chat in a real browser: Debian's chromium driven by Playwright, against the app on loopback with the real
embedded default. Loads the page, uploads a GeoTIFF, asks by a suggestion, clicks a gallery example, and checks
the map, the table and the downloads; screenshots go to ``$RSVLM_SCREENSHOTS`` (else the test's tmp folder).

Runs where chromium is installed (``make test`` installs it with apt where it can) and skips otherwise.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import time
from pathlib import Path

import pytest
import torch

from demo.app import build_demo, serve
from rsvlm.assistant import Assistant

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
playwright = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (pip install .[dev])"
)
pytestmark = [
    pytest.mark.slow,
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (apt-get install chromium)"),
]

DATA = Path(__file__).parents[1] / "data"
ANSWERED = re.compile(r"Answered in \d")
TIMEOUT_MS = 120_000


@pytest.fixture(scope="module")
def url():
    torch.set_num_threads(1)
    demo = build_demo(Assistant.from_pretrained("default"), max_new_tokens=48)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    serve(demo, port=port, prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{port}/"
    demo.close()
    demo.chat_app.sessions.close_all()


@pytest.fixture
def page(url):
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            # root in a container needs --no-sandbox; no background networking keeps the browser offline
            args=["--no-sandbox", "--disable-background-networking", "--disable-dev-shm-usage"],
        )
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(url)
        yield page
        browser.close()


@pytest.fixture
def shots(tmp_path) -> Path:
    folder = Path(os.environ.get("RSVLM_SCREENSHOTS", tmp_path))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def answers(page) -> int:
    return page.get_by_text(ANSWERED).count()


def wait_for_answers(page, n: int) -> None:
    page.wait_for_function(
        "n => [...document.querySelectorAll('body *')].filter(e => e.children.length === 0 && "
        "/Answered in \\d/.test(e.textContent)).length >= n",
        arg=n,
        timeout=TIMEOUT_MS,
    )


def test_upload_ask_and_an_example_in_chromium(page, shots):
    page.get_by_text("rsvlm — ask a satellite").wait_for()
    page.get_by_text("none loaded").wait_for()
    page.screenshot(path=shots / "1-empty.png")

    page.locator("input[type=file]").first.set_input_files(str(DATA / "naip_2020_256.tif"))
    page.get_by_text(re.compile("Loaded naip_2020_256.tif")).first.wait_for()
    assert "5.00 m/pixel" in page.locator("#status").inner_text()
    page.screenshot(path=shots / "2-loaded.png")

    start = time.perf_counter()
    page.get_by_role("button", name="Outline the water.", exact=True).click()
    wait_for_answers(page, 1)
    latency = time.perf_counter() - start
    print(f"\nbrowser: warm 256 px turn 'Outline the water.' answered in {latency:.2f} s (click to status)")
    page.get_by_role("button", name="GeoJSON (EPSG:4326)").wait_for()
    drawn = page.evaluate(
        "[...document.querySelectorAll('img')].filter(i => i.src.includes('/file=') && i.src.endsWith('.png')"
        " && i.naturalWidth >= 512).length"
    )
    assert drawn >= 1  # the map: the image with its regions, as a PNG at least 512 px wide
    assert page.get_by_text(re.compile(r"Regions: \d")).count()
    page.locator("td", has_text=re.compile(r"^\s*mask\s*$")).first.wait_for(state="attached")  # a table row
    assert page.locator("td", has_text=re.compile(r"^\s*water\s*$")).count()
    page.screenshot(path=shots / "3-answer.png")

    page.locator("#gallery .thumbnail-item").nth(1).click()  # Change · NAIP 2009 vs 2020
    page.get_by_text(re.compile("Loaded naip_2009_256.tif")).first.wait_for()
    wait_for_answers(page, 1)
    page.get_by_text("Segment the changed areas.").first.wait_for()
    assert page.get_by_label("Before / after").count() or page.get_by_text("Before / after").count()
    page.screenshot(path=shots / "4-example-two-dates.png")

    page.get_by_text("Options").click()
    page.get_by_label("Window budget").first.wait_for()
    page.screenshot(path=shots / "5-options.png", full_page=True)
