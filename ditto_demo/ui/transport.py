"""Live audio in, frames out: one streaming session per viewer, whatever carries the media.

Three layers, so that a WebRTC or WebSocket transport (e.g. fastrtc once it supports Gradio 6) can be added
without touching the Live tab or the pipeline:

* :class:`Resampler` and :func:`to_mono_float32` turn what a browser or a socket delivers (any sample rate,
  int16 or float, stereo) into the 16 kHz mono float32 chunks :meth:`DemoService.stream` takes. numpy only (no
  scipy or soxr in the app's dependencies): a stateful polyphase windowed-sinc filter, so chunk borders leave no
  clicks and the result does not depend on how the audio was cut.
* :class:`LiveSession` owns one ``service.stream(...)`` running in a background thread, fed by a bounded audio
  queue. It keeps the latest frames and live statistics (fps, speech-onset to first-frame latency, frames behind
  real time) and stops promptly on :meth:`LiveSession.close`. It knows nothing about Gradio.
* :class:`LiveTransport` is the seam: it moves one viewer's media between a wire format and a session.
  :class:`GradioStreamTransport` is the Gradio implementation used by the Live tab (microphone chunks from
  ``gr.Audio(streaming=True).stream``, frames to a streaming ``gr.Image``). It lives in the viewer's ``gr.State``,
  so every browser session has its own, and nothing is global.
"""

from __future__ import annotations

import asyncio
import collections
import copy
import logging
import math
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import gradio as gr
import numpy as np

from ditto_demo.errors import DittoError, InputError
from ditto_demo.pipeline.audio import SAMPLE_RATE, SAMPLES_PER_FRAME
from ditto_demo.pipeline.controls import Controls
from ditto_demo.pipeline.pipeline import StreamFrame
from ditto_demo.pipeline.runner import CancelledError
from ditto_demo.ui.service import DemoService

__all__ = [
    "GradioStreamTransport",
    "LiveSession",
    "LiveStats",
    "LiveTransport",
    "Resampler",
    "format_stats",
    "resample",
    "to_mono_float32",
]

log = logging.getLogger(__name__)

#: RMS of a 20 ms window above which audio counts as speech (about -34 dBFS): well above a quiet room's hiss.
SPEECH_THRESHOLD = 0.02
_ONSET_WINDOW = SAMPLE_RATE // 50
_FPS = SAMPLE_RATE // SAMPLES_PER_FRAME  # 25
#: Audio is handed to the pipeline in pieces of at most 0.1 s.
_PIECE_SAMPLES = SAMPLE_RATE // 10


# ---------------------------------------------------------------------------------------------------- audio


def to_mono_float32(samples: Any) -> np.ndarray:
    """Samples in [-1, 1] as one float32 channel: ints are scaled by their type's range, channels averaged.

    A 2-D array is ``(samples, channels)`` as Gradio delivers it; ``(channels, samples)`` is recognised when the
    first axis is the short one (at most 8 channels), as torchaudio-style sources deliver it.
    """
    data = np.asarray(samples)
    if data.ndim not in (1, 2):
        raise InputError(f"Audio must be one or two dimensional (samples[, channels]); got shape {data.shape}.")
    if data.dtype.kind == "f":
        out = data.astype(np.float64)
    elif data.dtype.kind == "i":
        out = data.astype(np.float64) / float(-np.iinfo(data.dtype).min)
    elif data.dtype.kind == "u":
        half = float(np.iinfo(data.dtype).max + 1) / 2
        out = (data.astype(np.float64) - half) / half
    else:
        raise InputError(f"Audio samples must be numbers; got {data.dtype}.")
    if out.ndim == 2:
        out = out.mean(axis=0 if out.shape[0] < out.shape[1] and out.shape[0] <= 8 else 1)
    if not np.all(np.isfinite(out)):
        raise InputError("The audio contains NaN or infinite samples.")
    return out.astype(np.float32)


