"""What the UI asks the service for instead of doing it itself: seeds, a speech file's length in frames, the crop
preview's outline, text to speech (with a stand-in voice), and the PCM helpers behind them."""

from __future__ import annotations

import math
import subprocess
import wave
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest

from ditto_demo import speech
from ditto_demo.errors import InputError
from ditto_demo.pipeline.audio import load_audio
from ditto_demo.pipeline.controls import Controls
from ditto_demo.pipeline.crop import transform_points
from ditto_demo.pipeline.pcm import Resampler, write_wav
from ditto_demo.pipeline.pipeline import Pipeline
from ditto_demo.pipeline.registration import AVATAR_CROP_SIZE
from ditto_demo.pipeline.seeds import SEED_BOUND
from ditto_demo.speech import SpeechUnavailableError
from ditto_demo.ui.service import AppSettings, DemoService, crop_outline

ASSETS = Path(__file__).resolve().parents[1] / "assets"
PORTRAIT = ASSETS / "portrait_illustration.png"
FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()


@pytest.fixture
def offline(tmp_path: Path) -> DemoService:
    """A service without checkpoints: everything here except the preview works without a pipeline."""
    return DemoService(AppSettings(checkpoints=str(tmp_path / "none"), output_dir=tmp_path / "outputs",
                                   max_audio_seconds=5))


def _read_wav(path: Path) -> tuple[int, np.ndarray]:
    with wave.open(str(path)) as wav:
        assert (wav.getnchannels(), wav.getsampwidth()) == (1, 2)
        return wav.getframerate(), np.frombuffer(wav.readframes(wav.getnframes()), "<i2")


# -------------------------------------------------------------------------------------------------------- seeds


def test_new_seeds_are_valid_controls_and_differ() -> None:
    seeds = {DemoService.new_seed() for _ in range(20)}
    assert len(seeds) > 1
    for seed in seeds:
        assert 0 <= seed <= SEED_BOUND
        assert Controls(seed=seed).seed == seed  # accepted by the seed control


# -------------------------------------------------------------------------------------------------------- audio


def test_describe_audio_counts_frames_as_the_pipeline_does(offline: DemoService, tmp_path: Path) -> None:
    speech = tmp_path / "speech.wav"
    subprocess.run([FFMPEG, "-v", "error", "-y", "-i", str(ASSETS / "speech_en.wav"), "-t", "1.23", str(speech)],
                   check=True)
    samples = len(load_audio(speech))
    info = offline.describe_audio(speech)
    assert info.seconds == pytest.approx(samples / 16000)
    assert info.frames == math.ceil(samples / 640)
    assert offline.audio_seconds(speech) == info.seconds


def test_describe_audio_refuses_speech_past_the_limit(offline: DemoService, tmp_path: Path) -> None:
    long_speech = tmp_path / "long.wav"
    subprocess.run([FFMPEG, "-v", "error", "-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-t", "6",
                    str(long_speech)], check=True)
    with pytest.raises(InputError, match="5 s"):
        offline.describe_audio(long_speech)


# ------------------------------------------------------------------------------------------------- crop preview


