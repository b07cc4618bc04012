"""Blink schedule: when the template is played, for every mode, reproducibly."""

from __future__ import annotations

import random

import numpy as np
import pytest

from ditto_demo.errors import InputError
from ditto_demo.pipeline.blink import GAP_MAX, GAP_MIN, blink_schedule, mode_from_open_n

B = 15


def _blink_starts(schedule: np.ndarray) -> list[int]:
    """Frames where a blink begins (row 1 follows row 0 at the previous frame, row 0 of a blink is 'open')."""
    return [int(i) - 1 for i in np.flatnonzero(schedule == 1)]


def _oracle(n: int, b: int, open_n: int | list[int], rng: random.Random) -> list[int]:
    """The layout rule of ditto_spec.md §5.4 step 5, written independently as a plain loop."""
    rows = [0] * n
    if isinstance(open_n, int) and open_n < 0:
        return rows
    table = [open_n] if isinstance(open_n, int) and open_n > 0 else (open_n if isinstance(open_n, list) else [])
    gap = (lambda k: table[k % len(table)]) if table else (lambda k: rng.randint(60, 100))
    first = gap(0)
    last = table[-1] if table else gap(0)
    stop = n - max(last, b)
    at, k = first, 1
    while at < stop:
        for j in range(b):
            rows[at + j] = j
        at += b + gap(k)
        k += 1
    return rows


def test_off_never_blinks() -> None:
    assert not blink_schedule(500, B, "off").any()
    assert blink_schedule(500, B, "off").shape == (500,)


def test_natural_gaps_rows_and_end_margin() -> None:
    n = 2000
    schedule = blink_schedule(n, B, "natural", random.Random(3))
    starts = _blink_starts(schedule)
    assert len(starts) >= 10
    assert GAP_MIN <= starts[0] <= GAP_MAX  # first blink after one gap
    for start in starts:
        assert schedule[start : start + B].tolist() == list(range(B))  # the template rows, consecutively
    gaps = np.diff(starts) - B
    assert gaps.min() >= GAP_MIN
    assert gaps.max() <= GAP_MAX
    # No blink starts within the end margin (at least one full gap, and at least B frames) of the end.
    assert starts[-1] < n - max(GAP_MIN, B)
    # Outside blinks every frame is row 0.
    inside = np.zeros(n, dtype=bool)
    for start in starts:
        inside[start : start + B] = True
    assert not schedule[~inside].any()


def test_natural_matches_the_reference_rule_and_draw_order() -> None:
    for seed in range(5):
        ours = blink_schedule(900, B, "natural", random.Random(seed))
        assert ours.tolist() == _oracle(900, B, 0, random.Random(seed))


def test_reproducible_with_a_seed_and_numpy_generator_accepted() -> None:
    a = blink_schedule(3000, B, "natural", random.Random(7))
    b = blink_schedule(3000, B, "natural", random.Random(7))
    c = blink_schedule(3000, B, "natural", random.Random(8))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    g1 = blink_schedule(3000, B, "natural", np.random.default_rng(1))
    g2 = blink_schedule(3000, B, "natural", np.random.default_rng(1))
    assert np.array_equal(g1, g2)
    gaps = np.diff(_blink_starts(g1)) - B
    assert gaps.min() >= GAP_MIN
    assert gaps.max() <= GAP_MAX


def test_global_random_state_untouched() -> None:
    random.seed(123)
    expected = random.random()
    random.seed(123)
    blink_schedule(3000, B, "natural", random.Random(0))
    assert random.random() == expected


def test_every_n_frames() -> None:
    schedule = blink_schedule(300, 5, "every", interval=40)
    assert _blink_starts(schedule) == [40, 85, 130, 175, 220]  # next would be 265 ≥ 300 − 40
    assert schedule.tolist() == _oracle(300, 5, 40, random.Random(0))


def test_gap_list_is_cycled_and_its_last_entry_is_the_end_margin() -> None:
    schedule = blink_schedule(200, 4, "gaps", gaps=[10, 20, 30])
    # 10, then +4+20, +4+30, +4+10, +4+20, … while the start is < 200 − 30
    assert _blink_starts(schedule) == [10, 34, 68, 82, 106, 140, 154]
    assert schedule.tolist() == _oracle(200, 4, [10, 20, 30], random.Random(0))


def test_short_clip_has_no_blink() -> None:
    assert not blink_schedule(100, B, "every", interval=60).any()  # 60 ≥ 100 − 60
    assert blink_schedule(0, B, "natural", random.Random(0)).shape == (0,)


def test_mode_from_open_n() -> None:
    assert mode_from_open_n(-1) == ("off", 0, ())
    assert mode_from_open_n(0) == ("natural", 0, ())
    assert mode_from_open_n(45) == ("every", 45, ())
    assert mode_from_open_n([30, 50]) == ("gaps", 0, (30, 50))


@pytest.mark.parametrize(
    ("mode", "kwargs"),
    [("natural", {}), ("every", {"interval": 0}), ("gaps", {"gaps": ()}), ("sometimes", {})],
)
def test_bad_arguments_are_input_errors(mode: str, kwargs: dict) -> None:
    with pytest.raises(InputError):
        blink_schedule(100, B, mode, None, **kwargs)  # type: ignore[arg-type]
