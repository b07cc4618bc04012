"""Result retention: folders expire by age, the oldest go over the size cap, held and fresh ones always stay."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from ditto_demo.results import ResultStore, RetentionPolicy


def _result(store: ResultStore, size: int, age: float, *, release: bool = True) -> Path:
    folder = store.new_folder()
    (folder / "video.mp4").write_bytes(b"\0" * size)
    stamp = time.time() - age
    os.utime(folder, (stamp, stamp))
    if release:
        store.release(folder)
    return folder


def _store(tmp_path: Path, **policy: float) -> ResultStore:
    """A store that sweeps only when the test says so (the first folder made sweeps an empty root)."""
    return ResultStore(tmp_path / "out", RetentionPolicy(sweep_interval=10**9, **policy))  # type: ignore[arg-type]


def test_results_older_than_the_age_limit_go(tmp_path: Path) -> None:
    store = _store(tmp_path, max_age=3600, min_age=60)
    old = _result(store, 10, age=7200)
    new = _result(store, 10, age=120)
    assert store.sweep() == [old]
    assert not old.exists()
    assert new.exists()


def test_the_oldest_go_while_over_the_size_cap(tmp_path: Path) -> None:
    store = _store(tmp_path, max_age=10**6, max_bytes=2500, min_age=60)
    folders = [_result(store, 1000, age=age) for age in (5000, 4000, 3000, 2000)]
    removed = store.sweep()
    assert removed == folders[:2]  # 4000 bytes -> 2000, the two oldest
    assert all(f.exists() for f in folders[2:])
    assert store.total_bytes() == 2000


def test_a_running_request_and_a_fresh_result_are_never_removed(tmp_path: Path) -> None:
    store = _store(tmp_path, max_age=100, max_bytes=10, min_age=50)
    running = _result(store, 1000, age=1000, release=False)  # old, big, but still being written
    fresh = _result(store, 1000, age=10)  # over the cap, but a page may still be showing it
    assert store.sweep() == []
    assert running.exists()
    assert fresh.exists()
    store.release(running)
    assert store.sweep() == [running]


def test_a_failed_request_leaves_nothing_and_other_files_are_left_alone(tmp_path: Path) -> None:
    store = _store(tmp_path, max_age=1, min_age=0)
    foreign = tmp_path / "out" / "keep-me"
    foreign.mkdir(parents=True)
    os.utime(foreign, (0, 0))
    made: list[Path] = []

    def failing_request() -> None:
        with store.folder() as folder:
            made.append(folder)
            (folder / "half.mp4").write_bytes(b"x")
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        failing_request()
    assert not made[0].exists()
    store.sweep()
    assert foreign.exists()


def test_sweeps_happen_when_folders_are_made_but_not_more_often_than_the_interval(tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "out", RetentionPolicy(max_age=60, min_age=0, sweep_interval=3600))
    old = _result(store, 1, age=600)
    store.new_folder()  # the first sweep already ran when `old` was made (before it existed)
    assert old.exists()
    store._last_sweep = float("-inf")  # the interval has passed
    store.new_folder()
    assert not old.exists()
