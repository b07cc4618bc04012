"""One generic runner for a chain of stages: a thread per stage, bounded queues between them.

Stages overlap in time (while frame k is decoded, frame k+1 is warped and k+2 stitched), which is how the
original reaches real time too; but where the original wrote six copies of a worker loop, every stage here is the
same loop around a :class:`Stage`. A stage turns one input item into zero or more output items (so a motion
generator can emit several frames per audio chunk, or none yet) and may flush more at the end of the stream.

Failure: the first exception in any stage stops every stage and is re-raised to the consumer (with the stage
named in the log). Cancellation: setting the cancel event, or closing the output iterator, stops all threads
within one queue timeout. Queues are bounded, so a slow consumer applies back-pressure instead of buffering a
whole video in memory.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ditto_demo.errors import DittoError

__all__ = ["CancelledError", "Runner", "Stage", "StageTimings"]

log = logging.getLogger(__name__)

_END = object()  # end-of-stream marker passed from stage to stage
_POLL_S = 0.05


class CancelledError(DittoError):
    """The run was cancelled (stop pressed, browser closed, stream disconnected)."""


@dataclass
class Stage:
    """A named step: ``process(item)`` yields outputs for one input; ``finish()`` yields any held back."""

    name: str
    process: Callable[[Any], Iterable[Any]]
    finish: Callable[[], Iterable[Any]] | None = None


@dataclass
class StageTimings:
    """Wall time spent inside each stage's own code (not waiting on queues), and items produced."""

    seconds: dict[str, float] = field(default_factory=dict)
    items: dict[str, int] = field(default_factory=dict)

    def add(self, name: str, seconds: float, items: int) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds
        self.items[name] = self.items.get(name, 0) + items

    def per_item_ms(self) -> dict[str, float]:
        return {k: 1000.0 * v / max(self.items.get(k, 0), 1) for k, v in self.seconds.items()}


class Runner:
    """Runs ``source -> stages[0] -> ... -> stages[-1]`` and yields the last stage's outputs in order."""

    def __init__(self, stages: list[Stage], *, queue_size: int = 8, cancel: threading.Event | None = None) -> None:
        if not stages:
            raise ValueError("a runner needs at least one stage")
        self.stages = stages
        self.queue_size = queue_size
        self.cancel = cancel or threading.Event()
        self.timings = StageTimings()
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._error_lock = threading.Lock()

    # ------------------------------------------------------------------------------------------- helpers

    def _halted(self) -> bool:
        return self._stop.is_set() or self.cancel.is_set()

    def _put(self, q: queue.Queue[Any], item: Any) -> bool:
        """Put with back-pressure; gives up (False) as soon as the run is stopped or cancelled."""
        while not self._halted():
            try:
                q.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _get(self, q: queue.Queue[Any]) -> Any:
        while not self._halted():
            try:
                return q.get(timeout=_POLL_S)
            except queue.Empty:
                continue
        return _END

    def _fail(self, stage: str, exc: BaseException) -> None:
        with self._error_lock:
            if self._error is None:
                self._error = exc
                if not isinstance(exc, DittoError):
                    log.error("stage %s failed", stage, exc_info=exc)
        self._stop.set()

    def _emit(self, stage: Stage, outputs: Iterable[Any], out_q: queue.Queue[Any]) -> bool:
        """Drain a stage's output iterator into ``out_q``, timing only the stage's own work."""
        iterator = iter(outputs)
        while True:
            start = time.perf_counter()
            try:
                item = next(iterator)
            except StopIteration:
                self.timings.add(stage.name, time.perf_counter() - start, 0)
                return True
            self.timings.add(stage.name, time.perf_counter() - start, 1)
            if not self._put(out_q, item):
                return False

    # -------------------------------------------------------------------------------------------- threads

    def _feed(self, source: Iterable[Any], out_q: queue.Queue[Any]) -> None:
        try:
            for item in source:
                if not self._put(out_q, item):
                    return
            self._put(out_q, _END)
        except BaseException as exc:  # any failure of the source ends the run, reported once
            self._fail("input", exc)

    def _work(self, stage: Stage, in_q: queue.Queue[Any], out_q: queue.Queue[Any]) -> None:
        try:
            while True:
                item = self._get(in_q)
                if item is _END:
                    break
                if not self._emit(stage, stage.process(item), out_q):
                    return
            if self._halted():
                return
            if stage.finish is not None and not self._emit(stage, stage.finish(), out_q):
                return
            self._put(out_q, _END)
        except BaseException as exc:  # reported to the consumer, which re-raises it
            self._fail(stage.name, exc)

    # ------------------------------------------------------------------------------------------------ run

    def run(self, source: Iterable[Any]) -> Iterator[Any]:
        """Yield the final outputs. Closing this iterator early cancels the run and joins every thread."""
        queues: list[queue.Queue[Any]] = [queue.Queue(self.queue_size) for _ in range(len(self.stages) + 1)]
        threads = [threading.Thread(target=self._feed, args=(source, queues[0]), name="ditto-input", daemon=True)]
        for index, stage in enumerate(self.stages):
            threads.append(
                threading.Thread(
                    target=self._work, args=(stage, queues[index], queues[index + 1]), name=f"ditto-{stage.name}",
                    daemon=True,
                )
            )
        for thread in threads:
            thread.start()
        finished = False
        try:
            while True:
                item = self._get(queues[-1])
                if item is _END:
                    break
                yield item
            finished = not self._halted()
        finally:
            if not finished:
                self._stop.set()  # consumer stopped early or a stage failed: wind everything down
            for thread in threads:
                thread.join(timeout=30)
            stuck = [t.name for t in threads if t.is_alive()]
            if stuck:
                log.warning("stages still running after stop: %s", ", ".join(stuck))
        if self._error is not None:
            raise self._error
        if self.cancel.is_set():
            raise CancelledError("The run was cancelled.")
