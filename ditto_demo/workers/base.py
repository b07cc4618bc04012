"""What every worker pool offers, whatever runs the workers: the interface, a worker's identity and state, the
errors a visitor may see, and the scheduling shared by the local and the Ray pool.

A pool owns a fixed set of *slots* (one per worker position: a device, or a Ray replica number). Each slot holds
one worker at a time; a worker that dies is replaced in the same slot, so its index stays and only its pid changes.
A request takes a free, ready slot for its whole run (a live stream keeps it until the stream ends), so two requests
never share a worker and never share a pipeline's per-run state; the pool's capacity is its number of slots.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
import uuid
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, NoReturn

import numpy as np

from ditto_demo.errors import DittoError
from ditto_demo.pipeline.config import ReleasedDefaults
from ditto_demo.pipeline.controls import Controls
from ditto_demo.pipeline.live_controls import LiveControls
from ditto_demo.pipeline.pipeline import ProgressFn, Result, StreamFrame
from ditto_demo.pipeline.runner import CancelledError
from ditto_demo.workers.jobs import FilePayload, Job, PreviewData, StreamRequest

__all__ = [
    "WORKER_STOPPED",
    "NoWorkerError",
    "PinnedWorker",
    "PoolResult",
    "SlotPool",
    "StreamChannel",
    "WorkerId",
    "WorkerInfo",
    "WorkerPool",
    "WorkerState",
    "WorkerStoppedError",
    "WorkerStream",
]

log = logging.getLogger(__name__)

#: What a visitor reads when the worker running their request died (killed, out of memory, crashed).
WORKER_STOPPED = "The worker running your video stopped; please try again."

WorkerState = Literal["starting", "ready", "busy", "failed"]


class WorkerStoppedError(DittoError):
    """The worker running a request died; the request is lost, the worker is being replaced."""

    def __init__(self, message: str = WORKER_STOPPED) -> None:
        super().__init__(message)


class NoWorkerError(DittoError):
    """No worker can take requests: every one failed to start (the message gives their reasons)."""


@dataclass(frozen=True)
class WorkerId:
    """Who ran a request: the host, the device, and the worker's own index (two workers on one device differ)."""

    host: str
    device: str
    index: int

    def __str__(self) -> str:
        return f"{self.host}/{self.device}/#{self.index}"

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, for reports."""
        return {"host": self.host, "device": self.device, "index": self.index, "id": str(self)}


@dataclass(frozen=True)
class WorkerInfo:
    """A snapshot of one worker for ``doctor`` and the System panel."""

    id: WorkerId
    state: WorkerState
    #: Why a failed worker failed (one sentence), or what a starting one waits for.
    reason: str | None = None
    pid: int | None = None
    #: Requests finished by this slot (all its workers together), and how often its worker was replaced.
    served: int = 0
    restarts: int = 0
    #: ``generate``, ``compare`` or ``stream`` while busy.
    task: str | None = None

    def line(self) -> str:
        """One line of the workers' table."""
        extra = f" pid {self.pid}" if self.pid else ""
        extra += f", {self.served} served" + (f", {self.restarts} restart(s)" if self.restarts else "")
        what = f" ({self.task})" if self.task else ""
        why = f": {self.reason}" if self.reason else ""
        return f"{self.id!s:<28} {self.state}{what}{why} [{extra.strip(', ')}]"


@dataclass(frozen=True)
class PoolResult:
    """A finished request: the pipeline's result (its video already in the request folder) and who ran it."""

    result: Result
    worker: WorkerId


class WorkerStream(Iterator[StreamFrame]):
    """The frames of one live stream, pinned to :attr:`worker` until the stream ends; ``close()`` stops it."""

    def __init__(self, frames: Iterator[StreamFrame], worker: WorkerId) -> None:
        self._frames = frames
        self.worker = worker

    def __iter__(self) -> WorkerStream:
        return self

    def __next__(self) -> StreamFrame:
        return next(self._frames)

    def close(self) -> None:
        close = getattr(self._frames, "close", None)
        if close is not None:
            close()


