"""Controls that change while a stream runs (``LiveControls``): taken up within one motion clip, never before.

The stream's stages are driven one by one on the test's thread (``Pipeline.stream_stages``), so "before" and
"after" a change are exact: a change made between two audio blocks must leave every earlier motion row and keypoint
as it was, and change the rows of the very next clip (emotion) or the very next frame (pose, gaze, amplitudes).
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from ditto_demo.errors import InputError
from ditto_demo.pipeline import Controls, Pipeline
from ditto_demo.pipeline.frames import MotionRow
from ditto_demo.pipeline.live_controls import LIVE_CONTROL_NAMES, LiveControls
from ditto_demo.pipeline.runner import Stage

ROOT = Path(__file__).resolve().parents[1]
PORTRAIT = ROOT / "assets" / "portrait_illustration.png"
BLOCK = 3200  # one HuBERT hop: one 5-row block, one low-latency clip


@pytest.fixture(scope="module")
def pipeline(tiny_root: Path) -> Pipeline:
    return Pipeline(tiny_root, backend="torch", device="cpu")


def _speech(seconds: float) -> np.ndarray:
    rng = np.random.default_rng(7)
    t = np.arange(int(seconds * 16000)) / 16000
    return (0.3 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 3 * t)) + 0.05 * rng.standard_normal(t.size)
            ).astype(np.float32)


def _motion_rows(stages: list[Stage], samples: np.ndarray, before_chunk=None) -> list[list[MotionRow]]:
    """Motion rows emitted per audio chunk (one HuBERT hop each), with ``before_chunk(j)`` called before chunk j."""
    features, motion = stages[0], stages[1]
    out = []
    for j, start in enumerate(range(0, samples.size, BLOCK)):
        if before_chunk is not None:
            before_chunk(j)
        out.append([row for block in features.process(samples[start:start + BLOCK]) for row in motion.process(block)])
    return out


def test_live_controls_validate_and_version() -> None:
    live = LiveControls(Controls(seed=1))
    assert live.snapshot().version == 0
    assert live.update(yaw_offset=5.0).version == 1
    assert live.snapshot().controls.yaw_offset == 5.0
    assert live.snapshot().controls.seed == 1
    with pytest.raises(InputError, match="cannot change while live"):
        live.update(steps=4)
    with pytest.raises(InputError, match="yaw_offset"):
        live.update(yaw_offset=400.0)
    assert live.snapshot().version == 1  # a refused change publishes nothing
    assert set(LIVE_CONTROL_NAMES) >= {"emotion", "gaze_lock", "yaw_offset", "expression_amplitude"}


def test_live_controls_are_safe_across_threads() -> None:
    live = LiveControls()
    seen: list[tuple[int, float]] = []

    def reader() -> None:
        for _ in range(2000):
            snap = live.snapshot()
            seen.append((snap.version, snap.controls.yaw_offset))

    thread = threading.Thread(target=reader)
    thread.start()
    for value in range(1, 41):
        live.update(yaw_offset=float(value))
    thread.join()
    assert all(yaw == float(version) for version, yaw in seen)  # a version always comes with its own values
    assert live.snapshot().version == 40


def test_emotion_change_takes_effect_from_the_next_clip(pipeline: Pipeline) -> None:
    samples = _speech(2.0)
    controls = Controls(seed=11, emotion="neutral")
    reference = _motion_rows(pipeline.stream_stages(PORTRAIT, controls).stages, samples)

    live = LiveControls(controls)
    change_at = 4

    def change(j: int) -> None:
        if j == change_at:
            live.update(emotion="happy")

    changed = _motion_rows(pipeline.stream_stages(PORTRAIT, live=live).stages, samples, change)
    assert [len(rows) for rows in changed] == [len(rows) for rows in reference]
    before = [r for rows in reference[:change_at] for r in rows]
    assert before, "the first chunks must already emit rows, or the test checks nothing"
    for ref, got in zip(before, [r for rows in changed[:change_at] for r in rows], strict=True):
        np.testing.assert_array_equal(got.row, ref.row)  # not before
    assert len(reference[change_at]) == 5  # the very next clip (one low-latency clip per HuBERT block) ...
    for ref, got in zip(reference[change_at], changed[change_at], strict=True):
        assert not np.allclose(got.row, ref.row, atol=1e-6)  # ... is conditioned on the new emotion


def test_pose_change_takes_effect_from_the_next_frame(pipeline: Pipeline) -> None:
    samples = _speech(1.6)
    controls = Controls(seed=3)
    rows = [r for chunk in _motion_rows(pipeline.stream_stages(PORTRAIT, controls).stages, samples) for r in chunk]
    assert len(rows) >= 12

    def keypoints(stitch: Stage, before_frame=None) -> list[np.ndarray]:
        out = []
        for row in rows:
            if before_frame is not None:
                before_frame(row.index)
            (index, _, x_d), = list(stitch.process(row))
            assert index == row.index
            out.append(x_d)
        return out

    reference = keypoints(pipeline.stream_stages(PORTRAIT, controls).stages[2])
    live = LiveControls(controls)
    change_at = 7

    def turn(index: int) -> None:
        if index == change_at:
            live.update(yaw_offset=20.0, gaze_lock=False)

    turned = keypoints(pipeline.stream_stages(PORTRAIT, live=live).stages[2], turn)
    for frame in range(change_at):
        np.testing.assert_array_equal(turned[frame], reference[frame])
    for frame in range(change_at, len(rows)):
        assert np.abs(turned[frame] - reference[frame]).max() > 1e-3


def test_skipped_frames_are_not_rendered(pipeline: Pipeline) -> None:
    samples = _speech(1.2)
    asked: list[int] = []

    def skip(index: int) -> bool:
        asked.append(index)
        return index % 2 == 0 and index > 0

    stages = pipeline.stream_stages(PORTRAIT, Controls(seed=2), skip_frame=skip).stages
    rows = [r for chunk in _motion_rows(stages, samples) for r in chunk]
    stitched = [item for row in rows for item in stages[2].process(row)]
    assert [item[0] for item in stitched] == [r.index for r in rows if r.index == 0 or r.index % 2 == 1]
    assert asked == [r.index for r in rows]  # asked once per frame, before rendering
