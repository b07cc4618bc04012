"""One local worker process: ``python -m ditto_demo.workers.child`` with a socket inherited from the app.

The app starts each worker as a fresh interpreter (never a fork of the app: the app holds threads, Gradio and maybe
CUDA) with its own environment, so ``CUDA_VISIBLE_DEVICES`` shows it only its GPU before torch starts. The worker
loads its pipeline, says ``ready`` (or ``failed`` with the reason, then exits: it is not retried), then runs what
the app sends, one job at a time, over a :class:`multiprocessing.connection.Connection` (pickled tuples):

* app → worker: ``("job", job, folder)``, ``("stream", request)``, ``("call", id, name, source, controls)``,
  ``("cancel", id)``, and for a running stream ``("chunk", id, seq, samples)``, ``("end", id, count)``,
  ``("controls", id, version, controls)``, ``("skip!", id, index, skip)``; ``("exit",)``;
* worker → app: ``("ready", pid, host, device, defaults)``, ``("failed", reason)``, ``("progress", id, stage,
  fraction, message)``, ``("frame", id, index, timestamp, image)``, ``("skip?", id, index)``, ``("done", id,
  value)``, ``("error", id, exc)``.

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

from ditto_demo.workers.jobs import JobBook, RemoteSkip, WorkerConfig, WorkerRuntime, portable_error

log = logging.getLogger("ditto_demo.workers.child")

#: The environment variable naming the inherited socket's file descriptor.
FD_ENV = "DITTO_WORKER_FD"


class _Worker:
    """The worker's two threads: the main one runs jobs, the receiver routes cancels, audio, control changes and
    admission answers to them."""

    def __init__(self, conn: Connection, config: WorkerConfig) -> None:
        self.conn = conn
        self.runtime = WorkerRuntime(config)
        self.send_lock = threading.Lock()
        self.work: queue.Queue[tuple[Any, ...]] = queue.Queue()
        self.jobs = JobBook()
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
            if kind in ("job", "stream"):
                self.jobs.get(message[1].id)
                self.work.put(message)
                continue
            if kind == "call":
                self.jobs.get(message[1])
                self.work.put(message)
                continue
            state = self.jobs.get(message[1])
            if state is None:
                continue  # a late message for a job that has ended
            if kind == "cancel":
                state.cancel.set()
            elif kind == "chunk":
                state.feed.put(message[2], message[3])
            elif kind == "end":
                state.feed.end(message[2])
            elif kind == "controls":
                state.apply_controls(message[2], message[3])
            elif kind == "skip!" and state.skip is not None:
                state.skip.answer(message[2], message[3])

    def serve(self) -> None:
        while True:
            message = self.work.get()
            kind = message[0]
            job_id = message[1].id if kind in ("job", "stream") else message[1]
            state = self.jobs.get(job_id)
            if state is None:
                continue
            inputs = self.inputs / job_id
            try:
                if kind == "job":
                    job, folder = message[1], Path(message[2])

                    def progress(stage: str, fraction: float, text: str, job_id: str = job_id) -> None:
                        self.send("progress", job_id, stage, fraction, text)

                    value: Any = self.runtime.run(job, folder, inputs, progress, state.cancel)
                elif kind == "stream":
                    request = message[1]
                    if request.skip:
                        state.skip = RemoteSkip(lambda index, job_id=job_id: self.send("skip?", job_id, index),
                                                state.cancel)
                    for frame in self.runtime.stream(request, inputs, state):
                        self.send("frame", job_id, frame.index, frame.timestamp, frame.image)
                    value = None
                else:
                    _, _, name, source, controls = message
                    value = self.runtime.call(name, source, inputs, controls)
            except Exception as exc:  # every failure goes back to the app, which raises it there
                log.info("job %s ended with %s: %s", job_id, type(exc).__name__, exc)
                self.send("error", job_id, portable_error(exc))
            else:
                self.send("done", job_id, value)
            finally:
                self.jobs.close(job_id)
                shutil.rmtree(inputs, ignore_errors=True)


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
