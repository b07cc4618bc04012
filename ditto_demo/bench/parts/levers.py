"""Before / after ms per frame of the two levers of the device-resident render path (issue #5).

``render_path``: one frame of warp → decode → paste-back into the registered portrait. Before: host arrays in and
out of both networks (the cached feature copied by the backend every call), the decoder output turned into a host
image and pasted by cv2 — the renderer until the tensor path. After: the pipeline's own warp, decode and compose
stages (:class:`~ditto_demo.pipeline.frames.FrameRenderer`: ``run_tensors``, the feature uploaded once, the
paste-back ``make_paste_back`` picks for the decoder's device). Keypoints are random but fixed; stitching is not
part of either.

``paste_back``: a decoder output already on the device pasted into a 1080p frame (face scaled ×1.3, turned 4°).
Before: to the host, to an image, cv2 :class:`PasteBack`; after: :class:`TensorPasteBack` on the device. On a CPU
the "after" of this lever is expected to lose: that is why ``make_paste_back`` keeps cv2 there.

Before and after alternate which goes first run by run; each figure is the median over every timed frame.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ditto_demo.bench.context import BenchContext
from ditto_demo.bench.measure import Clock, summarize
from ditto_demo.bench.parts.networks import example_inputs
from ditto_demo.pipeline.frames import FrameRenderer
from ditto_demo.pipeline.paste_tensor import TensorPasteBack, make_paste_back
from ditto_demo.pipeline.render import CROP_SIZE, PasteBack, decoder_output_to_image
from ditto_demo.pipeline.stitching import MotionStitcher

__all__ = ["bench_levers"]

log = logging.getLogger(__name__)

#: Frames timed one by one per run, after ``_WARMUP_FRAMES`` that are not (every run: the first frame builds
#: caches, uploads the portrait's feature and, on CUDA, picks kernels).
_FRAMES = 10
_WARMUP_FRAMES = 2
#: The frame the ``paste_back`` lever pastes into.
_FRAME_SIZE = (1920, 1080)


def bench_levers(ctx: BenchContext) -> dict[str, Any]:
    """Both levers' before and after figures, what each side is, and the speed-up."""
    networks = ctx.pipeline.networks
    warp, decoder = networks["warp_network"], networks["decoder"]
    clock = Clock(decoder.device)
    rng = np.random.default_rng(ctx.options.seed)
    source = ctx.pipeline.register(ctx.options.portrait, ctx.controls)
    frame = source.frames[0]
    example = example_inputs(warp, rng)
    kp_source, kp_driving = example["kp_source"], example["kp_driving"]

    host_paste = PasteBack()

    def host_render() -> np.ndarray:
        out = warp(feature_3d=frame.appearance, kp_source=kp_source, kp_driving=kp_driving)["out"]
        render = decoder_output_to_image(decoder(feature=out)["output"])
        return host_paste(render, frame.image, frame.crop_to_image)

    plan = ctx.pipeline.plan(source, ctx.controls, n_frames=1)
    stitcher = MotionStitcher(source, plan.stitch, 1, networks["stitch_network"])
    renderer = FrameRenderer(networks, source, stitcher, "full")

    def device_render() -> np.ndarray:
        for warped in renderer.warp((0, kp_source, kp_driving)):
            for decoded in renderer.decode(warped):
                for _, image in renderer.compose(decoded):
                    return image
        raise RuntimeError("the renderer produced no frame")

    width, height = _FRAME_SIZE
    picture = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    picture.flags.writeable = False  # as a registered portrait's frames are
    turn, scale = math.radians(4.0), 1.3
    centre = np.array([width / 2, height / 2]) - scale * CROP_SIZE / 2
    crop_to_image = np.array([[scale * math.cos(turn), -scale * math.sin(turn), centre[0]],
                              [scale * math.sin(turn), scale * math.cos(turn), centre[1]], [0, 0, 1]])
    generator = torch.Generator().manual_seed(ctx.options.seed)
    decoded = torch.rand((1, 3, CROP_SIZE, CROP_SIZE), generator=generator).to(decoder.torch_device)
    device_paste = TensorPasteBack()
    levers: dict[str, tuple[Callable[[], object], Callable[[], object]]] = {
        "render_path": (host_render, device_render),
        "paste_back": (lambda: host_paste(decoder_output_to_image(decoded.cpu().numpy()), picture, crop_to_image),
                       lambda: device_paste(decoded, picture, crop_to_image)),
    }
    timings: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in levers}
    for run in range(ctx.options.runs):
        for name, (before, after) in levers.items():
            order = ((0, before), (1, after)) if run % 2 == 0 else ((1, after), (0, before))
            for slot, fn in order:
                for _ in range(_WARMUP_FRAMES):
                    fn()
                timings[name][slot].extend(1000 * clock.time(fn) for _ in range(_FRAMES))
    picked = type(make_paste_back(decoder.torch_device)).__name__
    descriptions = {
        "render_path": ("host arrays through warp + decoder, cv2 PasteBack",
                        f"run_tensors, feature uploaded once, {picked}"),
        "paste_back": ("decoder output to the host, cv2 PasteBack", f"TensorPasteBack on {decoder.device}"),
    }
    out: dict[str, Any] = {"device": decoder.device, "paste_back_picked": picked, "frames_per_run": _FRAMES,
                           "paste_frame": [width, height]}
    for name, (before_ms, after_ms) in timings.items():
        before_stats, after_stats = summarize(before_ms), summarize(after_ms)
        out[name] = {
            "before": descriptions[name][0],
            "after": descriptions[name][1],
            "before_ms": before_stats,
            "after_ms": after_stats,
            "speedup": before_stats["median"] / max(after_stats["median"], 1e-9),
        }
        log.info("lever %s: %.2f ms -> %.2f ms per frame", name, before_stats["median"], after_stats["median"])
    return out
