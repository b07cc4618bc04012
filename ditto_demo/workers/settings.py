"""Which workers to run, from the environment (read once, at the app's or the CLI's edge), and the pool it makes.

``DITTO_WORKERS``
    ``local``: worker processes on this machine; ``ray``: Ray actors on a cluster. Unset: ``local`` when that
    means more than one worker (several GPUs, or ``DITTO_DEVICES`` / ``DITTO_WORKERS_PER_DEVICE`` asking for
    more), otherwise the pipeline runs inside the app's own process as it always did (one worker, no extra process;
    also the only choice on ZeroGPU, which lends its GPU to the app's process alone).
``DITTO_DEVICES``
    ``cuda:0,cuda:1`` or ``cpu``; default every visible GPU, else one CPU worker. For Ray, ``cpu`` asks for CPU
    workers (default: GPU workers when the cluster has GPUs).
``DITTO_WORKERS_PER_DEVICE``
    Workers per device (default 1), for a GPU with room for several (each holds its own networks).
``DITTO_RAY_ADDRESS``
    ``auto`` (default): join the cluster this machine belongs to; ``local``: start an embedded one-machine cluster;
    or a cluster address ``host:port``.
``DITTO_RAY_WORKERS``
    How many Ray workers: ``N``, or ``min:max`` to start ``min`` and add workers up to ``max`` while requests wait.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from ditto_demo.errors import DittoError
from ditto_demo.workers.base import WorkerPool
from ditto_demo.workers.jobs import WorkerConfig

__all__ = ["WORKERS_ENV", "PoolSettings", "describe_plan", "open_pool", "visible_gpus"]

WORKERS_ENV = "DITTO_WORKERS"
_KINDS = ("local", "ray")


def visible_gpus() -> int:
    """CUDA devices torch sees here (0 without a GPU)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _count(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise DittoError(f"{name} must be a whole number; got {raw!r}.") from None
    if value < 1:
        raise DittoError(f"{name} must be at least 1; got {value}.")
    return value


def _ray_workers(raw: str) -> tuple[int, int]:
    text = raw.strip() or "1"
    low, _, high = text.partition(":")
    try:
        bounds = (int(low), int(high or low))
    except ValueError:
        raise DittoError(f"DITTO_RAY_WORKERS must be a count (2) or a range (1:4); got {raw!r}.") from None
    if bounds[0] < 1 or bounds[1] < bounds[0]:
        raise DittoError(f"DITTO_RAY_WORKERS needs 1 <= min <= max; got {raw!r}.")
    return bounds


def _devices(raw: str) -> tuple[str, ...]:
    devices = []
    for part in (p.strip().lower() for p in raw.split(",")):
        if not part:
            continue
        if part == "cuda":
            part = "cuda:0"
        kind, _, index = part.partition(":")
        if kind not in ("cpu", "cuda") or (kind == "cuda" and not index.isdigit()) or (kind == "cpu" and index):
            raise DittoError(f"DITTO_DEVICES lists devices such as cuda:0,cuda:1 or cpu; got {part!r}.")
        devices.append(part)
    return tuple(devices)


@dataclass(frozen=True)
class PoolSettings:
    """Where the app's requests run. ``kind`` ``inprocess`` is today's single pipeline inside the app."""

    kind: Literal["inprocess", "local", "ray"] = "inprocess"
    #: Local devices, one entry per device (``cuda:N`` or ``cpu``); for Ray, ``("cpu",)`` forces CPU workers.
    devices: tuple[str, ...] = ("cpu",)
    per_device: int = 1
    ray_address: str = "auto"
    ray_workers: tuple[int, int] = (1, 1)

    @property
    def planned(self) -> int:
        """How many workers this starts with (at most, for a Ray range)."""
        if self.kind == "ray":
            return self.ray_workers[1]
        return 1 if self.kind == "inprocess" else len(self.devices) * self.per_device

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, app_device: str = "auto") -> PoolSettings:
        """The settings the variables above ask for; ``app_device`` is ``DITTO_DEVICE`` (``cpu`` keeps the
        default to one CPU worker)."""
        env = os.environ if env is None else env
        kind = env.get(WORKERS_ENV, "").strip().lower()
        if kind and kind not in (*_KINDS, "inprocess"):
            raise DittoError(f"{WORKERS_ENV} must be local or ray; got {kind!r}.")
        per_device = _count(env, "DITTO_WORKERS_PER_DEVICE", 1)
        explicit = _devices(env.get("DITTO_DEVICES", ""))
        if kind == "ray":
            return cls(kind="ray", devices=explicit, per_device=per_device,
                       ray_address=env.get("DITTO_RAY_ADDRESS", "").strip() or "auto",
                       ray_workers=_ray_workers(env.get("DITTO_RAY_WORKERS", "")))
        if kind == "inprocess" or (not kind and env.get("SPACES_ZERO_GPU")):
            return cls(kind="inprocess")
        if explicit:
            devices = explicit
        elif app_device == "cpu":
            devices = ("cpu",)
        else:
            gpus = visible_gpus()
            devices = tuple(f"cuda:{n}" for n in range(gpus)) if gpus else ("cpu",)
        settings = cls(kind="local", devices=devices, per_device=per_device)
        if not kind and settings.planned == 1:
            return cls(kind="inprocess")
        return settings


def open_pool(settings: PoolSettings, config: WorkerConfig) -> WorkerPool:
    """Start the workers ``settings`` ask for (in the background: they report ``starting`` until loaded).
    Ray is imported here, and only for ``ray``."""
    if settings.kind == "local":
        from ditto_demo.workers.local import LocalPool

        return LocalPool(config, settings.devices, settings.per_device)
    if settings.kind == "ray":
        from ditto_demo.workers.ray_pool import RayPool

        return RayPool(config, address=settings.ray_address, workers=settings.ray_workers,
                       devices=settings.devices, per_device=settings.per_device)
    raise DittoError("The in-process pipeline is not a worker pool; the service runs it itself.")


def describe_plan(settings: PoolSettings) -> str:
    """What the settings would start, for ``doctor`` (which starts nothing)."""
    if settings.kind == "inprocess":
        return "in the app's process: one pipeline (DITTO_WORKERS unset; set local or ray for more workers)"
    if settings.kind == "ray":
        low, high = settings.ray_workers
        count = f"{low}" if low == high else f"{low} to {high}"
        kind = "CPU" if settings.devices == ("cpu",) else "GPU (CPU if the cluster has none)"
        return (f"ray at {settings.ray_address}: {count} {kind} worker(s), "
                f"{settings.per_device} per GPU (not started here; the app starts them)")
    lines = [f"local: {settings.planned} worker process(es) (not started here; the app starts them)"]
    index = 0
    for device in settings.devices:
        for _ in range(settings.per_device):
            lines.append(f"  #{index} {device}")
            index += 1
    return "\n".join(lines)
