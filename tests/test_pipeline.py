"""End to end on tiny test checkpoints (CPU): offline videos checked with ffprobe, streaming, seeds, controls,
cancellation, and the CLI. The networks are random, so the pictures are noise: these tests check plumbing,
lengths, formats and determinism, not looks."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest

from ditto_demo.errors import InputError
from ditto_demo.pipeline.audio import load_audio
from ditto_demo.pipeline.controls import Controls
from ditto_demo.pipeline.pipeline import Pipeline
from ditto_demo.pipeline.runner import CancelledError

ASSETS = Path(__file__).resolve().parents[1] / "assets"
PORTRAIT = ASSETS / "portrait_illustration.png"
FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()


def _ffprobe(path: Path) -> dict:
    ffprobe = shutil.which("ffprobe")
    assert ffprobe, "ffprobe is installed with ffmpeg (packages.txt)"
    out = subprocess.run(
        [ffprobe, "-v", "error", "-count_frames", "-show_streams", "-show_format", "-of", "json", str(path)],
        capture_output=True, text=True, check=True,
    )
    return json.loads(out.stdout)


def _clip(tmp: Path, seconds: float, suffix: str, rate: int = 16000, channels: int = 1) -> Path:
    """The first ``seconds`` of the example speech, re-encoded (mp3, m4a, stereo 48 kHz, ...)."""
    path = tmp / f"speech_{seconds}_{rate}_{channels}{suffix}"
    subprocess.run([FFMPEG, "-v", "error", "-y", "-i", str(ASSETS / "speech_en.wav"), "-t", str(seconds),
                    "-ar", str(rate), "-ac", str(channels), str(path)], check=True)
    return path


def _video_source(tmp: Path, frames: int = 8) -> Path:
    """A short portrait video: the illustration drifting sideways by a few pixels."""
    import cv2

    image = cv2.cvtColor(cv2.imread(str(PORTRAIT)), cv2.COLOR_BGR2RGB)
    path = tmp / "portrait.mp4"
    writer = imageio_ffmpeg.write_frames(str(path), (image.shape[1], image.shape[0]), fps=25, quality=8,
                                         macro_block_size=1, ffmpeg_log_level="error")
    writer.send(None)
    for i in range(frames):
        writer.send(np.ascontiguousarray(np.roll(image, i, axis=1)))
    writer.close()
    return path


@pytest.fixture(scope="module")
def pipeline(tiny_root: Path) -> Pipeline:
    return Pipeline(tiny_root, backend="torch", device="cpu")


def _check_video(path: Path, audio: Path, size: tuple[int, int]) -> dict:
    info = _ffprobe(path)
    video = next(s for s in info["streams"] if s["codec_type"] == "video")
    sound = next(s for s in info["streams"] if s["codec_type"] == "audio")
    seconds = len(load_audio(audio)) / 16000
    assert video["codec_name"] == "h264"
    assert video["pix_fmt"] == "yuv420p"
    assert video["r_frame_rate"] == "25/1"
    assert int(video["nb_read_frames"]) == math.ceil(seconds * 25 - 1e-9)
    assert (video["width"], video["height"]) == size
    assert sound["codec_name"] == "aac"
    assert abs(float(info["format"]["duration"]) - seconds) < 0.05
    return info


def test_image_with_wav(pipeline: Pipeline, tmp_path: Path) -> None:
    audio = _clip(tmp_path, 1.3, ".wav")
    stages: list[str] = []
    result = pipeline.generate(PORTRAIT, audio, Controls(steps=4, seed=7), output=tmp_path / "out.mp4",
                               progress=lambda stage, fraction, message: stages.append(stage))
    assert result.video == tmp_path / "out.mp4"
    _check_video(result.video, audio, (512, 640))
    assert result.seed == 7
    assert result.frames == 33
    assert set(result.per_frame_ms) == {"stitch", "warp", "decode", "compose"}
    assert 0 < result.first_frame_latency <= result.total_seconds
    assert stages[0] == "audio"
    assert stages[-1] == "encode"
    assert [s for i, s in enumerate(stages) if s not in stages[:i]] == [
        "audio", "features", "face", "motion", "render", "encode"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4", audio.name]  # no temporary files left


def test_video_source_with_stereo_mp3(pipeline: Pipeline, tmp_path: Path) -> None:
    audio = _clip(tmp_path, 0.9, ".mp3", rate=48000, channels=2)
    result = pipeline.generate(_video_source(tmp_path), audio, Controls(steps=3, seed=1),
                               output=tmp_path / "video.mp4")
    _check_video(result.video, audio, (512, 640))


@pytest.mark.parametrize(("framing", "size"), [("crop", (512, 512)), ("side_by_side", (1024, 640))])
def test_output_framing(pipeline: Pipeline, tmp_path: Path, framing: str, size: tuple[int, int]) -> None:
    audio = _clip(tmp_path, 0.5, ".m4a")
    result = pipeline.generate(PORTRAIT, audio, Controls(steps=2, seed=1, framing=framing),
                               output=tmp_path / f"{framing}.mp4")
    _check_video(result.video, audio, size)


def _stream_images(pipeline: Pipeline, audio: np.ndarray, controls: Controls) -> list[np.ndarray]:
    chunks = (audio[i:i + 1600] for i in range(0, len(audio), 1600))
    return [frame.image for frame in pipeline.stream(PORTRAIT, chunks, controls)]


def test_same_seed_same_frames_other_seed_other_frames(pipeline: Pipeline) -> None:
    audio = load_audio(ASSETS / "speech_en.wav")[: 16000]
    first = _stream_images(pipeline, audio, Controls(steps=3, seed=11))
    again = _stream_images(pipeline, audio, Controls(steps=3, seed=11))
    other = _stream_images(pipeline, audio, Controls(steps=3, seed=12))
    assert len(first) == len(again) == len(other) > 0
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert any(not np.array_equal(a, b) for a, b in zip(first, other, strict=True))


def test_stream_yields_frames_before_the_audio_ends(pipeline: Pipeline) -> None:
    audio = load_audio(ASSETS / "speech_en.wav")
    fed = [0]

    def chunks() -> Iterator[np.ndarray]:
        for start in range(0, len(audio), 1600):
            fed[0] = start + 1600
            yield audio[start:start + 1600]

    seeds: list[int] = []
    stream = pipeline.stream(PORTRAIT, chunks(), Controls(steps=2), seed_out=seeds)
    first = next(stream)
    assert first.index == 0
    assert first.timestamp == 0.0
    assert first.image.shape == (640, 512, 3)
    assert fed[0] < len(audio)  # the first frame came while audio was still being fed
    rest = list(stream)
    assert [f.index for f in rest] == list(range(1, len(rest) + 1))
    assert len(seeds) == 1


def test_low_latency_first_frame_needs_only_the_first_hubert_window(pipeline: Pipeline) -> None:
    """Audio is held at exactly 4560 samples (285 ms: the first window) until a frame comes out."""
    audio = load_audio(ASSETS / "speech_en.wav")
    held = threading.Event()
    got_frame = threading.Event()

    def chunks() -> Iterator[np.ndarray]:
        yield audio[:4560]
        held.set()
        assert got_frame.wait(120), "no frame while the audio was held at 4560 samples"
        yield audio[4560:16000]

    stream = pipeline.stream(PORTRAIT, chunks(), Controls(steps=2, seed=3))
    first = next(stream)
    assert held.is_set()
    assert first.index == 0
    got_frame.set()
    from ditto_demo.pipeline.audio import online_feature_count
    from ditto_demo.pipeline.motion import LOW_LATENCY_OVERLAP
    from ditto_demo.testing.reference import streaming_frame_count

    # the reference's streaming length (its padded last window adds a few frames past the speech's 25)
    assert len([first, *stream]) == streaming_frame_count(online_feature_count(16000), LOW_LATENCY_OVERLAP) == 35


def test_stream_motion_matches_the_stream_and_the_overlap_choice(pipeline: Pipeline) -> None:
    audio = load_audio(ASSETS / "speech_en.wav")[:24000]
    controls = Controls(steps=2, seed=5)
    low = pipeline.stream_motion(PORTRAIT, audio, controls)
    reference = pipeline.stream_motion(PORTRAIT, audio, controls, low_latency=False)
    frames = _stream_images(pipeline, audio, controls)
    assert low.shape == (len(frames), 265)
    assert reference.shape[0] >= low.shape[0] > 0  # same real frames; the reference's padded tail may add some
    assert not np.allclose(low[: len(low) // 2], reference[: len(low) // 2])  # O = 75 vs the cfg's 70
    # an overlap set by the user wins over the low-latency default: then only the emission differs
    same = Controls(steps=2, seed=5, overlap=70)
    np.testing.assert_array_equal(pipeline.stream_motion(PORTRAIT, audio, same, low_latency=False), reference)


def test_controls_reach_the_frames(pipeline: Pipeline) -> None:
    """A head turn changes the picture; turning it back to default reproduces the default exactly."""
    audio = load_audio(ASSETS / "speech_en.wav")[: 8000]
    base = _stream_images(pipeline, audio, Controls(steps=2, seed=5))
    turned = _stream_images(pipeline, audio, Controls(steps=2, seed=5, yaw_offset=25.0))
    assert all(not np.array_equal(a, b) for a, b in zip(base, turned, strict=True))
    assert all(np.array_equal(a, b) for a, b in
               zip(base, _stream_images(pipeline, audio, Controls(steps=2, seed=5, yaw_offset=0.0)), strict=True))


def test_cancellation_leaves_nothing(pipeline: Pipeline, tmp_path: Path) -> None:
    cancel = threading.Event()

    def progress(stage: str, fraction: float, message: str) -> None:
        if stage == "render" and fraction > 0:
            cancel.set()

    target = tmp_path / "out" / "cancelled.mp4"
    target.parent.mkdir()
    with pytest.raises(CancelledError):
        pipeline.generate(PORTRAIT, ASSETS / "speech_en.wav", Controls(steps=2), output=target, progress=progress,
                          cancel=cancel)
    assert list(target.parent.iterdir()) == []


def test_bad_output_name_is_refused_before_work(pipeline: Pipeline, tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"must be an \.mp4 file"):
        pipeline.generate(PORTRAIT, ASSETS / "speech_en.wav", output=tmp_path / "out.avi")
    assert list(tmp_path.iterdir()) == []


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ditto_demo", *args], capture_output=True, text=True,
                          env={**os.environ}, check=False, timeout=600)


def test_cli_generate(tiny_root: Path, tmp_path: Path) -> None:
    audio = _clip(tmp_path, 0.6, ".mp3")
    out = tmp_path / "cli.mp4"
    settings = tmp_path / "settings.json"
    result = _cli("generate", "--checkpoints", str(tiny_root), "--source", str(PORTRAIT), "--audio", str(audio),
                  "--output", str(out), "--steps", "2", "--seed", "9", "--emotion", "happy:0.6,sad:0.4",
                  "--no-gaze-lock", "--pose-keyframes", "0:0:0:0;0.5:5:10:0", "--save-settings", str(settings))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(out)
    assert "seed 9" in result.stderr
    _check_video(out, audio, (512, 640))
    saved = Controls.from_json(settings.read_text())
    assert saved.emotion == {"happy": 0.6, "sad": 0.4}
    assert saved.gaze_lock is False


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--source", "README.md"], "is not an image or video we can read"),
        (["--audio", str(PORTRAIT)], "no audio"),
        (["--source", "nowhere.png"], "does not exist"),
        (["--steps", "1"], "'steps' must be between 2"),
        (["--emotion", "joy"], "Unknown emotion 'joy'"),
        (["--output", "/proc/ditto/out.mp4"], "choose a writable output folder"),
    ],
)
def test_cli_bad_input_is_one_line_exit_2_no_output(tiny_root: Path, tmp_path: Path, args: list[str],
                                                    message: str) -> None:
    base = {"--source": str(PORTRAIT), "--audio": str(ASSETS / "speech_en.wav"), "--output": str(tmp_path / "o.mp4")}
    for flag, value in zip(args[::2], args[1::2], strict=True):
        if flag in base:
            base[flag] = value
    extra = [x for flag, value in zip(args[::2], args[1::2], strict=True) if flag not in base for x in (flag, value)]
    result = _cli("generate", "--checkpoints", str(tiny_root), "--steps", "2",
                  *[x for kv in base.items() for x in kv], *extra)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert message.lower() in lines[0].lower()
    assert not (tmp_path / "o.mp4").exists()
    assert list(tmp_path.iterdir()) == []


def test_stream_with_a_video_source(pipeline: Pipeline, tmp_path: Path) -> None:
    audio = load_audio(ASSETS / "speech_en.wav")[: 12000]
    chunks = (audio[i:i + 3200] for i in range(0, len(audio), 3200))
    frames = list(pipeline.stream(_video_source(tmp_path, frames=6), chunks, Controls(steps=2, seed=2)))
    assert len(frames) >= math.ceil(len(audio) / 640)  # the streaming path pads its last window
    assert {f.image.shape for f in frames} == {(640, 512, 3)}
    assert frames[-1].timestamp == pytest.approx((len(frames) - 1) / 25)


def test_compare_tiles_variants_in_one_video(pipeline: Pipeline, tmp_path: Path) -> None:
    audio = _clip(tmp_path, 0.4, ".wav")
    variants = [("A", Controls(steps=2, seed=1)), ("B", Controls(steps=2, seed=2, framing="crop")),
                ("C", Controls(steps=2, seed=3))]
    result = pipeline.compare(PORTRAIT, audio, variants, output=tmp_path / "grid.mp4", columns=2)
    # Tiles are the largest variant's size (512x640); 2 columns x 2 rows.
    _check_video(result.video, audio, (1024, 1280))
    assert result.seeds == (1, 2, 3)
