"""The Compare and Live tabs: they build inside a ``gr.Blocks`` with the right events, the /compare and
/emotion_grid API works through gradio_client (videos checked with ffprobe), "stream a file" yields playable
one-second mp4 chunks adding up to the speech, and text-to-speech without transformers says what to do."""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import gradio as gr
import imageio_ffmpeg
import pytest

from ditto_demo.errors import DittoError, InputError
from ditto_demo.live.file_chunks import stream_file_chunks
from ditto_demo.pipeline.audio import load_audio
from ditto_demo.pipeline.controls import EMOTIONS, Controls
from ditto_demo.pipeline.pipeline import Pipeline
from ditto_demo.speech.hub import TextToSpeech, synthesize
from ditto_demo.ui.compare_tab import CompareActions, build_compare_tab, parse_settings, shared_seed
from ditto_demo.ui.live_tab import build_live_tab
from ditto_demo.ui.service import AppSettings, DemoService

ASSETS = Path(__file__).resolve().parents[1] / "assets"
PORTRAIT = ASSETS / "portrait_illustration.png"
FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()


@pytest.fixture(scope="module")
def service(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> DemoService:
    settings = AppSettings(output_dir=tmp_path_factory.mktemp("outputs"))
    return DemoService(settings, pipeline=Pipeline(tiny_root, backend="torch", device="cpu"))


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """0.4 s of the example speech: every render here is of this."""
    path = tmp_path_factory.mktemp("speech") / "speech.wav"
    subprocess.run([FFMPEG, "-v", "error", "-y", "-i", str(ASSETS / "speech_en.wav"), "-t", "0.4", str(path)],
                   check=True)
    return path


def _probe(path: str | Path) -> dict:
    ffprobe = shutil.which("ffprobe")
    assert ffprobe, "ffprobe is installed with ffmpeg (packages.txt)"
    out = subprocess.run([ffprobe, "-v", "error", "-show_streams", "-show_format", "-of", "json", str(path)],
                         capture_output=True, text=True, check=True)
    info = json.loads(out.stdout)
    info["video"] = next(s for s in info["streams"] if s["codec_type"] == "video")
    info["audio"] = next((s for s in info["streams"] if s["codec_type"] == "audio"), None)
    return info


def _build(service: DemoService) -> gr.Blocks:
    with gr.Blocks() as demo, gr.Tabs():
        with gr.Tab("Compare"):
            build_compare_tab(service)
        with gr.Tab("Live"):
            build_live_tab(service)
    return demo


# -------------------------------------------------------------------------------------------------- building


def test_tabs_build_with_their_events(service: DemoService) -> None:
    demo = _build(service)
    events = {fn.name: fn for fn in demo.fns.values()}
    public = sorted(fn.api_name for fn in demo.fns.values() if fn.api_visibility == "public")
    assert public == ["compare", "emotion_grid"]
    for name in ("compare", "emotion_grid", "on_chunk", "stream_file"):
        assert events[name].concurrency_id == "pipeline", name
        assert events[name].concurrency_limit == service.settings.concurrency, name
    assert events["on_chunk"].connection == "stream"
    assert events["show_frames"].concurrency_limit is None  # only reads frames: never waits for the pipeline
    assert any(t[1] == "unload" for fn in demo.fns.values() for t in fn.targets)


def test_tabs_build_without_checkpoints(tmp_path: Path) -> None:
    """A server whose checkpoints are missing still shows the tabs (the main page says how to fix it)."""
    offline = DemoService(AppSettings(checkpoints=str(tmp_path / "nothing-here"), output_dir=tmp_path))
    assert not offline.ready
    _build(offline)


# ---------------------------------------------------------------------------------------------------- compare


def test_seeds_are_shared_so_only_the_settings_differ() -> None:
    a, b = shared_seed(Controls(), Controls(emotion="happy"))
    assert a.seed is not None
    assert a.seed == b.seed
    assert shared_seed(Controls(seed=4), Controls())[1].seed == 4
    assert shared_seed(Controls(), Controls(seed=5))[0].seed == 5
    assert shared_seed(Controls(seed=1), Controls(seed=2)) == (Controls(seed=1), Controls(seed=2))


def test_settings_json_is_checked() -> None:
    assert parse_settings("", "Settings A") == Controls()
    assert parse_settings('{"emotion": "sad", "seed": 2}', "Settings A") == Controls(emotion="sad", seed=2)
    with pytest.raises(InputError, match="Settings B is not valid JSON"):
        parse_settings("{emotion: sad}", "Settings B")
    with pytest.raises(InputError, match="Unknown control"):
        parse_settings('{"mood": "sad"}', "Settings A")


@pytest.fixture(scope="module")
def client(service: DemoService, tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    from gradio_client import Client

    demo = _build(service)
    demo.queue()
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, server_name="127.0.0.1")
    try:
        yield Client(url, verbose=False, download_files=str(tmp_path_factory.mktemp("downloads")))
    finally:
        demo.close()


def test_compare_api_renders_a_and_b_side_by_side(client, service: DemoService, speech: Path) -> None:
    from gradio_client import handle_file

    endpoints = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    assert [p["parameter_name"] for p in endpoints["/compare"]["parameters"]] == [
        "source", "audio", "settings_a", "settings_b"]
    assert [p["parameter_name"] for p in endpoints["/emotion_grid"]["parameters"]] == ["source", "audio", "settings"]

    video, report = client.predict(
        source=handle_file(PORTRAIT), audio=handle_file(speech), settings_a='{"steps": 2, "seed": 9}',
        settings_b='{"steps": 2, "yaw_offset": 20}', api_name="/compare",
    )
    single = service.generate(PORTRAIT, speech, Controls(steps=2, seed=9))
    pair, one = _probe(video["video"] if isinstance(video, dict) else video), _probe(single.video)
    assert pair["video"]["width"] == 2 * one["video"]["width"]
    assert pair["video"]["height"] == one["video"]["height"]
    assert pair["audio"]["codec_name"] == "aac"
    assert report["controls"]["A"]["seed"] == report["controls"]["B"]["seed"] == 9  # B took A's seed
    assert report["controls"]["B"]["yaw_offset"] == 20


def test_compare_api_errors_are_sentences(client, speech: Path) -> None:
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="Add a portrait first"):
        client.predict(source=None, audio=handle_file(speech), settings_a="", settings_b="", api_name="/compare")


