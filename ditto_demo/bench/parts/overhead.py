"""The ``overhead`` part: the per-frame work outside the networks, at 512 × 512, against the issue's budget.

Timed directly: paste-back of a 512 render into a 512 frame (the crop covering the whole frame: the largest paste
at that size; after the first call, as in the pipeline, the warp maps are cached), the decoder output → image
conversion, and the encoder (``VideoWriter.write`` per call, and total write + finish time per frame, which is
x264's throughput as the producer sees it). Derived from the offline runs when they ran: each stage's ms per frame
minus the ms of the network it calls, and the render wall time per frame minus the sum of the stages (queues and
hand-offs; negative when stages overlapped on several cores). The derived figures use the isolated network
timings of the ``networks`` part, so concurrent stages competing for the cores show up in them too; the direct
figures are the clean ones. The render path's levers (:mod:`.levers`) are reported with this part.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from ditto_demo.bench.context import BenchContext
from ditto_demo.bench.measure import Clock, summarize
from ditto_demo.bench.parts.levers import bench_levers
from ditto_demo.pipeline.render import PasteBack, decoder_output_to_image
from ditto_demo.pipeline.timebase import FPS
from ditto_demo.pipeline.writer import VideoWriter

__all__ = ["OVERHEAD_BUDGET_MS", "bench_overhead"]

#: The issue's budget for the per-frame work outside the networks, at 512 × 512 on the CPU.
OVERHEAD_BUDGET_MS = 10.0
#: Frames written when timing the encoder on its own.
_ENCODE_FRAMES = 50
_SIZE = 512


def bench_overhead(ctx: BenchContext, offline: dict[str, Any] | None,
                   networks: dict[str, dict[str, Any]] | None) -> dict[str, Any]:
    """The direct timings, the figures derived from ``offline`` and ``networks`` when both ran, the total
    against :data:`OVERHEAD_BUDGET_MS`, and the levers."""
    rng = np.random.default_rng(ctx.options.seed)
    clock = Clock("cpu")
    render = rng.uniform(0, 255, (_SIZE, _SIZE, 3)).astype(np.float32)
    frame = rng.integers(0, 256, (_SIZE, _SIZE, 3), dtype=np.uint8)
    decoded = rng.uniform(0, 1, (1, 3, _SIZE, _SIZE)).astype(np.float32)
    paste = PasteBack()
    paste(render, frame, np.eye(3))  # first call builds the cached maps, as frame 0 does in the pipeline
    paste_ms: list[float] = []
    image_ms: list[float] = []
    write_ms: list[float] = []
    encode_ms: list[float] = []
    picture = _encodable_frame(ctx.options.portrait, _SIZE)
    for run in range(ctx.options.warmup + ctx.options.runs):
        paste_s = clock.per_call(lambda: paste(render, frame, np.eye(3)))[0]
        image_s = clock.per_call(lambda: decoder_output_to_image(decoded))[0]
        writes: list[float] = []
        started = time.perf_counter()
        with VideoWriter(ctx.work / "encode.mp4", fps=FPS, encoder=ctx.pipeline.encoder) as writer:
            for k in range(_ENCODE_FRAMES):
                shifted = np.roll(picture, k, axis=1)  # motion, so x264 cannot skip every block
                writes.append(clock.time(lambda shifted=shifted: writer.write(shifted)))
        encode_s = (time.perf_counter() - started) / _ENCODE_FRAMES
        if run >= ctx.options.warmup:
            paste_ms.append(1000 * paste_s)
            image_ms.append(1000 * image_s)
            write_ms.append(1000 * float(np.median(writes)))
            encode_ms.append(1000 * encode_s)
    direct = {
        "paste_back_512_ms": summarize(paste_ms),
        "to_image_512_ms": summarize(image_ms),
        "encode_write_512_ms": summarize(write_ms),
        "encode_512_ms": summarize(encode_ms),
    }
    out: dict[str, Any] = {"direct": direct, "derived": None, "budget_ms": OVERHEAD_BUDGET_MS}
    parts = {
        "paste_back": direct["paste_back_512_ms"]["median"],
        "to_image": direct["to_image_512_ms"]["median"],
        "encode": direct["encode_512_ms"]["median"],
    }
    if offline is not None and networks is not None:
        derived = _derived(offline, networks)
        out["derived"] = derived
        # Into the total go the stitch stage's own maths and queue time that was not hidden by overlap. The
        # decode stage's extra work is the image conversion timed above and the compose stage is paste-back at the
        # portrait's size (the 512 figure above is the budget's). The warp / decode "outside" figures are left
        # out: with stages running concurrently they measure contention for the cores, not work of ours.
        parts.update(
            stitch=max(0.0, derived["stitch_outside_network_ms"]),
            queue=max(0.0, derived["queue_ms"]),
        )
    total = float(sum(parts.values()))
    out.update(total_ms=total, components_ms=parts, within_budget=total <= OVERHEAD_BUDGET_MS,
               complete=out["derived"] is not None)
    out["levers"] = bench_levers(ctx)
    return out


def _derived(offline: dict[str, Any], networks: dict[str, dict[str, Any]]) -> dict[str, float]:
    """Offline stage ms per frame minus the isolated network each stage calls; render wall minus the stage sum."""
    stage = {k: v["median"] for k, v in offline["stage_ms"].items()}
    net = {k: networks[k]["ms"]["median"] for k in ("stitch_network", "warp_network", "decoder")}
    render_wall = offline["render_ms_per_frame"]["median"]
    stage_sum = sum(stage.get(k, 0.0) for k in ("stitch", "warp", "decode", "compose"))
    return {
        "stitch_outside_network_ms": stage.get("stitch", 0.0) - net["stitch_network"],
        "warp_outside_network_ms": stage.get("warp", 0.0) - net["warp_network"],
        "decode_outside_network_ms": stage.get("decode", 0.0) - net["decoder"],
        "compose_ms": stage.get("compose", 0.0),
        "render_wall_ms": render_wall,
        "stage_sum_ms": stage_sum,
        "queue_ms": render_wall - stage_sum,
    }


def _encodable_frame(portrait: Path, size: int) -> np.ndarray:
    """A ``size`` square picture to encode: the portrait resized (real image statistics), else a gradient."""
    import cv2

    image = cv2.imread(str(portrait), cv2.IMREAD_COLOR)
    if image is None:
        ramp = np.linspace(0, 255, size, dtype=np.float32)
        return np.stack([np.add.outer(ramp, ramp) / 2] * 3, axis=2).astype(np.uint8)
    return np.ascontiguousarray(cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)[..., ::-1])