class PinnedWorker(ABC):
    """One worker held for one live session: ``prepare_stream`` then ``stream``, both on :attr:`worker` (the shape
    of :class:`~ditto_demo.pipeline.Pipeline` a live avatar animates with). The worker is taken at the first call
    (waiting for a free one) and handed back when the stream ends, on :meth:`close`, or when this object is
    garbage-collected, whichever comes first."""

    #: The pinned worker (``None`` until the first call took one).
    worker: WorkerId | None

    @abstractmethod
    def prepare_stream(self, source: str | Path, controls: Controls | None = None) -> None:
        """Register the portrait and load what the stream needs, on the pinned worker."""

    @abstractmethod
    def stream(self, source: str | Path, audio_chunks: Iterable[np.ndarray], controls: Controls | None = None, *,
               cancel: threading.Event | None = None, live: LiveControls | None = None,
               skip_frame: Callable[[int], bool] | None = None, low_latency: bool = True) -> WorkerStream:
        """As :meth:`Pipeline.stream`: ``live`` changes reach the worker as they happen, ``skip_frame`` is asked
        here (the worker waits for the answer before rendering the frame)."""

    @abstractmethod
    def close(self) -> None:
        """Hand the worker back (stopping a stream still running on it)."""

    def __enter__(self) -> PinnedWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class WorkerPool(ABC):
    """Workers behind the app's service: each request runs on one free worker; see the package docstring."""

    @property
    @abstractmethod
    def capacity(self) -> int:
        """How many requests can run at once (the number of worker slots)."""

    @abstractmethod
    def generate(self, source: str | Path, audio: str | Path, controls: Controls, *, folder: Path,
                 name: str = "ditto.mp4", progress: ProgressFn | None = None, cancel: Any = None) -> PoolResult:
        """One video (``folder/name``), as :meth:`Pipeline.generate`."""

    @abstractmethod
    def compare(self, source: str | Path, audio: str | Path, variants: list[tuple[str, Controls]], *,
                folder: Path, name: str = "ditto-compare.mp4", columns: int | None = None,
                progress: ProgressFn | None = None, cancel: Any = None) -> PoolResult:
        """The variants tiled in one video (``folder/name``), as :meth:`Pipeline.compare` (emotion grid included)."""

    @abstractmethod
    def pin(self, cancel: Any = None) -> PinnedWorker:
        """A free worker held for one live session (waits for one, like a request)."""

    def stream(self, source: str | Path, chunks: Iterable[np.ndarray], controls: Controls | None = None, *,
               cancel: Any = None) -> WorkerStream:
        """Frames while audio chunks arrive, all from one worker, as :meth:`Pipeline.stream`; the worker is held
        until the stream ends or is closed."""
        return self.pin(cancel).stream(source, chunks, controls, cancel=cancel)

    @abstractmethod
    def preview(self, source: str | Path, controls: Controls) -> PreviewData:
        """The portrait's first registered frame, face box and crop (the page's crop preview)."""

    @abstractmethod
    def prepare(self, source: str | Path, controls: Controls) -> None:
        """Register the portrait on a free worker (a portrait without a face is refused here, in words)."""

    @abstractmethod
    def defaults(self, timeout: float = 0.0) -> ReleasedDefaults | None:
        """The checkpoint's released defaults as a ready worker read them (``None`` if none is ready in time)."""

    @abstractmethod
    def workers(self) -> list[WorkerInfo]:
        """Every worker's identity and state."""

    @abstractmethod
    def close(self) -> None:
        """Stop every worker (running requests end with :class:`WorkerStoppedError` or a cancellation)."""

    # Shared conveniences.

    def usable(self) -> bool:
        """Whether any worker is, or may become, ready (not every one failed)."""
        return any(info.state != "failed" for info in self.workers())

    def problem(self) -> str | None:
        """When no worker can run: the workers' reasons, one sentence each; else ``None``."""
        infos = self.workers()
        if not infos or any(info.state != "failed" for info in infos):
            return None
        reasons = sorted({info.reason or "unknown reason" for info in infos})
        return "No worker could start: " + " ".join(reasons)

    def describe(self) -> str:
        """The workers as lines of text (``doctor`` and the System panel)."""
        lines = [info.line() for info in self.workers()]
        return "\n".join(lines) if lines else "(no workers)"

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ------------------------------------------------------------------------------------------------- scheduling


