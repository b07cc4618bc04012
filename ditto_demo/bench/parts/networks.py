"""The ``networks`` part: each network's ms per call through ``load_network`` against its bare eager module.

The baseline is the same architecture and weights called as a plain eager float32 ``nn.Module`` (no wrapper, no
casts, no copies). Both are timed in every run, one after the other and first in turn, so drift (thermal, other
load) hits both alike. With ``--compile default`` this is the compile lever: compiled network against eager.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import numpy as np
import torch

from ditto_demo.bench.context import BenchContext
from ditto_demo.bench.measure import Clock, summarize
from ditto_demo.engine import Network
from ditto_demo.engine.checkpoints import build_module

__all__ = ["NETWORKS", "bench_networks", "example_inputs"]

log = logging.getLogger(__name__)

#: The six networks we implement (binding order of the spec table) and HuBERT, which every pipeline part runs.
NETWORKS = ("appearance_extractor", "motion_extractor", "warp_network", "decoder", "stitch_network", "lmdm",
            "hubert")
#: The diffusion time step fed to the LMDM network when timing it alone (any valid index costs the same).
_LMDM_TIME_STEP = 500


def example_inputs(net: Network, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Inputs of the loaded network's binding shapes: images in [0, 1], keypoints ~N(0, 0.3²), features N(0, 1),
    the LMDM time step mid-schedule; a dynamic axis takes its optimisation-profile size."""
    spec = net.spec
    inputs: dict[str, np.ndarray] = {}
    for binding in spec.inputs:
        shape = tuple(_concrete(dim, spec.dynamic) for dim in net.input_shapes[binding.name])
        if binding.dtype == "int64":
            inputs[binding.name] = np.full(shape, _LMDM_TIME_STEP, dtype=np.int64)
        elif binding.name in ("image", "input", "data"):
            inputs[binding.name] = rng.uniform(0, 1, shape).astype(np.float32)
        elif binding.name.startswith("kp_"):
            inputs[binding.name] = (0.3 * rng.standard_normal(shape)).astype(np.float32)
        elif binding.name == "input_values":
            inputs[binding.name] = (0.1 * rng.standard_normal(shape)).astype(np.float32)
        else:
            inputs[binding.name] = rng.standard_normal(shape).astype(np.float32)
    return inputs


def _concrete(dim: int | str | None, dynamic: Mapping[str, tuple[int, int, int]]) -> int:
    if isinstance(dim, int):
        return dim
    if isinstance(dim, str) and dim in dynamic:
        return dynamic[dim][1]
    return 1


def _call_network(net: Network, inputs: Mapping[str, np.ndarray]) -> object:
    """Our path, as the pipeline calls it: host arrays in, host arrays out, through the backend's wrapper."""
    return net(**inputs)


def _call_eager(module: torch.nn.Module, args: Sequence[torch.Tensor]) -> object:
    """The baseline: the bare module on tensors already on its device, no wrapper, no casts, no copies."""
    with torch.inference_mode():
        return module(*args)


def bench_networks(ctx: BenchContext) -> dict[str, dict[str, Any]]:
    """Each network through ``load_network`` vs the plain eager float32 module of the same weights.

    ``ratio`` > 1 means our wrapper / backend is slower than the plain module; ``wrapper_overhead_ms`` is the
    difference of the medians (noise when it is negative). HuBERT has no module (ONNX only): no baseline.
    """
    rng = np.random.default_rng(ctx.options.seed)
    out: dict[str, dict[str, Any]] = {}
    ctx.memory.reset()
    for name in NETWORKS:
        net = ctx.pipeline.networks[name]
        clock = Clock(net.device)
        inputs = example_inputs(net, rng)
        ours = partial(_call_network, net, inputs)
        eager: Callable[[], object] | None = None
        if net.spec.module is not None:
            module = build_module(net.spec, ctx.root).to(net.torch_device).float().eval()
            args = [torch.from_numpy(inputs[n]).to(net.torch_device) for n in net.spec.input_names]
            eager = partial(_call_eager, module, args)
        ours_ms: list[float] = []
        eager_ms: list[float] = []
        calls = 0
        for run in range(ctx.options.warmup + ctx.options.runs):
            if eager is not None and run % 2:  # alternate who goes first: neither always gets the warmer caches
                eager_seconds = clock.per_call(eager)[0]
                seconds, calls = clock.per_call(ours)
            else:
                seconds, calls = clock.per_call(ours)
                eager_seconds = clock.per_call(eager)[0] if eager is not None else None
            if run >= ctx.options.warmup:
                ours_ms.append(1000 * seconds)
                if eager_seconds is not None:
                    eager_ms.append(1000 * eager_seconds)
        entry: dict[str, Any] = {
            "backend": net.backend,
            "device": net.device,
            "shapes": {k: list(v.shape) for k, v in inputs.items()},
            "calls_per_run": calls,
            "ms": summarize(ours_ms),
            "eager_fp32_ms": summarize(eager_ms) if eager_ms else None,
            "ratio": (float(np.median(ours_ms)) / float(np.median(eager_ms))) if eager_ms else None,
            "wrapper_overhead_ms": (float(np.median(ours_ms)) - float(np.median(eager_ms))) if eager_ms else None,
        }
        if name == "hubert" and ctx.options.checkpoints is None:
            entry["note"] = "stand-in model of the test checkpoints (not HuBERT-large)"
        out[name] = entry
        log.info("network %s: %.2f ms/call (eager %s)", name, entry["ms"]["median"],
                 f"{entry['eager_fp32_ms']['median']:.2f} ms" if eager_ms else "n/a")
    ctx.note_peak("networks")
    return out
