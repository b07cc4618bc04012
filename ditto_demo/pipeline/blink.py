"""When the portrait blinks: a schedule mapping every output frame to a row of the blink template.

The audio-driven model rarely closes the eyes, so Ditto overlays a recorded blink — a template of B expression
offsets (the released one has B = 15 rows, row 0 = eyes open) — at chosen moments (ditto_spec.md §5.4 step 5).
This module only decides *when*: a pure function of the frame count, the template length, the mode and a random
generator the caller owns, so a seeded run is reproducible and nothing touches the process-wide RNG.

Modes (the reference encodes them in one ``delta_eye_open_n`` value; :func:`mode_from_open_n` converts it):

* ``"off"`` — never blink (every frame uses row 0).
* ``"natural"`` — open-eye gaps drawn uniformly from 60..100 frames (2.4–4 s at 25 fps).
* ``"every"`` — a fixed gap of ``interval`` frames.
* ``"gaps"`` — the gaps of a list, cycled.

Layout rule, as in the reference: the first blink starts after one gap; each blink covers template rows 0..B−1 on
consecutive frames; the next one starts a gap later; and no blink starts at or after N − max(g_end, B), where
g_end is one more drawn gap (``"natural"``) or the last gap of the list, so the clip ends with open eyes.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Literal

import numpy as np

from ditto_demo.errors import InputError

__all__ = [
    "BLINK_MODES",
    "DEFAULT_SCHEDULE_FRAMES",
    "GAP_MAX",
    "GAP_MIN",
    "BlinkMode",
    "blink_schedule",
    "mode_from_open_n",
]

BlinkMode = Literal["off", "natural", "every", "gaps"]
BLINK_MODES: tuple[str, ...] = ("off", "natural", "every", "gaps")
#: Bounds (inclusive) of a "natural" open-eye gap, in frames.
GAP_MIN = 60
GAP_MAX = 100
#: Schedule length when the number of output frames is not known in advance (streaming); frames wrap around it.
DEFAULT_SCHEDULE_FRAMES = 3000

RandomSource = random.Random | np.random.Generator


def _draw_gap(rng: RandomSource) -> int:
    """One natural gap from U{GAP_MIN..GAP_MAX}; ``random.Random`` reproduces the reference's draws for a seed."""
    if isinstance(rng, np.random.Generator):
        return int(rng.integers(GAP_MIN, GAP_MAX + 1))
    return rng.randint(GAP_MIN, GAP_MAX)


def blink_schedule(
    n_frames: int,
    template_length: int,
    mode: BlinkMode = "natural",
    rng: RandomSource | None = None,
    *,
    interval: int = 0,
    gaps: Sequence[int] = (),
) -> np.ndarray:
    """Template row per frame, shape (n_frames,) int64; 0 = eyes open, 1..B−1 = inside a blink.

    ``rng`` is required for ``"natural"`` (pass ``random.Random(seed)`` or ``np.random.default_rng(seed)``);
    it is never consumed in the other modes. ``interval`` is the gap of ``"every"``, ``gaps`` the list of
    ``"gaps"``. A clip too short for a blink plus its end margin simply has none.
    """
    if n_frames < 0:
        raise InputError(f"The blink schedule needs a frame count of at least 0, not {n_frames}.")
    if template_length < 1:
        raise InputError("The blink template needs at least one row.")
    schedule = np.zeros(n_frames, dtype=np.int64)
    if mode == "off":
        return schedule
    if mode == "natural":
        if rng is None:
            raise InputError('Blink mode "natural" needs a random generator (random.Random or numpy Generator).')
        fixed: list[int] = []
    elif mode == "every":
        if int(interval) < 1:
            raise InputError(f'Blink mode "every" needs an interval of at least 1 frame, not {interval}.')
        fixed = [int(interval)]
    elif mode == "gaps":
        fixed = [int(g) for g in gaps]
        if not fixed or min(fixed) < 0:
            raise InputError('Blink mode "gaps" needs a non-empty list of gaps of 0 frames or more.')
    else:
        raise InputError(f"Unknown blink mode {mode!r}; use one of {', '.join(BLINK_MODES)}.")

    def next_gap(count: int) -> int:
        # `count` is how many gaps were used before this one; a list cycles from its first entry.
        if fixed:
            return fixed[count % len(fixed)]
        assert rng is not None
        return _draw_gap(rng)

    # Draw order matters for reproducing the reference with the same seed: first gap, then end margin, then the rest.
    start = next_gap(0)
    end_margin = fixed[-1] if fixed else next_gap(0)
    last_start = n_frames - max(end_margin, template_length)  # exclusive bound for a blink's first frame
    rows = np.arange(template_length, dtype=np.int64)
    position, used = start, 1
    while position < last_start:
        schedule[position : position + template_length] = rows
        position += template_length + next_gap(used)
        used += 1
    return schedule


def mode_from_open_n(open_n: int | Sequence[int]) -> tuple[BlinkMode, int, tuple[int, ...]]:
    """``(mode, interval, gaps)`` for the reference's ``delta_eye_open_n`` (<0 off, 0 natural, >0 every, list gaps)."""
    if isinstance(open_n, bool):
        raise InputError("delta_eye_open_n must be an integer or a list of integers, not a boolean.")
    if isinstance(open_n, (int, np.integer)):
        if open_n < 0:
            return "off", 0, ()
        if open_n == 0:
            return "natural", 0, ()
        return "every", int(open_n), ()
    gaps = tuple(int(g) for g in open_n)
    return "gaps", 0, gaps