class Resampler:
    """Streaming sample-rate conversion by a polyphase windowed-sinc filter (Blackman window, 16 zero crossings).

    Feed chunks of any size to :meth:`process`; :meth:`flush` returns the tail. Output sample ``n`` sits exactly at
    input position ``n * rate_in / rate_out`` (no delay), and the output is identical however the input is cut,
    because the filter keeps the input samples it still needs between calls. Below the output's Nyquist frequency
    the response is flat; above it (when downsampling) it is suppressed, so 48 kHz speech does not alias.
    """

    def __init__(self, rate_in: int, rate_out: int = SAMPLE_RATE, *, zero_crossings: int = 16) -> None:
        if int(rate_in) != rate_in or rate_in <= 0 or int(rate_out) != rate_out or rate_out <= 0:
            raise InputError(f"Sample rates must be positive whole numbers; got {rate_in} → {rate_out}.")
        self.rate_in, self.rate_out = int(rate_in), int(rate_out)
        common = math.gcd(self.rate_in, self.rate_out)
        self._up, self._down = self.rate_out // common, self.rate_in // common  # output n ↔ input n·down/up
        scale = min(1.0, self.rate_out / self.rate_in)
        self._reach = math.ceil(zero_crossings / scale)  # input samples on each side of an output sample
        cutoff = 0.5 * scale * 0.95  # cycles per input sample: a little below Nyquist leaves room for the slope
        self._taps = np.arange(-self._reach + 1, self._reach + 1)
        distance = np.arange(self._up)[:, None] / self._up - self._taps[None, :]
        x = np.clip(distance / self._reach, -1.0, 1.0)
        window = 0.42 + 0.5 * np.cos(np.pi * x) + 0.08 * np.cos(2 * np.pi * x)
        table = 2 * cutoff * np.sinc(2 * cutoff * distance) * window
        self._table = (table / table.sum(axis=1, keepdims=True)).astype(np.float64)  # unit gain at DC, per phase
        self.reset()

    def reset(self) -> None:
        """Forget all input: the next sample is the start of a new signal."""
        self._buffer = np.zeros(self._reach, dtype=np.float64)  # zeros before the signal
        self._start = -self._reach  # absolute input index of _buffer[0]
        self._received = 0
        self._produced = 0

    @property
    def passthrough(self) -> bool:
        return self.rate_in == self.rate_out

    def process(self, samples: np.ndarray) -> np.ndarray:
        """Resample one chunk of mono float samples; returns every output sample it completes."""
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        if self.passthrough:
            self._received += samples.size
            return samples.copy()
        self._buffer = np.concatenate([self._buffer, samples.astype(np.float64)])
        self._received += samples.size
        end = self._start + self._buffer.size
        ready = end - self._reach  # outputs whose last tap (base + reach) is below `end`
        return self._emit(max(0, -(-ready * self._up // self._down)))

    def flush(self) -> np.ndarray:
        """The remaining output (the signal is taken to be silent after its end); then starts over."""
        if self.passthrough:
            self.reset()
            return np.zeros(0, np.float32)
        self._buffer = np.concatenate([self._buffer, np.zeros(self._reach + 1)])
        out = self._emit(-(-self._received * self._up // self._down))
        self.reset()
        return out

    def _emit(self, until: int) -> np.ndarray:
        if until <= self._produced:
            return np.zeros(0, np.float32)
        n = np.arange(self._produced, until, dtype=np.int64)
        position = n * self._down
        base, phase = position // self._up, position % self._up
        index = (base - self._start)[:, None] + self._taps[None, :]
        out = np.einsum("ij,ij->i", self._buffer[index], self._table[phase])
        self._produced = until
        next_base = (until * self._down) // self._up
        keep_from = next_base - self._reach + 1 - self._start
        if keep_from > 0:
            self._buffer = self._buffer[keep_from:]
            self._start += keep_from
        return out.astype(np.float32)


def resample(samples: Any, rate_in: int, rate_out: int = SAMPLE_RATE) -> np.ndarray:
    """A whole signal (any dtype, mono or multi-channel) as mono float32 at ``rate_out``."""
    resampler = Resampler(rate_in, rate_out)
    mono = to_mono_float32(samples)
    return np.concatenate([resampler.process(mono), resampler.flush()])


# -------------------------------------------------------------------------------------------------- session


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
        service: DemoService,
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
                onset_at=None if self._onset_frame is None else self._onset_frame / _FPS,
                running=self._thread.is_alive() and not self._finished,
                error=None if self._error is None else str(self._error),
            )


# ------------------------------------------------------------------------------------------------ transports

AudioIn = TypeVar("AudioIn")
FramesOut = TypeVar("FramesOut")


class LiveTransport(ABC, Generic[AudioIn, FramesOut]):
    """Moves one viewer's media between a wire format and a :class:`LiveSession`.

    The session lifecycle (:meth:`open`, :meth:`close`, :attr:`session`) is shared; a transport only says how its
    audio arrives (:meth:`receive`) and how frames leave (:meth:`frames`). A WebRTC transport would implement
    ``receive`` for RTP audio frames and ``frames`` as its video track; the Live tab only needs the Gradio one.
    """

    def __init__(self, service: DemoService, **session_options: Any) -> None:
        self.service = service
        self.session_options = session_options
        self._session: LiveSession | None = None
        self._session_lock = threading.Lock()
        self._opened = 0

    @property
    def session(self) -> LiveSession | None:
        return self._session

    def open(self, source: str | Path, controls: Controls | None = None) -> LiveSession:
        """Start a new session (closing the previous one)."""
        with self._session_lock:
            previous, self._session = self._session, None
        if previous is not None:
            previous.close()
        self._opened += 1
        session = LiveSession(self.service, source, controls, name=f"live-session-{id(self):x}-{self._opened}",
                              **self.session_options)
        with self._session_lock:
            self._session = session.start()
        return session

    def close(self) -> None:
        """Stop the current session, if any, and wait for its thread."""
        with self._session_lock:
            session, self._session = self._session, None
        if session is not None:
            session.close()

    @abstractmethod
    def receive(self, item: AudioIn) -> None:
        """Hand one piece of incoming audio, in the transport's format, to the session."""

    @abstractmethod
    def frames(self) -> FramesOut:
        """The outgoing frames, in the transport's format."""


def _unchanged(text: str) -> str:
    return text


def format_stats(stats: LiveStats | None, waiting: str = "") -> str:
    """One line of Markdown for the viewer."""
    if stats is None:
        return waiting or "Press **Record** and speak."
    if stats.error:
        return f"**Stopped:** {stats.error}"

    def seconds(value: float | None) -> str:
        return "…" if value is None else f"{value:.2f} s"

    parts = [
        f"**{stats.fps:.0f} fps**",
        f"speech onset → first frame **{seconds(stats.onset_latency)}**",
        f"first frame {seconds(stats.first_frame_latency)}",
        f"{stats.frames} frames",
        f"{stats.frames_behind} behind",
    ]
    if stats.dropped_seconds:
        parts.append(f"{stats.dropped_seconds:.1f} s of audio skipped to keep up")
    if not stats.running:
        parts.append("stopped")
    return " · ".join(parts)


class GradioStreamTransport(LiveTransport[tuple[int, np.ndarray], AsyncIterator[tuple[Any, str]]]):
    """The Live tab's transport: ``gr.Audio(streaming=True)`` chunks in, ``(image, stats)`` updates out.

    The microphone's ``.stream`` event calls :meth:`receive` with each chunk (``(sample_rate, int16 samples)``);
    the recording's start event iterates :meth:`frames`, an async generator that yields the newest frame whenever
    there is one (skipping frames when the browser is slower than the model) and the statistics twice a second.
    Held in a ``gr.State``: Gradio deep-copies the initial value for each browser session, and a copy is a fresh,
    empty transport on the same service.
    """

    def __init__(self, service: DemoService, *, poll_seconds: float = 0.02, max_seconds: float = 3600.0,
                 start_timeout: float = 300.0, redact: Callable[[str], str] | None = None,
                 **session_options: Any) -> None:
        super().__init__(service, **session_options)
        self.redact = redact or _unchanged
        self.poll_seconds = poll_seconds
        self.max_seconds = max_seconds
        self.start_timeout = start_timeout
        self._epoch = 0
        self._stopped = False

    def __deepcopy__(self, memo: dict[int, Any]) -> GradioStreamTransport:
        """A fresh transport for a new browser session (the service is shared, never copied)."""
        fresh = type(self)(self.service, poll_seconds=self.poll_seconds, max_seconds=self.max_seconds,
                           start_timeout=self.start_timeout, redact=self.redact,
                           **copy.deepcopy(self.session_options, memo))
        memo[id(self)] = fresh
        return fresh

    def ensure_session(self, source: str | Path | None, controls: Controls) -> LiveSession:
        """The running session, or a new one for ``source`` when there is none (or the last one ended).

        A session that failed is dropped and its error raised, so the next recording starts afresh.
        """
        session = self._session
        if session is not None and session.error is not None:
            self.close()
            raise session.error
        if session is None or session.finished:
            path = self.service.check_file(source, "a portrait")
            self.service.require()
            session = self.open(path, controls)
        return session

    def receive(self, item: tuple[int, np.ndarray] | None) -> None:
        session = self._session
        if item is None or session is None:
            return
        sample_rate, samples = item
        try:
            session.push_audio(int(sample_rate), samples)
        except DittoError:
            self.close()
            raise

    @property
    def stopped(self) -> bool:
        """The viewer stopped recording: audio still in flight is ignored until the next recording begins."""
        return self._stopped

    def begin(self) -> int:
        """A recording starts: frames() calls from before stop showing frames."""
        self._epoch += 1
        self._stopped = False
        return self._epoch

    def stop(self) -> LiveStats | None:
        """The recording stopped: end the session and the frame updates; returns the session's last figures."""
        self._stopped = True
        session = self._session
        self.close()
        return None if session is None else session.stats()

    async def frames(self) -> AsyncIterator[tuple[Any, str]]:
        """Frame and statistics updates until the recording stops (async: waiting holds no worker thread).

        Ends when :meth:`stop` is called, when a newer recording takes over, when the session fails, when no
        session has been running for twice the idle timeout (``start_timeout`` before the first one: the audio may
        be waiting in the queue for another viewer's job), or after ``max_seconds``.
        """
        epoch = self.begin()
        started = time.perf_counter()
        idle_limit = 2 * float(self.session_options.get("idle_timeout", 10.0))
        current: LiveSession | None = None
        shown = -1
        text = format_stats(None, "Waiting for the first audio… (when another generation is running, the live "
                                  "session starts as soon as it finishes)")
        text_at = 0.0
        idle_since = started
        seen_session = False
        yield gr.skip(), text
        while epoch == self._epoch and not self._stopped and time.perf_counter() - started < self.max_seconds:
            now = time.perf_counter()
            session = self._session
            if session is not current:
                current, shown = session, -1
            image: Any = gr.skip()
            changed = False
            if session is not None:
                frame = session.latest_frame()
                if frame is not None and frame.index > shown:
                    shown, image, changed = frame.index, frame.image, True
                if changed or now - text_at >= 0.5:
                    text_at = now
                    fresh = self.redact(format_stats(session.stats()))
                    changed = changed or fresh != text
                    text = fresh
                if session.error is not None:
                    yield image, text
                    return
            if session is not None and not session.finished:
                idle_since, seen_session = now, True
            elif now - idle_since > (idle_limit if seen_session else self.start_timeout):
                return
            if changed:
                yield image, text
            await asyncio.sleep(self.poll_seconds if session is not None else 0.1)
