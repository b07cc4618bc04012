"""Workers behind the app: a pipeline per GPU on one machine, or on a Ray cluster when one machine is not enough.

The app's service hands each request to a :class:`WorkerPool`. Every worker holds its own pipeline and runs one
request at a time; a request takes a free worker, a live stream keeps its worker until it ends, and the pool's
capacity (the number of workers) is the app's queue concurrency. Nothing here knows about Gradio.

* :mod:`.settings`: which workers, from ``DITTO_WORKERS`` and friends (:class:`PoolSettings`, :func:`open_pool`);
* :mod:`.base`: the interface, a worker's identity (:class:`WorkerId`) and state, the scheduling both pools share;
* :mod:`.jobs`: what travels to a worker and what a worker does with it;
* :mod:`.facade`: the pool in the pipeline's shape, for the app's service (:class:`PoolPipeline`);
* :mod:`.local` and :mod:`.child`: worker processes on this machine (``DITTO_WORKERS=local``);
* :mod:`.ray_pool`: Ray actors (``DITTO_WORKERS=ray``; Ray is imported only then).
"""

from ditto_demo.workers.base import (
    WORKER_STOPPED,
    NoWorkerError,
    PinnedWorker,
    PoolResult,
    WorkerId,
    WorkerInfo,
    WorkerPool,
    WorkerState,
    WorkerStoppedError,
    WorkerStream,
)
from ditto_demo.workers.facade import PoolPipeline, WorkerResult, worker_of
from ditto_demo.workers.jobs import PreviewData, WorkerConfig
from ditto_demo.workers.settings import WORKERS_ENV, PoolSettings, describe_plan, open_pool

__all__ = [
    "WORKERS_ENV",
    "WORKER_STOPPED",
    "NoWorkerError",
    "PinnedWorker",
    "PoolPipeline",
    "PoolResult",
    "PoolSettings",
    "PreviewData",
    "WorkerConfig",
    "WorkerId",
    "WorkerInfo",
    "WorkerPool",
    "WorkerResult",
    "WorkerState",
    "WorkerStoppedError",
    "WorkerStream",
    "describe_plan",
    "open_pool",
    "worker_of",
]
