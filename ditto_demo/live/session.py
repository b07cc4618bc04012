"""One live session: a portrait animated by audio as it arrives, with the figures a viewer wants to see.

:class:`LiveSession` owns one ``stream(...)`` of frames running in a background thread, fed by a bounded audio
queue. Audio arrives in any format and rate (:mod:`ditto_demo.pipeline.pcm` turns it into 16 kHz mono); the session
keeps the latest frames and live statistics (fps, speech-onset to first-frame latency, frames behind real time)
and stops promptly on :meth:`LiveSession.close`. It knows nothing about Gradio or any other transport: the app's
service opens one per viewer (``DemoService.open_live_session``), and a transport moves media in and out.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ditto_demo.errors import DittoError
from ditto_demo.pipeline.controls import Controls
from ditto_demo.pipeline.pcm import Resampler, to_mono_float32
from ditto_demo.pipeline.pipeline import StreamFrame
from ditto_demo.pipeline.runner import CancelledError
from ditto_demo.pipeline.timebase import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME

__all__ = ["SPEECH_THRESHOLD", "FrameStream", "LiveSession", "LiveStats"]

log = logging.getLogger(__name__)

#: RMS of a 20 ms window above which audio counts as speech (about -34 dBFS): well above a quiet room's hiss.
SPEECH_THRESHOLD = 0.02
_ONSET_WINDOW = SAMPLE_RATE // 50
#: Audio is handed to the pipeline in pieces of at most 0.1 s.
_PIECE_SAMPLES = SAMPLE_RATE // 10


class FrameStream(Protocol):
    """What a session animates with: ``Pipeline.stream`` or the app service's ``stream`` (same arguments)."""

    def stream(
        self,
        source: str | Path,
        chunks: Iterable[np.ndarray],
        controls: Controls,
        *,
        cancel: threading.Event | None = None,
    ) -> Iterator[StreamFrame]: ...


@dataclass(frozen=True)
class LiveStats:
    """How a live session is doing; every time is in seconds."""

    frames: int
    #: Frames produced during the last second of wall time.
    fps: float
    #: Audio received so far, and how much of it was discarded because the pipeline fell behind.
    audio_seconds: float
    dropped_seconds: float
    #: Frames the received audio calls for that are not produced yet (the model's look-ahead is part of it).
    frames_behind: int
    #: From the first audio chunk's arrival to the first frame.
    first_frame_latency: float | None
    #: From the arrival of the first chunk with speech in it to the first frame showing that moment of audio.
    onset_latency: float | None
    #: Where that speech starts in the audio stream.
    onset_at: float | None
    running: bool
    error: str | None

    def to_dict(self) -> dict[str, Any]:
        """Rounded, JSON-ready values."""
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in asdict(self).items()}


@dataclass(frozen=True)
class _Chunk:
    samples: np.ndarray
    arrived: float


