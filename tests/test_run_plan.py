"""One plan per run (``plan_run``), the stages' ownership across threads, and the tiled compare frames."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import numpy as np
import pytest

from ditto_demo.pipeline.audio import load_audio
from ditto_demo.pipeline.config import ReleasedDefaults
from ditto_demo.pipeline.controls import EMOTIONS, Controls
from ditto_demo.pipeline.frames import FrameRenderer, MotionRow, RowNumberer, tile_frames
from ditto_demo.pipeline.motion import LOW_LATENCY_OVERLAP
from ditto_demo.pipeline.pipeline import Pipeline
from ditto_demo.pipeline.plan import Limits, RunPlan, plan_run
from ditto_demo.pipeline.seeds import SEED_BOUND
from ditto_demo.pipeline.stitching import MotionStitcher
from ditto_demo.pipeline.types import Source

ASSETS = Path(__file__).resolve().parents[1] / "assets"
PORTRAIT = ASSETS / "portrait_illustration.png"
DEFAULTS = ReleasedDefaults(steps=50, overlap=10)


def _source(is_image: bool = True) -> Source:
    """Only ``is_image`` of the registered portrait matters to the plan."""

    class Registered:
        pass

    registered = Registered()
    registered.is_image = is_image  # type: ignore[attr-defined]
    return registered  # type: ignore[return-value]


def test_a_file_plan_holds_every_stage_option_and_one_seed() -> None:
    plan = plan_run(Controls(seed=11, emotion="happy", framing="crop", yaw_offset=5.0), DEFAULTS, _source(),
                    n_frames=40)
    assert isinstance(plan, RunPlan)
    assert plan.seed == plan.motion.seed == plan.stitch.blink_seed == 11
    assert (plan.n_frames, plan.streaming, plan.low_latency, plan.framing) == (40, False, False, "crop")
    assert plan.motion.overlap == 10  # the checkpoint's, untouched for a file
    assert plan.emotion.shape == (1, 8)
    assert int(np.argmax(plan.emotion[0])) == EMOTIONS.index("happy")
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.seed = 3  # type: ignore[misc]


def test_the_seed_is_drawn_in_the_plan_once_and_shared_by_its_stages() -> None:
    plans = [plan_run(Controls(), DEFAULTS, _source(), n_frames=10) for _ in range(4)]
    for plan in plans:
        assert 0 <= plan.seed <= SEED_BOUND
        assert plan.motion.seed == plan.stitch.blink_seed == plan.seed
    assert len({plan.seed for plan in plans}) > 1  # drawn afresh for each run


def test_a_stream_plan_sizes_tables_for_the_limit_and_picks_the_latency_overlap() -> None:
    limits = Limits(max_stream_seconds=8.0)
    fast = plan_run(Controls(seed=1), DEFAULTS, _source(), n_frames=None, limits=limits)
    assert (fast.streaming, fast.low_latency, fast.n_frames) == (True, True, 200)
    assert fast.motion.overlap == LOW_LATENCY_OVERLAP
    reference = plan_run(Controls(seed=1), DEFAULTS, _source(), n_frames=None, limits=limits, low_latency=False)
    assert (reference.low_latency, reference.motion.overlap) == (False, 10)
    chosen = plan_run(Controls(seed=1, overlap=40), DEFAULTS, _source(), n_frames=None, limits=limits)
    assert chosen.motion.overlap == 40  # the user's overlap always wins
    timeline = plan_run(Controls(seed=1, emotion_timeline=((1.0, "sad"),)), DEFAULTS, _source(), n_frames=None,
                        limits=limits)
    assert timeline.emotion.shape == (200, 8)


def test_row_numberer_puts_the_anchor_on_frame_zero_only() -> None:
    calls: list[int] = []

    def anchor() -> np.ndarray:
        calls.append(1)
        return np.full(265, 7.0, np.float32)

    numbering = RowNumberer(anchor)
    rows = numbering.number([np.zeros(265, np.float32)] * 3) + numbering.number([np.ones(265, np.float32)] * 2)
    assert [r.index for r in rows] == [0, 1, 2, 3, 4]
    assert rows[0].anchor is not None
    assert float(rows[0].anchor[0]) == 7.0
    assert all(r.anchor is None for r in rows[1:])
    assert calls == [1]


def test_tile_labels_sit_in_a_filled_box_readable_on_white() -> None:
    white = np.full((512, 512, 3), 255, np.uint8)
    canvas = tile_frames([("A", white), ("B", white)])
    assert canvas.shape == (512, 1024, 3)
    corner = canvas[8:40, 8:40].astype(int)
    assert np.median(corner) < 100  # a dark box behind the text, not white-on-white
    assert corner.max() == 255  # with the white text inside it
    assert canvas[300, 300].tolist() == [255, 255, 255]  # the picture itself is untouched


def test_tiles_shrink_to_fit_a_phone_sized_canvas() -> None:
    tiles = [(str(i), np.full((724, 724, 3), 90, np.uint8)) for i in range(8)]
    assert tile_frames(tiles, 4).shape == (1448, 2896, 3)
    fitted = tile_frames(tiles, 4, max_size=(1920, 1080))
    assert fitted.shape[1] <= 1920
    assert fitted.shape[0] <= 1080
    assert fitted.shape == (960, 1920, 3)
    tall = [(str(i), np.full((900, 600, 3), 90, np.uint8)) for i in range(8)]
    fitted = tile_frames(tall, 4, max_size=(1920, 1080))
    assert fitted.shape[1] <= 1920
    assert fitted.shape[0] <= 1080


@pytest.fixture(scope="module")
def pipeline(tiny_root: Path) -> Pipeline:
    return Pipeline(tiny_root, backend="torch", device="cpu")


def test_the_stream_stitcher_is_touched_by_the_stitch_thread_only(pipeline: Pipeline,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The relative-motion anchor travels with frame 0; no other thread calls into the stitcher."""
    threads: list[str] = []
    original_set, original_call = MotionStitcher.set_d0, MotionStitcher.__call__

    def set_d0(self: MotionStitcher, motion: dict) -> None:
        threads.append(threading.current_thread().name)
        original_set(self, motion)

    def call(self: MotionStitcher, index: int, info: dict) -> tuple[np.ndarray, np.ndarray]:
        threads.append(threading.current_thread().name)
        return original_call(self, index, info)

    monkeypatch.setattr(MotionStitcher, "set_d0", set_d0)
    monkeypatch.setattr(MotionStitcher, "__call__", call)
    audio = load_audio(ASSETS / "speech_en.wav")[:8000]
    chunks = (audio[i:i + 1600] for i in range(0, len(audio), 1600))
    frames = list(pipeline.stream(PORTRAIT, chunks, Controls(steps=2, seed=5)))
    assert frames
    assert set(threads) == {"ditto-stitch"}
    assert len(threads) == len(frames) + 1  # one anchor, then one call per frame


def test_renderer_stitch_accepts_rows_with_and_without_an_anchor(pipeline: Pipeline) -> None:
    source = pipeline.register(PORTRAIT, Controls())
    plan = pipeline.plan(source, Controls(seed=3), n_frames=None)
    stitcher = MotionStitcher(source, plan.stitch, None, pipeline.networks["stitch_network"])
    renderer = FrameRenderer(pipeline.networks, source, stitcher, plan.framing)
    row = np.zeros(265, np.float32)
    anchor = np.full(265, 0.01, np.float32)
    [(index, x_s, x_d)] = list(renderer.stitch(MotionRow(0, row, anchor)))
    assert index == 0
    assert x_s.shape == x_d.shape
    assert stitcher.d0 is not None
    assert float(stitcher.d0["exp"].reshape(-1)[0]) == pytest.approx(0.01)
    [(index, _, _)] = list(renderer.stitch((1, row)))
    assert index == 1
