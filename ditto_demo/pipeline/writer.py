"""MP4 output: RGB frames streamed into ffmpeg (H.264, yuv420p), muxed with the user's original audio.

One ffmpeg process reads raw frames from a pipe and the audio file directly, so the video is encoded and muxed in a
single pass (the reference encodes a video-only file, then runs ffmpeg a second time to add the audio). The audio
is the ORIGINAL file re-encoded to AAC, never the 16 kHz copy used for features.

Output is all-or-nothing: ffmpeg writes a hidden temporary file in the destination folder and it is moved into
place with ``os.replace`` (atomic on one file system) only after ffmpeg succeeded; on any error, or
:meth:`VideoWriter.abort`, the temporary file is deleted and no output exists. The folder is checked (by creating
that temporary file) before any frame is rendered, so a bad destination fails fast.

Odd frame sizes are padded by repeating the last row/column (yuv420p needs even sides); the reference's imageio
writer instead rescales such frames to the next even size, resampling the whole picture.

Length: the caller passes exactly N = ceil(seconds·25) frames. ``-shortest`` is not used (it changes nothing for
such N and can drop trailing frames in other cases), so the video track holds all N frames (N/25 s) and the audio
track the whole audio; the container reports max(N/25, audio) — the audio's length rounded up to the frame, less
than one frame (40 ms) longer than the audio.

Encoder settings (:class:`EncoderSettings`): offline files default to libx264, preset ``medium``, CRF 18 (the
quality this writer has always had); ``DITTO_VIDEO_CODEC`` (``libx264``, ``h264_nvenc``, ``auto``) and
``DITTO_X264_PRESET`` (``ultrafast`` … ``veryslow``) change that for every writer made without explicit settings.
The Live tab's 1-second chunks use :meth:`EncoderSettings.streaming` (``ultrafast`` + ``zerolatency``): there the
encode time of a chunk is added to the viewer's wait, and the chunk is played once.

Threads: the encoder never runs on a render stage. :meth:`Pipeline.generate` writes from the thread that consumes
the runner's output (the caller's thread), while stitch, warp, decode and compose each run in their own runner
thread with bounded queues (8 items) between them; and the encoding itself happens in the ffmpeg *process*, which
x264 spreads over its own threads. :meth:`VideoWriter.write` only copies the frame into ffmpeg's pipe, so it
blocks only when the encoder is slower than rendering: then the runner's queue fills and back-pressure slows the
render stages to the encoder's pace (the run's speed is that of its slowest part, as it must be), but a brief
stall of the encoder is absorbed by the queues without stopping the GPU. The Live tab's file streaming likewise
encodes each chunk on the thread that consumes the streaming pipeline, whose stages keep running meanwhile.

``auto`` and NVENC: ffmpeg builds list ``h264_nvenc`` whether or not the machine has an NVIDIA video encoder (the
A100, H100 and H200 have none), so ``auto`` also needs PyTorch to see a GPU and one test frame to encode, and an
explicit ``h264_nvenc`` that cannot work is refused before the output file is claimed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import TracebackType
from typing import IO

import numpy as np

from ditto_demo.errors import BackendUnavailableError, DittoError, InputError
from ditto_demo.pipeline.ffmpeg import ffmpeg_executable
from ditto_demo.pipeline.render import pad_to_even
from ditto_demo.pipeline.timebase import FPS

__all__ = [
    "CODEC_ENV",
    "PRESET_ENV",
    "EncoderSettings",
    "VideoWriter",
    "ffmpeg_encoders",
    "nvenc_problem",
]

logger = logging.getLogger(__name__)

CRF = 18
#: Environment variable choosing the video encoder: ``libx264`` (default), ``h264_nvenc`` or ``auto``.
CODEC_ENV = "DITTO_VIDEO_CODEC"
#: Environment variable choosing the x264 preset of offline files (default ``medium``).
PRESET_ENV = "DITTO_X264_PRESET"

CODECS = ("libx264", "h264_nvenc")
#: x264's presets, fastest first: slower ones spend more time searching for a smaller file at the same quality.
X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")
X264_TUNES = ("film", "animation", "grain", "stillimage", "fastdecode", "zerolatency", "psnr", "ssim")
NVENC_PRESETS = ("p1", "p2", "p3", "p4", "p5", "p6", "p7")
# NVENC's p1 (fastest) … p7 (best) span the same speed/quality range as x264's nine presets, and p4 is NVENC's
# default just as medium is x264's, so the x264 names map onto the scale with medium → p4 and the ends matched.
_NVENC_PRESET_FOR_X264 = {
    "ultrafast": "p1", "superfast": "p1", "veryfast": "p2", "faster": "p3", "fast": "p3",
    "medium": "p4", "slow": "p5", "slower": "p6", "veryslow": "p7",
}  # fmt: skip
# NVENC has only its own tunings; zerolatency (no B-frames, no look-ahead) is its "ull" (ultra-low latency).
_NVENC_TUNE_FOR_X264 = {"zerolatency": "ull", "hq": "hq", "ll": "ll", "ull": "ull"}


@dataclass(frozen=True)
class EncoderSettings:
    """How the video track is encoded: codec, speed preset, constant quality, optional tuning.

    Validated once, here, so a wrong value fails when the settings are made (at start-up or when a request
    arrives), not after frames were rendered. ``preset`` is an x264 name for either codec (for ``h264_nvenc`` it
    is translated to NVENC's ``p1``–``p7``, medium → p4, and NVENC's own ``p1``–``p7`` are accepted as well);
    ``None`` leaves the encoder's own default (which for both is the middle setting). ``crf`` is x264's constant
    rate factor, 0 (lossless) to 51; NVENC gets the same number as its constant-quality target ``-cq`` (a scale
    of the same kind, not the same encoder: quality and size at equal numbers were not compared here, as no
    machine this was written on has NVENC). ``tune`` is an
    x264 tuning; NVENC understands only ``zerolatency`` (as its ``ull``) and its own ``hq``, ``ll``, ``ull``.
    """

    codec: str = "libx264"
    preset: str | None = "medium"
    crf: int = CRF
    tune: str | None = None

    def __post_init__(self) -> None:
        if self.codec not in CODECS:
            raise InputError(f"The video codec {self.codec!r} is not supported; use one of {', '.join(CODECS)}.")
        presets = X264_PRESETS if self.codec == "libx264" else X264_PRESETS + NVENC_PRESETS
        if self.preset is not None and self.preset not in presets:
            raise InputError(f"{self.preset!r} is not a {self.codec} preset; use one of {', '.join(presets)}.")
        if isinstance(self.crf, bool) or not isinstance(self.crf, int) or not 0 <= self.crf <= 51:
            raise InputError(f"The quality (CRF) must be a whole number from 0 to 51, not {self.crf!r}.")
        tunes = X264_TUNES if self.codec == "libx264" else tuple(_NVENC_TUNE_FOR_X264)
        if self.tune is not None and self.tune not in tunes:
            raise InputError(f"{self.tune!r} is not a {self.codec} tuning; use one of {', '.join(tunes)}.")

    @classmethod
    def streaming(cls) -> EncoderSettings:
        """Short live chunks: x264 ``ultrafast`` + ``zerolatency``, CRF 18.

        A chunk's encode time is added to the viewer's wait, and each chunk is watched once, so speed wins over
        file size here. ``zerolatency`` turns off B-frames and look-ahead, so x264 hands out each frame as it gets
        it and the muxer (which copies the H.264 into MPEG-TS) never sees a decode time ahead of the first
        picture. No ``-g`` is needed: every chunk is its own ffmpeg run, so its first frame is always an IDR
        keyframe, and x264's default interval (250 frames) puts no second one into a 25-frame chunk. Always libx264:
        at the Live tab's 512×512 x264 ``ultrafast`` needs a few tens of milliseconds of CPU for a whole chunk,
        while NVENC would open a new encoder session (and CUDA context) in every chunk's ffmpeg, and would tie
        streaming to GPUs that have a video encoder.
        """
        return cls(codec="libx264", preset="ultrafast", tune="zerolatency")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> EncoderSettings:
        """The offline-file settings chosen by ``DITTO_VIDEO_CODEC`` and ``DITTO_X264_PRESET`` (both optional).

        ``DITTO_VIDEO_CODEC``: ``libx264`` (default), ``h264_nvenc``, or ``auto`` = NVENC only when it can really
        be used (see :func:`nvenc_problem`), else libx264. ``DITTO_X264_PRESET``: ``medium`` by default, which
        keeps the files byte-for-byte as they were before the setting existed. Faster presets are for hosts where
        x264 cannot keep up with the GPU; they cost compression (measured on 1080p portrait frames at CRF 18:
        ``veryfast`` 1.4–2.3× faster than ``medium``, a similar size, 0.5 dB lower PSNR; ``ultrafast`` 2–3× faster,
        3.5–5.5× larger files). The CRF stays 18 either way.
        """
        env = os.environ if env is None else env
        codec = env.get(CODEC_ENV, "").strip().lower() or "libx264"
        if codec not in (*CODECS, "auto"):
            raise InputError(
                f"{CODEC_ENV}={env[CODEC_ENV]!r} is not a video codec this app can use; set it to libx264 (the "
                f"default), h264_nvenc or auto."
            )
        preset = env.get(PRESET_ENV, "").strip().lower() or "medium"
        if preset not in X264_PRESETS:
            raise InputError(
                f"{PRESET_ENV}={env[PRESET_ENV]!r} is not an x264 preset; set it to one of "
                f"{', '.join(X264_PRESETS)} (default medium)."
            )
        if codec == "auto":
            problem = nvenc_problem()
            codec = "h264_nvenc" if problem is None else "libx264"
            logger.debug("%s=auto chose %s%s", CODEC_ENV, codec, f" ({problem})" if problem else "")
        return cls(codec=codec, preset=preset)

    def check_available(self) -> None:
        """Raise :class:`BackendUnavailableError` when this ffmpeg and machine cannot use the codec.

        Called by :class:`VideoWriter` before it claims the output file, so a missing encoder costs no rendering
        and leaves nothing behind (otherwise ffmpeg would only fail on the first frame).
        """
        if self.codec != "h264_nvenc":
            return  # libx264 is in every ffmpeg this app supports (imageio-ffmpeg's and distribution builds)
        problem = nvenc_problem(require_cuda=False)
        if problem is not None:
            raise BackendUnavailableError(
                f"The video encoder h264_nvenc cannot be used: {problem}. Set {CODEC_ENV}=libx264 (or auto, which "
                f"uses NVENC only where it works)."
            )

    def ffmpeg_args(self) -> list[str]:
        """The output options for the video stream (``-c:v`` and its quality settings; no pixel format)."""
        if self.codec == "libx264":
            args = ["-c:v", "libx264"]
            if self.preset is not None:
                args += ["-preset", self.preset]
            if self.tune is not None:
                args += ["-tune", self.tune]
            return [*args, "-crf", str(self.crf)]
        args = ["-c:v", "h264_nvenc"]
        if self.preset is not None:
            args += ["-preset", _NVENC_PRESET_FOR_X264.get(self.preset, self.preset)]
        if self.tune is not None:
            args += ["-tune", _NVENC_TUNE_FOR_X264[self.tune]]
            if self.tune == "zerolatency":
                args += ["-bf", "0"]  # what x264's zerolatency implies; NVENC's ull alone may keep B-frames
        # Constant quality: variable bitrate with no bitrate target (-b:v 0), so that the quality level and not a
        # default bitrate decides the size. -cq 0 means "let NVENC choose", not lossless, so CRF 0 becomes 1.
        return [*args, "-rc", "vbr", "-cq", str(max(self.crf, 1)), "-b:v", "0"]


@cache
def ffmpeg_encoders() -> frozenset[str]:
    """The encoder names the ffmpeg binary was built with (``ffmpeg -encoders``), read once per process.

    Being listed only means the binary *can* drive such hardware; whether this machine has it is another
    question (see :func:`nvenc_problem`).
    """
    try:
        listing = subprocess.run(
            [ffmpeg_executable(), "-hide_banner", "-nostdin", "-encoders"],
            capture_output=True, text=True, timeout=60, check=True,
        ).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError) as exc:
        raise DittoError(f"Could not ask ffmpeg for its encoders ({exc}).") from exc
    names: set[str] = set()
    table = False
    for line in listing.splitlines():
        # A legend ("V..... = Video", …) precedes a " ------" rule; below it each line is "FLAGS name description".
        if line.strip().startswith("------"):
            table = True
        elif table and len(line.split()) >= 2:
            names.add(line.split()[1])
    return frozenset(names)


def _cuda_available() -> bool:
    """``torch.cuda.is_available()``, False where torch is missing (imported late: the writer does not need it)."""
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


@cache
def _nvenc_trial() -> str | None:
    """Encode one small frame with h264_nvenc; None when that worked, else ffmpeg's last message.

    The encoder list cannot answer this: ffmpeg builds with NVENC support list it on every machine, and many
    NVIDIA data-centre GPUs (A100, H100, H200) have no video encoder at all. Cached: the answer does not change
    while the process runs, and it costs a fraction of a second.
    """
    command = [
        ffmpeg_executable(), "-hide_banner", "-nostdin", "-loglevel", "error",
        "-f", "lavfi", "-i", f"color=c=gray:s=256x256:r={FPS}", "-frames:v", "1",
        "-c:v", "h264_nvenc", "-f", "null", "-",
    ]  # fmt: skip
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"ffmpeg could not try it ({exc})"
    if result.returncode == 0:
        return None
    lines = [line.strip() for line in result.stderr.splitlines() if line.strip()]
    return f"no NVENC encoder could be opened on this machine ({lines[-1] if lines else 'no message'})"


def nvenc_problem(*, require_cuda: bool = True) -> str | None:
    """Why h264_nvenc cannot be used here (a phrase for an error message), or None when it can.

    Checked cheapest first: ffmpeg must list the encoder; with ``require_cuda`` (the ``auto`` choice) PyTorch must
    see a GPU, which keeps CPU-only hosts from even trying; finally one frame is actually encoded.
    """
    if "h264_nvenc" not in ffmpeg_encoders():
        return f"the ffmpeg in use ({ffmpeg_executable()}) was built without it"
    if require_cuda and not _cuda_available():
        return "PyTorch sees no CUDA GPU"
    return _nvenc_trial()


class VideoWriter:
    """Streams RGB uint8 frames (H, W, 3) into an MP4 at ``path``; use as a context manager.

    ``with VideoWriter(out, fps=FPS, audio_path=wav) as writer: writer.write(frame)`` — leaving the block normally
    finishes the file (:meth:`close`), leaving it with an exception discards everything (:meth:`abort`). All frames
    must have the size of the first; odd sizes are made even by repeating the last row/column. ``encoder``: how
    to encode; ``None`` reads the environment (:meth:`EncoderSettings.from_env`) each time a writer is made.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        fps: float = FPS,
        audio_path: str | os.PathLike[str] | None = None,
        *,
        encoder: EncoderSettings | None = None,
    ) -> None:
        self.path = Path(path)
        self.fps = fps
        self.audio_path = Path(audio_path) if audio_path is not None else None
        if not fps > 0:
            raise InputError(f"The frame rate must be positive, not {fps}.")
        if self.audio_path is not None and not self.audio_path.is_file():
            raise InputError(f"The audio file {self.audio_path} does not exist.")
        self.encoder = encoder if encoder is not None else EncoderSettings.from_env()
        self.encoder.check_available()  # before the output file is claimed: a missing encoder leaves nothing
        self._ffmpeg = ffmpeg_executable()
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._size: tuple[int, int] | None = None
        self.frames_written = 0
        self._finished = False
        self._temp = self._create_temp()

    def _create_temp(self) -> Path:
        """Create the temporary output in the destination folder: proves the folder exists and is writable."""
        folder = self.path.parent
        # os.open with mode 0o666 (not mkstemp's 0o600) so the finished file gets the usual umask permissions.
        temp = folder / f".{self.path.stem}.{secrets.token_hex(6)}.partial.mp4"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            os.close(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except OSError as exc:
            raise DittoError(
                f"Cannot write the video to {folder} ({exc.strerror or exc}); choose a writable output folder."
            ) from exc
        return temp

    # -- context manager ----------------------------------------------------------------------------------------
    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    # -- frames -------------------------------------------------------------------------------------------------
    def _start(self, width: int, height: int) -> None:
        command = [
            self._ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", f"{self.fps}", "-i", "pipe:0",
        ]  # fmt: skip
        if self.audio_path is not None:
            command += ["-i", str(self.audio_path), "-map", "0:v:0", "-map", "1:a:0", "-c:a", "aac"]
        command += [
            *self.encoder.ffmpeg_args(), "-pix_fmt", "yuv420p",
            "-movflags", "+faststart", "-f", "mp4", str(self._temp),
        ]  # fmt: skip
        # ffmpeg's messages go to an anonymous file: a pipe nobody drains could fill up and stall the encoder.
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - outlives this call; closed by _close_log
        logger.debug("Starting %s", " ".join(command))
        try:
            self._process = subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._log
            )
        except OSError as exc:
            self.abort()
            raise DittoError(f"Could not start ffmpeg ({exc}).") from exc
        self._size = (width, height)

    def write(self, frame: np.ndarray) -> None:
        """Append one RGB uint8 frame (H, W, 3)."""
        if self._finished:
            raise DittoError("This video writer is already closed.")
        frame = np.asarray(frame)
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            self.abort()
            raise InputError(f"Video frames must be (H, W, 3) uint8 RGB, not {frame.shape} {frame.dtype}.")
        frame = pad_to_even(frame)
        height, width = frame.shape[:2]
        if self._process is None:
            self._start(width, height)
        elif self._size != (width, height):
            self.abort()
            raise InputError(f"Frame {self.frames_written} is {width}×{height}, the video is {self._size[0]}×"
                             f"{self._size[1]}; all frames must have the same size.")  # fmt: skip
        assert self._process is not None
        assert self._process.stdin is not None
        try:
            # The array's own memory, not a tobytes() copy: 6 MB per 1080p frame saved on the consumer thread.
            self._process.stdin.write(memoryview(np.ascontiguousarray(frame)).cast("B"))
        except (BrokenPipeError, OSError) as exc:
            message = self._ffmpeg_error()
            self.abort()
            raise DittoError(f"ffmpeg stopped while encoding the video: {message}") from exc
        self.frames_written += 1

    # -- ending -------------------------------------------------------------------------------------------------
    def close(self) -> Path:
        """Finish encoding and muxing, move the file into place; returns the final path."""
        if self._finished:
            raise DittoError("This video writer is already closed.")
        if self._process is None:
            self.abort()
            raise DittoError("No frames were written, so there is no video to save.")
        process = self._process
        # If ffmpeg already exited, closing its pipe fails; its return code and message tell why.
        with contextlib.suppress(BrokenPipeError, OSError):
            if process.stdin is not None:
                process.stdin.close()
        return_code = process.wait()
        if return_code != 0:
            message = self._ffmpeg_error()
            self.abort()
            raise DittoError(f"ffmpeg could not write the video (exit code {return_code}): {message}")
        try:
            os.replace(self._temp, self.path)
        except OSError as exc:
            self.abort()
            raise DittoError(f"Could not move the finished video to {self.path} ({exc.strerror or exc}).") from exc
        self._finished = True
        self._close_log()
        logger.info("Wrote %s (%d frames at %s fps)", self.path, self.frames_written, self.fps)
        return self.path

    def abort(self) -> None:
        """Stop ffmpeg and delete every temporary file; no output is left. Safe to call more than once."""
        process, self._process = self._process, None
        if process is not None:
            with contextlib.suppress(BrokenPipeError, OSError):  # ffmpeg may be gone already
                if process.stdin is not None:
                    process.stdin.close()
            if process.poll() is None:
                process.kill()
            process.wait()
        self._close_log()
        self._temp.unlink(missing_ok=True)
        self._finished = True

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def _ffmpeg_error(self) -> str:
        """The last non-empty line ffmpeg wrote to stderr (waits briefly for it to exit)."""
        if self._process is not None:
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        if self._log is None:
            return "no message"
        self._log.seek(0)
        lines = [line.strip() for line in self._log.read().decode("utf-8", "replace").splitlines() if line.strip()]
        return lines[-1] if lines else "no message"
