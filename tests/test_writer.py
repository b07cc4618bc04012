"""Video writer: what ffprobe sees in the file, and that failures leave nothing behind."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from ditto_demo.errors import DittoError, InputError
from ditto_demo.pipeline.writer import VideoWriter

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