class WorkerDiedError(Exception):
    """Raised by a pool's back end when the worker process / actor running a request is gone."""


@dataclass
class Slot:
    """One worker position; ``handle`` is the back end's (a process, an actor). Guarded by the pool's lock."""

    index: int
    device: str
    host: str = field(default_factory=socket.gethostname)
    state: WorkerState = "starting"
    reason: str | None = None
    pid: int | None = None
    handle: Any = None
    served: int = 0
    restarts: int = 0
    task: str | None = None
    defaults: ReleasedDefaults | None = None
    #: Bumped on each replacement, so a late message from a replaced worker is recognised and ignored.
    generation: int = 0

    @property
    def worker_id(self) -> WorkerId:
        return WorkerId(self.host, self.device, self.index)

    def info(self) -> WorkerInfo:
        return WorkerInfo(self.worker_id, self.state, self.reason, self.pid, self.served, self.restarts, self.task)


def cancelled(cancel: Any) -> bool:
    """Whether a request's cancel event (a ``threading.Event``, or ``None``) is set."""
    return cancel is not None and cancel.is_set()


class SlotPool(WorkerPool):
    """The scheduling of a pool: slots, waiting for a free ready worker, replacing dead ones.

    A back end implements :meth:`_start` (start a worker in a slot, in the background, then call :meth:`_started`),
    :meth:`_execute` (run a job on a slot's worker), :meth:`_open_stream` (a :class:`StreamChannel`), :meth:`_call`,
    :meth:`_stop` and :meth:`_alive`; the stream's threads (audio, control changes, frame admission) are here.
    """

    #: How long a request waits for a worker before it is refused (starting workers included).
    WAIT_SECONDS = 600.0

    def __init__(self) -> None:
        self._slots: list[Slot] = []
        self._cond = threading.Condition()
        self._closed = False

    # Back end.

    @abstractmethod
    def _start(self, slot: Slot) -> None:
        """Start a worker for ``slot`` (state ``starting``); call :meth:`_started` when it is ready or failed."""

    @abstractmethod
    def _execute(self, slot: Slot, job: Job, folder: Path, progress: ProgressFn | None, cancel: Any) -> Result:
        """Run ``job`` on ``slot``'s worker; the video lands in ``folder / job.output_name``. Raises
        :class:`WorkerDiedError` when the worker dies, the job's own error otherwise."""

    @abstractmethod
    def _open_stream(self, slot: Slot, request: StreamRequest) -> StreamChannel:
        """Start ``request`` on ``slot``'s worker; raises :class:`WorkerDiedError` if it is gone."""

    @abstractmethod
    def _call(self, slot: Slot, name: str, source: FilePayload, controls: Controls) -> Any:
        """A short request on ``slot``'s worker (``preview``, ``prepare``; see :meth:`WorkerRuntime.call`)."""

    @abstractmethod
    def _stop(self, slot: Slot) -> None:
        """Stop ``slot``'s worker now (it may already be gone)."""

    @abstractmethod
    def _alive(self, slot: Slot) -> bool:
        """Whether ``slot``'s worker still runs (checked before handing it a request)."""

    @abstractmethod
    def _payload(self, path: str | Path) -> FilePayload:
        """How a file travels to this back end's workers (a path on one machine, bytes across machines)."""

    # Slots.

    def _add_slot(self, device: str) -> Slot:
        with self._cond:
            slot = Slot(index=len(self._slots), device=device)
            self._slots.append(slot)
        self._start(slot)
        return slot

    def _started(self, slot: Slot, generation: int, *, pid: int | None = None, host: str | None = None,
                 device: str | None = None, defaults: ReleasedDefaults | None = None,
                 error: str | None = None) -> None:
        """A worker finished starting (``error`` set when it could not load): mark the slot ready or failed."""
        with self._cond:
            if slot.generation != generation or self._closed:
                return
            if error is not None:
                slot.state, slot.reason = "failed", error
                log.error("worker %s failed to start: %s", slot.worker_id, error)
            else:
                slot.state, slot.reason = "ready", None
                slot.pid = pid if pid is not None else slot.pid
                slot.host = host or slot.host
                slot.device = device or slot.device
                slot.defaults = defaults or slot.defaults
                log.info("worker %s ready (pid %s)", slot.worker_id, slot.pid)
            self._cond.notify_all()

    def _replace(self, slot: Slot, why: str) -> None:
        """The worker of ``slot`` died (or hung): stop what is left of it and start a new one in its place."""
        with self._cond:
            if self._closed:
                return
            log.warning("worker %s (pid %s) stopped (%s); starting a replacement", slot.worker_id, slot.pid, why)
            slot.generation += 1
            slot.restarts += 1
            slot.state, slot.reason, slot.task = "starting", f"replacing a worker that stopped ({why})", None
        try:
            self._stop(slot)
        except Exception:  # a dead worker may refuse to be stopped again; the new one starts regardless
            log.exception("could not stop the old worker of slot %d", slot.index)
        self._start(slot)

    def _acquire(self, task: str, cancel: Any) -> Slot:
        """A ready, idle slot, marked busy; waits while workers are busy or starting. A worker found dead (it died
        while idle) is replaced and another one is looked for."""
        deadline = time.monotonic() + self.WAIT_SECONDS
        while True:
            chosen: Slot | None = None
            with self._cond:
                if self._closed:
                    raise NoWorkerError("The workers are shutting down; please try again in a minute.")
                chosen = next((slot for slot in self._slots if slot.state == "ready"), None)
                if chosen is not None:
                    chosen.state, chosen.task = "busy", task
                else:
                    problem = self._problem_locked()
                    if problem is not None:
                        raise NoWorkerError(problem)
                    self._on_wait_locked()
                    self._cond.wait(0.25)
            if chosen is not None:
                if self._alive(chosen):  # asked outside the lock: for Ray it is a round trip
                    return chosen
                self._replace(chosen, "found dead while idle")
            if cancelled(cancel):
                raise CancelledError("cancelled while waiting for a worker")
            if time.monotonic() > deadline:
                raise NoWorkerError("Every worker stayed busy for too long; please try again later.")

    def _on_wait_locked(self) -> None:
        """Called (under the lock) while a request waits for a worker: a growing pool may add one here."""

    def _problem_locked(self) -> str | None:
        if self._slots and all(slot.state == "failed" for slot in self._slots):
            reasons = sorted({slot.reason or "unknown reason" for slot in self._slots})
            return "No worker could start: " + " ".join(reasons)
        if not self._slots:
            return "No worker is configured."
        return None

    def _release(self, slot: Slot, generation: int, *, served: bool) -> None:
        """A request is done with ``slot`` (a replaced worker's slot is left to its new worker)."""
        with self._cond:
            if slot.generation == generation and slot.state == "busy":
                slot.state, slot.task = "ready", None
            if served:
                slot.served += 1
            self._cond.notify_all()

    def _run(self, job: Job, folder: Path, progress: ProgressFn | None, cancel: Any) -> PoolResult:
        slot = self._acquire(job.kind, cancel)
        worker = slot.worker_id
        generation = slot.generation
        served = False
        try:
            result = self._execute(slot, job, folder, progress, cancel)
            served = True
        except WorkerDiedError as exc:
            self._lost(slot, generation, exc, cancel)
        finally:
            self._release(slot, generation, served=served)
        return PoolResult(replace(result, video=folder / job.output_name), worker)

    def _lost(self, slot: Slot, generation: int, exc: WorkerDiedError, cancel: Any) -> NoReturn:
        """The worker of ``slot`` died during a request: replace it (once), end the request with the sentence
        (or as cancelled, when the visitor had already pressed Stop)."""
        if slot.generation == generation:
            self._replace(slot, str(exc) or "died")
        if cancelled(cancel):
            raise CancelledError("cancelled") from None
        raise WorkerStoppedError() from None

    # WorkerPool.

    @property
    def capacity(self) -> int:
        with self._cond:
            return len(self._slots)

    def generate(self, source: str | Path, audio: str | Path, controls: Controls, *, folder: Path,
                 name: str = "ditto.mp4", progress: ProgressFn | None = None, cancel: Any = None) -> PoolResult:
        job = Job(kind="generate", source=self._payload(source), audio=self._payload(audio),
                  variants=(("", controls),), output_name=name, id=uuid.uuid4().hex)
        return self._run(job, folder, progress, cancel)

    def compare(self, source: str | Path, audio: str | Path, variants: list[tuple[str, Controls]], *,
                folder: Path, name: str = "ditto-compare.mp4", columns: int | None = None,
                progress: ProgressFn | None = None, cancel: Any = None) -> PoolResult:
        job = Job(kind="compare", source=self._payload(source), audio=self._payload(audio),
                  variants=tuple(variants), output_name=name, columns=columns, id=uuid.uuid4().hex)
        return self._run(job, folder, progress, cancel)

    def pin(self, cancel: Any = None) -> PinnedWorker:
        return _Pinned(self, cancel)

    def preview(self, source: str | Path, controls: Controls) -> PreviewData:
        return self._short("preview", source, controls)

    def prepare(self, source: str | Path, controls: Controls) -> None:
        self._short("prepare", source, controls)

    def _short(self, name: str, source: str | Path, controls: Controls) -> Any:
        slot = self._acquire(name, None)
        generation = slot.generation
        try:
            return self._call_on(slot, name, source, controls)
        finally:
            self._release(slot, generation, served=False)

    def _call_on(self, slot: Slot, name: str, source: str | Path, controls: Controls) -> Any:
        generation = slot.generation
        try:
            return self._call(slot, name, self._payload(source), controls)
        except WorkerDiedError as exc:
            self._lost(slot, generation, exc, None)

    def _frames(self, slot: Slot, channel: StreamChannel, chunks: Iterable[np.ndarray], cancel: Any,
                live: LiveControls | None, skip_frame: Callable[[int], bool] | None) -> Iterator[StreamFrame]:
        """Drive one stream: a thread sends the audio, another the control changes; here the worker's messages
        become frames, and its admission questions are answered with ``skip_frame``."""
        generation = slot.generation
        stop = threading.Event()
        feed_errors: list[BaseException] = []
        threading.Thread(target=_feed_audio, args=(channel, chunks, stop, feed_errors),
                         name=f"worker-{slot.index}-audio", daemon=True).start()
        if live is not None:
            threading.Thread(target=_forward_controls, args=(channel, live, stop),
                             name=f"worker-{slot.index}-controls", daemon=True).start()
        finished = False
        try:
            for item in channel.items(cancel):
                if item[0] == "frame":
                    _, index, timestamp, image = item
                    yield StreamFrame(index=index, timestamp=timestamp, image=image, produced_at=time.perf_counter())
                elif item[0] == "skip?":
                    channel.answer(item[1], bool(skip_frame(item[1])) if skip_frame is not None else False)
                elif item[0] == "done":
                    finished = True
                    break
                elif item[0] == "error":
                    finished = True
                    raise feed_errors[0] if feed_errors else item[1]
            finished = True
            if feed_errors:
                raise feed_errors[0]
        except WorkerDiedError as exc:
            finished = True
            self._lost(slot, generation, exc, cancel)
        finally:
            stop.set()
            if not finished:
                self._abandon(slot, channel, generation)

    def _abandon(self, slot: Slot, channel: StreamChannel, generation: int) -> None:
        """The reader stopped before the stream ended (closed, or failed): stop the worker's stream and wait for
        its last word, so the next request finds the worker idle; a worker that does not answer is replaced."""
        stop = threading.Event()
        stop.set()
        try:
            for item in channel.items(stop):
                if item[0] in ("done", "error"):
                    return
                if item[0] == "skip?":
                    channel.answer(item[1], True)
        except WorkerDiedError as exc:
            if slot.generation == generation:
                self._replace(slot, str(exc))

    def defaults(self, timeout: float = 0.0) -> ReleasedDefaults | None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for slot in self._slots:
                    if slot.defaults is not None:
                        return slot.defaults
                remaining = deadline - time.monotonic()
                if remaining <= 0 or all(slot.state == "failed" for slot in self._slots):
                    return None
                self._cond.wait(min(remaining, 0.25))

    def workers(self) -> list[WorkerInfo]:
        with self._cond:
            return [slot.info() for slot in self._slots]

    def wait_ready(self, timeout: float = 120.0, *, count: int | None = None) -> list[WorkerInfo]:
        """Wait until ``count`` workers (default: every one that did not fail) are ready; returns the snapshot."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                ready = sum(slot.state in ("ready", "busy") for slot in self._slots)
                starting = sum(slot.state == "starting" for slot in self._slots)
                if (count is not None and ready >= count) or (count is None and starting == 0):
                    return [slot.info() for slot in self._slots]
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    states = ", ".join(f"{slot.worker_id}: {slot.state}" for slot in self._slots)
                    raise TimeoutError(f"workers not ready after {timeout:.0f} s ({states})")
                self._cond.wait(min(remaining, 0.25))

    def close(self) -> None:
        with self._cond:
            if self._closed:
                return
            self._closed = True
            slots = list(self._slots)
            self._cond.notify_all()
        for slot in slots:
            try:
                self._stop(slot)
            except Exception:  # closing must reach every worker even if one refuses
                log.exception("could not stop worker %s", slot.worker_id)



class StreamChannel(ABC):
    """A back end's line to one stream on one worker (messages as in :mod:`ditto_demo.workers.child`)."""

    @abstractmethod
    def chunk(self, seq: int, samples: np.ndarray) -> None: ...

    @abstractmethod
    def end(self, count: int) -> None: ...

    @abstractmethod
    def controls(self, version: int, controls: Controls) -> None: ...

    @abstractmethod
    def answer(self, index: int, skip: bool) -> None: ...

    @abstractmethod
    def cancel(self) -> None: ...

    @abstractmethod
    def items(self, cancel: Any) -> Iterator[tuple[Any, ...]]:
        """``("frame", index, timestamp, image)``, ``("skip?", index)``, then ``("done",)`` or ``("error", exc)``;
        sends the cancel once ``cancel`` is set; raises :class:`WorkerDiedError` when the worker dies or ignores
        the cancel for too long."""


