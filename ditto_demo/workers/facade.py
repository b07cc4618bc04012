"""The pool in the pipeline's shape, so the app's service runs the same code with or without workers.

:class:`PoolPipeline` answers the calls the service makes of a :class:`~ditto_demo.pipeline.Pipeline` (``generate``,
``compare``, ``stream``, ``prepare_stream``, ``register`` for the crop preview, ``defaults``) by sending them to the
pool. It holds no per-request state, so one instance serves every request; a live session that must keep one
worker between ``prepare_stream`` and ``stream`` asks the pool for a :class:`~ditto_demo.workers.base.PinnedWorker`
instead. Results are :class:`WorkerResult`: the pipeline's result plus the worker that ran it.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from ditto_demo.pipeline.config import ReleasedDefaults
from ditto_demo.pipeline.controls import Controls
from ditto_demo.pipeline.live_controls import LiveControls
from ditto_demo.pipeline.pipeline import ProgressFn, Result
from ditto_demo.workers.base import PoolResult, WorkerId, WorkerPool, WorkerStream
from ditto_demo.workers.jobs import PreviewData

__all__ = ["PoolPipeline", "WorkerResult", "worker_of"]


@dataclass(frozen=True)
class WorkerResult(Result):
    """A :class:`Result` that also names the worker that produced it."""

    worker: WorkerId | None = None


def _with_worker(done: PoolResult) -> WorkerResult:
    values = {f.name: getattr(done.result, f.name) for f in fields(Result)}
    return WorkerResult(**values, worker=done.worker)


def worker_of(result: Result) -> WorkerId:
    """Who ran ``result``: its worker, or this process (index 0) for a result of the app's own pipeline."""
    worker = getattr(result, "worker", None)
    if isinstance(worker, WorkerId):
        return worker
    devices = sorted({backend.split("/", 1)[-1] for backend in result.backends.values()})
    return WorkerId(socket.gethostname(), devices[0] if len(devices) == 1 else "+".join(devices) or "cpu", 0)


class PoolPipeline:
    """A stand-in for the service's ``Pipeline`` that runs everything on ``pool``'s workers."""

    #: How long the app waits at start for a worker's checkpoint defaults (the controls show them).
    DEFAULTS_WAIT = 60.0

    def __init__(self, pool: WorkerPool) -> None:
        self.pool = pool
        self.root: Path | None = None  # each worker resolves its own checkpoints

    def defaults(self, variant: str = "pytorch") -> ReleasedDefaults:
        """The offline defaults a worker read from its checkpoints (the released fallbacks if none answers)."""
        return self.pool.defaults(self.DEFAULTS_WAIT) or ReleasedDefaults()

    def register(self, source: str | Path, controls: Controls | None = None) -> PreviewData:
        return self.pool.preview(source, controls or Controls())

    def prepare_stream(self, source: str | Path, controls: Controls | None = None) -> None:
        self.pool.prepare(source, controls or Controls())

    def generate(self, source: str | Path, audio: str | Path, controls: Controls | None = None, *,
                 output: str | Path, progress: ProgressFn | None = None, cancel: Any = None) -> WorkerResult:
        target = Path(output)
        return _with_worker(self.pool.generate(source, audio, controls or Controls(), folder=target.parent,
                                               name=target.name, progress=progress, cancel=cancel))

    def compare(self, source: str | Path, audio: str | Path, variants: list[tuple[str, Controls]], *,
                output: str | Path, progress: ProgressFn | None = None, cancel: Any = None,
                columns: int | None = None) -> WorkerResult:
        target = Path(output)
        return _with_worker(self.pool.compare(source, audio, variants, folder=target.parent, name=target.name,
                                              columns=columns, progress=progress, cancel=cancel))

    def stream(self, source: str | Path, audio_chunks: Iterable[np.ndarray], controls: Controls | None = None, *,
               cancel: Any = None, live: LiveControls | None = None,
               skip_frame: Callable[[int], bool] | None = None, low_latency: bool = True) -> WorkerStream:
        return self.pool.pin(cancel).stream(source, audio_chunks, controls, cancel=cancel, live=live,
                                            skip_frame=skip_frame, low_latency=low_latency)
