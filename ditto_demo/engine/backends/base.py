"""The one interface every backend implements: call a network by its binding names.

Public edge: ``net(**numpy_arrays) -> {output name: numpy array}``. Fast path: ``net.run_tensors(**torch_tensors)``
keeps data on the network's device (the TensorRT and PyTorch backends never copy to the host there). Code above the
engine layer uses only these two methods, so it never needs to know which backend it holds.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping

import numpy as np
import torch

from ditto_demo.engine.specs import NetworkSpec

__all__ = ["Dim", "Network", "check_inputs"]


#: One dimension of an accepted input shape: a size, a named dynamic range of the spec, or ``None`` (any).
Dim = int | str | None


def check_inputs(
    spec: NetworkSpec, inputs: Mapping[str, np.ndarray], shapes: Mapping[str, tuple[Dim, ...]] | None = None
) -> dict[str, np.ndarray]:
    """Validate names and shapes and cast to the binding dtypes (a float64 array is fine).

    ``shapes`` are the shapes the loaded network accepts (default: the released ones of the spec). A wrong name
    or shape is a programming error in the caller, so it raises ``ValueError`` with the expected contract spelled
    out rather than letting a backend fail with its own, less readable message.
    """
    names = set(inputs)
    expected = set(spec.input_names)
    if names != expected:
        raise ValueError(
            f"{spec.name} takes inputs {sorted(expected)}; got {sorted(names)}"
            f" (missing {sorted(expected - names)}, unexpected {sorted(names - expected)})"
        )
    feeds: dict[str, np.ndarray] = {}
    for binding in spec.inputs:
        array = np.ascontiguousarray(inputs[binding.name], dtype=binding.dtype)
        want = shapes[binding.name] if shapes is not None else binding.shape
        _check_shape(spec, binding.name, want, tuple(array.shape))
        feeds[binding.name] = array
    return feeds


def _check_shape(spec: NetworkSpec, name: str, want: tuple[Dim, ...], shape: tuple[int, ...]) -> None:
    ok = len(shape) == len(want)
    for dim, expected in zip(shape, want, strict=False):
        if isinstance(expected, str):
            low, _, high = spec.dynamic.get(expected, (1, 0, 2**31 - 1))
            ok = ok and low <= dim <= high
        elif expected is not None:
            ok = ok and dim == expected
    if not ok:
        shown = tuple("*" if d is None else d for d in want)
        raise ValueError(f"{spec.name}: input {name!r} must have shape {shown}, got {shape}")


class Network(ABC):
    """A loaded network. Subclasses implement :meth:`_run` (host arrays) and may override :meth:`run_tensors`."""

    #: ``"torch"``, ``"onnx"`` or ``"tensorrt"`` (for logs and reports; callers must not branch on it).
    backend: str = ""

    def __init__(
        self, spec: NetworkSpec, device: str, input_shapes: Mapping[str, tuple[Dim, ...]] | None = None
    ) -> None:
        self.spec = spec
        self.device = device
        #: Shapes this loaded network accepts; differ from the released ones for tiny test networks.
        self.input_shapes: dict[str, tuple[Dim, ...]] = dict(input_shapes or {b.name: b.shape for b in spec.inputs})

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def input_names(self) -> tuple[str, ...]:
        return self.spec.input_names

    @property
    def output_names(self) -> tuple[str, ...]:
        return self.spec.output_names

    def __call__(self, **inputs: np.ndarray) -> dict[str, np.ndarray]:
        """Run once on host arrays keyed by input binding names; returns fresh host arrays."""
        return self._run(check_inputs(self.spec, inputs, self.input_shapes))

    @abstractmethod
    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run on validated, contiguous host arrays of the binding dtypes."""

    def run_tensors(self, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        """Fast path on torch tensors. The default goes through host memory; GPU backends override it.

        Outputs are on :attr:`torch_device`. A backend may return views of buffers it reuses on the next call:
        copy an output you keep past that.
        """
        outputs = self(**{k: v.detach().cpu().numpy() for k, v in inputs.items()})
        return {k: torch.from_numpy(v).to(self.torch_device) for k, v in outputs.items()}

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.device)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} backend={self.backend} device={self.device}>"
