"""The generic stage runner: order, fan-out, flush, failure propagation, cancellation, back-pressure."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from ditto_demo.errors import InputError
from ditto_demo.pipeline.runner import CancelledError, Runner, Stage


def _double(x: int) -> Iterator[int]:
    yield 2 * x


def test_chain_keeps_order_and_fans_out_and_flushes() -> None:
    held: list[int] = []

    def hold_pairs(x: int) -> Iterator[int]:
        held.append(x)
        if len(held) == 2:
            yield held[0] + held[1]
            held.clear()

    def flush() -> Iterator[int]:
        yield from held  # an odd item left at the end

    runner = Runner([Stage("double", _double), Stage("pairs", hold_pairs, flush),
                     Stage("split", lambda x: [x, -x])])
    assert list(runner.run(range(5))) == [2, -2, 10, -10, 8, -8]  # (0+2), (4+6), then 8 flushed
    assert runner.timings.items == {"double": 5, "pairs": 3, "split": 6}


def test_a_failing_stage_stops_the_run_and_surfaces_its_error() -> None:
    seen: list[int] = []

    def boom(x: int) -> Iterator[int]:
        if x == 3:
            raise InputError("stage three exploded")
        yield x

    def record(x: int) -> Iterator[int]:
        seen.append(x)
        yield x

    runner = Runner([Stage("boom", boom), Stage("record", record)])
    with pytest.raises(InputError, match="stage three exploded"):
        list(runner.run(range(1000)))
    assert all(x < 3 for x in seen)  # nothing after the failure reached later stages
    assert not [t for t in threading.enumerate() if t.name.startswith("ditto-")]


def test_a_failing_source_is_reported() -> None:
    def source() -> Iterator[int]:
        yield 1
        raise ValueError("bad input file")

    with pytest.raises(ValueError, match="bad input file"):
        list(Runner([Stage("double", _double)]).run(source()))


def test_cancel_event_stops_promptly() -> None:
    cancel = threading.Event()

    def slow(x: int) -> Iterator[int]:
        time.sleep(0.01)
        yield x

    runner = Runner([Stage("slow", slow)], cancel=cancel)
    outputs = runner.run(iter(range(10**9)))
    assert next(outputs) == 0
    cancel.set()
    start = time.monotonic()
    with pytest.raises(CancelledError):
        list(outputs)
    assert time.monotonic() - start < 2.0
    assert not [t for t in threading.enumerate() if t.name.startswith("ditto-")]


def test_closing_the_iterator_early_joins_the_threads() -> None:
    produced: list[int] = []

    def source() -> Iterator[int]:
        for i in range(10**9):
            produced.append(i)
            yield i

    outputs = Runner([Stage("double", _double)], queue_size=2).run(source())
    assert [next(outputs) for _ in range(3)] == [0, 2, 4]
    outputs.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("ditto-")]
    assert len(produced) < 20  # bounded queues: the source was not run ahead unboundedly
