"""Video writer: what ffprobe sees in the file, and that failures leave nothing behind."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from ditto_demo.errors import BackendUnavailableError, DittoError, InputError
from ditto_demo.pipeline import writer as writer_module
from ditto_demo.pipeline.writer import EncoderSettings, VideoWriter

ASSETS = Path(__file__).resolve().parents[1] / "assets"
SPEECH = ASSETS / "speech_en.wav"

pytestmark = pytest.mark.skipif(
    shutil.which("ffprobe") is None or shutil.which("ffmpeg") is None, reason="needs ffmpeg and ffprobe on PATH"
)


def _probe(path: Path) -> dict:
    command = [
        "ffprobe", "-v", "error", "-count_frames", "-of", "json",
        "-show_entries", "format=duration:stream=codec_type,codec_name,pix_fmt,width,height,r_frame_rate,"
        "nb_read_frames,duration",
        str(path),
    ]  # fmt: skip
    return json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)


def _audio_seconds(path: Path) -> float:
    return float(_probe(path)["format"]["duration"])


def _frames(count: int, width: int = 64, height: int = 48) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    return [np.roll(base, i, axis=1) for i in range(count)]


def _umask() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("Umask:"):
            return int(line.split()[1], 8)
    return 0o022


def test_video_with_audio_has_the_expected_streams_and_length(tmp_path: Path) -> None:
    seconds = _audio_seconds(SPEECH)
    count = math.ceil(seconds * 25)
    out = tmp_path / "result.mp4"
    with VideoWriter(out, fps=25, audio_path=SPEECH) as writer:
        for frame in _frames(count):
            writer.write(frame)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.mp4"]  # no temporary file left
    info = _probe(out)
    video = next(s for s in info["streams"] if s["codec_type"] == "video")
    audio = next(s for s in info["streams"] if s["codec_type"] == "audio")
    assert video["codec_name"] == "h264"
    assert video["pix_fmt"] == "yuv420p"
    assert video["r_frame_rate"] == "25/1"
    assert (video["width"], video["height"]) == (64, 48)
    assert int(video["nb_read_frames"]) == count  # the last frame is not cut
    assert audio["codec_name"] == "aac"
    assert float(audio["duration"]) == pytest.approx(seconds, abs=0.03)
    # Container length = the audio's, rounded up to whole frames (< 1 frame longer).
    assert seconds - 0.001 <= float(info["format"]["duration"]) < seconds + 1 / 25 + 0.001
    assert out.stat().st_mode & 0o777 == 0o666 & ~_umask()


def test_close_returns_the_path_and_odd_sizes_become_even(tmp_path: Path) -> None:
    writer = VideoWriter(tmp_path / "odd.mp4")
    for frame in _frames(5, width=63, height=47):
        writer.write(frame)
    assert writer.close() == tmp_path / "odd.mp4"
    info = _probe(tmp_path / "odd.mp4")
    assert [s["codec_type"] for s in info["streams"]] == ["video"]  # no audio asked for
    video = info["streams"][0]
    assert (video["width"], video["height"]) == (64, 48)
    assert int(video["nb_read_frames"]) == 5


def test_exception_inside_with_leaves_nothing(tmp_path: Path) -> None:
    def render_and_fail() -> None:
        with VideoWriter(tmp_path / "x.mp4", audio_path=SPEECH) as writer:
            for frame in _frames(3):
                writer.write(frame)
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        render_and_fail()
    assert list(tmp_path.iterdir()) == []


def test_abort_leaves_nothing(tmp_path: Path) -> None:
    writer = VideoWriter(tmp_path / "x.mp4")
    assert len(list(tmp_path.iterdir())) == 1  # the destination was claimed up front
    for frame in _frames(3):
        writer.write(frame)
    writer.abort()
    writer.abort()  # idempotent
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(DittoError):
        writer.write(_frames(1)[0])


def test_unwritable_destination_fails_before_any_work(tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(DittoError, match="writable output folder"):
        VideoWriter(blocker / "out.mp4")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_missing_audio_file_is_an_error_and_no_output(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        VideoWriter(tmp_path / "x.mp4", audio_path=tmp_path / "missing.wav")
    assert list(tmp_path.iterdir()) == []


def test_ffmpeg_failure_reports_its_message_and_leaves_no_output(tmp_path: Path) -> None:
    bad_audio = tmp_path / "audio.wav"
    bad_audio.write_bytes(b"this is not audio at all" * 10)
    writer = VideoWriter(tmp_path / "x.mp4", audio_path=bad_audio)

    def write_all() -> None:
        for frame in _frames(200):  # ffmpeg exits at start-up; a write or the close notices
            writer.write(frame)
        writer.close()

    with pytest.raises(DittoError, match="ffmpeg") as caught:
        write_all()
    assert "audio.wav" in str(caught.value) or "Invalid data" in str(caught.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["audio.wav"]


def test_no_frames_or_changing_size_are_errors_without_output(tmp_path: Path) -> None:
    with pytest.raises(DittoError, match="No frames"):
        VideoWriter(tmp_path / "x.mp4").close()
    writer = VideoWriter(tmp_path / "y.mp4")
    writer.write(_frames(1)[0])
    with pytest.raises(InputError, match="same size"):
        writer.write(_frames(1, width=32)[0])
    with pytest.raises(InputError, match="uint8"):
        VideoWriter(tmp_path / "z.mp4").write(np.zeros((8, 8, 3), np.float32))
    assert list(tmp_path.iterdir()) == []


# -- encoder settings -----------------------------------------------------------------------------------------


def _frame_types(path: Path) -> str:
    """The picture types of the video's frames in decode order, e.g. ``"IPPP"``."""
    command = ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "frame=pict_type",
               "-of", "csv=p=0", str(path)]  # fmt: skip
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return "".join(line.strip().strip(",") for line in out.splitlines() if line.strip())


