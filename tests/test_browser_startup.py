"""A fresh host in a real headless Chromium (issue 11, findings 4 and 10): the page is up while the checkpoints
download, shows how far the download is, and enables Generate by itself when it is done; then a generation works.

``python app.py`` starts with no local checkpoints and an empty Hugging Face cache, against a local Hub
(``tests/gated_hub.py``: the real huggingface_hub client; the files arrive when the test lets them, so the progress
can be watched). The page is never reloaded: a marker set in the page at the start must still be there at the end.
The "Use via API" snippet shows the address the page was served from. The screenshot of the page during the download
is ``docs/screenshots/download-desktop.png``.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from app_support import ROOT, launched_app, launched_chromium
from gated_hub import BACKEND, GatedHub, fresh_host_env, repository_files

from ditto_demo.engine.hub import HUB_REPO_ID, allow_patterns

pytestmark = pytest.mark.browser

SCREENSHOTS = ROOT / "docs" / "screenshots"
PORTRAIT = ROOT / "assets" / "portrait_illustration.png"
DESKTOP = {"width": 1440, "height": 900}
#: The banner's text as shown ('' when it is hidden or gone).
BANNER_TEXT = """() => {
    const banner = document.querySelector('#ditto-banner');
    return banner && banner.getClientRects().length > 0 ? banner.innerText.trim() : '';
}"""
BANNER_SAYS = "(text) => (" + BANNER_TEXT + ")().includes(text)"
VIDEO_READY = """() => {
    const video = document.querySelector('#ditto-video video');
    return !!video && !!video.getAttribute('src') && (video.readyState >= 1 || video.duration > 0);
}"""


@pytest.fixture(scope="module")
def hub(tiny_root: Path) -> Iterator[GatedHub]:
    server = GatedHub(HUB_REPO_ID, repository_files(tiny_root)).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def app_url(hub: GatedHub, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    work = tmp_path_factory.mktemp("startup-app")
    with launched_app(Path(""), work, fresh_host_env(hub, work)) as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with launched_chromium() as chromium:
        yield chromium


@pytest.fixture(scope="module")
def one_second(tmp_path_factory: pytest.TempPathFactory) -> Path:
    clip = tmp_path_factory.mktemp("speech") / "hello.wav"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(ROOT / "assets" / "speech_en.wav"), "-t",
                    "1", str(clip)], check=True)
    return clip


def _banner(page: Any) -> str:
    return str(page.evaluate(BANNER_TEXT))


def test_the_download_is_shown_then_generate_comes_on_without_a_reload(browser: Any, app_url: str, hub: GatedHub,
                                                                       one_second: Path) -> None:
    total = len(set(allow_patterns(BACKEND)) & set(hub.files))
    page = browser.new_page(viewport=DESKTOP)
    try:
        page.goto(app_url, wait_until="domcontentloaded")
        page.wait_for_selector("#ditto-generate-button", timeout=60_000)
        page.evaluate("() => { window.dittoStartupMarker = 'same page'; }")
        assert hub.served == 0  # nothing has arrived: the page did not wait for the checkpoints

        # The banner says how far the download is (files, bytes, percent); the run buttons wait.
        page.wait_for_function(BANNER_SAYS, arg=f"of {total} files", timeout=30_000)
        first = _banner(page)
        assert re.search(rf"Downloading the Ditto checkpoints: 0 of {total} files, [\d.]+ of [\d.]+ [kM]B \(0%\)",
                         first), first
        assert "no need to reload" in first
        assert page.locator("#ditto-generate-button").is_disabled()
        page.wait_for_timeout(300)  # let the banner's layout settle for the screenshot
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "download-desktop.png"))

        # One file more: the same page shows it within the poll's second or two.
        hub.allow(1)
        page.wait_for_function(BANNER_SAYS, arg=f"1 of {total} files", timeout=15_000)
        assert re.search(r"\((\d+)%\)", _banner(page))
        assert page.locator("#ditto-generate-button").is_disabled()

        # The rest: the banner goes and Generate (and the other run buttons) come on, with no reload.
        hub.open()
        page.wait_for_function("() => !document.querySelector('#ditto-generate-button').disabled", timeout=90_000)
        page.wait_for_function("() => (" + BANNER_TEXT + ")() === ''", timeout=10_000)
        assert page.evaluate("() => window.dittoStartupMarker") == "same page"
        disabled = page.evaluate("""() => ['compare-button', 'compare-grid-button', 'ditto-live-start',
            'live-file-stream'].map(id => document.getElementById(id)).filter(b => b && b.disabled).map(b => b.id)""")
        assert disabled == []

        # And a generation works on the downloaded checkpoints.
        page.locator("#ditto-portrait input[type=file]").set_input_files(str(PORTRAIT))
        page.wait_for_selector("#ditto-crop-preview img", timeout=60_000)
        page.locator("#ditto-speech input[type=file]").set_input_files(str(one_second))
        page.get_by_text("1.0 s of speech").wait_for(timeout=30_000)
        page.locator("#ditto-generate-button").click()
        page.wait_for_function(VIDEO_READY, timeout=120_000)
        page.get_by_text("25 frames at 25 fps").wait_for(timeout=30_000)
        assert page.evaluate("() => window.dittoStartupMarker") == "same page"
    finally:
        page.close()


def test_the_api_snippet_names_this_page(browser: Any, app_url: str) -> None:
    page = browser.new_page(viewport=DESKTOP)
    try:
        page.goto(app_url, wait_until="domcontentloaded")
        page.wait_for_selector("#ditto-generate-button", timeout=60_000)
        page.get_by_role("button", name=re.compile(r"^Use via API ▼")).click()  # the accordion, not Gradio's link
        snippet = page.locator("#ditto-api-snippet")
        snippet.wait_for(timeout=10_000)
        page.wait_for_function(
            "(url) => document.querySelector('#ditto-api-snippet').innerText.includes(`Client(\"${url}\")`)",
            arg=app_url, timeout=10_000)
        assert "127.0.0.1:7860" not in snippet.inner_text() or ":7860/" in app_url
    finally:
        page.close()
