"""Audio decoding and HuBERT windowing (offline and streaming) of ditto_demo.pipeline.audio."""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

import numpy as np
import pytest

from ditto_demo.errors import InputError
from ditto_demo.pipeline.audio import (
    HOP_SAMPLES,
    WINDOW_SAMPLES,
    HubertStream,
    audio_frame_count,
    hubert_features,
    load_audio,
    online_feature_count,
    silence_block,
    tile_silence,
)
from ditto_demo.pipeline.ffmpeg import ffmpeg_executable
from ditto_demo.testing.reference import (
    offline_window_starts,
    online_hubert_features,
    online_window_starts,
    silence_features,
)

SPEECH = Path(__file__).resolve().parents[1] / "assets" / "speech_en.wav"
PORTRAIT = Path(__file__).resolve().parents[1] / "assets" / "portrait_illustration.png"


def _ffmpeg(*args: str) -> None:
    subprocess.run([ffmpeg_executable(), "-nostdin", "-v", "error", "-y", *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    return load_audio(SPEECH)


@pytest.fixture(scope="module")
def encoded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The example speech re-encoded in the formats and layouts users upload."""
    folder = tmp_path_factory.mktemp("audio")
    variants = {
        "mp3": ["-c:a", "libmp3lame"],
        "m4a": ["-c:a", "aac"],
        "ogg": ["-c:a", "libvorbis"],
        "flac": ["-c:a", "flac"],
        "stereo48k.wav": ["-ac", "2", "-ar", "48000"],
        "mono8k.wav": ["-ar", "8000"],
    }
    paths = {}
    for name, args in variants.items():
        path = folder / f"speech.{name}"
        _ffmpeg("-i", str(SPEECH), *args, str(path))
        paths[name] = path
    return paths


# --------------------------------------------------------------------------------------------------- load_audio


def test_example_speech_is_16k_mono_float32(speech: np.ndarray) -> None:
    assert speech.dtype == np.float32
    assert speech.ndim == 1
    assert 6.7 < speech.size / 16000 < 6.9
    assert 0.1 < np.abs(speech).max() <= 1.0


@pytest.mark.parametrize("name", ["mp3", "m4a", "ogg", "flac", "stereo48k.wav", "mono8k.wav"])
def test_load_audio_formats(encoded: dict[str, Path], speech: np.ndarray, name: str) -> None:
    audio = load_audio(encoded[name])
    assert audio.dtype == np.float32
    assert audio.ndim == 1
    assert abs(audio.size - speech.size) < 0.05 * 16000  # ≈ duration × 16000
    n = min(audio.size, speech.size)
    # same speech, time-aligned (lossy codecs and 8 kHz band-limiting keep the correlation high)
    assert np.corrcoef(audio[:n], speech[:n])[0, 1] > 0.95


def test_image_named_wav_is_rejected(tmp_path: Path) -> None:
    fake = tmp_path / "voice.wav"
    fake.write_bytes(PORTRAIT.read_bytes())
    with pytest.raises(InputError, match="no audio stream"):
        load_audio(fake)


def test_empty_missing_and_directory_paths(tmp_path: Path) -> None:
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        load_audio(empty)
    with pytest.raises(InputError, match="does not exist"):
        load_audio(tmp_path / "missing.wav")
    with pytest.raises(InputError, match="not a file"):
        load_audio(tmp_path)


def test_corrupt_file_is_rejected(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.mp3"
    corrupt.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    with pytest.raises(InputError, match="not readable audio"):
        load_audio(corrupt)


def test_too_long_names_the_limit_and_too_short() -> None:
    with pytest.raises(InputError, match=r"longer than the 2 s limit"):
        load_audio(SPEECH, max_seconds=2)
    assert load_audio(SPEECH, max_seconds=10).size > 6 * 16000  # under the limit: untrimmed
    with pytest.raises(InputError, match="too short"):
        load_audio(SPEECH, min_seconds=8)


def test_a_file_of_exactly_the_limit_passes(tmp_path: Path) -> None:
    sine = tmp_path / "sine.wav"
    _ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100", "-t", "2", str(sine))
    assert abs(load_audio(sine, max_seconds=2).size - 32000) <= 2
    with pytest.raises(InputError, match=r"1\.9 s limit"):
        load_audio(sine, max_seconds=1.9)


def test_tiny_file_is_too_short(tmp_path: Path) -> None:
    short = tmp_path / "short.wav"
    _ffmpeg("-i", str(SPEECH), "-t", "0.05", str(short))
    with pytest.raises(InputError, match="too short"):
        load_audio(short)


def test_silent_file_is_accepted_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    silent = tmp_path / "silent.wav"
    _ffmpeg("-f", "lavfi", "-i", "anullsrc=r=44100:cl=stereo", "-t", "1", str(silent))
    with caplog.at_level(logging.WARNING, logger="ditto_demo.pipeline.audio"):
        audio = load_audio(silent)
    assert audio.size == 16000
    assert not audio.any()
    assert "silent" in caplog.text


# --------------------------------------------------------------------------------------------------- windows


class CenterHubert:
    """Fake HuBERT: frame f of a window reports the window sample at the centre of its 25 ms analysis window.

    Fed audio whose sample i holds i + 1 (zeros = padding), each feature then tells which samples it came from.
    """

    def __init__(self) -> None:
        self.windows: list[np.ndarray] = []

    def __call__(self, *, input_values: np.ndarray) -> dict[str, np.ndarray]:
        window = input_values[0]
        assert window.shape == (WINDOW_SAMPLES,)
        self.windows.append(window.copy())
        centres = window[np.arange(20) * 320 + 200]
        return {"encoding_out": np.repeat(centres[:, None], 1024, axis=1).astype(np.float32)}


def _ramp(n: int) -> np.ndarray:
    return np.arange(1, n + 1, dtype=np.float32)


def _expected_window(signal: np.ndarray, start: int) -> np.ndarray:
    out = np.zeros(WINDOW_SAMPLES, dtype=np.float32)
    lo, hi = max(start, 0), min(start + WINDOW_SAMPLES, signal.size)
    if hi > lo:
        out[lo - start : hi - start] = signal[lo:hi]
    return out


def test_frame_count_is_ceil_of_640() -> None:
    assert [audio_frame_count(n) for n in (0, 1, 639, 640, 641, 1280, 4480, 8960)] == [0, 1, 1, 1, 2, 2, 7, 14]
    # 5 features per started 3200-sample hop of the 1920-zero-led signal
    assert [online_feature_count(n) for n in (0, 1280, 1281, 4480, 4481)] == [5, 5, 10, 10, 15]


@pytest.mark.parametrize("length", [1, 640, 3200, 10_000, 33_333])
def test_offline_windows_and_feature_sources(length: int) -> None:
    signal = _ramp(length)
    fake = CenterHubert()
    feats = hubert_features(fake, signal)
    n = audio_frame_count(length)
    assert feats.shape == (n, 1024)
    starts = offline_window_starts(length)
    assert len(fake.windows) == len(starts) == -(-n // 5)
    assert list(starts) == [3200 * j - 2000 for j in range(len(starts))]
    for window, start in zip(fake.windows, starts, strict=True):
        np.testing.assert_array_equal(window, _expected_window(signal, int(start)))
    # feature k averages HuBERT frames centred on samples 640k + 120 and 640k + 440: the mean is 640k + 280
    k = np.arange(n)
    inside = 640 * k + 440 < length  # both centres inside the signal (no padding zero in the mean)
    np.testing.assert_array_equal(feats[inside, 0] - 1, (640 * k + 280)[inside])


@pytest.mark.parametrize("length", [1, 1280, 1281, 10_000, 33_333])
def test_online_windows_sit_80_samples_later(length: int) -> None:
    signal = _ramp(length)
    fake = CenterHubert()
    feats = online_hubert_features(fake, signal)
    starts = online_window_starts(length)
    assert feats.shape == (online_feature_count(length), 1024) == (5 * len(starts), 1024)
    assert list(starts) == [3200 * j - 1920 for j in range(len(starts))]
    for window, start in zip(fake.windows, starts, strict=True):
        np.testing.assert_array_equal(window, _expected_window(signal, int(start)))
    k = np.arange(feats.shape[0])
    inside = 640 * k + 520 < length
    np.testing.assert_array_equal(feats[inside, 0] - 1, (640 * k + 360)[inside])
    offline = offline_window_starts(length)
    common = min(len(offline), len(starts))
    np.testing.assert_array_equal(starts[:common] - offline[:common], 80)


class ProjectionHubert:
    """Fake HuBERT that depends on every sample: 20 frames of 400 samples projected to 1024 dims."""

    def __init__(self) -> None:
        self.matrix = np.random.default_rng(1).standard_normal((400, 1024)).astype(np.float32)
        self.calls = 0

    def __call__(self, *, input_values: np.ndarray) -> dict[str, np.ndarray]:
        self.calls += 1
        frames = np.stack([input_values[0, 320 * f : 320 * f + 400] for f in range(20)])
        return {"encoding_out": frames @ self.matrix}


def test_stream_in_random_chunks_equals_whole_signal() -> None:
    rng = np.random.default_rng(0)
    signal = rng.standard_normal(37_777).astype(np.float32)
    hubert = ProjectionHubert()
    whole = online_hubert_features(hubert, signal)
    stream = HubertStream(hubert)
    blocks: list[np.ndarray] = []
    position, seen_before_end = 0, 0
    while position < signal.size:
        size = int(rng.integers(1, 5000))
        new = stream.push(signal[position : position + size])
        position += size
        for block in new:
            assert block.shape == (5, 1024)
        blocks += new
        seen_before_end = len(blocks)
    blocks += stream.finish()
    assert seen_before_end > 0  # blocks arrive while the audio is still coming in
    np.testing.assert_array_equal(np.concatenate(blocks), whole)
    assert stream.finish() == []
    with pytest.raises(ValueError, match="mono"):
        HubertStream(hubert).push(np.zeros((100, 2), np.float32))
    with pytest.raises(RuntimeError):
        stream.push(signal[:10])


def test_stream_yields_each_block_as_soon_as_its_window_is_complete() -> None:
    stream = HubertStream(ProjectionHubert())
    # window j needs original samples up to 3200 j + 4560 (1920 leading zeros)
    assert stream.push(np.zeros(4559, np.float32)) == []
    assert len(stream.push(np.zeros(1, np.float32))) == 1
    assert stream.push(np.zeros(HOP_SAMPLES - 1, np.float32)) == []
    assert len(stream.push(np.zeros(1, np.float32))) == 1
    # the tail: every started hop gives one more (zero-padded) block
    assert len(stream.finish()) == online_feature_count(4560 + HOP_SAMPLES) // 5 - 2


def test_silence_features_are_offline_zero_audio() -> None:
    hubert = ProjectionHubert()
    warm = silence_features(hubert, 70)
    assert warm.shape == (70, 1024)
    np.testing.assert_array_equal(warm, hubert_features(hubert, np.zeros(70 * 640, np.float32)))
    assert silence_features(hubert, 0).shape == (0, 1024)


class BiasedHubert(ProjectionHubert):
    """ProjectionHubert plus a different bias per output frame, so an all-zero window gives non-zero rows."""

    def __call__(self, *, input_values: np.ndarray) -> dict[str, np.ndarray]:
        out = super().__call__(input_values=input_values)["encoding_out"]
        return {"encoding_out": out + np.arange(20, dtype=np.float32)[:, None] * np.linspace(-1, 1, 1024)}


@pytest.mark.parametrize("frames", [1, 4, 5, 7, 70, 75, 81])
def test_silence_features_take_one_hubert_call_and_equal_the_offline_path(frames: int) -> None:
    slow = BiasedHubert()
    expected = hubert_features(slow, np.zeros(frames * 640, np.float32))
    assert slow.calls == -(-frames // 5)
    fast = BiasedHubert()
    warm = silence_features(fast, frames)
    assert fast.calls == 1
    assert np.abs(warm).max() > 0  # the bias makes the check meaningful
    np.testing.assert_array_equal(warm, expected)
    np.testing.assert_array_equal(tile_silence(silence_block(fast), frames), expected)