#: How often a stream's control channel is checked for changes to forward.
_CONTROLS_POLL = 0.05


def _feed_audio(channel: StreamChannel, chunks: Iterable[np.ndarray], stop: threading.Event,
                errors: list[BaseException]) -> None:
    """Send the audio pieces as they come, numbered, then the end marker (nothing after the stream stopped)."""
    count = 0
    try:
        for chunk in chunks:
            if stop.is_set():
                return
            channel.chunk(count, np.asarray(chunk))
            count += 1
        if not stop.is_set():
            channel.end(count)
    except (OSError, WorkerDiedError):
        return  # the worker is gone; the frame reader reports it
    except Exception as exc:  # a failing audio source ends the stream with its error
        errors.append(exc)
        with contextlib.suppress(OSError, WorkerDiedError):
            channel.cancel()


def _forward_controls(channel: StreamChannel, live: LiveControls, stop: threading.Event) -> None:
    """Send each new snapshot of the viewer's live controls to the worker's mirror of them."""
    sent = live.snapshot().version
    while not stop.wait(_CONTROLS_POLL):
        snapshot = live.snapshot()
        if snapshot.version != sent:
            sent = snapshot.version
            try:
                channel.controls(snapshot.version, snapshot.controls)
            except (OSError, WorkerDiedError):
                return


