"""An always-on avatar: one pipeline stream fed in real time, with speech blended in and out of idle.

When an :class:`Avatar` starts, the portrait comes alive at once and stays alive: its feeder hands the model
16 kHz audio paced by a clock, 25 frames' worth a second, whether anyone speaks or not. Silence keeps the model
moving (blinks, small head motion), as the model's authors recommend over stitching clips. Speech comes from three
sources:

* microphone packets (:meth:`Avatar.push_mic`), fed as they arrive;
* a speech file (:meth:`Avatar.play_file`) or samples (:meth:`Avatar.play`), queued as an utterance;
* text (:meth:`Avatar.speak`), spoken sentence by sentence by the offline voice while earlier sentences play.

Speech replaces silence at the live edge and silence resumes when it ends, so there is never a restart.
:meth:`Avatar.interrupt` drops the queued speech not fed yet and the avatar is idle again at the next tick.

The session clock starts when the stream is ready. Frame *k* is driven by the audio fed at media time
``k / 25`` s (plus any time skipped to keep up), and the avatar's voice is handed to the sink with the same
timestamps, so a player can keep sound and picture together. A renderer slower than real time never builds a
backlog: frames later than ``max_delay_s`` are dropped before rendering, and when even the feeder is held up,
whole frames of audio are skipped (and counted) so the clock stays honest.

The avatar knows nothing about Gradio or WebSockets: a transport implements :class:`AvatarSink`.
"""

from __future__ import annotations

import bisect
import collections
import itertools
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ditto_demo.errors import DittoError
from ditto_demo.live.session import SPEECH_THRESHOLD
from ditto_demo.pipeline.controls import Controls
from ditto_demo.pipeline.live_controls import LiveControls
from ditto_demo.pipeline.pipeline import StreamFrame
from ditto_demo.pipeline.runner import CancelledError
from ditto_demo.pipeline.timebase import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME

__all__ = ["Avatar", "AvatarFrame", "AvatarOptions", "AvatarSink", "SpeakingVoice", "StreamingPipeline"]

log = logging.getLogger(__name__)

#: Speech onsets are looked for in 20 ms windows.
_ONSET_WINDOW = SAMPLE_RATE // 50
#: How long the feeder waits at most between two looks at the clock.
_TICK_S = 0.02
_TICK_SAMPLES = int(_TICK_S * SAMPLE_RATE)
#: Weight of the newest gap in the renderer's running pace (about the last ten frames count).
_COST_WEIGHT = 0.2


@dataclass(frozen=True)
class AvatarOptions:
    """How the avatar keeps time; every figure is in seconds."""

    #: Silence (and queued speech) is fed up to this far behind the clock, so microphone packets that arrive a
    #: little late still find their place instead of a gap.
    jitter_s: float = 0.06
    #: A frame whose audio is older than this when its turn comes to be rendered is dropped.
    max_delay_s: float = 1.0
    #: Rendering queued ahead of a new frame at most, in seconds at the renderer's measured pace (frames in flight
    #: × the time between frames out). A frame that would wait longer is dropped, not queued: a renderer slower
    #: than real time renders the freshest frames it can finish in time, while one that keeps up renders every
    #: frame of a motion clip, whose frames arrive together (5 at once with the low-latency overlap).
    max_queue_s: float = 0.25
    #: A hard cap on frames being rendered at once, whatever the pace.
    max_in_flight: int = 12
    #: When the feeder falls this far behind the clock, whole frames of audio are skipped to catch up.
    max_backlog_s: float = 0.5
    #: Microphone audio waiting beyond this is dropped, oldest first.
    max_mic_buffer_s: float = 0.3
    #: RMS of a 20 ms window that counts as speech (about -34 dBFS), after at least ``onset_quiet_s`` of quiet.
    speech_threshold: float = SPEECH_THRESHOLD
    onset_quiet_s: float = 0.3


