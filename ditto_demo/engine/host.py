"""What this host can run: CUDA, TensorRT, ONNX Runtime providers. Probed once, reported by ``doctor``."""

from __future__ import annotations

import importlib.util
import platform
import re
from dataclasses import dataclass, field
from functools import cache

import torch

__all__ = ["HostInfo", "probe_host", "release_memory"]


@dataclass(frozen=True)
class HostInfo:
    """A snapshot of the host's accelerators and runtimes (nothing here changes while a process runs)."""

    python: str
    torch_version: str
    cuda_available: bool
    gpu_name: str | None
    compute_capability: tuple[int, int] | None
    tensorrt_version: str | None
    tensorrt_error: str | None
    onnxruntime_version: str | None
    onnx_providers: tuple[str, ...] = field(default_factory=tuple)

    @property
    def gpu_slug(self) -> str:
        """A folder-safe GPU name with its architecture, e.g. ``nvidia-h200-sm90``."""
        name = re.sub(r"[^a-z0-9]+", "-", (self.gpu_name or "cpu").lower()).strip("-")
        major, minor = self.compute_capability or (0, 0)
        return f"{name}-sm{major}{minor}"

    @property
    def tensorrt_usable(self) -> bool:
        return self.cuda_available and self.tensorrt_version is not None


@cache
def probe_host() -> HostInfo:
    """Inspect the host once per process (importing TensorRT and querying CUDA is slow and does not change)."""
    cuda = torch.cuda.is_available()
    gpu_name = torch.cuda.get_device_name(0) if cuda else None
    capability = tuple(torch.cuda.get_device_capability(0)) if cuda else None
    trt_version, trt_error = _tensorrt_version()
    ort_version, providers = _onnxruntime_info()
    return HostInfo(
        python=platform.python_version(),
        torch_version=torch.__version__,
        cuda_available=cuda,
        gpu_name=gpu_name,
        compute_capability=capability,  # type: ignore[arg-type]
        tensorrt_version=trt_version,
        tensorrt_error=trt_error,
        onnxruntime_version=ort_version,
        onnx_providers=providers,
    )


def _tensorrt_version() -> tuple[str | None, str | None]:
    if importlib.util.find_spec("tensorrt") is None:
        return None, "the tensorrt package is not installed"
    try:
        import tensorrt as trt
    except (ImportError, OSError) as exc:  # a wheel whose CUDA libraries are missing fails with OSError
        return None, f"tensorrt does not import ({exc})"
    return str(trt.__version__), None


def _onnxruntime_info() -> tuple[str | None, tuple[str, ...]]:
    try:
        import onnxruntime as ort
    except ImportError:
        return None, ()
    return str(ort.__version__), tuple(ort.get_available_providers())


def release_memory() -> None:
    """Hand cached GPU memory back after a failed or cancelled run, so the next request starts clean.

    PyTorch keeps freed blocks cached for reuse; after an aborted run those blocks may be large (a whole clip of
    intermediate features) and would count against other processes on a shared GPU. A no-op without CUDA.
    """
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
