"""Whole-pipeline parts: offline files, burst and paced streams, concurrent streams; interleaved round by round.

A run that produced the wrong number of frames raises instead of reporting a speed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import partial
from typing import Any

import numpy as np

from ditto_demo.bench.context import BenchContext
from ditto_demo.bench.measure import summarize, summarize_dicts
from ditto_demo.bench.options import PIPELINE_PARTS, REAL_TIME_PARTS
from ditto_demo.pipeline.controls import Controls

__all__ = ["KEEP_UP_SLOPE", "PacedSource", "run_pipeline_parts"]

log = logging.getLogger(__name__)

#: A paced stream "keeps up" when its lag grows by less than this many seconds per second of audio.
KEEP_UP_SLOPE = 0.05


def offline_run(ctx: BenchContext) -> dict[str, Any]:
    """One :meth:`Pipeline.generate` end to end: RTF, first frame, per-stage ms per frame, phase timings."""
    ctx.memory.reset()
    result = ctx.pipeline.generate(ctx.options.portrait, ctx.wav, ctx.controls, output=ctx.work / "bench.mp4")
    ctx.note_peak("offline")
    expected = ctx.expected_frames
    if result.frames != expected:
        raise RuntimeError(f"offline run produced {result.frames} frames, expected {expected}: no speed reported")
    return {
        "rtf": result.rtf,
        "total_s": result.total_seconds,
        "first_frame_s": result.first_frame_latency,
        "frames": result.frames,
        "stage_ms": dict(result.per_frame_ms),
        "phase_s": dict(result.timings),
        "render_ms_per_frame": 1000.0 * result.timings.get("render", 0.0) / max(result.frames, 1),
    }


def _check_stream_frames(frames: int, ctx: BenchContext, label: str) -> None:
    expected = ctx.expected_frames
    if frames < expected:
        raise RuntimeError(f"{label} stream produced {frames} frames for {expected} frames of audio: no speed reported")


def burst_run(ctx: BenchContext) -> dict[str, Any]:
    """:meth:`Pipeline.stream` fed every chunk as fast as it takes them: online RTF, compute-only first frame."""
    ctx.memory.reset()
    start = time.perf_counter()
    first: float | None = None
    frames = 0
    for frame in ctx.pipeline.stream(ctx.options.portrait, iter(ctx.chunks), ctx.controls):
        if first is None:
            first = frame.produced_at - start
        frames += 1
    total = time.perf_counter() - start
    ctx.note_peak("online")
    _check_stream_frames(frames, ctx, "burst")
    assert first is not None
    return {"rtf": total / ctx.audio_seconds, "total_s": total, "first_frame_s": first, "frames": frames}


class PacedSource:
    """Yields chunks on a real-time clock: chunk i is released when its last sample would have been recorded,
    ``start + (i + 1) · chunk``; ``start`` is when the pipeline first asks for audio. Release times are kept."""

    def __init__(self, chunks: Sequence[np.ndarray], chunk_seconds: float) -> None:
        self.chunks = chunks
        self.chunk_seconds = chunk_seconds
        self.start: float | None = None
        self.released: list[float] = []

    def __iter__(self) -> Iterator[np.ndarray]:
        self.start = time.perf_counter()
        for index, chunk in enumerate(self.chunks):
            delay = self.start + (index + 1) * self.chunk_seconds - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            self.released.append(time.perf_counter())
            yield chunk


def paced_run(ctx: BenchContext, *, low_latency: bool = True) -> dict[str, Any]:
    """One paced stream (see :func:`paced_stream`), with the memory peak noted under its part."""
    part = "paced" if low_latency else "paced_reference"
    ctx.memory.reset()
    record = paced_stream(ctx, ctx.controls, low_latency=low_latency)
    ctx.note_peak(part)
    return record


def paced_stream(ctx: BenchContext, controls: Controls, *, low_latency: bool = True) -> dict[str, Any]:
    """First frame from the first chunk and from speech onset, and the lag of each frame behind its audio time.

    ``first_frame_from_onset_s``: from the release of the chunk where speech starts to the first frame whose time
    is at or after that chunk's start. ``lag`` of frame k: when it was ready minus when its audio time k/25 was
    reached on the clock. ``lag_growth`` is the least-squares slope of lag against audio time over the frames
    within the audio: about 0 when the stream keeps up, (RTF − 1) when it falls behind. ``low_latency=False`` is
    the reference's streaming (first clip withheld, the checkpoint's overlap): the before of the latency lever.
    """
    source = PacedSource(ctx.chunks, ctx.chunk_seconds)
    produced: list[tuple[float, float]] = []
    for frame in ctx.pipeline.stream(ctx.options.portrait, source, controls, low_latency=low_latency):
        produced.append((frame.timestamp, frame.produced_at))
    _check_stream_frames(len(produced), ctx, "paced")
    assert source.start is not None
    onset_time = ctx.onset_chunk * ctx.chunk_seconds
    onset_frame = next(p for t, p in produced if t >= onset_time - 1e-9)
    lags = np.array([p - (source.start + t) for t, p in produced])
    times = np.array([t for t, _ in produced])
    inside = times < ctx.audio_seconds
    slope = float(np.polyfit(times[inside], lags[inside], 1)[0]) if inside.sum() >= 2 else 0.0
    return {
        "first_frame_from_first_chunk_s": produced[0][1] - source.released[0],
        "first_frame_from_audio_start_s": produced[0][1] - source.start,
        "first_frame_from_onset_s": onset_frame - source.released[ctx.onset_chunk],
        "lag_median_s": float(np.median(lags)),
        "lag_p95_s": float(np.percentile(lags, 95)),
        "lag_max_s": float(lags.max()),
        "lag_last_s": float(lags[inside][-1]) if inside.any() else float(lags[-1]),
        "lag_growth": slope,
        "rtf": (produced[-1][1] - source.start) / ctx.audio_seconds,
        "frames": len(produced),
    }


def streams_run(ctx: BenchContext) -> dict[str, Any]:
    """``streams`` paced live streams at once on the one pipeline (each its own thread and seed, as concurrent
    visitors would be): how many keep up, the worst lag growth, and the first-frame delays across them."""
    count = ctx.options.streams
    records: list[dict[str, Any] | None] = [None] * count
    errors: list[BaseException] = []

    def one(index: int) -> None:
        controls = Controls(seed=ctx.options.seed + 1 + index, steps=ctx.options.steps)
        try:
            records[index] = paced_stream(ctx, controls)
        except BaseException as exc:  # re-raised below, in the bench's thread
            errors.append(exc)

    ctx.memory.reset()
    threads = [threading.Thread(target=one, args=(i,), name=f"bench-stream-{i}") for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ctx.note_peak("streams")
    if errors:
        raise errors[0]
    done = [r for r in records if r is not None]
    growth = [r["lag_growth"] for r in done]
    return {
        "streams": count,
        "kept_up": sum(g < KEEP_UP_SLOPE for g in growth),
        "worst_lag_growth": max(growth),
        "worst_lag_last_s": max(r["lag_last_s"] for r in done),
        "first_frame_from_onset_median_s": float(np.median([r["first_frame_from_onset_s"] for r in done])),
        "first_frame_from_onset_max_s": max(r["first_frame_from_onset_s"] for r in done),
    }


_RUNNERS: dict[str, Callable[[BenchContext], dict[str, Any]]] = {
    "offline": offline_run,
    "online": burst_run,
    "paced": paced_run,
    "paced_reference": partial(paced_run, low_latency=False),
    "streams": streams_run,
}


def run_pipeline_parts(ctx: BenchContext) -> dict[str, Any]:
    """Warm-up rounds (discarded), then ``runs`` rounds of offline → burst → paced, interleaved.

    Returns every pipeline part by name: its summary over the runs, or ``None`` when it did not run.
    """
    options = ctx.options
    wanted = [p for p in PIPELINE_PARTS if options.runs_part(p)]
    records: dict[str, list[dict[str, Any]]] = {p: [] for p in wanted}
    for round_ in range(options.warmup + options.runs):
        warm = round_ < options.warmup
        for part in wanted:
            if warm and part in REAL_TIME_PARTS:
                continue  # the burst warm-up already warmed the streaming path; paced time is real time
            record = _RUNNERS[part](ctx)
            log.info("%s %s %d: %s", "warm-up" if warm else "run", part, round_, _short(record))
            if not warm:
                records[part].append(record)
    out: dict[str, Any] = {p: None for p in PIPELINE_PARTS}
    for part, runs in records.items():
        out[part] = _summarize_part(runs)
    for part in ("paced", "paced_reference"):
        if out[part] is not None:
            out[part]["keeps_up"] = out[part]["lag_growth"]["median"] < KEEP_UP_SLOPE
    if out["streams"] is not None:
        out["streams"]["all_kept_up"] = all(r["kept_up"] == r["streams"] for r in records["streams"])
    return out


def _summarize_part(runs: list[dict[str, Any]]) -> dict[str, Any]:
    summary: dict[str, Any] = {"runs": len(runs)}
    for key in runs[0]:
        values = [r[key] for r in runs]
        if isinstance(values[0], dict):
            summary[key] = summarize_dicts(values)
        elif key in ("frames", "streams"):
            summary[key] = int(values[0])
        else:
            summary[key] = summarize([float(v) for v in values])
    return summary


def _short(record: Mapping[str, Any]) -> str:
    return ", ".join(f"{k} {v:.3f}" for k, v in record.items() if isinstance(v, float))
