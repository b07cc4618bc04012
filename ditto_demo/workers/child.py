"""One local worker process: ``python -m ditto_demo.workers.child`` with a socket inherited from the app.

The app starts each worker as a fresh interpreter (never a fork of the app: the app holds threads, Gradio and maybe
CUDA) with its own environment, so ``CUDA_VISIBLE_DEVICES`` shows it only its GPU before torch starts. The worker
loads its pipeline, says ``ready`` (or ``failed`` with the reason, then exits: it is not retried), then runs what
the app sends, one job at a time, over a :class:`multiprocessing.connection.Connection` (pickled tuples):

* app → worker: ``("job", job, folder)``, ``("stream", id, source, controls)``, ``("chunk", id, seq, samples)``,
  ``("end", id, count)``, ``("preview", id, source, controls)``, ``("cancel", id)``, ``("exit",)``;
* worker → app: ``("ready", pid, host, device, defaults)``, ``("failed", reason)``, ``("progress", id, stage,
  fraction, message)``, ``("frame", id, index, timestamp, image)``, ``("done", id, value)``, ``("error", id, exc)``.

A receiving thread routes cancels and audio to the running job, so Stop reaches a busy worker. When the app goes
away (the socket closes) the worker exits at once.
"""

from __future__ import annotations

import logging
import os
import queue
import shutil
import socket
import sys
import tempfile
import threading
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from ditto_demo.workers.jobs import ChunkFeed, WorkerConfig, WorkerRuntime, portable_error

log = logging.getLogger("ditto_demo.workers.child")

#: The environment variable naming the inherited socket's file descriptor.
FD_ENV = "DITTO_WORKER_FD"


class _Worker:
    """The worker's two threads: the main one runs jobs, the receiver routes cancels and audio to them."""

    def __init__(self, conn: Connection, config: WorkerConfig) -> None:
        self.conn = conn
        self.runtime = WorkerRuntime(config)
        self.send_lock = threading.Lock()
        self.work: queue.Queue[tuple[Any, ...]] = queue.Queue()
        self.cancels: dict[str, threading.Event] = {}
        self.feeds: dict[str, ChunkFeed] = {}
        self.lock = threading.Lock()
        self.inputs = Path(tempfile.mkdtemp(prefix="ditto-worker-"))

    def send(self, *message: Any) -> None:
        with self.send_lock:
            self.conn.send(message)

    def receive(self) -> None:
        """Route every message; the app closing the socket ends the process."""
        while True:
            try:
                message = self.conn.recv()
            except (EOFError, OSError):
                log.info("the app closed the connection; exiting")
                os._exit(0)
            kind = message[0]
            if kind == "exit":
                os._exit(0)
            with self.lock:
                if kind in ("job", "stream", "preview"):
                    job_id = message[1].id if kind == "job" else message[1]
                    event = self.cancels[job_id] = threading.Event()
                    if kind == "stream":
                        self.feeds[job_id] = ChunkFeed(event)
                    self.work.put(message)
                elif kind == "cancel" and message[1] in self.cancels:
                    self.cancels[message[1]].set()
                elif kind == "chunk" and message[1] in self.feeds:
                    self.feeds[message[1]].put(message[2], message[3])
                elif kind == "end" and message[1] in self.feeds:
                    self.feeds[message[1]].end(message[2])

    def serve(self) -> None:
        while True:
            message = self.work.get()
            kind, job_id = message[0], (message[1].id if message[0] == "job" else message[1])
            cancel = self.cancels[job_id]
            try:
                if kind == "job":
                    job, folder = message[1], Path(message[2])

                    def progress(stage: str, fraction: float, text: str, job_id: str = job_id) -> None:
                        self.send("progress", job_id, stage, fraction, text)

                    value: Any = self.runtime.run(job, folder, self.inputs / job_id, progress, cancel)
                elif kind == "stream":
                    for frame in self.runtime.stream(message[2], self.inputs / job_id, self.feeds[job_id],
                                                     message[3], cancel):
                        self.send("frame", job_id, frame.index, frame.timestamp, frame.image)
                    value = None
                else:
                    value = self.runtime.preview(message[2], self.inputs / job_id, message[3])
            except Exception as exc:  # every failure goes back to the app, which raises it there
                log.info("job %s ended with %s: %s", job_id, type(exc).__name__, exc)
                self.send("error", job_id, portable_error(exc))
            else:
                self.send("done", job_id, value)
            finally:
                with self.lock:
                    self.cancels.pop(job_id, None)
                    self.feeds.pop(job_id, None)
                shutil.rmtree(self.inputs / job_id, ignore_errors=True)


def main() -> None:
    import pickle

    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=f"%(asctime)s %(levelname)s worker[{os.getpid()}] %(name)s: %(message)s")
    conn = Connection(int(os.environ.pop(FD_ENV)))
    config: WorkerConfig = pickle.loads(conn.recv_bytes())
    worker = _Worker(conn, config)
    try:
        defaults = worker.runtime.load()
    except Exception as exc:  # the reason goes to the app; the worker is then skipped, not retried
        log.exception("could not load the pipeline")
        worker.send("failed", str(exc) if str(exc) else type(exc).__name__)
        return
    device = os.environ.get("DITTO_WORKER_DEVICE", config.device)
    worker.send("ready", os.getpid(), socket.gethostname(), device, defaults)
    threading.Thread(target=worker.receive, name="worker-receive", daemon=True).start()
    worker.serve()


if __name__ == "__main__":
    main()
