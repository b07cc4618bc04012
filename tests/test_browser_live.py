"""The Live and Compare tabs in a real headless Chromium, against ``python app.py`` with the tiny checkpoints.

Live: Chromium's fake microphone plays a 16-bit PCM wav (half a second of silence, then speech); after **Record**
the live image must show streamed JPEG frames and the figures line must report fps and the speech-onset latency.
Compare: upload, compare, a playable side-by-side video. Screenshots go to ``docs/screenshots/live-desktop.png``
and ``compare-desktop.png`` (the tiny networks draw noise where the face is: these check plumbing, not looks).
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from app_support import CHROMIUM_FLAGS, ROOT, chromium_path, launched_app

pytestmark = pytest.mark.browser

SCREENSHOTS = ROOT / "docs" / "screenshots"
PORTRAIT = ROOT / "assets" / "portrait_illustration.png"
SPEECH = ROOT / "assets" / "speech_en.wav"
DESKTOP = {"width": 1366, "height": 900}
FAKE_MEDIA = ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]
FRAME_SHOWN = """() => {
    const img = document.querySelector('#live-frame img');
    return !!img && /\\.jpe?g/.test(img.getAttribute('src') || '') && img.naturalWidth > 0 ? img.src : null;
}"""
VIDEO_READY = """() => {
    const video = document.querySelector('#compare-video video');
    return !!video && !!video.getAttribute('src') && (video.readyState >= 1 || video.duration > 0);
}"""


def _main_app_has_the_tabs() -> bool:
    app = ROOT / "ditto_demo" / "ui" / "app.py"
    return app.is_file() and "build_live_tab" in app.read_text() and "build_compare_tab" in app.read_text()


@pytest.fixture(scope="module")
def microphone_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What the fake microphone plays (in a loop): 0.5 s of silence, then 3 s of speech; 48 kHz 16-bit PCM."""
    path = tmp_path_factory.mktemp("mic") / "mic.wav"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(SPEECH), "-t", "3", "-af", "adelay=500:all=1",
         "-ar", "48000", "-ac", "1", "-c:a", "pcm_s16le", str(path)],
        check=True,
    )  # fmt: skip
    return path


@pytest.fixture(scope="module")
def app_url(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not _main_app_has_the_tabs():
        pytest.skip("the main app does not include the Compare and Live tabs yet")
    with launched_app(tiny_root, tmp_path_factory.mktemp("live-app")) as url:
        yield url


@pytest.fixture(scope="module")
def browser(microphone_wav: Path) -> Iterator[object]:
    executable = chromium_path()
    if executable is None:
        pytest.skip("Chromium is not installed (make test installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=executable,
            args=[*CHROMIUM_FLAGS, *FAKE_MEDIA, f"--use-file-for-fake-audio-capture={microphone_wav}"],
        )
        yield chromium
        chromium.close()


def _open_tab(browser: object, url: str, name: str) -> object:
    context = browser.new_context(viewport=DESKTOP, permissions=["microphone"])  # type: ignore[attr-defined]
    page = context.new_page()
    page.goto(url, wait_until="domcontentloaded")
    page.get_by_role("tab", name=name, exact=True).click()
    page.wait_for_timeout(500)  # let the layout settle before interacting or taking a screenshot
    return page


def test_live_microphone_shows_frames_as_you_speak(browser: object, app_url: str) -> None:
    page = _open_tab(browser, app_url, "Live")
    try:
        page.locator("#live-mic").get_by_role("button", name="Record").click()
        first = page.wait_for_function(FRAME_SHOWN, timeout=90_000).json_value()
        page.wait_for_function(f"() => ({FRAME_SHOWN})() && ({FRAME_SHOWN})() !== {first!r}", timeout=30_000)
        stats = page.locator("#live-stats")
        page.wait_for_function(
            "() => /speech onset → first frame \\d/.test(document.querySelector('#live-stats').innerText)",
            timeout=30_000,
        )
        assert re.search(r"\d+ fps", stats.inner_text())
        page.wait_for_timeout(1500)  # a few more frames, for a representative picture
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "live-desktop.png"))
        page.locator("#live-mic").get_by_role("button", name="Stop").click()
        page.wait_for_function(
            "() => /stopped/.test(document.querySelector('#live-stats').innerText)", timeout=30_000
        )
    finally:
        page.context.close()


def test_compare_renders_a_and_b_in_one_video(browser: object, app_url: str, tmp_path: Path) -> None:
    clip = tmp_path / "hello.wav"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(SPEECH), "-t", "1", str(clip)], check=True)
    page = _open_tab(browser, app_url, "Compare")
    try:
        page.locator("#compare-portrait input[type=file]").set_input_files(str(PORTRAIT))
        page.locator("#compare-speech input[type=file]").set_input_files(str(clip))
        page.wait_for_timeout(1000)
        page.locator("#compare-button").click()
        page.wait_for_function(VIDEO_READY, timeout=120_000)
        width = page.evaluate("() => document.querySelector('#compare-video video').videoWidth")
        assert width == 1024  # two 512-pixel portraits side by side
        page.wait_for_timeout(1000)
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "compare-desktop.png"), full_page=True)
    finally:
        page.context.close()
