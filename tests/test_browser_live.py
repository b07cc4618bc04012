"""The Live tab's player and the Compare tab in a real headless Chromium, against the app on the tiny checkpoints.

The app is built and launched here as ``app.py`` does it (``build_app`` + ``launch_kwargs``), in this process, so the
tests can also read the server's side: how many live sessions it holds. Chromium's fake microphone plays a wav (one
second of silence, three of speech, two of silence, in a loop); ``--autoplay-policy=no-user-gesture-required`` lets
the page play the avatar's voice without a click.

Every mode goes through ``window.dittoLive`` (the public contract): frames arrive, ``stats()`` is sane and moves
``idle`` → ``live`` → ``ended``, the voice plays in the file and text modes (an AnalyserNode hears it) and never in
the microphone mode, Interrupt silences the avatar, a second visitor is told how many are ahead, and closing the tab
ends the session. The Gradio-only fallback (no WebSocket) is checked too. These are correctness checks: on a 2-core
CPU the tiny networks render well below 25 fps; speed is ``python -m ditto_demo bench --parts live-browser``'s job.
Screenshots go to ``docs/screenshots/`` (the tiny networks draw noise where the face is).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from app_support import ROOT, free_port, launched_chromium

from ditto_demo.ui.app import build_app, launch_kwargs
from ditto_demo.ui.service import AppSettings, DemoService

pytestmark = pytest.mark.browser

SCREENSHOTS = ROOT / "docs" / "screenshots"
PORTRAIT = ROOT / "assets" / "portrait_illustration.png"
SPEECH = ROOT / "assets" / "speech_en.wav"
DESKTOP = {"width": 1366, "height": 900}
FAKE_MEDIA = ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
              "--autoplay-policy=no-user-gesture-required"]
#: Fields the public contract promises in stats().
CONTRACT = {"state", "mode", "transport", "onset_to_motion_ms", "frame_delay_ms", "fps", "av_offset_ms", "frames",
            "dropped_audio_ms"}
FRAME_SHOWN = """() => {
    const img = document.querySelector('#live-frame img');
    return !!img && /\\.jpe?g/.test(img.getAttribute('src') || '') && img.naturalWidth > 0 ? img.src : null;
}"""
VIDEO_READY = """() => {
    const video = document.querySelector('#compare-video video');
    return !!video && !!video.getAttribute('src') && (video.readyState >= 1 || video.duration > 0);
}"""


# ------------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def microphone_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What the fake microphone plays, in a loop: 1 s of silence, 3 s of speech, 2 s of silence; 48 kHz 16-bit."""
    path = tmp_path_factory.mktemp("mic") / "mic.wav"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(SPEECH), "-t", "3",
         "-af", "adelay=1000:all=1,apad=pad_dur=2", "-ar", "48000", "-ac", "1", "-c:a", "pcm_s16le", str(path)],
        check=True,
    )  # fmt: skip
    return path


@pytest.fixture(scope="module")
def speech_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2.5 s of the example speech: the Live tab's speech file."""
    path = tmp_path_factory.mktemp("speech") / "speech.wav"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(SPEECH), "-t", "2.5", str(path)], check=True)
    return path


@dataclasses.dataclass
class App:
    url: str
    service: DemoService


@pytest.fixture(scope="module")
def app(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    """The whole app, launched as app.py launches it, on a free port (concurrency 1: one live session at a time)."""
    work = tmp_path_factory.mktemp("live-app")
    settings = AppSettings(checkpoints=str(tiny_root), backend="torch", device="cpu", concurrency=1,
                           output_dir=work / "outputs")
    service = DemoService(settings)
    demo = build_app(service)
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, server_name="127.0.0.1", server_port=free_port(),
                            **launch_kwargs(settings))
    try:
        yield App(url, service)
    finally:
        demo.close()
        service.close()


@pytest.fixture(scope="module")
def browser(microphone_wav: Path) -> Iterator[Any]:
    with launched_chromium([*FAKE_MEDIA, f"--use-file-for-fake-audio-capture={microphone_wav}"]) as chromium:
        yield chromium


# ------------------------------------------------------------------------------------------------- helpers


def _open(browser: Any, url: str, tab: str | None = "Live") -> Any:
    context = browser.new_context(viewport=DESKTOP, permissions=["microphone"])
    page = context.new_page()
    page.goto(url, wait_until="domcontentloaded")
    page.wait_for_function("() => !!window.dittoLive && !!document.querySelector('button[role=tab]')",
                           timeout=60_000)
    if tab:
        page.get_by_role("tab", name=tab, exact=True).click()
        page.wait_for_timeout(500)  # let the layout settle before interacting or taking a screenshot
    return page


def _stats(page: Any) -> dict[str, Any]:
    return page.evaluate("() => window.dittoLive.stats()")


def _start(page: Any, mode: str, text: str = "") -> None:
    """dittoLive.start without waiting for it (its promise resolves when frames show; errors are kept)."""
    page.evaluate("([mode, text]) => { window.__liveError = null; window.dittoLive.start({mode, text})"
                  ".catch((e) => { window.__liveError = String(e && e.message || e); }); }", [mode, text])


