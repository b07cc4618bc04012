"""MP4 output: RGB frames streamed into ffmpeg (H.264, yuv420p, CRF 18), muxed with the user's original audio.

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
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType
from typing import IO

import numpy as np

from ditto_demo.errors import DittoError, InputError
from ditto_demo.pipeline.ffmpeg import ffmpeg_executable
from ditto_demo.pipeline.render import pad_to_even

__all__ = ["VideoWriter"]

logger = logging.getLogger(__name__)

CRF = 18


class VideoWriter:
    """Streams RGB uint8 frames (H, W, 3) into an MP4 at ``path``; use as a context manager.

    ``with VideoWriter(out, fps=25, audio_path=wav) as writer: writer.write(frame)`` — leaving the block normally
    finishes the file (:meth:`close`), leaving it with an exception discards everything (:meth:`abort`). All frames
    must have the size of the first; odd sizes are made even by repeating the last row/column.
    """

    def __init__(
        self, path: str | os.PathLike[str], fps: float = 25, audio_path: str | os.PathLike[str] | None = None
    ) -> None:
        self.path = Path(path)
        self.fps = fps
        self.audio_path = Path(audio_path) if audio_path is not None else None
        if not fps > 0:
            raise InputError(f"The frame rate must be positive, not {fps}.")
        if self.audio_path is not None and not self.audio_path.is_file():
            raise InputError(f"The audio file {self.audio_path} does not exist.")
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
            "-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", str(CRF),
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
            self._process.stdin.write(np.ascontiguousarray(frame).tobytes())
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
