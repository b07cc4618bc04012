"""Live transport: browser audio resampled to 16 kHz mono, a live session on the tiny checkpoints (frames while the
audio still arrives, finite statistics, speech-onset latency), prompt shutdown without stray threads, and the
Gradio adapter's frame loop."""

from __future__ import annotations

import asyncio
import copy
import math
import subprocess
import threading
import time
import wave
from collections.abc import Iterator
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest

from ditto_demo.errors import DittoError, InputError
from ditto_demo.live.session import LiveSession
from ditto_demo.pipeline.controls import Controls
from ditto_demo.pipeline.pcm import Resampler, resample, to_mono_float32
from ditto_demo.pipeline.pipeline import Pipeline
from ditto_demo.ui.service import AppSettings, DemoService
from ditto_demo.ui.transport import GradioStreamTransport

ASSETS = Path(__file__).resolve().parents[1] / "assets"
PORTRAIT = ASSETS / "portrait_illustration.png"
FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()
FAST = Controls(steps=2, seed=3)


def _stray_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith(("ditto-", "live-"))]


@pytest.fixture(autouse=True)
def _no_threads_left() -> Iterator[None]:
    yield
    deadline = time.monotonic() + 5
    while _stray_threads() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _stray_threads() == []


@pytest.fixture(scope="module")
def service(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> DemoService:
    settings = AppSettings(output_dir=tmp_path_factory.mktemp("outputs"))
    return DemoService(settings, pipeline=Pipeline(tiny_root, backend="torch", device="cpu"))


def _speech_wav(folder: Path, *, silence: float, seconds: float, rate: int = 48000, channels: int = 2) -> Path:
    """The example speech after ``silence`` seconds of silence, as 16-bit PCM (what a browser microphone gives)."""
    path = folder / f"mic_{silence}_{seconds}_{rate}_{channels}.wav"
    subprocess.run(
        [FFMPEG, "-v", "error", "-y", "-i", str(ASSETS / "speech_en.wav"), "-t", str(seconds),
         "-af", f"adelay={int(silence * 1000)}:all=1", "-ar", str(rate), "-ac", str(channels),
         "-c:a", "pcm_s16le", str(path)],
        check=True,
    )  # fmt: skip
    return path


def _read_wav(path: Path) -> tuple[int, np.ndarray]:
    with wave.open(str(path)) as wav:
        data = np.frombuffer(wav.readframes(wav.getnframes()), "<i2").reshape(-1, wav.getnchannels())
        return wav.getframerate(), data


# ------------------------------------------------------------------------------------------------- resampling


@pytest.mark.parametrize("rate", [8000, 44100, 48000])
def test_int16_stereo_is_resampled_to_16k_mono(rate: int) -> None:
    seconds = 1.0
    t = np.arange(int(rate * seconds)) / rate
    left, right = 0.6 * np.sin(2 * np.pi * 440 * t), 0.2 * np.sin(2 * np.pi * 440 * t)
    stereo = np.round(np.stack([left, right], axis=1) * 32767).astype(np.int16)

    whole = resample(stereo, rate)
    resampler, pieces, start = Resampler(rate), [], 0
    for size in np.random.default_rng(rate).integers(1, 3000, size=1000):  # the cutting must not matter
        pieces.append(resampler.process(to_mono_float32(stereo[start:start + size])))
        start += int(size)
        if start >= len(stereo):
            break
    chunked = np.concatenate([*pieces, resampler.flush()])

    assert whole.dtype == np.float32
    assert len(whole) == math.ceil(len(stereo) * 16000 / rate)
    np.testing.assert_allclose(chunked, whole, atol=1e-6)
    expected = 0.4 * np.sin(2 * np.pi * 440 * np.arange(len(whole)) / 16000)  # the mean of the two channels
    assert np.max(np.abs(whole - expected)[100:-100]) < 2e-3


@pytest.mark.parametrize("rate", [44100, 48000])
def test_downsampling_removes_what_16k_cannot_hold(rate: int) -> None:
    t = np.arange(rate) / rate
    above = resample(0.5 * np.sin(2 * np.pi * 10_000 * t).astype(np.float32), rate)  # would alias to 6 kHz
    below = resample(0.5 * np.sin(2 * np.pi * 3_000 * t).astype(np.float32), rate)
    assert np.sqrt(np.mean(above[100:-100] ** 2)) < 1e-3
    assert np.sqrt(np.mean(below[100:-100] ** 2)) == pytest.approx(0.5 / math.sqrt(2), rel=0.02)


def test_sample_formats_become_mono_float() -> None:
    np.testing.assert_allclose(to_mono_float32(np.array([16384, -32768], np.int16)), [0.5, -1.0])
    np.testing.assert_allclose(to_mono_float32(np.array([[0, 255, 128]], np.uint8).T), [-1.0, 0.9921875, 0.0])
    channels_first = np.array([[0.2, 0.4, 0.6], [0.0, 0.0, 0.0]], np.float32)  # (channels, samples)
    np.testing.assert_allclose(to_mono_float32(channels_first), [0.1, 0.2, 0.3], rtol=1e-6)
    with pytest.raises(InputError):
        to_mono_float32(np.zeros((2, 2, 2)))
    with pytest.raises(InputError):
        to_mono_float32(np.array([np.nan], np.float32))
    with pytest.raises(InputError):
        Resampler(0)


# ---------------------------------------------------------------------------------------------------- session


def test_session_streams_frames_while_the_audio_arrives(service: DemoService, tmp_path: Path) -> None:
    rate, audio = _read_wav(_speech_wav(tmp_path, silence=0.6, seconds=2.4))
    chunk = rate // 4
    session = LiveSession(service, PORTRAIT, FAST).start()
    frames_while_feeding = 0
    started = time.perf_counter()
    for number, begin in enumerate(range(0, len(audio), chunk)):  # paced like a microphone, a chunk per 0.25 s
        time.sleep(max(0.0, started + number * 0.25 - time.perf_counter()))
        assert session.push_audio(rate, audio[begin:begin + chunk], block=True, timeout=30)
        frames_while_feeding = len(session.frames_since(-1))
    session.end_audio()
    assert session.join(60)

    assert frames_while_feeding > 0, "no frame arrived before the audio ended"
    assert session.error is None
    stats = session.stats()
    assert stats.frames >= math.ceil(len(audio) / rate * 25)
    assert not stats.running
    assert stats.audio_seconds == pytest.approx(len(audio) / rate, abs=0.01)
    assert stats.dropped_seconds == 0
    assert stats.first_frame_latency is not None
    assert 0 < stats.first_frame_latency < 30
    assert stats.onset_at == pytest.approx(0.6, abs=0.1)  # the leading silence is not speech
    assert stats.onset_latency is not None
    assert 0 < stats.onset_latency < 30
    assert all(math.isfinite(v) for v in (stats.fps, stats.first_frame_latency, stats.onset_latency))
    assert session.latest_frame() is not None
    assert session.latest_frame().index == stats.frames - 1
    assert set(stats.to_dict()) >= {"fps", "onset_latency", "frames_behind", "first_frame_latency"}


def test_close_mid_stream_stops_promptly(service: DemoService) -> None:
    session = LiveSession(service, PORTRAIT, FAST).start()
    tone = (0.3 * np.sin(2 * np.pi * 220 * np.arange(48000 * 3) / 48000) * 32767).astype(np.int16)
    for begin in range(0, len(tone), 12000):
        session.push_audio(48000, tone[begin:begin + 12000])
    assert session.wait_for_frame(-1, timeout=60) is not None
    assert session.running
    started = time.perf_counter()
    session.close()
    assert time.perf_counter() - started < 2.0
    assert session.finished
    assert not session.running
    assert session.error is None
    assert _stray_threads() == []
    assert session.push_audio(48000, tone[:1000]) is False  # a closed session takes no more audio


def test_a_full_queue_drops_the_oldest_audio(service: DemoService) -> None:
    session = LiveSession(service, PORTRAIT, FAST, max_buffer_seconds=0.5)  # not started: nothing drains the queue
    silence = np.zeros(16000, np.float32)
    assert session.push_audio(16000, silence)
    assert session.push_audio(16000, silence)
    stats = session.stats()
    assert stats.audio_seconds == pytest.approx(2.0)
    assert stats.dropped_seconds == pytest.approx(1.5)
    session.close()
    assert session.finished


def test_session_ends_by_itself_when_the_audio_stops(service: DemoService) -> None:
    session = LiveSession(service, PORTRAIT, FAST, idle_timeout=0.5).start()
    session.push_audio(16000, np.zeros(8000, np.float32))
    assert session.join(30)
    assert session.finished
    assert session.error is None


def test_a_failed_session_reports_its_error(service: DemoService, tmp_path: Path) -> None:
    session = LiveSession(service, tmp_path / "missing.png", FAST).start()
    assert session.join(30)
    assert isinstance(session.error, DittoError)
    assert session.stats().error
    with pytest.raises(DittoError):
        session.push_audio(16000, np.zeros(1600, np.float32))


# ------------------------------------------------------------------------------------------- Gradio transport


def test_each_browser_session_gets_a_fresh_transport(service: DemoService) -> None:
    template = GradioStreamTransport(service, idle_timeout=3.0)
    copied = copy.deepcopy(template)
    assert copied is not template
    assert copied.service is service
    assert copied.session is None
    assert copied.session_options == {"idle_timeout": 3.0}
    with pytest.raises(InputError, match="portrait"):
        copied.ensure_session(None, FAST)


def test_gradio_transport_shows_frames_until_stopped(service: DemoService) -> None:
    transport = GradioStreamTransport(service, poll_seconds=0.01)
    tone = (0.3 * np.sin(2 * np.pi * 220 * np.arange(48000) / 48000) * 32767).astype(np.int16)

    async def run() -> list[tuple[object, str]]:
        updates: list[tuple[object, str]] = []
        frames = transport.frames()
        updates.append(await frames.__anext__())  # the "waiting" line, before any audio
        transport.ensure_session(PORTRAIT, FAST)
        for begin in range(0, len(tone), 12000):
            transport.receive((48000, tone[begin:begin + 12000]))
        async for update in frames:
            updates.append(update)
            if isinstance(update[0], np.ndarray):
                break
        final = await asyncio.to_thread(transport.stop)
        assert final is not None
        assert final.frames > 0
        async for update in frames:  # ends once stopped
            updates.append(update)
        return updates

    updates = asyncio.run(asyncio.wait_for(run(), timeout=90))
    assert "Waiting" in updates[0][1]
    image = next(u[0] for u in updates if isinstance(u[0], np.ndarray))
    assert image.shape == (640, 512, 3)
    assert image.dtype == np.uint8
    assert any("fps" in text for _, text in updates)
    assert transport.session is None
    assert transport.stopped