def _until(page: Any, predicate: Callable[[dict[str, Any]], bool], timeout: float, what: str) -> dict[str, Any]:
    """Poll stats() until ``predicate`` holds; fails with the last figures and any start error."""
    deadline = time.monotonic() + timeout
    while True:
        stats = _stats(page)
        if predicate(stats):
            return stats
        error = page.evaluate("() => window.__liveError || null")
        figures = f"{what}: {json.dumps(stats)} error={error!r}"
        assert not (error and stats["state"] == "ended"), f"the session ended while waiting for {figures}"
        assert time.monotonic() < deadline, f"timed out waiting for {figures}"
        page.wait_for_timeout(200)


def _live(page: Any, mode: str, text: str = "", frames: int = 3) -> dict[str, Any]:
    _start(page, mode, text)
    return _until(page, lambda s: s["state"] == "live" and s["frames"] >= frames, 180, f"{mode} frames")


def _stop(page: Any, app: App) -> dict[str, Any]:
    final = page.evaluate("() => window.dittoLive.stop()")
    assert final["state"] == "ended"
    _wait(lambda: app.service.live_hub.active() == 0, 30, "the server to end the session")
    return final


def _wait(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _choose_speech(page: Any, path: Path) -> None:
    page.locator("#ditto-live-speech input[type=file]").set_input_files(str(path))
    page.wait_for_selector("#ditto-live-speech audio, #ditto-live-speech [data-testid=waveform-x]", state="attached",
                           timeout=30_000)


# --------------------------------------------------------------------------------------------------- tests


def test_the_player_is_there_before_the_live_tab_is_opened(browser: Any, app: App) -> None:
    page = _open(browser, app.url, tab=None)
    try:
        stats = _stats(page)
        assert set(stats) >= CONTRACT
        assert (stats["state"], stats["transport"], stats["frames"], stats["fps"]) == ("idle", "websocket", 0, 0)
        assert page.locator("#ditto-live-start-btn").count() == 0  # the Live tab has not been built yet...
        _start(page, "file")  # ...so start() opens it itself; here without a speech file, which is refused in words
        stats = _until(page, lambda s: s["state"] == "ended", 60, "the refusal")
        assert stats["error"] == "Choose a speech file first."
        assert page.evaluate("() => window.__liveError") == "Choose a speech file first."
        assert page.locator("#ditto-live-status").inner_text() == "Choose a speech file first."
        assert app.service.live_hub.active() == 0
    finally:
        page.context.close()


def test_microphone_mode_moves_with_your_voice(browser: Any, app: App) -> None:
    page = _open(browser, app.url)
    sent: list[Any] = []
    page.on("websocket", lambda ws: ws.on("framesent", lambda payload: sent.append(payload)))
    try:
        assert _stats(page)["state"] == "idle"
        _live(page, "microphone")
        stats = _until(page, lambda s: s["onset_to_motion_ms"] is not None and s["frames"] >= 10, 180,
                       "a speech onset shown")
        assert stats["mode"] == "microphone"
        assert stats["transport"] == "websocket"
        assert stats["capture"] in ("audioworklet", "scriptprocessor")
        assert stats["fps"] > 0
        assert 0 < stats["onset_to_motion_ms"] < 60_000
        assert _finite(stats["frame_delay_ms"])
        assert stats["frame_delay_ms"] > 0
        assert stats["av_offset_ms"] is None  # nothing of the avatar is heard in this mode
        assert stats["audio_buffers"] == 0  # your own voice is never played back
        assert stats["dropped_audio_ms"] >= 0
        packets = [p for p in sent if isinstance(p, bytes) and p[0] == 0x01]
        assert packets, "microphone packets must go out"
        assert {len(p) for p in packets} == {9 + 2 * 320}  # 20 ms of 16 kHz int16 each
        assert json.loads(next(p for p in sent if isinstance(p, str)))["type"] == "hello"
        # a live control change goes out as a controls message while live
        page.locator("#ditto-live-player-block").scroll_into_view_if_needed()
        page.evaluate("() => window.dittoLive.setControls({yaw_offset: 12.5, emotion: 'happy', seed: 3})")
        controls = _wait(lambda: [json.loads(p) for p in sent if isinstance(p, str) and '"controls"' in p], 10,
                         "a controls message")
        assert controls[-1]["controls"] == {"yaw_offset": 12.5, "emotion": "happy"}  # seed cannot change live
        figures = page.locator("#ditto-live-figures").inner_text()
        assert "after you speak" in figures
        assert " fps shown" in figures
        assert "behind real time" in figures
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "live-desktop.png"))
        final = _stop(page, app)
        assert final["frames"] >= stats["frames"]
        assert _stats(page)["state"] == "ended"
        assert page.locator("#ditto-live-status").get_attribute("data-state") == "ended"
    finally:
        page.context.close()