def test_emotion_grid_is_four_tiles_wide(service: DemoService, speech: Path) -> None:
    video, report = CompareActions(service).emotion_grid(PORTRAIT, speech, {"steps": 2, "framing": "crop"})
    info = _probe(video)
    # Issue 11, finding 7: the grid fits 1920x1080 (was 4*512 x 2*512) with 4:2 square tiles, at a level phones play.
    width, height = info["video"]["width"], info["video"]["height"]
    assert width <= 1920
    assert height <= 1080
    assert abs(width / height - 2.0) < 0.02
    assert width >= 1900  # shrunk to fit, not further
    assert info["video"]["level"] <= 41
    assert report["tiles"] == list(EMOTIONS)
    assert len(set(report["seeds"])) == 1  # one seed: only the emotion differs


def test_emotion_grid_refuses_long_speech_before_rendering(service: DemoService, tmp_path: Path) -> None:
    long_speech = tmp_path / "long.wav"
    subprocess.run([FFMPEG, "-v", "error", "-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-t", "16",
                    str(long_speech)], check=True)
    with pytest.raises(InputError, match="at most 15 s"):
        CompareActions(service).emotion_grid(PORTRAIT, long_speech, "")


# ------------------------------------------------------------------------------------------------------- live


def test_stream_a_file_yields_playable_chunks_adding_up_to_the_speech(service: DemoService, tmp_path: Path) -> None:
    audio = tmp_path / "speech.wav"
    subprocess.run([FFMPEG, "-v", "error", "-y", "-i", str(ASSETS / "speech_en.wav"), "-t", "2.3", str(audio)],
                   check=True)
    samples = len(load_audio(audio))
    seconds = samples / 16000
    chunks = list(stream_file_chunks(service, PORTRAIT, audio, Controls(steps=2, seed=1), tmp_path))

    assert len(chunks) == 3  # 1 s + 1 s + 0.3 s
    video_seconds = 0.0
    for path, stats in chunks:
        info = _probe(path)
        assert info["video"]["codec_name"] == "h264"
        assert info["video"]["pix_fmt"] == "yuv420p"
        assert info["audio"] is not None
        assert info["audio"]["codec_name"] == "aac"
        video_seconds += float(info["video"]["duration"])
        decoded = subprocess.run([FFMPEG, "-v", "error", "-i", str(path), "-f", "null", "-"], capture_output=True,
                                 text=True, check=False)
        assert decoded.returncode == 0, decoded.stderr
        assert not decoded.stderr.strip()
        assert stats["first_chunk_seconds"] <= stats["elapsed_seconds"]
    assert video_seconds == pytest.approx(seconds, abs=0.05)
    assert chunks[-1][1]["finished"]
    assert chunks[-1][1]["frames"] == math.ceil(samples / 640)
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".wav" and p.name != "speech.wav"]


# -------------------------------------------------------------------------------------------------------- TTS


@pytest.mark.skipif(importlib.util.find_spec("transformers") is not None, reason="transformers is installed")
def test_text_to_speech_without_transformers_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(DittoError, match="Text-to-speech needs the transformers package") as raised:
        synthesize("Hello there.", tmp_path)
    assert "upload or record speech instead" in str(raised.value)
    assert not isinstance(raised.value, InputError)
    assert not list(tmp_path.iterdir())


def test_text_to_speech_checks_the_text_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DITTO_TTS_MODEL", "someone/tiny-tts")
    engine = TextToSpeech()
    assert engine.model == "someone/tiny-tts"
    with pytest.raises(InputError, match="Type the text"):
        engine.synthesize("   ", tmp_path)
    with pytest.raises(InputError, match="at most"):
        engine.synthesize("word " * 200, tmp_path)
    assert not engine.loaded