class _Pinned(PinnedWorker):
    """A pinned worker, taken at its first use (on the caller's thread: the live server asks for one on its event
    loop, where waiting for a free worker would block)."""

    def __init__(self, pool: SlotPool, cancel: Any = None) -> None:
        self._pool = pool
        self._cancel = cancel
        self._lock = threading.Lock()
        self._slot: Slot | None = None
        self._generation = -1
        self.worker: WorkerId | None = None  # type: ignore[assignment]
        self._stream: WorkerStream | None = None
        self._channel: StreamChannel | None = None
        self._iterated = False
        self._released = False
        self._finalizer: weakref.finalize | None = None

    def _take(self) -> Slot:
        with self._lock:
            if self._released or self._channel is not None:
                raise DittoError("This live session's worker was already used or handed back; start a new session.")
            slot = self._slot
        if slot is None:
            slot = self._pool._acquire("live", self._cancel)
            with self._lock:
                self._slot, self._generation, self.worker = slot, slot.generation, slot.worker_id
                self._finalizer = weakref.finalize(self, self._pool._release, slot, slot.generation, served=False)
        if slot.generation != self._generation:
            raise WorkerStoppedError()
        return slot

    def prepare_stream(self, source: str | Path, controls: Controls | None = None) -> None:
        slot = self._take()
        try:
            self._pool._call_on(slot, "prepare", source, controls or Controls())
        except BaseException:
            self.close()
            raise

    def stream(self, source: str | Path, audio_chunks: Iterable[np.ndarray], controls: Controls | None = None, *,
               cancel: threading.Event | None = None, live: LiveControls | None = None,
               skip_frame: Callable[[int], bool] | None = None, low_latency: bool = True) -> WorkerStream:
        slot = self._take()
        initial = live.snapshot().controls if live is not None else (controls or Controls())
        request = StreamRequest(id=uuid.uuid4().hex, source=self._pool._payload(source), controls=initial,
                                live=live is not None, skip=skip_frame is not None, low_latency=low_latency)
        try:
            self._channel = self._pool._open_stream(slot, request)
        except WorkerDiedError as exc:
            self.close()
            self._pool._lost(slot, self._generation, exc, cancel)
        except BaseException:
            self.close()
            raise
        frames = self._pool._frames(slot, self._channel, audio_chunks, cancel, live, skip_frame)
        self._stream = WorkerStream(self._until_end(frames), slot.worker_id)
        return self._stream

    def _until_end(self, frames: Iterator[StreamFrame]) -> Iterator[StreamFrame]:
        self._iterated = True
        try:
            yield from frames
        finally:
            frames.close()  # type: ignore[attr-defined]
            self.close(served=True)

    def close(self, *, served: bool = False) -> None:
        stream, channel, slot = self._stream, self._channel, self._slot
        if stream is not None and not served:
            self._stream = None
            stream.close()  # a running stream ends (its end hands the worker back)
            if channel is not None and slot is not None and not self._iterated:  # opened, never read: stop it
                self._pool._abandon(slot, channel, self._generation)
        with self._lock:
            if self._released:
                return
            self._released = True
        if self._finalizer is not None:
            self._finalizer.detach()
        if slot is not None:
            self._pool._release(slot, self._generation, served=served)
