"""``DITTO_WORKERS=ray``: the same pool on a Ray cluster, one Ray actor per worker.

Why actors and not Ray Serve deployments: a worker here is a long-lived process that holds a loaded pipeline, runs
one request at a time and keeps a live session pinned to itself until it ends; that is exactly an actor, and the
app already does the routing (a free worker per request) and the queueing (Gradio's). Serve would add an HTTP
proxy and a controller (~0.5 GB more on a small node, measured), applications that outlive the app unless deleted,
and its own routing that knows nothing of pinned live sessions. Actors are Ray's maintained core.

Each actor reserves one GPU (or ``1 / DITTO_WORKERS_PER_DEVICE`` of one) or, as a CPU worker, one CPU; Ray places
it on any node with room, and the actor resolves and caches the checkpoints on its own node (``DITTO_CHECKPOINTS``
there, else the Hub cache). Portrait and speech travel as bytes (nodes share no disk); the video comes back as bytes
into the request folder, progress and live frames through Ray's streaming generators, the live audio as numbered
pieces (an actor may run two calls at once, so order is restored on the worker). Stop reaches the actor as a
``cancel`` call. A dead actor ends its request with the sentence and is replaced by a new actor in the same slot;
an actor that cannot load is marked failed and killed, not retried.
"""

from __future__ import annotations

import logging
import os
import queue
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # otherwise Ray tries to reach the internet at start

import ray  # (only this module imports Ray, and only DITTO_WORKERS=ray imports this module)
from ray.exceptions import GetTimeoutError, RayActorError

from ditto_demo.errors import DittoError
from ditto_demo.pipeline.controls import Controls
from ditto_demo.pipeline.pipeline import ProgressFn, Result
from ditto_demo.workers.base import Slot, SlotPool, StreamChannel, WorkerDiedError, cancelled
from ditto_demo.workers.jobs import (
    FilePayload,
    Job,
    JobBook,
    RemoteSkip,
    StreamRequest,
    WorkerConfig,
    WorkerRuntime,
    portable_error,
)

__all__ = ["RayPool", "RayWorker"]

log = logging.getLogger(__name__)

#: Progress messages sent from a worker at most this often (each is a Ray object).
_PROGRESS_EVERY = 0.2


class RayWorker:
    """The actor's class (wrapped by ``ray.remote`` in :class:`RayPool`): one pipeline, its jobs, what they receive."""

    def __init__(self, config: WorkerConfig) -> None:
        self.runtime = WorkerRuntime(config)
        self.error: str | None = None
        self.defaults = None
        try:
            self.defaults = self.runtime.load()
        except Exception as exc:  # reported by hello(); the pool marks this worker failed and kills it
            logging.getLogger(__name__).exception("could not load the pipeline")
            self.error = str(exc) or type(exc).__name__
        self.jobs = JobBook()
        self.work = Path(tempfile.mkdtemp(prefix="ditto-ray-worker-"))

    def hello(self) -> dict[str, Any]:
        """Who and where this worker is, and whether it loaded."""
        gpus = ray.get_gpu_ids()
        return {"pid": os.getpid(), "host": socket.gethostname(), "device": f"cuda:{gpus[0]}" if gpus else "cpu",
                "defaults": self.defaults, "error": self.error}

    def ping(self) -> bool:
        return True

    # What a running job receives (each call may run on its own actor thread; JobBook creates state on first use).

    def cancel(self, job_id: str) -> None:
        state = self.jobs.get(job_id)
        if state is not None:
            state.cancel.set()

    def push(self, job_id: str, seq: int, chunk: np.ndarray) -> None:
        state = self.jobs.get(job_id)
        if state is not None:
            state.feed.put(seq, chunk)

    def end(self, job_id: str, count: int) -> None:
        state = self.jobs.get(job_id)
        if state is not None:
            state.feed.end(count)

    def controls(self, job_id: str, version: int, controls: Controls) -> None:
        state = self.jobs.get(job_id)
        if state is not None:
            state.apply_controls(version, controls)

    def answer(self, job_id: str, index: int, skip: bool) -> None:
        state = self.jobs.get(job_id)
        if state is not None and state.skip is not None:
            state.skip.answer(index, skip)

    # Jobs.

    def _drain(self, job_id: str, work: Any, items: queue.Queue[tuple[Any, ...]]) -> Iterator[tuple[Any, ...]]:
        """Run ``work`` on a thread of its own and yield what it queues, up to its ``done`` or ``error``."""

        def run() -> None:
            try:
                work()
            except Exception as exc:  # goes back to the app, which raises it there
                items.put(("error", portable_error(exc)))

        threading.Thread(target=run, name=f"job-{job_id[:8]}", daemon=True).start()
        try:
            while True:
                item = items.get()
                yield item
                if item[0] in ("done", "error"):
                    return
        finally:
            self.jobs.close(job_id)
            shutil.rmtree(self.work / job_id, ignore_errors=True)

    def run(self, job: Job) -> Iterator[tuple[Any, ...]]:
        """``("progress", stage, fraction, text)``… then ``("done", result, video bytes)`` or ``("error", exc)``."""
        state = self.jobs.get(job.id)
        folder = self.work / job.id
        folder.mkdir(parents=True, exist_ok=True)
        items: queue.Queue[tuple[Any, ...]] = queue.Queue()
        last = {"stage": "", "at": 0.0}

        def progress(stage: str, fraction: float, text: str) -> None:
            now = time.monotonic()
            if stage != last["stage"] or now - last["at"] >= _PROGRESS_EVERY:
                last.update(stage=stage, at=now)
                items.put(("progress", stage, fraction, text))

        def work() -> None:
            if state is None:
                raise DittoError("This request had already ended.")
            result = self.runtime.run(job, folder, folder / "inputs", progress, state.cancel)
            items.put(("done", result, result.video.read_bytes()))

        yield from self._drain(job.id, work, items)

    def stream(self, request: StreamRequest) -> Iterator[tuple[Any, ...]]:
        """``("frame", index, timestamp, image)`` and ``("skip?", index)``… then ``("done",)`` or ``("error",
        exc)``."""
        state = self.jobs.get(request.id)
        items: queue.Queue[tuple[Any, ...]] = queue.Queue()

        def work() -> None:
            if state is None:
                raise DittoError("This live stream had already ended.")
            if request.skip:
                state.skip = RemoteSkip(lambda index: items.put(("skip?", index)), state.cancel)
            for frame in self.runtime.stream(request, self.work / request.id, state):
                items.put(("frame", frame.index, frame.timestamp, frame.image))
            items.put(("done",))

        yield from self._drain(request.id, work, items)

    def call(self, name: str, source: FilePayload, controls: Controls) -> tuple[Any, ...]:
        job_id = uuid.uuid4().hex
        try:
            return ("done", self.runtime.call(name, source, self.work / job_id, controls))
        except Exception as exc:  # goes back to the app, which raises it there
            return ("error", portable_error(exc))
        finally:
            shutil.rmtree(self.work / job_id, ignore_errors=True)


