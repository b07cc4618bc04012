"""Controls that change while a stream runs: one thread-safe channel of immutable snapshots.

A live avatar's viewer turns a knob (emotion, gaze lock, head-pose offsets, amplitudes) while the stream is running.
The stages that use those controls run on threads of their own, so nothing is mutated across threads: whoever
changes a control calls :meth:`LiveControls.update`, which validates the change and publishes a new frozen
:class:`ControlSnapshot` (a :class:`Controls` and a version number). Each stage reads :meth:`LiveControls.snapshot`
on its own thread when it starts a unit of work (the motion stage per clip, the stitch stage per frame) and, when
the version moved, rebuilds its own options from the snapshot with the plan's functions
(:func:`~ditto_demo.pipeline.plan.emotion_for`, :func:`~ditto_demo.pipeline.plan.stitch_options`), so the plan
stays the one place controls become stage options.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from ditto_demo.errors import InputError
from ditto_demo.pipeline.controls import Controls

__all__ = ["LIVE_CONTROL_NAMES", "ControlSnapshot", "LiveControls"]

#: The controls a running stream takes up: emotion in the motion stage (from the next clip on), the rest in the
#: stitch stage (from the next frame on). Everything else is fixed when the stream is planned.
LIVE_CONTROL_NAMES: tuple[str, ...] = (
    "emotion", "gaze_lock", "pitch_offset", "yaw_offset", "roll_offset",
    "pitch_amplitude", "yaw_amplitude", "roll_amplitude", "expression_amplitude", "lip_amplitude",
)  # fmt: skip


@dataclass(frozen=True)
class ControlSnapshot:
    """The controls in force from ``version`` on (0: as the stream started)."""

    version: int
    controls: Controls


class LiveControls:
    """A thread-safe channel of immutable control snapshots for one stream.

    Writers call :meth:`update` from any thread; readers call :meth:`snapshot` and compare versions. A reader never
    sees a half-applied change, and no reader's objects are touched by a writer.
    """

    def __init__(self, controls: Controls | None = None) -> None:
        self._lock = threading.Lock()
        self._snapshot = ControlSnapshot(0, controls or Controls())

    def snapshot(self) -> ControlSnapshot:
        """The controls in force now."""
        with self._lock:
            return self._snapshot

    def update(self, **changes: Any) -> ControlSnapshot:
        """Change some live controls (names in :data:`LIVE_CONTROL_NAMES`); returns the new snapshot.

        Raises :class:`InputError` (a sentence) for a control that cannot change while live or a value out of range;
        the controls in force are then left as they were.
        """
        fixed = sorted(set(changes) - set(LIVE_CONTROL_NAMES))
        if fixed:
            raise InputError(
                f"{', '.join(fixed)} cannot change while live; these can: {', '.join(LIVE_CONTROL_NAMES)}."
            )
        with self._lock:
            if not changes:
                return self._snapshot
            controls = self._snapshot.controls.with_changes(**changes)  # validated here; raises before publishing
            self._snapshot = ControlSnapshot(self._snapshot.version + 1, controls)
            return self._snapshot