@dataclass(frozen=True)
class AvatarFrame:
    """One frame for the transport: its index and media time, the RGB image, what drove it, when it was ready."""

    index: int
    #: Seconds on the session clock: the media time of the frame's first audio sample.
    media_time: float
    image: np.ndarray
    #: Client capture time (ms) of the microphone audio this frame shows; ``None`` for silence, files and text.
    driven_by_ms: float | None
    #: Session time at which the frame came out of the pipeline.
    ready_at: float


class AvatarSink(Protocol):
    """Where an avatar's output goes (a transport). Called from the avatar's threads; must not block for long."""

    def on_frame(self, frame: AvatarFrame) -> None: ...

    def on_audio(self, media_time: float, samples: np.ndarray) -> None:
        """The avatar's voice (files and text only), exactly as fed to the model, from ``media_time`` on."""

    def on_event(self, message: dict[str, Any]) -> None:
        """A protocol message: ``state`` (live, speaking, idle), ``speech_onset`` or a non-fatal ``error``."""

    def on_end(self, error: DittoError | None) -> None:
        """The avatar stopped (``error`` says why when it failed); nothing follows."""


class StreamingPipeline(Protocol):
    """What an avatar animates with: :class:`~ditto_demo.pipeline.Pipeline`."""

    def prepare_stream(self, source: str | Path, controls: Controls | None = None) -> Any: ...

    def stream(
        self,
        source: str | Path,
        audio_chunks: Iterable[np.ndarray],
        controls: Controls | None = None,
        *,
        cancel: threading.Event | None = None,
        live: LiveControls | None = None,
        skip_frame: Callable[[int], bool] | None = None,
    ) -> Iterator[StreamFrame]: ...


class SpeakingVoice(Protocol):
    """What text mode needs of a voice (:class:`ditto_demo.speech.Voice`)."""

    def sentences(self, text: str) -> list[str]: ...

    def synthesize(self, text: str, *, seed: int = 0) -> np.ndarray: ...


@dataclass
class _Piece:
    """Queued speech: part of one utterance (a sentence, or a whole file)."""

    samples: np.ndarray
    utterance: int
    text: str | None
    offset: int = 0

    @property
    def remaining(self) -> int:
        return self.samples.size - self.offset


@dataclass(frozen=True)
class _MicSegment:
    """Microphone audio fed from media sample ``start`` on, captured from ``client_time_ms`` on."""

    start: int
    length: int
    client_time_ms: float


@dataclass
class _Counters:
    frames: int = 0
    dropped_frames: int = 0
    dropped_audio: int = 0  # samples
    last_index: int = -1
    last_media: float | None = None
    recent: collections.deque[float] = field(default_factory=collections.deque)


