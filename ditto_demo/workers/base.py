"""What every worker pool offers, whatever runs the workers: the interface, a worker's identity and state, the
errors a visitor may see, and the scheduling shared by the local and the Ray pool.

A pool owns a fixed set of *slots* (one per worker position: a device, or a Ray replica number). Each slot holds
one worker at a time; a worker that dies is replaced in the same slot, so its index stays and only its pid changes.
A request takes a free, ready slot for its whole run (a live stream keeps it until the stream ends), so two requests
never share a worker and never share a pipeline's per-run state; the pool's capacity is its number of slots.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, NoReturn

import numpy as np

from ditto_demo.errors import DittoError
from ditto_demo.pipeline.config import ReleasedDefaults
from ditto_demo.pipeline.controls import Controls
from ditto_demo.pipeline.pipeline import ProgressFn, Result, StreamFrame
from ditto_demo.pipeline.runner import CancelledError
from ditto_demo.workers.jobs import FilePayload, Job, PreviewData

__all__ = [
    "WORKER_STOPPED",
    "NoWorkerError",
    "PoolResult",
    "SlotPool",
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


class WorkerPool(ABC):
    """Workers behind the app's service: each request runs on one free worker; see the package docstring."""

    @property
    @abstractmethod
    def capacity(self) -> int:
        """How many requests can run at once (the number of worker slots)."""

    @abstractmethod
    def generate(self, source: str | Path, audio: str | Path, controls: Controls, *, folder: Path,
                 progress: ProgressFn | None = None, cancel: Any = None) -> PoolResult:
        """One video (``folder/ditto.mp4``), as :meth:`Pipeline.generate`."""

    @abstractmethod
    def compare(self, source: str | Path, audio: str | Path, variants: list[tuple[str, Controls]], *,
                folder: Path, name: str = "ditto-compare.mp4", columns: int | None = None,
                progress: ProgressFn | None = None, cancel: Any = None) -> PoolResult:
        """The variants tiled in one video (``folder/name``), as :meth:`Pipeline.compare` (emotion grid included)."""

    @abstractmethod
    def stream(self, source: str | Path, chunks: Iterable[np.ndarray], controls: Controls, *,
               cancel: Any = None) -> WorkerStream:
        """Frames while audio chunks arrive, all from one worker, as :meth:`Pipeline.stream`."""

    @abstractmethod
    def preview(self, source: str | Path, controls: Controls) -> PreviewData:
        """The portrait's first registered frame, face box and crop (the page's crop preview)."""

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
    :meth:`_execute` (run a job on a slot's worker), :meth:`_open_stream`, :meth:`_stop` and :meth:`_alive`.
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
    def _open_stream(self, slot: Slot, source: FilePayload, chunks: Iterable[np.ndarray], controls: Controls,
                     cancel: Any) -> Iterator[StreamFrame]:
        """Frames of a stream on ``slot``'s worker; raises :class:`WorkerDiedError` if it dies."""

    @abstractmethod
    def _preview(self, slot: Slot, source: FilePayload, controls: Controls) -> PreviewData: ...

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

    def _release(self, slot: Slot, *, served: bool) -> None:
        with self._cond:
            if slot.state == "busy":
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
            self._release(slot, served=served)
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
                 progress: ProgressFn | None = None, cancel: Any = None) -> PoolResult:
        job = Job(kind="generate", source=self._payload(source), audio=self._payload(audio),
                  variants=(("", controls),), output_name="ditto.mp4", id=uuid.uuid4().hex)
        return self._run(job, folder, progress, cancel)

    def compare(self, source: str | Path, audio: str | Path, variants: list[tuple[str, Controls]], *,
                folder: Path, name: str = "ditto-compare.mp4", columns: int | None = None,
                progress: ProgressFn | None = None, cancel: Any = None) -> PoolResult:
        job = Job(kind="compare", source=self._payload(source), audio=self._payload(audio),
                  variants=tuple(variants), output_name=name, columns=columns, id=uuid.uuid4().hex)
        return self._run(job, folder, progress, cancel)

    def stream(self, source: str | Path, chunks: Iterable[np.ndarray], controls: Controls, *,
               cancel: Any = None) -> WorkerStream:
        slot = self._acquire("stream", cancel)
        try:
            frames = self._open_stream(slot, self._payload(source), chunks, controls, cancel)
        except BaseException:
            self._release(slot, served=False)
            raise
        return WorkerStream(self._pinned(slot, frames, cancel), slot.worker_id)

    def _pinned(self, slot: Slot, frames: Iterator[StreamFrame], cancel: Any) -> Iterator[StreamFrame]:
        """The stream's frames; the slot stays busy until the stream ends, fails or is closed."""
        generation = slot.generation
        try:
            yield from frames
        except WorkerDiedError as exc:
            self._lost(slot, generation, exc, cancel)
        finally:
            close = getattr(frames, "close", None)
            if close is not None:
                close()
            self._release(slot, served=True)

    def preview(self, source: str | Path, controls: Controls) -> PreviewData:
        slot = self._acquire("preview", None)
        generation = slot.generation
        try:
            return self._preview(slot, self._payload(source), controls)
        except WorkerDiedError as exc:
            self._lost(slot, generation, exc, None)
        finally:
            self._release(slot, served=False)

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

