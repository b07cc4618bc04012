"""The ``smoothness`` part: the latency choice's effect on motion, the same speech and seed streamed both ways."""

from __future__ import annotations

from typing import Any

from ditto_demo.bench.context import BenchContext
from ditto_demo.bench.smoothness import motion_smoothness
from ditto_demo.pipeline.motion_space import MOTION_SLICES
from ditto_demo.pipeline.timebase import SAMPLE_RATE

__all__ = ["bench_smoothness"]


def bench_smoothness(ctx: BenchContext) -> dict[str, Any]:
    """Motion rows only (no rendering) of a low-latency and a reference-latency stream.

    :func:`motion_smoothness` over the rows of the real audio frames (all dims, and the expression alone):
    ``accel_rms`` (jitter) and ``seam_ratio`` (the step into a clip seam over an ordinary step; ≈ 1: seams do
    not show). On random weights the motion itself is meaningless; rerun with ``--checkpoints`` for real figures.
    """
    frames = ctx.expected_frames
    chunk = max(1, SAMPLE_RATE * ctx.options.chunk_ms // 1000)
    out: dict[str, Any] = {}
    for label, low in (("low_latency", True), ("reference", False)):
        options = ctx.pipeline.stream_options(ctx.controls, low_latency=low)
        rows = ctx.pipeline.stream_motion(ctx.options.portrait, ctx.samples, ctx.controls, low_latency=low,
                                          chunk_samples=chunk)[:frames]
        period = options.valid_length
        out[label] = {
            "overlap": options.overlap,
            "all": motion_smoothness(rows, period),
            "expression": motion_smoothness(rows, period, MOTION_SLICES["exp"]),
        }
    return out
