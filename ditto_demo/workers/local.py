"""``DITTO_WORKERS=local``: one worker process per device (× workers per device) on this machine.

Each worker is a fresh ``python -m ditto_demo.workers.child`` (see that module for the messages) holding its own
:class:`~ditto_demo.pipeline.pipeline.Pipeline`; a GPU worker sees only its GPU (``CUDA_VISIBLE_DEVICES``), CPU
workers share the cores (torch threads = cores / CPU workers). Files travel as paths (one disk), the video is
written straight into the request's folder, live frames come back over the worker's socket. A worker that dies
ends its request with :data:`~ditto_demo.workers.base.WORKER_STOPPED` and is replaced; one that cannot load its
checkpoints is marked failed with the reason and skipped.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

import ditto_demo
from ditto_demo.pipeline.controls import Controls
from ditto_demo.pipeline.pipeline import ProgressFn, Result
from ditto_demo.workers.base import Slot, SlotPool, StreamChannel, WorkerDiedError, cancelled
from ditto_demo.workers.child import FD_ENV
from ditto_demo.workers.jobs import FilePayload, Job, StreamRequest, WorkerConfig

__all__ = ["LocalPool"]

log = logging.getLogger(__name__)


@dataclass
class _Process:
    """A worker process and the app's end of its socket (sends from several threads go through the lock)."""

    popen: subprocess.Popen[bytes]
    conn: Connection
    lock: threading.Lock = field(default_factory=threading.Lock)

    def send(self, message: tuple[Any, ...]) -> None:
        with self.lock:
            self.conn.send(message)

    def exit_code(self) -> int | None:
        return self.popen.poll()


