"""The Generate tab in a real headless Chromium: upload, generate, a playable video, the seed reused.

Debian's Chromium (``make test`` installs it from ``packages-test.txt``) is driven by Playwright's sync API; no
browser is downloaded. The README's screenshots of this tab are made by ``tests/test_browser_first_use.py``, which
also covers refusals, the phone flow, examples, Stop and Clear. Skip these tests locally with
``make test PYTEST_ARGS="-m 'not browser'"``.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from app_support import ROOT, launched_app, launched_chromium

pytestmark = pytest.mark.browser

PORTRAIT = ROOT / "assets" / "portrait_illustration.png"
SPEECH = ROOT / "assets" / "speech_en.wav"
DESKTOP = {"width": 1440, "height": 900}
PHONE = {"width": 390, "height": 844}
VIDEO_READY = """() => {
    const video = document.querySelector('#ditto-video video');
    return !!video && !!video.getAttribute('src') && (video.readyState >= 1 || video.duration > 0);
}"""


@pytest.fixture(scope="module")
def app_url(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with launched_app(tiny_root, tmp_path_factory.mktemp("browser-app")) as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with launched_chromium() as chromium:
        yield chromium


@pytest.fixture(scope="module")
def one_second(tmp_path_factory: pytest.TempPathFactory) -> Path:
    clip = tmp_path_factory.mktemp("speech") / "hello.wav"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(SPEECH), "-t", "1", str(clip)], check=True)
    return clip


def _open(browser: object, url: str, viewport: dict[str, int]) -> object:
    page = browser.new_page(viewport=viewport)  # type: ignore[attr-defined]
    page.goto(url, wait_until="domcontentloaded")
    page.wait_for_selector("#ditto-generate-button", timeout=60_000)
    page.wait_for_timeout(500)  # let the layout settle (fonts, accordions) before a screenshot
    return page


def test_generate_in_the_browser(browser: object, app_url: str, one_second: Path) -> None:
    page = _open(browser, app_url, DESKTOP)
    try:
        page.locator("#ditto-portrait input[type=file]").set_input_files(str(PORTRAIT))
        page.wait_for_selector("#ditto-crop-preview img", timeout=60_000)  # face box drawn on upload
        page.locator("#ditto-speech input[type=file]").set_input_files(str(one_second))
        page.get_by_text("1.0 s of speech").wait_for(timeout=30_000)  # the duration, before the run

        page.locator("#ditto-generate-button").click()
        page.wait_for_function(VIDEO_READY, timeout=120_000)
        page.get_by_text("25 frames at 25 fps").wait_for(timeout=30_000)
        seed = page.locator("#ditto-seed-used input").input_value()
        assert seed.isdigit()

        # the echoed seed can be reused: it goes into the seed box and "random" is switched off
        page.locator("#ditto-reuse-seed").click()
        page.wait_for_function("() => !document.querySelector('#ditto-random-seed input').checked", timeout=10_000)
        assert page.get_by_label("Seed", exact=True).input_value() == seed
    finally:
        page.close()


def test_phone_layout(browser: object, app_url: str) -> None:
    page = _open(browser, app_url, PHONE)
    try:
        overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 1, "the page scrolls sideways on a phone"
        box = page.locator("#ditto-generate-button").bounding_box()
        assert box is not None
        assert box["width"] >= PHONE["width"] * 0.6  # a full-width primary button, easy to hit
    finally:
        page.close()