class Avatar:
    """One always-on avatar: a portrait, live controls, a sink for its output. Start it, feed it, stop it.

    ``voice`` returns the voice for :meth:`speak` (loaded on first use); ``read_speech`` decodes a file for
    :meth:`play_file` into 16 kHz mono float32. ``clock`` is a monotonic clock in seconds (tests may pass their own).
    Thread-safe: the transport calls the feeding methods from its own thread.
    """

    def __init__(
        self,
        pipeline: StreamingPipeline,
        source: str | Path,
        controls: LiveControls,
        sink: AvatarSink,
        *,
        voice: Callable[[], SpeakingVoice] | None = None,
        read_speech: Callable[[Path], np.ndarray] | None = None,
        options: AvatarOptions | None = None,
        clock: Callable[[], float] = time.monotonic,
        name: str = "avatar",
    ) -> None:
        self.pipeline = pipeline
        self.source = Path(source)
        self.controls = controls
        self.sink = sink
        self.options = options or AvatarOptions()
        self._voice = voice
        self._read_speech = read_speech
        self._clock = clock
        self._name = name
        self._cond = threading.Condition()
        self._cancel = threading.Event()
        self._done = threading.Event()
        self.error: DittoError | None = None
        self.state = "new"
        # session clock and feed position (feeder thread writes, under the lock)
        self._t0: float | None = None
        self._fed = 0  # samples handed to the model
        self._skipped = 0  # session samples skipped to catch up
        self._skips: list[tuple[int, int]] = [(0, 0)]  # (first frame index, samples skipped before it)
        self._segments: collections.deque[_MicSegment] = collections.deque()
        # inputs
        self._mic: collections.deque[tuple[np.ndarray, float]] = collections.deque()
        self._mic_len = 0
        self._speech: collections.deque[_Piece] = collections.deque()
        self._speaking: int | None = None  # utterance being fed
        self._jobs: collections.deque[tuple[str, Any]] = collections.deque()
        self._utterances = itertools.count(1)
        self._generation = 0  # bumped by interrupt: a job of an older generation is dropped
        self._worker_busy = False
        self._worker: threading.Thread | None = None
        # onset detection (feeder thread only)
        self._quiet = int(self.options.onset_quiet_s * SAMPLE_RATE)
        self._onset_carry = np.zeros(0, np.float32)
        self._counters = _Counters()
        self._in_flight = 0  # frames admitted to rendering and not out yet
        self._frame_cost = 1.0 / FPS  # the renderer's time per frame (a running average, seconds)
        self._admitted_at: dict[int, float] = {}  # admitted frames not out yet: when they were admitted
        self._last_out: float | None = None  # when the last frame came out
        self._thread = threading.Thread(target=self._run, name=f"ditto-{name}", daemon=True)

    # ------------------------------------------------------------------------------------------- lifecycle

    def start(self) -> Avatar:
        """Start the stream in the background; the sink hears ``state: live`` when the clock starts."""
        self.state = "starting"
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """End the avatar now and wait for its threads; safe to call more than once, from any thread."""
        self._cancel.set()
        with self._cond:
            self._cond.notify_all()
        current = threading.current_thread()
        for thread in (self._thread, self._worker):
            if thread is not None and thread.ident is not None and thread is not current:
                thread.join(timeout)
                if thread.is_alive():
                    log.warning("%s still running %.0f s after stop", thread.name, timeout)
        if self._thread.ident is None:  # never started
            self.state = "ended"
            self._done.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the avatar has ended (by :meth:`stop` or an error); True when it has."""
        return self._done.wait(timeout)

    @property
    def ended(self) -> bool:
        return self._done.is_set()

    def session_time(self) -> float | None:
        """Seconds on the session clock, ``None`` before the avatar is live."""
        t0 = self._t0
        return None if t0 is None else self._clock() - t0

    # ------------------------------------------------------------------------------------------------ input

    def push_mic(self, samples: np.ndarray, client_time_ms: float) -> bool:
        """Microphone audio (16 kHz mono float32) captured at ``client_time_ms``; False once the avatar ended."""
        chunk = np.asarray(samples, dtype=np.float32).reshape(-1)
        with self._cond:
            if self._cancel.is_set() or self.state == "ended":
                return False
            if chunk.size:
                self._mic.append((chunk, float(client_time_ms)))
                self._mic_len += chunk.size
                self._trim_mic(int(self.options.max_mic_buffer_s * SAMPLE_RATE))
                self._cond.notify_all()
        return True

    def speak(self, text: str) -> None:
        """Queue ``text``: spoken sentence by sentence after what is queued already (needs a ``voice``)."""
        self._add_job("text", text)

    def play_file(self, path: str | Path) -> None:
        """Queue a speech file (decoded in the background by ``read_speech``)."""
        self._add_job("file", Path(path))

    def play(self, samples: np.ndarray, text: str | None = None) -> None:
        """Queue 16 kHz mono float32 speech as one utterance."""
        self._add_job("samples", (np.asarray(samples, dtype=np.float32).reshape(-1), text))

    def interrupt(self) -> float | None:
        """Stop the current utterance and drop every queued one; returns the media time speech stopped at (or
        ``None`` when nothing was being said). The next audio fed is silence."""
        events = []
        with self._cond:
            self._generation += 1
            self._jobs.clear()
            self._speech.clear()
            cut = None
            if self._speaking is not None:
                cut = self._media_samples() / SAMPLE_RATE
                events.append({"type": "state", "state": "idle", "media_time": cut, "message": "interrupted"})
                self._speaking = None
            self._cond.notify_all()
        self._emit(events)
        return cut

    # -------------------------------------------------------------------------------------------- figures

    def stats(self) -> dict[str, Any]:
        """The live figures: frames out in the last second, delay behind the clock, what was dropped."""
        now = self.session_time()
        with self._cond:
            counters = self._counters
            if now is not None:
                while counters.recent and counters.recent[0] < now - 1.0:
                    counters.recent.popleft()
            behind = None if now is None or counters.last_media is None else now - counters.last_media
            return {
                "state": self.state,
                "server_fps": float(len(counters.recent)),
                "behind_s": behind,
                "dropped_audio_ms": 1000.0 * counters.dropped_audio / SAMPLE_RATE,
                "dropped_frames": counters.dropped_frames,
                "frames": counters.frames,
                "media_time": self._media_samples() / SAMPLE_RATE,
                "queued_speech_s": sum(p.remaining for p in self._speech) / SAMPLE_RATE,
            }

    def frame_time(self, index: int) -> float:
        """Media time (s) of frame ``index``: its first audio sample on the session clock."""
        with self._cond:
            return self._frame_sample(index) / SAMPLE_RATE

    # --------------------------------------------------------------------------------------------- threads

    def _run(self) -> None:
        """The stream's consumer thread: prepare, then hand every frame to the sink until stopped or failed."""
        try:
            self.pipeline.prepare_stream(self.source, self.controls.snapshot().controls)
            if not self._cancel.is_set():
                stream = self.pipeline.stream(self.source, self._feed(), live=self.controls, cancel=self._cancel,
                                              skip_frame=self._skip_frame)
                for frame in stream:
                    self._on_frame(frame)
        except CancelledError:
            log.debug("%s stopped", self._name)
        except DittoError as exc:
            log.info("%s stopped: %s", self._name, exc)
            self.error = exc
        except Exception as exc:  # the thread must end, and the viewer must learn why
            log.error("%s failed", self._name, exc_info=exc)
            self.error = DittoError("The live avatar stopped because of a server error; please start again.")
        finally:
            self._cancel.set()
            with self._cond:
                self.state = "ended"
                self._cond.notify_all()
            worker = self._worker
            if worker is not None and worker.ident is not None:
                worker.join(10.0)
            self._done.set()
            self.sink.on_end(self.error)

    def _feed(self) -> Iterator[np.ndarray]:
        """The audio the model reads (the runner's input thread): microphone, then speech, then silence."""
        with self._cond:
            if self._cancel.is_set():
                return
            self._t0 = self._clock()
            self.state = "live"
        self._emit([{"type": "state", "state": "live", "fps": FPS, "sample_rate": SAMPLE_RATE,
                     "max_delay_s": self.options.max_delay_s, "message": "The avatar is live."}])
        while not self._cancel.is_set():
            events: list[dict[str, Any]] = []
            with self._cond:
                chunk, start, voice = self._next_chunk(events)
            self._emit(events)
            if chunk is None:
                continue
            if voice:
                self.sink.on_audio(start / SAMPLE_RATE, chunk)
            self._look_for_onset(chunk, start)
            yield chunk

    def _next_chunk(self, events: list[dict[str, Any]]) -> tuple[np.ndarray | None, int, bool]:
        """(samples, media sample of the first, is the avatar's voice) to feed now, or None after a short wait.

        Lock held. Chunks never cross a frame boundary, so skips land on whole frames.
        """
        now = int((self._clock() - (self._t0 or 0.0)) * SAMPLE_RATE)
        edge = now - int(self.options.jitter_s * SAMPLE_RATE)
        media = self._media_samples()
        room = SAMPLES_PER_FRAME - self._fed % SAMPLES_PER_FRAME
        behind = edge - media
        if behind > self.options.max_backlog_s * SAMPLE_RATE and room == SAMPLES_PER_FRAME:
            self._skip(behind // SAMPLES_PER_FRAME * SAMPLES_PER_FRAME)
            media = self._media_samples()
        if self._mic and media <= now:
            return self._take_mic(room), media, False
        # Silence and queued speech go in ticks (or to the end of the frame), never in slivers: every chunk is
        # an item on the runner's queues, and a flood of tiny ones starves the stages of the interpreter.
        due = min(room, edge - media)
        if due >= min(room, _TICK_SAMPLES):
            if self._speech:
                return self._take_speech(due, events), media, True
            self._fed += due
            return np.zeros(due, np.float32), media, False
        wait = (min(room, _TICK_SAMPLES) - due) / SAMPLE_RATE
        self._cond.wait(min(_TICK_S, max(0.002, wait)))
        return None, media, False

    def _take_mic(self, count: int) -> np.ndarray:
        parts = []
        while count > 0 and self._mic:
            samples, client_time = self._mic[0]
            part = samples[:count]
            self._segments.append(_MicSegment(self._media_samples(), part.size, client_time))
            parts.append(part)
            self._fed += part.size
            self._mic_len -= part.size
            count -= part.size
            if part.size == samples.size:
                self._mic.popleft()
            else:
                self._mic[0] = (samples[part.size:], client_time + 1000.0 * part.size / SAMPLE_RATE)
        horizon = self._media_samples() - 10 * SAMPLE_RATE  # frames that old are long gone
        while self._segments and self._segments[0].start + self._segments[0].length < horizon:
            self._segments.popleft()
        return np.concatenate(parts)

    def _take_speech(self, count: int, events: list[dict[str, Any]]) -> np.ndarray:
        piece = self._speech[0]
        if self._speaking != piece.utterance:
            self._speaking = piece.utterance
            events.append({"type": "state", "state": "speaking", "media_time": self._media_samples() / SAMPLE_RATE,
                           "text": piece.text})
        part = piece.samples[piece.offset:piece.offset + count]
        piece.offset += part.size
        self._fed += part.size
        if piece.remaining == 0:
            self._speech.popleft()
            self._maybe_idle(events)
        return part

    def _maybe_idle(self, events: list[dict[str, Any]]) -> None:
        """The utterance is over when nothing is queued and nothing is on its way (lock held)."""
        if self._speaking is not None and not self._speech and not self._jobs and not self._worker_busy:
            self._speaking = None
            events.append({"type": "state", "state": "idle", "media_time": self._media_samples() / SAMPLE_RATE,
                           "message": "done"})

    def _skip(self, count: int) -> None:
        """Skip ``count`` samples (whole frames) of session time; what should have been said then is dropped."""
        self._skipped += count
        self._skips.append((self._fed // SAMPLES_PER_FRAME, self._skipped))
        dropped = self._drop_mic(count)
        left = count
        while left > 0 and self._speech:
            piece = self._speech[0]
            used = min(left, piece.remaining)
            piece.offset += used
            left -= used
            dropped += used
            if piece.remaining == 0:
                self._speech.popleft()
        self._counters.dropped_audio += dropped
        log.info("%s fell %.2f s behind: skipped it (%.0f ms of speech dropped)", self._name, count / SAMPLE_RATE,
                 1000.0 * dropped / SAMPLE_RATE)

    def _drop_mic(self, count: int) -> int:
        dropped = 0
        while count > 0 and self._mic:
            samples, client_time = self._mic[0]
            used = min(count, samples.size)
            if used == samples.size:
                self._mic.popleft()
            else:
                self._mic[0] = (samples[used:], client_time + 1000.0 * used / SAMPLE_RATE)
            self._mic_len -= used
            count -= used
            dropped += used
        return dropped

    def _trim_mic(self, limit: int) -> None:
        if self._mic_len > limit:
            self._counters.dropped_audio += self._drop_mic(self._mic_len - limit)

    def _media_samples(self) -> int:
        return self._fed + self._skipped

    def _frame_sample(self, index: int) -> int:
        position = bisect.bisect_right(self._skips, (index, math.inf)) - 1
        return index * SAMPLES_PER_FRAME + self._skips[max(position, 0)][1]

    def _client_time_at(self, sample: int) -> float | None:
        """Capture time (ms) of the microphone sample fed at media sample ``sample`` (lock held)."""
        segments = self._segments
        position = bisect.bisect_right([s.start for s in segments], sample) - 1
        if position < 0:
            return None
        segment = segments[position]
        if sample >= segment.start + segment.length:
            return None
        return segment.client_time_ms + 1000.0 * (sample - segment.start) / SAMPLE_RATE

    def _skip_frame(self, index: int) -> bool:
        """Admission to rendering (stitch thread): True drops frame ``index`` before any work is spent on it.

        A frame is dropped when its audio is already older than ``max_delay_s``, or when the frames ahead of it
        would keep it waiting more than ``max_queue_s`` (or ``max_in_flight`` are being rendered): a renderer
        slower than real time then renders the freshest frames it can finish in time instead of half-rendering
        frames that would come out too late. Frame 0 is always rendered.
        """
        now = self.session_time()
        with self._cond:
            late = now is not None and now - self._frame_sample(index) / SAMPLE_RATE > self.options.max_delay_s
            queued = self._in_flight * self._frame_cost > self.options.max_queue_s
            if index > 0 and (late or queued or self._in_flight >= self.options.max_in_flight):
                return True
            self._admitted_at[index] = now or 0.0
            self._in_flight += 1
            return False

    def _look_for_onset(self, chunk: np.ndarray, start: int) -> None:
        """Report where speech starts after a quiet stretch (feeder thread)."""
        carry = self._onset_carry
        samples = np.concatenate([carry, chunk]) if carry.size else chunk
        first = start - carry.size
        usable = samples.size // _ONSET_WINDOW * _ONSET_WINDOW
        self._onset_carry = samples[usable:].copy()
        if not usable:
            return
        windows = samples[:usable].astype(np.float64).reshape(-1, _ONSET_WINDOW)
        loud = np.sqrt(np.mean(windows**2, axis=1)) > self.options.speech_threshold
        needed = int(self.options.onset_quiet_s * SAMPLE_RATE)
        for number, is_loud in enumerate(loud):
            if not is_loud:
                self._quiet += _ONSET_WINDOW
                continue
            if self._quiet >= needed:
                sample = first + number * _ONSET_WINDOW
                with self._cond:
                    client_time = self._client_time_at(sample)
                self._emit([{"type": "speech_onset", "media_time": sample / SAMPLE_RATE,
                             "client_time_ms": client_time}])
            self._quiet = 0

    def _on_frame(self, frame: StreamFrame) -> None:
        now = self.session_time() or 0.0
        with self._cond:
            sample = self._frame_sample(frame.index)
            driven = self._client_time_at(sample)
            counters = self._counters
            counters.dropped_frames += frame.index - counters.last_index - 1
            counters.last_index = frame.index
            counters.frames += 1
            counters.last_media = sample / SAMPLE_RATE
            counters.recent.append(now)
            self._in_flight = max(0, self._in_flight - 1)
            admitted = self._admitted_at.pop(frame.index, None)
            pace = None
            if admitted is not None and self._last_out is not None and admitted <= self._last_out:
                pace = now - self._last_out  # it waited behind the frame before it: the gap is the pace
            elif admitted is not None and now - admitted < self._frame_cost:
                # It was rendered alone, so its whole trip through the stages bounds the pace from above: when even
                # that beats the estimate, the estimate is stale (a slow spell is over). Without this sample a
                # renderer held to one frame at a time would never be measured again.
                pace = now - admitted
            if pace is not None:
                self._frame_cost += _COST_WEIGHT * (min(max(pace, 0.001), 2.0) - self._frame_cost)
            self._last_out = now
            if len(self._admitted_at) > 4 * self.options.max_in_flight:  # admitted, then lost (a worker's late answer)
                for stale in [i for i in self._admitted_at if i < frame.index]:
                    del self._admitted_at[stale]
        self.sink.on_frame(AvatarFrame(frame.index, sample / SAMPLE_RATE, frame.image, driven, now))

    def _emit(self, events: list[dict[str, Any]]) -> None:
        for event in events:
            self.sink.on_event(event)

    # ---------------------------------------------------------------------------------------- speech jobs

    def _add_job(self, kind: str, value: Any) -> None:
        with self._cond:
            if self._cancel.is_set() or self.state == "ended":
                return
            self._jobs.append((kind, value))
            if self._worker is None:
                self._worker = threading.Thread(target=self._work, name=f"ditto-{self._name}-speech", daemon=True)
                self._worker.start()
            self._cond.notify_all()

    def _work(self) -> None:
        """Turns queued text and files into speech, one job at a time, a sentence at a time (speech thread)."""
        while True:
            with self._cond:
                while not self._jobs and not self._cancel.is_set():
                    self._cond.wait(0.5)
                if self._cancel.is_set():
                    return
                kind, value = self._jobs.popleft()
                generation = self._generation
                utterance = next(self._utterances)
                self._worker_busy = True
            events: list[dict[str, Any]] = []
            try:
                for samples, text in self._speech_of(kind, value):
                    with self._cond:
                        if generation != self._generation or self._cancel.is_set():
                            break
                        if samples.size:
                            self._speech.append(_Piece(samples, utterance, text))
                            self._cond.notify_all()
            except DittoError as exc:
                events.append({"type": "error", "message": str(exc), "fatal": False})
            except Exception as exc:  # one bad utterance must not end the session
                log.error("%s: speech failed", self._name, exc_info=exc)
                events.append({"type": "error", "message": "That could not be spoken because of a server error.",
                               "fatal": False})
            finally:
                with self._cond:
                    self._worker_busy = False
                    self._maybe_idle(events)
                self._emit(events)

    def _speech_of(self, kind: str, value: Any) -> Iterator[tuple[np.ndarray, str | None]]:
        """The samples of one job: a file's whole speech, or a text's sentences (with the voice's pause between)."""
        if kind == "samples":
            samples, text = value
            yield samples, text
        elif kind == "file":
            if self._read_speech is None:
                raise DittoError("This session cannot play speech files.")
            yield self._read_speech(value), None
        else:
            if self._voice is None:
                raise DittoError("Speech from text is not available on this server.")
            from ditto_demo.speech import SENTENCE_GAP_SECONDS
            from ditto_demo.speech.text import split_first_clause

            voice = self._voice()
            sentences = voice.sentences(value)
            gap = np.zeros(round(SENTENCE_GAP_SECONDS * SAMPLE_RATE), np.float32)
            for number, sentence in enumerate(sentences):
                # The first sentence's first clause goes ahead on its own: the first words are heard after a
                # short synthesis, while the rest of the sentence is synthesized as it plays.
                parts = split_first_clause(sentence) if number == 0 else [sentence]
                for part_number, part in enumerate(parts):
                    samples = np.asarray(voice.synthesize(part), np.float32).reshape(-1)
                    if part_number + 1 == len(parts) and number + 1 < len(sentences):
                        samples = np.concatenate([samples, gap])
                    yield samples, part
