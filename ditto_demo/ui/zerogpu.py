"""Optional Hugging Face ZeroGPU support: a GPU is lent to a handler only for the duration it asks for.

On a ZeroGPU Space (the ``spaces`` package is installed and ``SPACES_ZERO_GPU`` is set) the GPU-using handlers are
wrapped in ``spaces.GPU(duration=...)``. The duration is a callable that receives the handler's own arguments, so a
request asks for time in proportion to its speech: a fixed budget would either waste the visitor's daily quota on
short clips or cut long ones off. Everywhere else :func:`on_gpu` returns the handler unchanged, so the same
``app.py`` runs locally, on a dedicated GPU and on ZeroGPU. (``app.py`` imports ``spaces`` before anything else when
it is installed: ZeroGPU refuses to start once CUDA has been initialised.)
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import math
import os
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from ditto_demo.errors import DittoError

__all__ = [
    "BASE_SECONDS",
    "MAX_SECONDS",
    "SECONDS_PER_AUDIO_SECOND",
    "ZERO_GPU_ENV",
    "audio_duration",
    "gpu_seconds",
    "on_gpu",
    "zero_gpu_active",
]

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])

ZERO_GPU_ENV = "SPACES_ZERO_GPU"
#: Fixed cost of a generation on a freshly lent GPU: moving the networks there, face registration, HuBERT, encoding.
BASE_SECONDS = 20
#: GPU seconds per second of speech with the PyTorch backend (ZeroGPU runs no TensorRT), with headroom: the
#: Blackwell/H200 slices render well above real time, but a cold worker compiles kernels on its first frames.
SECONDS_PER_AUDIO_SECOND = 1.5
#: Upper bound of one request. ZeroGPU refuses durations above the visitor's allowance outright, so asking for more
#: than a long clip needs would turn a valid request into an error.
MAX_SECONDS = 120


def zero_gpu_active(env: Mapping[str, str] | None = None) -> bool:
    """True on a ZeroGPU Space: ``SPACES_ZERO_GPU`` is set (not to a false value) and ``spaces`` is importable."""
    env = os.environ if env is None else env
    flag = env.get(ZERO_GPU_ENV, "").strip().lower()
    if flag in ("", "0", "false", "no", "off"):
        return False
    return importlib.util.find_spec("spaces") is not None


def gpu_seconds(audio_seconds: float) -> int:
    """GPU seconds to request for ``audio_seconds`` of speech: a fixed part plus a part per second, capped."""
    if not math.isfinite(audio_seconds) or audio_seconds < 0:
        audio_seconds = 0.0
    return int(min(MAX_SECONDS, math.ceil(BASE_SECONDS + SECONDS_PER_AUDIO_SECOND * audio_seconds)))


def audio_duration(measure: Callable[[str], float], *, audio_index: int = 1) -> Callable[..., int]:
    """A ``spaces.GPU`` duration callable for a handler whose argument ``audio_index`` (or ``audio=``) is the speech.

    ``measure`` is :meth:`DemoService.audio_seconds`. Speech that cannot be measured (missing, unreadable, over the
    limit) gets the fixed part only: the handler will refuse it within a second, and asking for more would cost quota.
    """

    def duration(*args: Any, **kwargs: Any) -> int:
        audio = kwargs.get("audio", args[audio_index] if len(args) > audio_index else None)
        if not audio:
            return gpu_seconds(0.0)
        try:
            return gpu_seconds(measure(str(audio)))
        except DittoError:
            return gpu_seconds(0.0)

    return duration


def on_gpu(fn: F, duration: int | Callable[..., int]) -> F:
    """``spaces.GPU(duration=duration)(fn)`` on ZeroGPU; ``fn`` itself everywhere else."""
    if not zero_gpu_active():
        return fn
    spaces = importlib.import_module("spaces")
    log.info("ZeroGPU: %s runs on a lent GPU", getattr(fn, "__name__", fn))
    return spaces.GPU(duration=duration)(fn)
