"""How the benchmark measures: medians with p05 / p95, a clock per device, per-part peak memory, machine facts.

Timing is ``time.perf_counter`` on the CPU; on CUDA a call is timed with CUDA events around a synchronised call,
so the interval holds that call's kernels only. Memory is the kernel's RSS high-water mark, reset between parts,
and on CUDA the caching allocator's peak.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import platform
import resource
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["Clock", "MemoryProbe", "load_average", "machine_facts", "process_peak_mb", "summarize", "summarize_dicts"]

#: Per-call timing: repeat a call within one run until this much time has passed (small nets are sub-ms).
MIN_RUN_S = 0.05
MAX_CALLS_PER_RUN = 200


# ------------------------------------------------------------------------------------------------------ statistics


def summarize(values: Sequence[float]) -> dict[str, float]:
    """Median, p05 and p95 (linear interpolation), min, max and the count: the shape of a timing sample."""
    if not values:
        raise ValueError("no values to summarise")
    array = np.asarray(values, dtype=np.float64)
    p05, median, p95 = np.percentile(array, [5, 50, 95])
    return {"median": float(median), "p05": float(p05), "p95": float(p95), "min": float(array.min()),
            "max": float(array.max()), "n": int(array.size)}


def summarize_dicts(records: Sequence[Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """:func:`summarize` per key over records that share keys (a key missing from a record is left out there)."""
    keys = sorted({k for record in records for k in record})
    return {k: summarize([r[k] for r in records if k in r]) for k in keys}


# ----------------------------------------------------------------------------------------------------- clocks


class Clock:
    """Times one call in seconds: ``perf_counter`` on the CPU; CUDA events around a synchronised call on a GPU.

    On CUDA the device is synchronised before the start event, so the interval holds this call's kernels only,
    and the end event is waited for before reading it.
    """

    def __init__(self, device: str) -> None:
        self.cuda = device.startswith("cuda") and torch.cuda.is_available()

    def time(self, fn: Callable[[], object]) -> float:
        if self.cuda:
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            start.record()
            fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1000.0
        begin = time.perf_counter()
        fn()
        return time.perf_counter() - begin

    def per_call(self, fn: Callable[[], object]) -> tuple[float, int]:
        """Seconds per call, averaged over as many calls as fit in ``MIN_RUN_S`` (at least one)."""
        total, calls = 0.0, 0
        while calls < MAX_CALLS_PER_RUN and (calls == 0 or total < MIN_RUN_S):
            total += self.time(fn)
            calls += 1
        return total / calls, calls


# ----------------------------------------------------------------------------------------------------- memory


class MemoryProbe:
    """Peak memory of one part of the benchmark.

    RSS: Linux keeps a per-process high-water mark (``VmHWM``) that writing ``5`` to ``/proc/self/clear_refs``
    resets, so each part gets its own peak. Where that is not allowed, the figure is the process's peak so far
    (``scope`` says which). Child processes (ffmpeg) are not included. CUDA: the caching allocator's peak, which
    misses memory that ONNX Runtime or TensorRT allocate themselves.
    """

    def __init__(self, cuda: bool) -> None:
        self.cuda = cuda
        self.scope = "part"

    def reset(self) -> None:
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            self.scope = "process"
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()

    def peak(self) -> dict[str, Any]:
        rss = _status_kb("VmHWM")
        if rss is None:
            usage = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            rss = usage / 1024 if sys.platform == "darwin" else usage  # bytes on macOS, KiB on Linux
            self.scope = "process"
        out: dict[str, Any] = {"rss_mb": rss / 1024, "rss_scope": self.scope}
        if self.cuda:
            out["cuda_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
        return out


def _status_kb(key: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return float(line.split()[1])
    except OSError:
        return None
    return None


def process_peak_mb() -> float:
    """The whole process's peak RSS in MB (never reset)."""
    usage = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return usage / 2**20 if sys.platform == "darwin" else usage / 1024


# ----------------------------------------------------------------------------------------------- machine facts


def machine_facts(device: str) -> dict[str, Any]:
    """What a reader needs to compare figures: CPU, cores, threads, versions, GPU, date, load at the start."""
    from ditto_demo.engine.host import probe_host

    host = probe_host()
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "cores_usable": affinity,
        "torch_threads": torch.get_num_threads(),
        "memory_gb": _meminfo_gb(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": host.onnxruntime_version,
        "tensorrt": host.tensorrt_version,
        "gpu": host.gpu_name if device.startswith("cuda") else None,
        "cuda": torch.version.cuda if device.startswith("cuda") else None,
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "load_average": load_average(),
    }


def _meminfo_gb() -> float | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(float(line.split()[1]) / 2**20, 1)
    return None


def load_average() -> list[float] | None:
    """1/5/15-minute load: a benchmark taken while other work ran on a small machine should say so."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None