def test_default_settings_are_todays_x264_medium_crf_18() -> None:
    assert EncoderSettings() == EncoderSettings(codec="libx264", preset="medium", crf=18, tune=None)
    assert EncoderSettings().ffmpeg_args() == ["-c:v", "libx264", "-preset", "medium", "-crf", "18"]
    assert EncoderSettings(preset=None, crf=0).ffmpeg_args() == ["-c:v", "libx264", "-crf", "0"]
    streaming = EncoderSettings.streaming()
    assert streaming.ffmpeg_args() == [
        "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-crf", "18",
    ]  # fmt: skip


def test_nvenc_arguments_use_its_own_presets_and_constant_quality() -> None:
    args = EncoderSettings(codec="h264_nvenc").ffmpeg_args()
    assert args == ["-c:v", "h264_nvenc", "-preset", "p4", "-rc", "vbr", "-cq", "18", "-b:v", "0"]
    assert EncoderSettings(codec="h264_nvenc", preset="ultrafast").ffmpeg_args()[3] == "p1"
    assert EncoderSettings(codec="h264_nvenc", preset="veryslow").ffmpeg_args()[3] == "p7"
    assert EncoderSettings(codec="h264_nvenc", preset="p6").ffmpeg_args()[3] == "p6"
    low_latency = EncoderSettings(codec="h264_nvenc", preset="ultrafast", tune="zerolatency").ffmpeg_args()
    assert low_latency[4:8] == ["-tune", "ull", "-bf", "0"]
    # -cq 0 is NVENC's "choose for me", so the lossless CRF 0 asks for its best quality instead.
    assert EncoderSettings(codec="h264_nvenc", crf=0).ffmpeg_args()[-4:] == ["-cq", "1", "-b:v", "0"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"codec": "libx265"}, "libx264, h264_nvenc"),
        ({"preset": "turbo"}, "ultrafast, superfast"),
        ({"preset": "p4"}, "not a libx264 preset"),  # NVENC's names are not x264's
        ({"codec": "h264_nvenc", "preset": "p8"}, "p1, p2"),
        ({"crf": -1}, "0 to 51"),
        ({"crf": 52}, "0 to 51"),
        ({"crf": 18.0}, "whole number"),
        ({"crf": True}, "whole number"),
        ({"tune": "fast"}, "zerolatency"),
        ({"codec": "h264_nvenc", "tune": "film"}, "not a h264_nvenc tuning"),
    ],
)
def test_bad_settings_are_refused_when_made(kwargs: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        EncoderSettings(**kwargs)


def test_from_env_defaults_and_each_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DITTO_VIDEO_CODEC", raising=False)
    monkeypatch.delenv("DITTO_X264_PRESET", raising=False)
    assert EncoderSettings.from_env() == EncoderSettings()
    assert EncoderSettings.from_env({"DITTO_VIDEO_CODEC": "", "DITTO_X264_PRESET": ""}) == EncoderSettings()
    assert EncoderSettings.from_env({"DITTO_X264_PRESET": " VeryFast "}) == EncoderSettings(preset="veryfast")
    assert EncoderSettings.from_env({"DITTO_VIDEO_CODEC": "libx264"}) == EncoderSettings()
    nvenc = EncoderSettings.from_env({"DITTO_VIDEO_CODEC": "h264_nvenc", "DITTO_X264_PRESET": "fast"})
    assert nvenc == EncoderSettings(codec="h264_nvenc", preset="fast")
    monkeypatch.setenv("DITTO_X264_PRESET", "ultrafast")
    assert EncoderSettings.from_env().preset == "ultrafast"  # os.environ when no mapping is given


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DITTO_VIDEO_CODEC": "nvenc"}, r"DITTO_VIDEO_CODEC='nvenc'.*libx264 \(the default\), h264_nvenc or auto"),
        ({"DITTO_X264_PRESET": "p4"}, r"DITTO_X264_PRESET='p4'.*ultrafast, .*veryslow \(default medium\)"),
    ],
)
def test_from_env_names_the_variable_and_the_allowed_values(env: dict[str, str], message: str) -> None:
    with pytest.raises(InputError, match=message):
        EncoderSettings.from_env(env)