class RayPool(SlotPool):
    """Workers as Ray actors. ``address``: ``auto`` (join this machine's cluster), ``local`` (start an embedded
    one, stopped by :meth:`close`) or ``host:port``; ``workers``: ``(min, max)`` actors."""

    LOAD_SECONDS = 900.0
    CANCEL_GRACE = 20.0
    POLL_SECONDS = 0.2
    #: Calls one actor may run at once: the job, plus cancels, audio pieces and pings beside it.
    ACTOR_THREADS = 8

    def __init__(self, config: WorkerConfig, *, address: str = "auto", workers: tuple[int, int] = (1, 1),
                 devices: Sequence[str] = (), per_device: int = 1) -> None:
        super().__init__()
        self._owns_ray = False
        if not ray.is_initialized():
            try:
                if address == "local":
                    ray.init(include_dashboard=False, logging_level=logging.WARNING)
                else:
                    ray.init(address=address, logging_level=logging.WARNING)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                where = "start a local Ray cluster" if address == "local" else f"join the Ray cluster at {address!r}"
                raise DittoError(f"Could not {where} ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
                                 "check DITTO_RAY_ADDRESS and that `ray start` runs on the head node.") from exc
            self._owns_ray = True
        gpus = ray.cluster_resources().get("GPU", 0)
        self._use_gpu = gpus > 0 and tuple(devices) != ("cpu",)
        if self._use_gpu:
            self._config = replace(config, device="cuda")
            self._options: dict[str, Any] = {"num_cpus": 1, "num_gpus": 1 / per_device}
        else:
            self._config = replace(config, device="cpu", threads=config.threads or 1)
            self._options = {"num_cpus": 1}
        self._actor_class = ray.remote(RayWorker).options(max_concurrency=self.ACTOR_THREADS, max_restarts=0,
                                                          **self._options)
        self._min, self._max = workers
        log.info("Ray pool on %s: %d-%d %s workers", address, self._min, self._max, "GPU" if self._use_gpu else "CPU")
        for _ in range(self._min):
            self._add_slot("gpu" if self._use_gpu else "cpu")

    # ------------------------------------------------------------------------------------------- actors

    def _start(self, slot: Slot) -> None:
        with self._cond:
            generation = slot.generation
            slot.reason = "waiting for Ray to place and load it"
        actor = self._actor_class.remote(self._config)
        with self._cond:
            slot.handle, slot.pid = actor, None
        threading.Thread(target=self._await_start, args=(slot, actor, generation),
                         name=f"ray-worker-{slot.index}-start", daemon=True).start()

    def _await_start(self, slot: Slot, actor: Any, generation: int) -> None:
        try:
            hello = ray.get(actor.hello.remote(), timeout=self.LOAD_SECONDS)
        except GetTimeoutError:
            hello = {"error": f"not placed and loaded within {self.LOAD_SECONDS:.0f} s (is there a node with room?)"}
        except RayActorError as exc:
            hello = {"error": f"the worker died while loading ({type(exc).__name__})"}
        if hello.get("error"):
            self._kill(actor)
            self._started(slot, generation, error=f"could not load the checkpoints: {hello['error']}")
            return
        self._started(slot, generation, pid=hello["pid"], host=hello["host"], device=hello["device"],
                      defaults=hello["defaults"])

    @staticmethod
    def _kill(actor: Any) -> None:
        try:
            ray.kill(actor, no_restart=True)
        except Exception:  # already gone, or the cluster is down: nothing left to stop
            log.debug("could not kill an actor", exc_info=True)

    def _stop(self, slot: Slot) -> None:
        if slot.handle is not None:
            self._kill(slot.handle)

    def _alive(self, slot: Slot) -> bool:
        try:
            return bool(ray.get(slot.handle.ping.remote(), timeout=10))
        except (RayActorError, GetTimeoutError):
            return False

    def _payload(self, path: str | Path) -> FilePayload:
        return FilePayload.by_value(path)

    @property
    def capacity(self) -> int:
        """The range's maximum: the app may run that many requests at once (workers are added while they wait)."""
        with self._cond:
            return max(self._max, len(self._slots))

    def _on_wait_locked(self) -> None:
        """A request waits and every worker is busy: add one, up to the range's maximum."""
        if len(self._slots) < self._max and not any(slot.state == "starting" for slot in self._slots):
            slot = Slot(index=len(self._slots), device="gpu" if self._use_gpu else "cpu")
            self._slots.append(slot)
            log.info("all %d Ray workers busy: adding worker #%d", slot.index, slot.index)
            self._start(slot)

    def close(self) -> None:
        super().close()
        if self._owns_ray and ray.is_initialized():
            ray.shutdown()

    # ------------------------------------------------------------------------------------------ requests

    def _items(self, actor: Any, stream: Any, job_id: str, cancel: Any) -> Iterator[tuple[Any, ...]]:
        """The values a worker's streaming call yields; sends the cancel when ``cancel`` is set, kills a worker
        that ignores it; raises :class:`WorkerDiedError` when the actor dies."""
        cancel_sent: float | None = None
        while True:
            if cancel_sent is None and cancelled(cancel):
                cancel_sent = time.monotonic()
                actor.cancel.remote(job_id)
            if cancel_sent is not None and time.monotonic() - cancel_sent > self.CANCEL_GRACE:
                self._kill(actor)
                raise WorkerDiedError(f"did not stop within {self.CANCEL_GRACE:.0f} s of a cancel")
            ready, _ = ray.wait([stream], timeout=self.POLL_SECONDS)
            if not ready:
                continue
            try:
                item = ray.get(next(stream))
            except StopIteration:
                return
            except RayActorError as exc:
                raise WorkerDiedError(type(exc).__name__) from None
            yield item

    def _execute(self, slot: Slot, job: Job, folder: Path, progress: ProgressFn | None, cancel: Any) -> Result:
        actor = slot.handle
        stream = actor.run.options(num_returns="streaming").remote(job)
        for item in self._items(actor, stream, job.id, cancel):
            if item[0] == "progress":
                if progress is not None:
                    progress(*item[1:])
            elif item[0] == "done":
                _, result, video = item
                target = folder / job.output_name
                target.write_bytes(video)
                return replace(result, video=target)
            elif item[0] == "error":
                raise item[1]
        raise WorkerDiedError("the worker ended the request without a result")

    def _call(self, slot: Slot, name: str, source: FilePayload, controls: Controls) -> Any:
        try:
            item = ray.get(slot.handle.call.remote(name, source, controls), timeout=self.LOAD_SECONDS)
        except (RayActorError, GetTimeoutError) as exc:
            raise WorkerDiedError(type(exc).__name__) from None
        if item[0] == "error":
            raise item[1]
        return item[1]

    def _open_stream(self, slot: Slot, request: StreamRequest) -> StreamChannel:
        actor = slot.handle
        return _RayChannel(self, actor, request.id, actor.stream.options(num_returns="streaming").remote(request))


class _RayChannel(StreamChannel):
    """A stream on an actor: its streaming call brings frames and questions, actor calls take audio and answers."""

    def __init__(self, pool: RayPool, actor: Any, job_id: str, stream: Any) -> None:
        self._pool = pool
        self._actor = actor
        self._id = job_id
        self._stream = stream

    def chunk(self, seq: int, samples: np.ndarray) -> None:
        self._actor.push.remote(self._id, seq, samples)

    def end(self, count: int) -> None:
        self._actor.end.remote(self._id, count)

    def controls(self, version: int, controls: Controls) -> None:
        self._actor.controls.remote(self._id, version, controls)

    def answer(self, index: int, skip: bool) -> None:
        self._actor.answer.remote(self._id, index, skip)

    def cancel(self) -> None:
        self._actor.cancel.remote(self._id)

    def items(self, cancel: Any) -> Iterator[tuple[Any, ...]]:
        return self._pool._items(self._actor, self._stream, self._id, cancel)