def test_crop_outline_maps_the_registration_crop_into_the_portrait() -> None:
    crop_to_image = np.array([[0.5, 0.0, 10.0], [0.0, 0.5, 20.0], [0.0, 0.0, 1.0]])  # 512 crop → 256 px at (10, 20)
    np.testing.assert_array_equal(crop_outline(crop_to_image), [[10, 20], [266, 20], [266, 276], [10, 276]])
    turned = np.array([[0.0, -1.0, 600.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # a quarter turn
    np.testing.assert_array_equal(crop_outline(turned), [[600, 0], [600, 512], [88, 512], [88, 0]])


def test_preview_draws_the_face_and_the_crop(tiny_root: Path, tmp_path: Path) -> None:
    service = DemoService(AppSettings(output_dir=tmp_path), pipeline=Pipeline(tiny_root, backend="torch",
                                                                                  device="cpu"))
    registered = service.require().register(PORTRAIT, Controls())
    image = service.preview(PORTRAIT, Controls())
    assert image.shape == registered.frames[0].image.shape
    assert image.dtype == np.uint8
    orange = np.all(image == (255, 150, 40), axis=-1)
    ys, xs = np.nonzero(orange)
    assert xs.size > 0
    size = AVATAR_CROP_SIZE  # the registration crop, whose corners crop_to_image maps into the portrait
    corners = transform_points(np.array([[0, 0], [size, 0], [size, size], [0, size]], np.float64),
                               registered.frames[0].crop_to_image)
    pixels = np.stack([xs, ys], axis=1).astype(np.float64)
    distance = np.min([_distance_to_segment(pixels, corners[i], corners[(i + 1) % 4]) for i in range(4)], axis=0)
    margin = max(2, round(max(image.shape[:2]) / 300)) + 1  # the line's thickness, and antialiasing
    assert distance.max() <= margin  # every orange pixel lies on the crop's outline


def _distance_to_segment(points: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    along = np.clip((points - a) @ (b - a) / max(float((b - a) @ (b - a)), 1e-12), 0.0, 1.0)
    return np.linalg.norm(points - (a + along[:, None] * (b - a)), axis=1)


# ------------------------------------------------------------------------------------------------------- speech


class _Voice:
    """A stand-in voice (the speech package's contract): one second of a 200 Hz tone per text, at 16 kHz."""

    sample_rate = 16000

    def __init__(self) -> None:
        self.spoken: list[str] = []

    def synthesize(self, text: str, *, seed: int = 0) -> np.ndarray:
        self.spoken.append(text)
        t = np.arange(self.sample_rate) / self.sample_rate
        return (0.5 * np.sin(2 * np.pi * 200 * t)).astype(np.float32)


def test_speak_writes_16k_speech_into_a_request_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    voice, asked = _Voice(), []

    def load_voice(hub_model: str | None = None) -> _Voice:
        asked.append(hub_model)
        return voice

    monkeypatch.setattr(speech, "load_voice", load_voice)
    service = DemoService(AppSettings.from_env({"DITTO_CHECKPOINTS": str(tmp_path / "none"),
                                                "DITTO_OUTPUT_DIR": str(tmp_path / "outputs"),
                                                "DITTO_TTS_MODEL": "someone/tiny-tts"}))
    assert service.can_speak  # a Hub model is named
    path = service.speak("Hello there.")
    assert voice.spoken == ["Hello there."]
    assert asked == ["someone/tiny-tts"]  # DITTO_TTS_MODEL reaches the speech package through the settings
    assert path.parent.parent == tmp_path / "outputs"
    rate, pcm = _read_wav(path)
    assert rate == 16000
    assert len(pcm) == 16000
    np.testing.assert_allclose(pcm / 32767, voice.synthesize("again"), atol=1 / 32767)


def test_speak_refuses_empty_text_and_leaves_nothing_when_it_fails(offline: DemoService,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    def no_voice(hub_model: str | None = None) -> _Voice:
        raise SpeechUnavailableError()

    monkeypatch.setattr(speech, "load_voice", no_voice)
    with pytest.raises(InputError, match="Type the text to speak first"):
        offline.speak("   ")
    with pytest.raises(SpeechUnavailableError, match="not available on this server"):
        offline.speak("Hello.")
    assert not offline.settings.output_dir.exists() or not list(offline.settings.output_dir.iterdir())
    monkeypatch.setattr(speech, "voice_available", lambda: False)
    assert not offline.can_speak
    monkeypatch.setattr(speech, "voice_available", lambda: True)
    assert offline.can_speak


# ---------------------------------------------------------------------------------------------------------- PCM


def test_write_wav_rounds_and_clips(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "x.wav", np.array([0.99999, -0.99999, 2.0, -3.0, 0.5 / 32767, 1.4 / 32767]), 8000)
    rate, pcm = _read_wav(path)
    assert rate == 8000
    assert pcm.tolist() == [32767, -32767, 32767, -32767, 0, 1]  # truncation would give 32766, -32766, ..., 1
    with pytest.raises(InputError):
        write_wav(tmp_path / "y.wav", np.zeros((10, 2)), 16000)


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_a_stream_gives_ceil_of_its_length_in_output_samples(rate: int) -> None:
    for length in (1, 7, 1001, 12345):
        resampler = Resampler(rate)
        x = np.random.default_rng(length).standard_normal(length).astype(np.float32) * 0.1
        out = np.concatenate([resampler.process(x[: length // 2]), resampler.process(x[length // 2:]),
                              resampler.flush()])
        assert len(out) == math.ceil(length * 16000 / rate)
        assert out.dtype == np.float32