class LocalPool(SlotPool):
    """Worker processes on this machine; ``devices`` such as ``("cuda:0", "cuda:1")`` or ``("cpu",)``."""

    #: Longest a worker may take to load its pipeline before it is given up (a cold start on a busy machine).
    LOAD_SECONDS = 900.0
    #: After Stop, how long a worker may take to end the request before it is killed and replaced.
    CANCEL_GRACE = 20.0
    #: How often a waiting request checks on its worker and its cancel event.
    POLL_SECONDS = 0.2

    def __init__(self, config: WorkerConfig, devices: Sequence[str], per_device: int = 1,
                 env: Mapping[str, str] | None = None) -> None:
        super().__init__()
        self._config = config
        self._env = dict(os.environ if env is None else env)
        cpu_workers = sum(1 for device in devices if not device.startswith("cuda")) * per_device
        self._cpu_threads = config.threads or max(1, (os.cpu_count() or 1) // max(1, cpu_workers))
        for device in devices:
            for _ in range(per_device):
                self._add_slot(device)

    # ------------------------------------------------------------------------------------------ processes

    def _start(self, slot: Slot) -> None:
        with self._cond:
            generation = slot.generation
            device = slot.device
        env = dict(self._env)
        package_root = str(Path(ditto_demo.__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        env["DITTO_WORKER_DEVICE"] = device
        if device.startswith("cuda"):
            env["CUDA_VISIBLE_DEVICES"] = device.partition(":")[2] or "0"
            config = replace(self._config, device="cuda")
        else:
            env["CUDA_VISIBLE_DEVICES"] = ""
            env["OMP_NUM_THREADS"] = str(self._cpu_threads)
            config = replace(self._config, device="cpu", threads=self._cpu_threads)
        ours, theirs = socket.socketpair()
        env[FD_ENV] = str(theirs.fileno())
        try:
            popen = subprocess.Popen([sys.executable, "-m", "ditto_demo.workers.child"], env=env,
                                     pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL)
        except OSError as exc:
            ours.close()
            self._started(slot, generation, error=f"could not start a worker process: {exc}")
            return
        finally:
            theirs.close()
        process = _Process(popen, Connection(ours.detach()))
        with self._cond:
            slot.handle, slot.pid = process, popen.pid
        with contextlib.suppress(OSError):  # if it died at once, the start watcher below reports it
            process.conn.send_bytes(pickle.dumps(config))
        threading.Thread(target=self._await_start, args=(slot, process, generation),
                         name=f"worker-{slot.index}-start", daemon=True).start()

    def _await_start(self, slot: Slot, process: _Process, generation: int) -> None:
        """Wait for the worker's first word (ready or failed), or its death, or the load deadline."""
        message: tuple[Any, ...] | None = None
        try:
            if process.conn.poll(self.LOAD_SECONDS):
                message = process.conn.recv()
        except (EOFError, OSError):
            message = None
        if message is not None and message[0] == "ready":
            _, pid, host, device, defaults = message
            self._started(slot, generation, pid=pid, host=host, device=device, defaults=defaults)
            return
        if message is not None and message[0] == "failed":
            error = f"could not load the checkpoints: {message[1]}"
        else:
            time.sleep(0.2)
            code = process.exit_code()
            error = (f"the worker process exited while loading (exit code {code})" if code is not None
                     else f"the worker did not load within {self.LOAD_SECONDS:.0f} s")
        self._terminate(process)
        self._started(slot, generation, error=error)

    def _stop(self, slot: Slot) -> None:
        process = slot.handle
        if isinstance(process, _Process):
            with contextlib.suppress(OSError):  # already gone
                process.send(("exit",))
            self._terminate(process)

    @staticmethod
    def _terminate(process: _Process) -> None:
        with contextlib.suppress(OSError):
            process.conn.close()
        if process.popen.poll() is None:
            process.popen.terminate()
            try:
                process.popen.wait(5)
            except subprocess.TimeoutExpired:
                process.popen.kill()
                process.popen.wait(5)

    def _alive(self, slot: Slot) -> bool:
        return isinstance(slot.handle, _Process) and slot.handle.exit_code() is None

    def _payload(self, path: str | Path) -> FilePayload:
        return FilePayload.by_path(path)

    # ------------------------------------------------------------------------------------------- requests

    def _replies(self, process: _Process, job_id: str, cancel: Any) -> Iterator[tuple[Any, ...]]:
        """The worker's messages about ``job_id``; sends the cancel when ``cancel`` is set; raises
        :class:`WorkerDiedError` when the worker dies, or when it ignores a cancel for too long (then it is
        killed: the caller replaces it)."""
        cancel_sent: float | None = None
        while True:
            if cancel_sent is None and cancelled(cancel):
                cancel_sent = time.monotonic()
                with contextlib.suppress(OSError):  # dead: seen below
                    process.send(("cancel", job_id))
            if cancel_sent is not None and time.monotonic() - cancel_sent > self.CANCEL_GRACE:
                process.popen.kill()
                raise WorkerDiedError(f"did not stop within {self.CANCEL_GRACE:.0f} s of a cancel")
            try:
                ready = process.conn.poll(self.POLL_SECONDS)
                message = process.conn.recv() if ready else None
            except (EOFError, OSError):
                process.popen.poll()
                raise WorkerDiedError(self._death(process)) from None
            if message is None:
                if process.exit_code() is not None:
                    raise WorkerDiedError(self._death(process))
                continue
            if message[1] == job_id:
                yield message

    @staticmethod
    def _death(process: _Process) -> str:
        try:
            code = process.popen.wait(2)
        except subprocess.TimeoutExpired:
            return "its connection broke"
        return f"exit code {code}"

    def _execute(self, slot: Slot, job: Job, folder: Path, progress: ProgressFn | None, cancel: Any) -> Result:
        process: _Process = slot.handle
        try:
            process.send(("job", job, str(folder)))
        except OSError:
            raise WorkerDiedError(self._death(process)) from None
        for message in self._replies(process, job.id, cancel):
            if message[0] == "progress":
                if progress is not None:
                    progress(*message[2:])
            elif message[0] == "done":
                return message[2]
            elif message[0] == "error":
                raise message[2]
        raise WorkerDiedError("no reply")  # unreachable: _replies ends only by raising

    def _call(self, slot: Slot, name: str, source: FilePayload, controls: Controls) -> Any:
        process: _Process = slot.handle
        job_id = uuid.uuid4().hex
        try:
            process.send(("call", job_id, name, source, controls))
        except OSError:
            raise WorkerDiedError(self._death(process)) from None
        for message in self._replies(process, job_id, None):
            if message[0] == "done":
                return message[2]
            if message[0] == "error":
                raise message[2]
        raise WorkerDiedError("no reply")

    def _open_stream(self, slot: Slot, request: StreamRequest) -> StreamChannel:
        process: _Process = slot.handle
        try:
            process.send(("stream", request))
        except OSError:
            raise WorkerDiedError(self._death(process)) from None
        return _LocalChannel(self, process, request.id)


class _LocalChannel(StreamChannel):
    """A stream on a worker process: messages over its socket, tagged with the stream's id."""

    def __init__(self, pool: LocalPool, process: _Process, job_id: str) -> None:
        self._pool = pool
        self._process = process
        self._id = job_id

    def _send(self, *message: Any) -> None:
        try:
            self._process.send((message[0], self._id, *message[1:]))
        except OSError:
            raise WorkerDiedError("its connection broke") from None

    def chunk(self, seq: int, samples: np.ndarray) -> None:
        self._send("chunk", seq, samples)

    def end(self, count: int) -> None:
        self._send("end", count)

    def controls(self, version: int, controls: Controls) -> None:
        self._send("controls", version, controls)

    def answer(self, index: int, skip: bool) -> None:
        self._send("skip!", index, skip)

    def cancel(self) -> None:
        self._send("cancel")

    def items(self, cancel: Any) -> Iterator[tuple[Any, ...]]:
        for message in self._pool._replies(self._process, self._id, cancel):
            if message[0] == "done":
                yield ("done",)
            else:
                yield (message[0], *message[2:])