class LiveSession:
    """One portrait animated by audio as it arrives: ``service.stream`` in a background thread.

    Audio goes in through :meth:`push_audio` (any rate and format) and waits in a queue bounded to
    ``max_buffer_seconds``; when the pipeline cannot keep up, the oldest audio is dropped (counted in the
    statistics) rather than letting the delay grow without end. Frames come out through :meth:`latest_frame`,
    :meth:`frames_since` and :meth:`wait_for_frame`; only the last ``keep_frames`` are kept. The session ends by
    itself when no audio arrives for ``idle_timeout`` seconds (a viewer who vanished without saying so), after
    :meth:`end_audio` once the last frame is out, or at once on :meth:`close`.
    """

    def __init__(
        self,
        service: FrameStream,
        source: str | Path,
        controls: Controls | None = None,
        *,
        speech_threshold: float = SPEECH_THRESHOLD,
        max_buffer_seconds: float = 2.0,
        keep_frames: int = 25,
        idle_timeout: float = 10.0,
        name: str = "live-session",
    ) -> None:
        self.service = service
        self.source = Path(source)
        self.controls = controls or Controls()
        self.speech_threshold = speech_threshold
        self.max_buffer_samples = max(1, int(max_buffer_seconds * SAMPLE_RATE))
        self.idle_timeout = idle_timeout
        self._cancel = threading.Event()
        self._lock = threading.Condition()
        self._audio: collections.deque[_Chunk] = collections.deque()
        self._buffered = 0
        self._ended = False
        self._resampler: Resampler | None = None
        self._frames: collections.deque[StreamFrame] = collections.deque(maxlen=max(1, keep_frames))
        self._recent: collections.deque[float] = collections.deque()
        self._produced = 0
        self._received = 0
        self._dropped = 0
        self._fed = 0
        self._first_arrival: float | None = None
        self._first_frame_at: float | None = None
        self._onset_frame: int | None = None
        self._onset_arrival: float | None = None
        self._onset_latency: float | None = None
        self._last_audio = time.perf_counter()
        self._error: DittoError | None = None
        self._finished = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    # ------------------------------------------------------------------------------------------- lifecycle

    def start(self) -> LiveSession:
        """Start the background stream (the portrait is registered there; a face error shows up in ``error``)."""
        self._last_audio = time.perf_counter()
        self._thread.start()
        return self

    @property
    def running(self) -> bool:
        return self._thread.is_alive() and not self._finished

    @property
    def finished(self) -> bool:
        """The stream has ended (normally, by error, by idling or by :meth:`close`)."""
        return self._finished

    @property
    def error(self) -> DittoError | None:
        """Why the stream stopped, if it failed (a user-facing sentence)."""
        return self._error

    def end_audio(self) -> None:
        """No more audio: the frames of what was received are still produced, then the stream ends."""
        with self._lock:
            if self._resampler is not None and not self._resampler.passthrough:
                tail = self._resampler.flush()
                if tail.size:
                    self._enqueue(tail, time.perf_counter(), block=False)
            self._ended = True
            self._lock.notify_all()

    def close(self, timeout: float = 10.0) -> None:
        """Stop now: cancels the stream, drops queued audio and waits for the background thread to end."""
        self._cancel.set()
        with self._lock:
            self._ended = True
            self._audio.clear()
            self._buffered = 0
            if self._thread.ident is None:  # never started: nothing to wait for
                self._finished = True
            self._lock.notify_all()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("live session %s still running %.0f s after close", self._thread.name, timeout)

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the stream to end by itself; True when it has."""
        if self._thread.ident is not None:
            self._thread.join(timeout)
        return not self._thread.is_alive()

    # ------------------------------------------------------------------------------------------------ audio

    def push_audio(self, sample_rate: int, samples: Any, *, block: bool = False, timeout: float | None = None) -> bool:
        """Queue audio (any rate, int or float, mono or multi-channel). Returns False once the session has ended.

        ``block=True`` waits for room in the queue (for a source that can wait, such as a file); otherwise the
        oldest queued audio is dropped to make room, which is what a live microphone wants.
        Raises the session's error if the stream failed, so the caller can show it.
        """
        if self._error is not None:
            raise self._error
        mono = to_mono_float32(samples)
        arrived = time.perf_counter()
        with self._lock:
            if self._ended or self._finished or self._cancel.is_set():
                return False
            if self._resampler is None or self._resampler.rate_in != int(sample_rate):
                previous = self._resampler
                self._resampler = Resampler(int(sample_rate), SAMPLE_RATE)
                if previous is not None and not previous.passthrough:
                    tail = previous.flush()
                    if tail.size:
                        self._enqueue(tail, arrived, block=False)
            chunk = self._resampler.process(mono)
            self._last_audio = arrived
            if self._first_arrival is None:
                self._first_arrival = arrived
            if chunk.size:
                return self._enqueue(chunk, arrived, block=block, timeout=timeout)
            return True

    def _enqueue(self, chunk: np.ndarray, arrived: float, *, block: bool, timeout: float | None = None) -> bool:
        """Add to the queue (lock held). Drops the oldest audio, or waits, when the queue is full."""
        self._received += chunk.size
        if not block and chunk.size > self.max_buffer_samples:  # more than fits at all: only its end can be kept
            self._dropped += chunk.size - self.max_buffer_samples
            chunk = chunk[-self.max_buffer_samples:]
        deadline = None if timeout is None else time.perf_counter() + timeout
        while self._buffered + chunk.size > self.max_buffer_samples and self._audio:
            if not block:
                dropped = self._audio.popleft()
                self._buffered -= dropped.samples.size
                self._dropped += dropped.samples.size
                continue
            remaining = None if deadline is None else deadline - time.perf_counter()
            if (remaining is not None and remaining <= 0) or self._ended or self._cancel.is_set():
                self._dropped += chunk.size
                return False
            self._lock.wait(0.1 if remaining is None else min(0.1, remaining))
        # Short pieces: the runner queues a few items between stages, so small items keep that backlog short.
        for start in range(0, chunk.size, _PIECE_SAMPLES):
            self._audio.append(_Chunk(chunk[start:start + _PIECE_SAMPLES], arrived))
        self._buffered += chunk.size
        self._lock.notify_all()
        return True

    def _chunks(self) -> Iterator[np.ndarray]:
        """What the pipeline reads (in the runner's input thread). Yields an empty chunk while waiting, so that a
        stopped runner gets control back within 0.1 s and its input thread can end."""
        empty = np.zeros(0, np.float32)
        while not self._cancel.is_set():
            with self._lock:
                if not self._audio and not self._ended:
                    self._lock.wait(0.1)
                item = self._audio.popleft() if self._audio else None
                if item is not None:
                    self._buffered -= item.samples.size
                    self._lock.notify_all()
                ended = self._ended and not self._audio
                idle = time.perf_counter() - self._last_audio
            if item is None:
                if ended:
                    return
                if idle > self.idle_timeout:
                    log.info("live session %s: no audio for %.0f s, ending", self._thread.name, idle)
                    return
                yield empty
                continue
            self._note_onset(item)
            self._fed += item.samples.size
            yield item.samples

    def _note_onset(self, item: _Chunk) -> None:
        if self._onset_frame is not None:
            return
        usable = item.samples.size // _ONSET_WINDOW * _ONSET_WINDOW
        if usable == 0:
            loud = np.array([np.sqrt(np.mean(item.samples.astype(np.float64) ** 2)) > self.speech_threshold])
        else:
            windows = item.samples[:usable].astype(np.float64).reshape(-1, _ONSET_WINDOW)
            loud = np.sqrt(np.mean(windows**2, axis=1)) > self.speech_threshold
        hits = np.flatnonzero(loud)
        if hits.size:
            position = self._fed + int(hits[0]) * _ONSET_WINDOW
            with self._lock:
                self._onset_frame = position // SAMPLES_PER_FRAME
                self._onset_arrival = item.arrived

    # ----------------------------------------------------------------------------------------------- frames

    def _run(self) -> None:
        try:
            for frame in self.service.stream(self.source, self._chunks(), self.controls, cancel=self._cancel):
                self._on_frame(frame)
        except CancelledError:
            log.debug("live session %s cancelled", self._thread.name)
        except DittoError as exc:
            log.info("live session %s stopped: %s", self._thread.name, exc)
            self._error = exc
        except Exception as exc:  # the thread must end, and the viewer must learn why
            log.error("live session %s failed", self._thread.name, exc_info=exc)
            self._error = DittoError("The live session stopped because of a server error; please start again.")
        finally:
            with self._lock:
                self._finished = True
                while len(self._frames) > 1:  # only the last picture is still shown; free the rest
                    self._frames.popleft()
                self._lock.notify_all()

    def _on_frame(self, frame: StreamFrame) -> None:
        with self._lock:
            self._frames.append(frame)
            self._produced = frame.index + 1
            self._recent.append(frame.produced_at)
            if self._first_frame_at is None:
                self._first_frame_at = frame.produced_at
            if (self._onset_latency is None and self._onset_frame is not None and self._onset_arrival is not None
                    and frame.index >= self._onset_frame):
                self._onset_latency = frame.produced_at - self._onset_arrival
            self._lock.notify_all()

    def latest_frame(self) -> StreamFrame | None:
        """The newest frame, or None before the first."""
        with self._lock:
            return self._frames[-1] if self._frames else None

    def frames_since(self, index: int) -> list[StreamFrame]:
        """Frames after ``index`` that are still kept (use -1 for all of them), oldest first."""
        with self._lock:
            return [f for f in self._frames if f.index > index]

    def wait_for_frame(self, after: int, timeout: float) -> StreamFrame | None:
        """The newest frame once one after ``after`` exists; None after ``timeout`` or when the stream ended."""
        deadline = time.perf_counter() + timeout
        with self._lock:
            while not (self._frames and self._frames[-1].index > after):
                remaining = deadline - time.perf_counter()
                if remaining <= 0 or self._finished:
                    return None
                self._lock.wait(remaining)
            return self._frames[-1]

    def stats(self) -> LiveStats:
        """A snapshot of the live figures."""
        now = time.perf_counter()
        with self._lock:
            while self._recent and self._recent[0] < now - 1.0:
                self._recent.popleft()
            first = None
            if self._first_frame_at is not None and self._first_arrival is not None:
                first = self._first_frame_at - self._first_arrival
            expected = (self._received - self._dropped) // SAMPLES_PER_FRAME
            return LiveStats(
                frames=self._produced,
                fps=float(len(self._recent)),
                audio_seconds=self._received / SAMPLE_RATE,
                dropped_seconds=self._dropped / SAMPLE_RATE,
                frames_behind=max(0, expected - self._produced),
                first_frame_latency=first,
                onset_latency=self._onset_latency,
                onset_at=None if self._onset_frame is None else self._onset_frame / FPS,
                running=self._thread.is_alive() and not self._finished,
                error=None if self._error is None else str(self._error),
            )
