"""PyTorch backend: our ``nn.Module`` on CPU or CUDA, optionally through ``torch.compile``.

On CUDA, networks whose released engines are fp16 run under fp16 autocast (the reference does the same); the
motion extractor, LMDM and HuBERT stay fp32. On the CPU everything is fp32, which is what conformance checks.

``compile_mode`` (``DITTO_TORCH_COMPILE``, read by the loader): ``off`` runs the module eagerly; ``default`` and
``max-autotune-no-cudagraphs`` fuse kernels with TorchInductor; ``reduce-overhead`` adds CUDA graphs (CUDA only).
Shapes are fixed per network (``dynamic=False``): the first call compiles (seconds to a minute at full size, logged),
later calls reuse it; a new shape recompiles. Compiled calls are serialised by a lock — compilation is not safe to
race, and on the GPU the kernels serialise anyway. With ``reduce-overhead`` PyTorch keeps one CUDA graph tree per
thread, and the pipeline runs each request's stages in fresh threads, so each request records its graphs again: it
is offered for the benchmark's per-network figures, not recommended for the app.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from ditto_demo.engine.backends.base import Network
from ditto_demo.engine.specs import NetworkSpec
from ditto_demo.errors import BackendUnavailableError

__all__ = ["COMPILE_ENV", "COMPILE_MODES", "TorchNetwork", "compile_mode_from_env"]

log = logging.getLogger(__name__)

#: The environment variable that turns ``torch.compile`` on for every PyTorch network.
COMPILE_ENV = "DITTO_TORCH_COMPILE"
#: Accepted values; ``off`` is the default.
COMPILE_MODES = ("off", "default", "max-autotune-no-cudagraphs", "reduce-overhead")


def compile_mode_from_env() -> str:
    """``DITTO_TORCH_COMPILE`` validated (``off`` when unset); a bad value names the allowed ones."""
    value = os.environ.get(COMPILE_ENV, "off").strip().lower() or "off"
    if value not in COMPILE_MODES:
        allowed = ", ".join(COMPILE_MODES)
        raise BackendUnavailableError(f"{COMPILE_ENV}={value!r} is not a compile mode; use one of {allowed}.")
    return value


class TorchNetwork(Network):
    backend = "torch"

    def __init__(
        self,
        spec: NetworkSpec,
        module: nn.Module,
        device: str,
        input_shapes: dict[str, tuple] | None = None,
        *,
        compile_mode: str = "off",
        compile_backend: str = "inductor",
    ) -> None:
        super().__init__(spec, device, input_shapes)
        if compile_mode not in COMPILE_MODES:
            raise ValueError(f"compile_mode must be one of {', '.join(COMPILE_MODES)}; got {compile_mode!r}")
        if compile_mode == "reduce-overhead" and self.torch_device.type != "cuda":
            raise BackendUnavailableError(f"{COMPILE_ENV}=reduce-overhead records CUDA graphs; it needs --device cuda.")
        self.module = module.eval().to(self.torch_device)
        self._autocast = self.torch_device.type == "cuda" and spec.precision == "fp16"
        self.compile_mode = compile_mode
        self._forward: Callable[..., object] = self.module
        self._lock: threading.Lock | contextlib.nullcontext[None] = contextlib.nullcontext()
        if compile_mode != "off":
            mode = None if compile_mode == "default" else compile_mode
            self._forward = torch.compile(self.module, mode=mode, dynamic=False, backend=compile_backend)
            self._lock = threading.Lock()
            log.info("%s: torch.compile (%s, backend %s); the first call compiles", spec.name, compile_mode,
                     compile_backend)

    def run_tensors(self, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        args = [inputs[name].to(self.torch_device) for name in self.input_names]
        autocast = (
            torch.autocast(device_type="cuda", dtype=torch.float16) if self._autocast else contextlib.nullcontext()
        )
        with self._lock, torch.inference_mode(), autocast:
            outputs = self._forward(*args)
            # CUDA-graph outputs live in memory the next replay overwrites: the cast below copies them when the
            # dtype changes; clone otherwise so callers get tensors that stay valid.
            return {
                binding.name: _owned(out.to(getattr(torch, binding.dtype)), out, self.compile_mode)
                for binding, out in zip(self.spec.outputs, outputs, strict=True)
            }

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        # Read-only arrays (shared, cached features) are copied: torch only wraps writable memory.
        tensors = {k: torch.from_numpy(v if v.flags.writeable else v.copy()) for k, v in feeds.items()}
        outputs = self.run_tensors(**tensors)
        return {k: v.cpu().numpy() for k, v in outputs.items()}


def _owned(cast: torch.Tensor, raw: torch.Tensor, compile_mode: str) -> torch.Tensor:
    if compile_mode == "reduce-overhead" and cast.data_ptr() == raw.data_ptr():
        return cast.clone()
    return cast
