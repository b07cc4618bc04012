"""PyTorch backend: our ``nn.Module`` on CPU or CUDA.

On CUDA, networks whose released engines are fp16 run under fp16 autocast (the reference does the same); the
motion extractor, LMDM and HuBERT stay fp32. On the CPU everything is fp32, which is what conformance checks.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from torch import nn

from ditto_demo.engine.backends.base import Network
from ditto_demo.engine.specs import NetworkSpec

__all__ = ["TorchNetwork"]


class TorchNetwork(Network):
    backend = "torch"

    def __init__(
        self, spec: NetworkSpec, module: nn.Module, device: str, input_shapes: dict[str, tuple] | None = None
    ) -> None:
        super().__init__(spec, device, input_shapes)
        self.module = module.eval().to(self.torch_device)
        self._autocast = self.torch_device.type == "cuda" and spec.precision == "fp16"

    def run_tensors(self, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        args = [inputs[name].to(self.torch_device) for name in self.input_names]
        autocast = (
            torch.autocast(device_type="cuda", dtype=torch.float16) if self._autocast else contextlib.nullcontext()
        )
        with torch.inference_mode(), autocast:
            outputs = self.module(*args)
        return {
            binding.name: out.to(getattr(torch, binding.dtype))
            for binding, out in zip(self.spec.outputs, outputs, strict=True)
        }

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        # Read-only arrays (shared, cached features) are copied: torch only wraps writable memory.
        tensors = {k: torch.from_numpy(v if v.flags.writeable else v.copy()) for k, v in feeds.items()}
        outputs = self.run_tensors(**tensors)
        return {k: v.cpu().numpy() for k, v in outputs.items()}