def test_file_mode_plays_the_voice_with_the_frames(browser: Any, app: App, speech_clip: Path) -> None:
    page = _open(browser, app.url)
    try:
        _choose_speech(page, speech_clip)
        _live(page, "file")
        stats = _until(page, lambda s: s["audio_buffers"] > 0 and s["audio_peak"] > 0.01 and s["frames"] >= 10, 180,
                       "the file to be heard")
        assert stats["mode"] == "file"
        assert stats["fps"] > 0
        assert _finite(stats["av_offset_ms"])
        assert _finite(stats["frame_delay_ms"])
        assert stats["speak_to_sound_ms"] is not None
        assert stats["speak_to_sound_ms"] > 0
        stats = _until(page, lambda s: s["onset_to_motion_ms"] is not None, 60, "the speech onset shown")
        assert abs(stats["onset_to_motion_ms"]) < 60_000
        assert "audio and video within" in page.locator("#ditto-live-figures").inner_text()
        _stop(page, app)
    finally:
        page.context.close()


def test_text_mode_speaks_and_interrupt_silences_it(browser: Any, app: App) -> None:
    page = _open(browser, app.url)
    try:
        long_text = ("This is a long sentence that keeps going for quite a while so that it can be interrupted. "
                     "And here is another sentence that should never be heard at all.")
        _live(page, "text", long_text)
        stats = _until(page, lambda s: s["speaking"] and s["audio_buffers"] > 0 and s["audio_peak"] > 0.01, 180,
                       "the voice to be heard")
        assert stats["mode"] == "text"
        assert _finite(stats["av_offset_ms"])
        asked = time.monotonic()
        assert page.evaluate("() => window.dittoLive.interrupt()") is True
        stats = _until(page, lambda s: not s["speaking"] and not s["audio_playing"] and s["interrupt_ms"] is not None,
                       30, "the avatar to fall silent")
        measured = time.monotonic() - asked
        assert 0 <= stats["interrupt_ms"] <= measured * 1000 + 500  # the page's own figure, bounded by ours
        assert stats["state"] == "live"  # interrupting the speech does not end the session
        frames = stats["frames"]
        _until(page, lambda s: s["frames"] > frames, 60, "idle frames after the interrupt")
        # Speak queues more text in the running session (the Speak button, as a visitor would)
        buffers = stats["audio_buffers"]
        page.locator("#ditto-live-text textarea").fill("Hello again.")
        page.locator("#ditto-live-speak").click()
        _until(page, lambda s: s["audio_buffers"] > buffers, 120, "the new text to be heard")
        _stop(page, app)
    finally:
        page.context.close()


def test_a_second_visitor_is_told_the_server_is_busy_and_closing_a_tab_ends_its_session(
        browser: Any, app: App) -> None:
    first = _open(browser, app.url)
    second = _open(browser, app.url)
    try:
        _live(first, "microphone")
        assert app.service.live_hub.active() == 1
        _start(second, "microphone")
        busy = _until(second, lambda s: s["busy_ahead"] == 1, 60, "the busy answer")
        assert busy["state"] == "starting"
        assert second.locator("#ditto-live-status").inner_text() == "The server is busy: 1 ahead of you."
        assert app.service.live_hub.active() == 1  # the second waits; the streams are never mixed
        first.close()  # the first visitor closes the tab: the session ends and the slot is free
        stats = _until(second, lambda s: s["state"] == "live" and s["frames"] > 0, 180, "the second to go live")
        assert stats["busy_ahead"] is None
        assert app.service.live_hub.active() == 1
        second.close()
        _wait(lambda: app.service.live_hub.active() == 0, 30, "no session left after both tabs closed")
    finally:
        first.context.close()
        second.context.close()


def test_fallback_microphone_shows_frames_as_you_speak(browser: Any, app: App) -> None:
    """The Gradio-only path (no WebSocket): Record in the fallback accordion shows frames and the figures line."""
    page = _open(browser, app.url)
    try:
        page.locator("#ditto-live-fallback").get_by_text("Fallback without WebSockets").click()
        page.locator("#live-mic").get_by_role("button", name="Record").click()
        first = page.wait_for_function(FRAME_SHOWN, timeout=120_000).json_value()
        page.wait_for_function(f"() => ({FRAME_SHOWN})() && ({FRAME_SHOWN})() !== {first!r}", timeout=60_000)
        page.wait_for_function(
            "() => /lip motion starts \\d+\\.\\d+ s after you speak/.test("
            "document.querySelector('#live-stats').innerText)",
            timeout=60_000,
        )
        line = page.locator("#live-stats").inner_text()
        assert re.search(r"\d+ fps", line)
        assert re.search(r"picture \d+ frames behind real time", line)  # every figure has its unit
        page.locator("#live-mic").get_by_role("button", name="Stop").click()
        page.wait_for_function(
            "() => /stopped/.test(document.querySelector('#live-stats').innerText)", timeout=30_000
        )
    finally:
        page.context.close()


def test_compare_renders_a_and_b_in_one_video(browser: Any, app: App, tmp_path: Path) -> None:
    clip = tmp_path / "hello.wav"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(SPEECH), "-t", "1", str(clip)], check=True)
    page = _open(browser, app.url, "Compare")
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