def test_auto_uses_nvenc_only_when_listed_with_a_gpu_and_working(monkeypatch: pytest.MonkeyPatch) -> None:
    torch = pytest.importorskip("torch")
    auto = {"DITTO_VIDEO_CODEC": "auto", "DITTO_X264_PRESET": "fast"}
    with_nvenc = frozenset({"libx264", "h264_nvenc"})
    monkeypatch.setattr(writer_module, "_nvenc_trial", lambda: None)

    monkeypatch.setattr(writer_module, "ffmpeg_encoders", lambda: frozenset({"libx264"}))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert EncoderSettings.from_env(auto) == EncoderSettings(preset="fast")  # ffmpeg lacks it

    monkeypatch.setattr(writer_module, "ffmpeg_encoders", lambda: with_nvenc)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert EncoderSettings.from_env(auto).codec == "libx264"  # no GPU

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert EncoderSettings.from_env(auto) == EncoderSettings(codec="h264_nvenc", preset="fast")

    # Listed and a GPU, but no encoder on it (A100/H100/H200 have none): the trial frame fails.
    monkeypatch.setattr(writer_module, "_nvenc_trial", lambda: "no NVENC encoder could be opened")
    assert EncoderSettings.from_env(auto).codec == "libx264"


def test_ffmpeg_encoders_lists_libx264_and_no_legend() -> None:
    encoders = writer_module.ffmpeg_encoders()
    assert "libx264" in encoders
    assert not any("=" in name or name.startswith("-") for name in encoders)
    assert writer_module.ffmpeg_encoders() is encoders  # asked once per process


@pytest.mark.parametrize(
    "settings", [EncoderSettings(), EncoderSettings(preset="ultrafast")], ids=["medium", "ultrafast"]
)
def test_default_and_ultrafast_files_are_h264_with_every_frame(tmp_path: Path, settings: EncoderSettings) -> None:
    out = tmp_path / "result.mp4"
    with VideoWriter(out, fps=25, audio_path=SPEECH, encoder=settings) as writer:
        for frame in _frames(30):
            writer.write(frame)
    info = _probe(out)
    video = next(s for s in info["streams"] if s["codec_type"] == "video")
    assert (video["codec_name"], video["pix_fmt"]) == ("h264", "yuv420p")
    assert int(video["nb_read_frames"]) == 30
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.mp4"]


def test_writer_without_settings_follows_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DITTO_X264_PRESET", "ultrafast")
    monkeypatch.delenv("DITTO_VIDEO_CODEC", raising=False)
    assert VideoWriter(tmp_path / "x.mp4").encoder == EncoderSettings(preset="ultrafast")
    monkeypatch.setenv("DITTO_X264_PRESET", "warp9")
    with pytest.raises(InputError, match="DITTO_X264_PRESET"):
        VideoWriter(tmp_path / "y.mp4")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".y.")] == []


def test_live_chunks_use_the_streaming_profile(tmp_path: Path) -> None:
    from ditto_demo.live.file_chunks import write_chunk as _write_chunk

    samples = np.zeros(25 * 640, np.float32)
    path = _write_chunk(tmp_path, 0, _frames(25), samples)
    assert _frame_types(path) == "I" + "P" * 24  # a keyframe first, then no B-frames (zerolatency)
    assert int(_probe(path)["streams"][0]["nb_read_frames"]) == 25


def test_nvenc_missing_from_ffmpeg_fails_before_any_frame(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(writer_module, "ffmpeg_encoders", lambda: frozenset({"libx264"}))
    with pytest.raises(BackendUnavailableError, match=r"h264_nvenc.*built without it.*DITTO_VIDEO_CODEC=libx264"):
        VideoWriter(tmp_path / "x.mp4", audio_path=SPEECH, encoder=EncoderSettings(codec="h264_nvenc"))
    monkeypatch.setenv("DITTO_VIDEO_CODEC", "h264_nvenc")  # the same when chosen by the environment
    with pytest.raises(BackendUnavailableError, match="h264_nvenc"):
        VideoWriter(tmp_path / "x.mp4")
    assert list(tmp_path.iterdir()) == []


def test_nvenc_listed_but_unusable_fails_before_any_frame(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(writer_module, "ffmpeg_encoders", lambda: frozenset({"libx264", "h264_nvenc"}))
    monkeypatch.setattr(writer_module, "_nvenc_trial", lambda: "no NVENC encoder could be opened on this machine")
    with pytest.raises(BackendUnavailableError, match="could be opened"):
        VideoWriter(tmp_path / "x.mp4", encoder=EncoderSettings(codec="h264_nvenc"))
    assert list(tmp_path.iterdir()) == []
