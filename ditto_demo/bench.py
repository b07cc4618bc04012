"""``python -m ditto_demo bench``: speed and memory figures a user can trust, for one backend, device and size.

What is measured (perf_anchors.md §4 is the protocol this follows):

* **offline**: :meth:`Pipeline.generate` end to end: RTF (wall / audio seconds), the first frame's latency, the
  per-stage ms per frame that the runner records, and the phase timings;
* **online, burst**: :meth:`Pipeline.stream` fed 100 ms chunks as fast as it takes them: online RTF and the
  compute-only first-frame delay (audio already buffered);
* **online, paced**: the same chunks released on a real-time clock: the first frame's delay from the first chunk
  and from speech onset, and whether the stream keeps up (the lag of frame k behind its audio time);
* **networks**: each network's ms per call on its binding shapes through ``load_network`` on the chosen backend,
  against the same architecture and weights called as a plain eager float32 ``nn.Module`` (no wrapper), interleaved
  call by call so that drift (thermal, other load) hits both alike;
* **overhead**: the per-frame work outside the networks (stitch maths, image conversion, paste-back, encode, queues),
  timed directly at 512 × 512 and derived from the offline stage timings; and its **levers**: before / after ms
  per frame of the device-resident render path (host arrays through warp + decoder + cv2 paste-back, against the
  renderer's ``run_tensors`` path with the paste-back it picks for the device) and of the paste-back alone (host
  cv2 against :class:`TensorPasteBack` on the benchmark's device, into a 1080p frame);
* **memory**: peak RSS per part (the kernel's high-water mark, reset between parts) and, on CUDA, the allocator peak.

Discipline: networks and the portrait are loaded and registered before anything is timed (reported as setup);
``warmup`` rounds are run and discarded; offline, burst and paced runs are interleaved round by round; every figure
is a median with p05 / p95 over ``runs``. A run that produced the wrong number of frames raises instead of
reporting a speed. Timing is ``time.perf_counter`` on the CPU; per-network calls on CUDA use CUDA events around a
synchronised call. Pipeline stage timings are the runner's wall clock per stage. On the CPU each stage's work is
done when it returns; on a GPU the warp and decode stages hand device tensors on, so their kernels may still run
after the stage returns and the wait lands in the compose stage (which copies the face box back): there, read the
render wall time and the levers rather than the split between stages.

This module holds no argument parsing; the CLI maps its flags onto :class:`BenchOptions`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import math
import os
import platform
import resource
import sys
import tempfile
import threading
import time
import wave
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from ditto_demo.engine.backends.torch_backend import COMPILE_ENV, COMPILE_MODES
from ditto_demo.errors import InputError

__all__ = [
    "DEFAULT_PORTRAIT",
    "OVERHEAD_BUDGET_MS",
    "PARTS",
    "BenchOptions",
    "bench_audio",
    "format_table",
    "run_bench",
]

log = logging.getLogger(__name__)

_ASSETS = Path(__file__).resolve().parents[1] / "assets"
DEFAULT_PORTRAIT = _ASSETS / "portrait_illustration.png"
_SPEECH = _ASSETS / "speech_en.wav"

#: What a benchmark can run; ``parts`` selects a subset (a full-size run on a CPU may time the networks only).
PARTS: tuple[str, ...] = ("offline", "online", "paced", "paced_reference", "streams", "smoothness", "networks",
                          "overhead")
#: Parts that feed audio on a real-time clock (``--no-paced`` skips them).
_REAL_TIME_PARTS = ("paced", "paced_reference", "streams")
#: Parts that run the whole pipeline, interleaved round by round.
_PIPELINE_PARTS = ("offline", "online", "paced", "paced_reference", "streams")
#: The issue's budget for the per-frame work outside the networks, at 512 × 512 on the CPU.
OVERHEAD_BUDGET_MS = 10.0

_SAMPLE_RATE = 16000
_FPS = 25
#: Silence in front of the benchmark speech, so that speech onset is not the first chunk.
_LEAD_SILENCE_S = 0.5
#: A chunk whose RMS exceeds this (−40 dBFS) holds speech.
_ONSET_RMS = 0.01
#: A paced stream "keeps up" when its lag grows by less than this many seconds per second of audio.
_KEEP_UP_SLOPE = 0.05
#: Per-network timing: repeat a call within one run until this much time has passed (small nets are sub-ms).
_MIN_RUN_S = 0.05
_MAX_CALLS_PER_RUN = 200
#: The diffusion time step fed to the LMDM network when timing it alone (any valid index costs the same).
_LMDM_TIME_STEP = 500
#: The six networks we implement (binding order of the spec table) and HuBERT, which every pipeline part runs.
_NETWORKS = ("appearance_extractor", "motion_extractor", "warp_network", "decoder", "stitch_network", "lmdm",
             "hubert")
#: Frames written when timing the encoder on its own.
_ENCODE_FRAMES = 50
#: Levers: frames timed one by one per run (after ``_LEVER_WARMUP_FRAMES`` that are not, every run: the first
#: frame builds caches, uploads the portrait's feature and, on CUDA, picks kernels), and the paste-back's frame.
_LEVER_FRAMES = 10
_LEVER_WARMUP_FRAMES = 2
_LEVER_FRAME_SIZE = (1920, 1080)


@dataclass(frozen=True)
class BenchOptions:
    """What to benchmark. ``audio_seconds`` ``None`` means 4 s at ``tiny`` and 8 s at ``full``; ``steps`` ``None``
    keeps the checkpoint's defaults (50 offline, 10 streaming); ``checkpoints`` ``None`` writes random-weight test
    checkpoints of ``size`` (seed 0) into a temporary folder, removed afterwards."""

    backend: str = "auto"
    device: str = "auto"
    size: Literal["tiny", "full"] = "tiny"
    runs: int = 5
    warmup: int = 1
    audio_seconds: float | None = None
    steps: int | None = None
    checkpoints: Path | None = None
    portrait: Path = DEFAULT_PORTRAIT
    paced: bool = True
    parts: tuple[str, ...] = PARTS
    chunk_ms: int = 100
    seed: int = 0
    #: torch intra-op threads for the run (``None``: leave torch's setting). On a small shared machine 1 thread
    #: avoids OpenMP teams of several runner threads fighting over the same cores.
    threads: int | None = None
    #: Concurrent paced live streams for the ``streams`` part (each its own seed, all on one pipeline).
    streams: int = 2
    #: ``DITTO_TORCH_COMPILE`` for this run (``None``: leave the environment as it is). With ``default`` the
    #: ``networks`` part is the compile lever: compiled network against the bare eager module, same weights.
    compile: str | None = None

    def __post_init__(self) -> None:
        if self.size not in ("tiny", "full"):
            raise InputError(f"--size must be tiny or full, not {self.size!r}.")
        if self.runs < 1:
            raise InputError(f"--runs must be at least 1 (medians need runs), not {self.runs}.")
        if self.warmup < 0:
            raise InputError(f"--warmup cannot be negative ({self.warmup}).")
        if self.audio_seconds is not None and not (math.isfinite(self.audio_seconds) and self.audio_seconds >= 1.0):
            raise InputError(f"--audio-seconds must be at least 1 (0.5 s of it is leading silence), "
                             f"not {self.audio_seconds}.")
        if self.steps is not None and self.steps < 1:
            raise InputError(f"--steps must be at least 1, not {self.steps}.")
        if self.threads is not None and self.threads < 1:
            raise InputError(f"--threads must be at least 1, not {self.threads}.")
        if self.compile is not None and self.compile not in COMPILE_MODES:
            raise InputError(f"--compile must be one of {', '.join(COMPILE_MODES)}, not {self.compile!r}.")
        if not 1 <= self.streams <= 64:
            raise InputError(f"--streams must be between 1 and 64, not {self.streams}.")
        if not 10 <= self.chunk_ms <= 1000:
            raise InputError(f"The chunk size must be between 10 and 1000 ms, not {self.chunk_ms}.")
        unknown = sorted(set(self.parts) - set(PARTS))
        if unknown or not self.parts:
            got = ", ".join(self.parts) or "none"
            raise InputError(f"Benchmark parts must be among {', '.join(PARTS)}; got {got}.")

    @property
    def seconds(self) -> float:
        """The audio length actually used."""
        if self.audio_seconds is not None:
            return float(self.audio_seconds)
        return 4.0 if self.size == "tiny" else 8.0

    def runs_part(self, part: str) -> bool:
        """Whether ``part`` runs (the real-time parts also need ``paced``)."""
        return part in self.parts and (part not in _REAL_TIME_PARTS or self.paced)


# ------------------------------------------------------------------------------------------------------ statistics


def summarize(values: Sequence[float]) -> dict[str, float]:
    """Median, p05 and p95 (linear interpolation), min, max and the count: the shape of a timing sample."""
    if not values:
        raise ValueError("no values to summarise")
    array = np.asarray(values, dtype=np.float64)
    p05, median, p95 = np.percentile(array, [5, 50, 95])
    return {"median": float(median), "p05": float(p05), "p95": float(p95), "min": float(array.min()),
            "max": float(array.max()), "n": int(array.size)}


def _summarize_dicts(records: Sequence[Mapping[str, float]]) -> dict[str, dict[str, float]]:
    keys = sorted({k for record in records for k in record})
    return {k: summarize([r[k] for r in records if k in r]) for k in keys}


# ----------------------------------------------------------------------------------------------------- clocks


class _Clock:
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
        """Seconds per call, averaged over as many calls as fit in ``_MIN_RUN_S`` (at least one)."""
        total, calls = 0.0, 0
        while calls < _MAX_CALLS_PER_RUN and (calls == 0 or total < _MIN_RUN_S):
            total += self.time(fn)
            calls += 1
        return total / calls, calls


# ----------------------------------------------------------------------------------------------------- memory


class _MemoryProbe:
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


# ------------------------------------------------------------------------------------------------------ audio


def bench_audio(seconds: float, lead_silence: float = _LEAD_SILENCE_S) -> np.ndarray:
    """``seconds`` of 16 kHz mono speech: ``lead_silence`` of zeros, then the example speech looped.

    The silence makes speech onset differ from the first chunk, so the paced "from onset" delay is meaningful.
    Without the asset (an installed package), a speech-like signal is synthesised: a voiced 120 Hz harmonic
    series under a 4 Hz syllable envelope, with a little noise, seeded.
    """
    total = round(seconds * _SAMPLE_RATE)
    lead = min(total, round(lead_silence * _SAMPLE_RATE))
    if _SPEECH.is_file():
        from ditto_demo.pipeline.audio import load_audio

        speech = load_audio(_SPEECH)
    else:
        speech = _synthetic_speech(8.0)
    body = np.resize(speech, total - lead) if total > lead else np.zeros(0, np.float32)
    return np.concatenate([np.zeros(lead, np.float32), body.astype(np.float32)])


def _synthetic_speech(seconds: float) -> np.ndarray:
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * _SAMPLE_RATE)) / _SAMPLE_RATE
    f0 = 120 * (1 + 0.1 * np.sin(2 * np.pi * 0.7 * t))
    phase = 2 * np.pi * np.cumsum(f0) / _SAMPLE_RATE
    voiced = sum(np.sin(k * phase) / k for k in range(1, 12))
    envelope = np.clip(np.sin(2 * np.pi * 4 * t), 0, None) ** 2
    signal = 0.2 * envelope * voiced + 0.005 * rng.standard_normal(t.size)
    return signal.astype(np.float32)


def _write_wav(path: Path, samples: np.ndarray) -> Path:
    pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(_SAMPLE_RATE)
        out.writeframes(pcm.tobytes())
    return path


def _chunks(samples: np.ndarray, size: int) -> list[np.ndarray]:
    return [samples[i : i + size] for i in range(0, len(samples), size)]


def _onset_chunk(chunks: Sequence[np.ndarray]) -> int:
    """Index of the first chunk whose RMS exceeds ``_ONSET_RMS`` (0 if none does: all silence)."""
    for index, chunk in enumerate(chunks):
        if chunk.size and float(np.sqrt(np.mean(np.square(chunk, dtype=np.float64)))) > _ONSET_RMS:
            return index
    return 0


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
    facts: dict[str, Any] = {
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
        "load_average": _load_average(),
    }
    return facts


def _meminfo_gb() -> float | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(float(line.split()[1]) / 2**20, 1)
    return None


def _load_average() -> list[float] | None:
    """1/5/15-minute load: a benchmark taken while other work ran on a small machine should say so."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


# --------------------------------------------------------------------------------------------------- the parts


@dataclass
class _Context:
    """Everything the parts share: the loaded pipeline, the inputs, and where to write."""

    options: BenchOptions
    pipeline: Any  # ditto_demo.pipeline.pipeline.Pipeline (imported lazily)
    controls: Any
    root: Path
    work: Path
    samples: np.ndarray
    wav: Path
    chunks: list[np.ndarray]
    onset_chunk: int
    memory: _MemoryProbe
    peaks: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def audio_seconds(self) -> float:
        return len(self.samples) / _SAMPLE_RATE

    @property
    def chunk_seconds(self) -> float:
        return self.options.chunk_ms / 1000.0

    def note_peak(self, part: str) -> None:
        """Fold the peak since the last reset into ``part``'s figure (max over its runs)."""
        peak = self.memory.peak()
        previous = self.peaks.get(part)
        if previous is not None:
            for key, value in peak.items():
                if isinstance(value, float):
                    peak[key] = max(value, previous.get(key, value))
        self.peaks[part] = peak


def _offline_run(ctx: _Context) -> dict[str, Any]:
    ctx.memory.reset()
    result = ctx.pipeline.generate(ctx.options.portrait, ctx.wav, ctx.controls, output=ctx.work / "bench.mp4")
    ctx.note_peak("offline")
    expected = math.ceil(len(ctx.samples) / (_SAMPLE_RATE / _FPS) - 1e-9)
    if result.frames != expected:
        raise RuntimeError(f"offline run produced {result.frames} frames, expected {expected}: no speed reported")
    return {
        "rtf": result.rtf,
        "total_s": result.total_seconds,
        "first_frame_s": result.first_frame_latency,
        "frames": result.frames,
        "stage_ms": dict(result.per_frame_ms),
        "phase_s": dict(result.timings),
        "render_ms_per_frame": 1000.0 * result.timings.get("render", 0.0) / max(result.frames, 1),
    }


def _check_stream_frames(frames: int, ctx: _Context, label: str) -> None:
    expected = math.ceil(len(ctx.samples) / (_SAMPLE_RATE / _FPS) - 1e-9)
    if frames < expected:
        raise RuntimeError(f"{label} stream produced {frames} frames for {expected} frames of audio: no speed reported")


def _burst_run(ctx: _Context) -> dict[str, Any]:
    ctx.memory.reset()
    start = time.perf_counter()
    first: float | None = None
    frames = 0
    for frame in ctx.pipeline.stream(ctx.options.portrait, iter(ctx.chunks), ctx.controls):
        if first is None:
            first = frame.produced_at - start
        frames += 1
    total = time.perf_counter() - start
    ctx.note_peak("online")
    _check_stream_frames(frames, ctx, "burst")
    assert first is not None
    return {"rtf": total / ctx.audio_seconds, "total_s": total, "first_frame_s": first, "frames": frames}


class _PacedSource:
    """Yields chunks on a real-time clock: chunk i is released when its last sample would have been recorded,
    ``start + (i + 1) · chunk``; ``start`` is when the pipeline first asks for audio. Release times are kept."""

    def __init__(self, chunks: Sequence[np.ndarray], chunk_seconds: float) -> None:
        self.chunks = chunks
        self.chunk_seconds = chunk_seconds
        self.start: float | None = None
        self.released: list[float] = []

    def __iter__(self) -> Iterator[np.ndarray]:
        self.start = time.perf_counter()
        for index, chunk in enumerate(self.chunks):
            delay = self.start + (index + 1) * self.chunk_seconds - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            self.released.append(time.perf_counter())
            yield chunk


def _paced_run(ctx: _Context, *, low_latency: bool = True) -> dict[str, Any]:
    """One paced stream (see :func:`_paced_stream`), with the memory peak noted under its part."""
    part = "paced" if low_latency else "paced_reference"
    ctx.memory.reset()
    record = _paced_stream(ctx, ctx.controls, low_latency=low_latency)
    ctx.note_peak(part)
    return record


def _paced_stream(ctx: _Context, controls: Any, *, low_latency: bool = True) -> dict[str, Any]:
    """First frame from the first chunk and from speech onset, and the lag of each frame behind its audio time.

    ``first_frame_from_onset_s``: from the release of the chunk where speech starts to the first frame whose time
    is at or after that chunk's start. ``lag`` of frame k: when it was ready minus when its audio time k/25 was
    reached on the clock. ``lag_growth`` is the least-squares slope of lag against audio time over the frames
    within the audio: about 0 when the stream keeps up, (RTF − 1) when it falls behind. ``low_latency=False`` is
    the reference's streaming (first clip withheld, the checkpoint's overlap): the before of the latency lever.
    """
    source = _PacedSource(ctx.chunks, ctx.chunk_seconds)
    produced: list[tuple[float, float]] = []
    for frame in ctx.pipeline.stream(ctx.options.portrait, source, controls, low_latency=low_latency):
        produced.append((frame.timestamp, frame.produced_at))
    _check_stream_frames(len(produced), ctx, "paced")
    assert source.start is not None
    onset_time = ctx.onset_chunk * ctx.chunk_seconds
    onset_frame = next(p for t, p in produced if t >= onset_time - 1e-9)
    lags = np.array([p - (source.start + t) for t, p in produced])
    times = np.array([t for t, _ in produced])
    inside = times < ctx.audio_seconds
    slope = float(np.polyfit(times[inside], lags[inside], 1)[0]) if inside.sum() >= 2 else 0.0
    return {
        "first_frame_from_first_chunk_s": produced[0][1] - source.released[0],
        "first_frame_from_audio_start_s": produced[0][1] - source.start,
        "first_frame_from_onset_s": onset_frame - source.released[ctx.onset_chunk],
        "lag_median_s": float(np.median(lags)),
        "lag_p95_s": float(np.percentile(lags, 95)),
        "lag_max_s": float(lags.max()),
        "lag_last_s": float(lags[inside][-1]) if inside.any() else float(lags[-1]),
        "lag_growth": slope,
        "rtf": (produced[-1][1] - source.start) / ctx.audio_seconds,
        "frames": len(produced),
    }


def _streams_run(ctx: _Context) -> dict[str, Any]:
    """``streams`` paced live streams at once on the one pipeline (each its own thread and seed, as concurrent
    visitors would be): how many keep up, the worst lag growth, and the first-frame delays across them."""
    from ditto_demo.pipeline.controls import Controls

    count = ctx.options.streams
    records: list[dict[str, Any] | None] = [None] * count
    errors: list[BaseException] = []

    def one(index: int) -> None:
        controls = Controls(seed=ctx.options.seed + 1 + index, steps=ctx.options.steps)
        try:
            records[index] = _paced_stream(ctx, controls)
        except BaseException as exc:  # re-raised below, in the bench's thread
            errors.append(exc)

    ctx.memory.reset()
    threads = [threading.Thread(target=one, args=(i,), name=f"bench-stream-{i}") for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ctx.note_peak("streams")
    if errors:
        raise errors[0]
    done = [r for r in records if r is not None]
    growth = [r["lag_growth"] for r in done]
    return {
        "streams": count,
        "kept_up": sum(g < _KEEP_UP_SLOPE for g in growth),
        "worst_lag_growth": max(growth),
        "worst_lag_last_s": max(r["lag_last_s"] for r in done),
        "first_frame_from_onset_median_s": float(np.median([r["first_frame_from_onset_s"] for r in done])),
        "first_frame_from_onset_max_s": max(r["first_frame_from_onset_s"] for r in done),
    }


def _bench_smoothness(ctx: _Context) -> dict[str, Any]:
    """The latency choice's effect on motion: the same speech and seed streamed both ways, motion rows only.

    ``motion_smoothness`` over the rows of the real audio frames (all dims, and the expression alone):
    ``accel_rms`` (jitter) and ``seam_ratio`` (the step into a clip seam over an ordinary step; ≈ 1: seams do
    not show). On random weights the motion itself is meaningless; rerun with ``--checkpoints`` for real figures.
    """
    from ditto_demo.pipeline.motion import motion_smoothness

    frames = math.ceil(len(ctx.samples) / (_SAMPLE_RATE / _FPS) - 1e-9)
    chunk = max(1, _SAMPLE_RATE * ctx.options.chunk_ms // 1000)
    out: dict[str, Any] = {}
    for label, low in (("low_latency", True), ("reference", False)):
        options = ctx.pipeline.stream_options(ctx.controls, low_latency=low)
        rows = ctx.pipeline.stream_motion(ctx.options.portrait, ctx.samples, ctx.controls, low_latency=low,
                                          chunk_samples=chunk)[:frames]
        period = options.valid_length
        out[label] = {
            "overlap": options.overlap,
            "all": motion_smoothness(rows, period),
            "expression": motion_smoothness(rows, period, slice(202, 265)),
        }
    return out


def _example_inputs(net: Any, rng: np.random.Generator) -> dict[str, np.ndarray]:
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


def _call_network(net: Any, inputs: Mapping[str, np.ndarray]) -> object:
    """Our path, as the pipeline calls it: host arrays in, host arrays out, through the backend's wrapper."""
    return net(**inputs)


def _call_eager(module: torch.nn.Module, args: Sequence[torch.Tensor]) -> object:
    """The baseline: the bare module on tensors already on its device, no wrapper, no casts, no copies."""
    with torch.inference_mode():
        return module(*args)


def _bench_networks(ctx: _Context) -> dict[str, dict[str, Any]]:
    """Each network through ``load_network`` vs the plain eager float32 module of the same weights.

    Both are timed in every run, one after the other and first in turn, so slow phases of a shared machine hit
    both. ``ratio`` > 1 means our wrapper / backend is slower than the plain module; ``wrapper_overhead_ms`` is the
    difference of the medians (noise when it is negative).
    """
    from ditto_demo.engine.checkpoints import build_module

    rng = np.random.default_rng(ctx.options.seed)
    out: dict[str, dict[str, Any]] = {}
    ctx.memory.reset()
    for name in _NETWORKS:
        net = ctx.pipeline.networks[name]
        clock = _Clock(net.device)
        inputs = _example_inputs(net, rng)
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


def _bench_overhead(ctx: _Context, offline: dict[str, Any] | None,
                    networks: dict[str, dict[str, Any]] | None) -> dict[str, Any]:
    """Per-frame work outside the networks, at 512 × 512.

    Timed directly: paste-back of a 512 render into a 512 frame (the crop covering the whole frame: the largest
    paste at that size; after the first call, as in the pipeline, the warp maps are cached), the decoder output →
    image conversion, and the encoder (``VideoWriter.write`` per call, and total write + finish time per frame,
    which is x264's throughput as the producer sees it). Derived from the offline runs when they ran: each stage's
    ms per frame minus the ms of the network it calls, and the render wall time per frame minus the sum of the
    stages (queues and hand-offs; negative when stages overlapped on several cores). The derived figures use the
    isolated network timings of the ``networks`` part, so concurrent stages competing for the cores show up in them
    too; the direct figures are the clean ones.
    """
    from ditto_demo.pipeline.render import PasteBack, decoder_output_to_image
    from ditto_demo.pipeline.writer import VideoWriter

    rng = np.random.default_rng(ctx.options.seed)
    clock = _Clock("cpu")
    size = 512
    render = rng.uniform(0, 255, (size, size, 3)).astype(np.float32)
    frame = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    decoded = rng.uniform(0, 1, (1, 3, size, size)).astype(np.float32)
    paste = PasteBack()
    paste(render, frame, np.eye(3))  # first call builds the cached maps, as frame 0 does in the pipeline
    paste_ms: list[float] = []
    image_ms: list[float] = []
    write_ms: list[float] = []
    encode_ms: list[float] = []
    picture = _encodable_frame(ctx.options.portrait, size)
    for run in range(ctx.options.warmup + ctx.options.runs):
        paste_s = clock.per_call(lambda: paste(render, frame, np.eye(3)))[0]
        image_s = clock.per_call(lambda: decoder_output_to_image(decoded))[0]
        writes: list[float] = []
        started = time.perf_counter()
        with VideoWriter(ctx.work / "encode.mp4", fps=_FPS) as writer:
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
        stage = {k: v["median"] for k, v in offline["stage_ms"].items()}
        net = {k: networks[k]["ms"]["median"] for k in ("stitch_network", "warp_network", "decoder")}
        render_wall = offline["render_ms_per_frame"]["median"]
        stage_sum = sum(stage.get(k, 0.0) for k in ("stitch", "warp", "decode", "compose"))
        derived = {
            "stitch_outside_network_ms": stage.get("stitch", 0.0) - net["stitch_network"],
            "warp_outside_network_ms": stage.get("warp", 0.0) - net["warp_network"],
            "decode_outside_network_ms": stage.get("decode", 0.0) - net["decoder"],
            "compose_ms": stage.get("compose", 0.0),
            "render_wall_ms": render_wall,
            "stage_sum_ms": stage_sum,
            "queue_ms": render_wall - stage_sum,
        }
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
    out["levers"] = _bench_levers(ctx)
    return out


def _bench_levers(ctx: _Context) -> dict[str, Any]:
    """Before / after ms per frame of the two levers of the device-resident render path (issue #5).

    ``render_path``: one frame of warp → decode → paste-back into the registered portrait. Before: host arrays
    in and out of both networks (the cached feature copied by the backend every call), the decoder output turned
    into a host image and pasted by cv2 — the renderer until the tensor path. After: the renderer's own warp,
    decode and compose stages (``run_tensors``, the feature uploaded once, the paste-back ``make_paste_back``
    picks for the decoder's device). Keypoints are random but fixed; stitching is not part of either.

    ``paste_back``: a decoder output already on the device pasted into a 1080p frame (face scaled ×1.3, turned
    4°). Before: to the host, to an image, cv2 :class:`PasteBack`; after: :class:`TensorPasteBack` on the device.
    On a CPU the "after" of this lever is expected to lose: that is why ``make_paste_back`` keeps cv2 there.

    Before and after alternate which goes first run by run; each figure is the median over every timed frame.
    """
    from ditto_demo.pipeline.paste_tensor import TensorPasteBack, make_paste_back
    from ditto_demo.pipeline.pipeline import _Renderer
    from ditto_demo.pipeline.plan import stitch_options
    from ditto_demo.pipeline.render import CROP_SIZE, PasteBack, decoder_output_to_image
    from ditto_demo.pipeline.stitching import MotionStitcher

    networks = ctx.pipeline.networks
    warp, decoder = networks["warp_network"], networks["decoder"]
    clock = _Clock(decoder.device)
    rng = np.random.default_rng(ctx.options.seed)
    source = ctx.pipeline.register(ctx.options.portrait, ctx.controls)
    frame = source.frames[0]
    example = _example_inputs(warp, rng)
    kp_source, kp_driving = example["kp_source"], example["kp_driving"]

    host_paste = PasteBack()

    def host_render() -> np.ndarray:
        out = warp(feature_3d=frame.appearance, kp_source=kp_source, kp_driving=kp_driving)["out"]
        render = decoder_output_to_image(decoder(feature=out)["output"])
        return host_paste(render, frame.image, frame.crop_to_image)

    stitcher = MotionStitcher(
        source, stitch_options(ctx.controls, ctx.pipeline.defaults("pytorch"), source, 1, ctx.options.seed), 1,
        networks["stitch_network"],
    )
    renderer = _Renderer(networks, source, stitcher, "full")

    def device_render() -> np.ndarray:
        for warped in renderer.warp((0, kp_source, kp_driving)):
            for decoded in renderer.decode(warped):
                for _, image in renderer.compose(decoded):
                    return image
        raise RuntimeError("the renderer produced no frame")

    width, height = _LEVER_FRAME_SIZE
    picture = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    picture.flags.writeable = False  # as a registered portrait's frames are
    turn, scale = math.radians(4.0), 1.3
    centre = np.array([width / 2, height / 2]) - scale * CROP_SIZE / 2
    crop_to_image = np.array([[scale * math.cos(turn), -scale * math.sin(turn), centre[0]],
                              [scale * math.sin(turn), scale * math.cos(turn), centre[1]], [0, 0, 1]])
    generator = torch.Generator().manual_seed(ctx.options.seed)
    decoded = torch.rand((1, 3, CROP_SIZE, CROP_SIZE), generator=generator).to(decoder.torch_device)
    device_paste = TensorPasteBack()
    levers = {
        "render_path": (host_render, device_render),
        "paste_back": (lambda: host_paste(decoder_output_to_image(decoded.cpu().numpy()), picture, crop_to_image),
                       lambda: device_paste(decoded, picture, crop_to_image)),
    }
    timings: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in levers}
    for run in range(ctx.options.runs):
        for name, (before, after) in levers.items():
            order = ((0, before), (1, after)) if run % 2 == 0 else ((1, after), (0, before))
            for slot, fn in order:
                for _ in range(_LEVER_WARMUP_FRAMES):
                    fn()
                timings[name][slot].extend(1000 * clock.time(fn) for _ in range(_LEVER_FRAMES))
    picked = type(make_paste_back(decoder.torch_device)).__name__
    descriptions = {
        "render_path": ("host arrays through warp + decoder, cv2 PasteBack",
                        f"run_tensors, feature uploaded once, {picked}"),
        "paste_back": ("decoder output to the host, cv2 PasteBack", f"TensorPasteBack on {decoder.device}"),
    }
    out: dict[str, Any] = {"device": decoder.device, "paste_back_picked": picked, "frames_per_run": _LEVER_FRAMES,
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


def _encodable_frame(portrait: Path, size: int) -> np.ndarray:
    """A ``size`` square picture to encode: the portrait resized (real image statistics), else a gradient."""
    import cv2

    image = cv2.imread(str(portrait), cv2.IMREAD_COLOR)
    if image is None:
        ramp = np.linspace(0, 255, size, dtype=np.float32)
        return np.stack([np.add.outer(ramp, ramp) / 2] * 3, axis=2).astype(np.uint8)
    return np.ascontiguousarray(cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)[..., ::-1])


# ------------------------------------------------------------------------------------------------------- driver


def run_bench(options: BenchOptions) -> dict[str, Any]:
    """Run the benchmark described by ``options``; returns every figure as a JSON-ready dict.

    Raises :class:`InputError` for an unusable portrait or checkpoint folder, ``BackendUnavailableError`` for a
    backend / device this host cannot run, and ``RuntimeError`` if a run produced a wrong number of frames.
    ``options.threads`` and ``options.compile`` apply to this call only: both are restored afterwards.
    """
    if not Path(options.portrait).is_file():
        raise InputError(f"The portrait {options.portrait} does not exist or is not a file.")
    if options.checkpoints is not None and not Path(options.checkpoints).is_dir():
        raise InputError(f"The checkpoint folder {options.checkpoints} does not exist.")
    threads_before = torch.get_num_threads()
    compile_before = os.environ.get(COMPILE_ENV)
    if options.threads is not None:
        torch.set_num_threads(options.threads)
    if options.compile is not None:
        os.environ[COMPILE_ENV] = options.compile  # read by load_network, the one place that decides
    try:
        return _run_bench(options)
    finally:
        torch.set_num_threads(threads_before)
        if options.compile is not None:
            if compile_before is None:
                os.environ.pop(COMPILE_ENV, None)
            else:
                os.environ[COMPILE_ENV] = compile_before


def _run_bench(options: BenchOptions) -> dict[str, Any]:
    from ditto_demo.pipeline.controls import Controls
    from ditto_demo.pipeline.pipeline import Pipeline

    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ditto-bench-") as temp:
        work = Path(temp)
        setup: dict[str, float] = {}
        phase = time.perf_counter()
        if options.checkpoints is None:
            from ditto_demo.testing.checkpoints import write_test_checkpoints

            root = write_test_checkpoints(work / "checkpoints", options.size, seed=0,
                                          export_onnx=options.backend == "onnx")
            setup["test_checkpoints_s"] = time.perf_counter() - phase
        else:
            root = Path(options.checkpoints)
        phase = time.perf_counter()
        pipeline = Pipeline(root, backend=options.backend, device=options.device)
        for name in _NETWORKS:
            pipeline.networks[name]  # load everything now: loading is setup, not the first run's time
        setup["load_s"] = time.perf_counter() - phase
        loaded = pipeline.networks.loaded()
        device = next(iter(loaded.values())).split("/", 1)[1] if loaded else "cpu"
        cuda = device.startswith("cuda")
        results: dict[str, Any] = {
            "schema": 1,
            "machine": machine_facts(device),
            "options": _options_json(options),
            "backends": loaded,
        }
        samples = bench_audio(options.seconds)
        chunk_samples = _SAMPLE_RATE * options.chunk_ms // 1000
        chunks = _chunks(samples, chunk_samples)
        ctx = _Context(
            options=options, pipeline=pipeline, controls=Controls(seed=options.seed, steps=options.steps), root=root,
            work=work, samples=samples, wav=_write_wav(work / "speech.wav", samples), chunks=chunks,
            onset_chunk=_onset_chunk(chunks), memory=_MemoryProbe(cuda),
        )
        results["audio"] = {
            "seconds": ctx.audio_seconds, "lead_silence_s": _LEAD_SILENCE_S, "chunk_ms": options.chunk_ms,
            "onset_s": ctx.onset_chunk * ctx.chunk_seconds, "onset_rms": _ONSET_RMS,
            "source": _SPEECH.name if _SPEECH.is_file() else "synthetic",
        }
        if any(options.runs_part(p) for p in (*_PIPELINE_PARTS, "smoothness")):
            phase = time.perf_counter()
            pipeline.register(options.portrait, ctx.controls)
            setup["register_s"] = time.perf_counter() - phase
        results.update(_run_pipeline_parts(ctx))
        results["smoothness"] = _bench_smoothness(ctx) if options.runs_part("smoothness") else None
        networks = _bench_networks(ctx) if options.runs_part("networks") else None
        results["networks"] = networks
        results["overhead"] = (
            _bench_overhead(ctx, results["offline"], networks) if options.runs_part("overhead") else None
        )
        results["memory"] = {**ctx.peaks, "process_peak_rss_mb": _process_peak_mb()}
        results["setup"] = setup
    results["machine"]["load_average_end"] = _load_average()
    results["bench_seconds"] = time.perf_counter() - began
    return results


def _run_pipeline_parts(ctx: _Context) -> dict[str, Any]:
    """Warm-up rounds (discarded), then ``runs`` rounds of offline → burst → paced, interleaved."""
    options = ctx.options
    wanted = [p for p in _PIPELINE_PARTS if options.runs_part(p)]
    records: dict[str, list[dict[str, Any]]] = {p: [] for p in wanted}
    runners: dict[str, Callable[[_Context], dict[str, Any]]] = {
        "offline": _offline_run, "online": _burst_run, "paced": _paced_run,
        "paced_reference": partial(_paced_run, low_latency=False), "streams": _streams_run,
    }
    for round_ in range(options.warmup + options.runs):
        warm = round_ < options.warmup
        for part in wanted:
            if warm and part in _REAL_TIME_PARTS:
                continue  # the burst warm-up already warmed the streaming path; paced time is real time
            record = runners[part](ctx)
            log.info("%s %s %d: %s", "warm-up" if warm else "run", part, round_, _short(record))
            if not warm:
                records[part].append(record)
    out: dict[str, Any] = {p: None for p in _PIPELINE_PARTS}
    for part, runs in records.items():
        out[part] = _summarize_part(runs)
    for part in ("paced", "paced_reference"):
        if out[part] is not None:
            out[part]["keeps_up"] = out[part]["lag_growth"]["median"] < _KEEP_UP_SLOPE
    if out["streams"] is not None:
        out["streams"]["all_kept_up"] = all(r["kept_up"] == r["streams"] for r in records["streams"])
    return out


def _summarize_part(runs: list[dict[str, Any]]) -> dict[str, Any]:
    summary: dict[str, Any] = {"runs": len(runs)}
    for key in runs[0]:
        values = [r[key] for r in runs]
        if isinstance(values[0], dict):
            summary[key] = _summarize_dicts(values)
        elif key in ("frames", "streams"):
            summary[key] = int(values[0])
        else:
            summary[key] = summarize([float(v) for v in values])
    return summary


def _short(record: Mapping[str, Any]) -> str:
    return ", ".join(f"{k} {v:.3f}" for k, v in record.items() if isinstance(v, float))


def _process_peak_mb() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return usage / 2**20 if sys.platform == "darwin" else usage / 1024


def _options_json(options: BenchOptions) -> dict[str, Any]:
    data = asdict(options)
    data["audio_seconds"] = options.seconds
    data["checkpoints"] = str(options.checkpoints) if options.checkpoints is not None else None
    data["portrait"] = str(options.portrait)
    data["parts"] = list(options.parts)
    return data


# -------------------------------------------------------------------------------------------------------- table


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}"


def _stat_row(label: str, stats: Mapping[str, float] | None, unit: str = "", digits: int = 3) -> str:
    if stats is None:
        return f"{label:<44} {'-':>10}"
    return (f"{label:<44} {_fmt(stats['median'], digits):>10} {_fmt(stats['p05'], digits):>10} "
            f"{_fmt(stats['p95'], digits):>10}  {unit}")


def format_table(results: Mapping[str, Any]) -> str:
    """A human-readable table of ``run_bench``'s results (medians, p05, p95)."""
    opts = results["options"]
    machine = results["machine"]
    lines = [
        f"Ditto benchmark: backend {opts['backend']} ({', '.join(sorted(set(results['backends'].values())))}), "
        f"size {opts['size']}, {results['audio']['seconds']:.1f} s audio, {opts['runs']} runs "
        f"(+{opts['warmup']} warm-up), steps {opts['steps'] or 'checkpoint default'}"
        + (f", torch.compile {opts['compile']}" if opts.get("compile") not in (None, "off") else ""),
        f"machine: {machine['cpu']}, {machine['cores']} cores ({machine['torch_threads']} torch threads), "
        f"{machine['memory_gb']} GB, torch {machine['torch']}"
        + (f", GPU {machine['gpu']}" if machine.get("gpu") else "")
        + f", {machine['date']}, load {machine['load_average']}",
        "",
        f"{'':<44} {'median':>10} {'p05':>10} {'p95':>10}",
    ]
    offline = results.get("offline")
    if offline:
        lines.append(_stat_row("offline RTF (wall / audio)", offline["rtf"]))
        lines.append(_stat_row("offline total", offline["total_s"], "s"))
        lines.append(_stat_row("offline first frame (call → first frame)", offline["first_frame_s"], "s"))
        for phase, stats in offline["phase_s"].items():
            lines.append(_stat_row(f"  phase {phase}", stats, "s"))
        for stage, stats in offline["stage_ms"].items():
            lines.append(_stat_row(f"  stage {stage}", stats, "ms/frame", 2))
        lines.append(_stat_row("  render wall", offline["render_ms_per_frame"], "ms/frame", 2))
    online = results.get("online")
    if online:
        lines.append(_stat_row("online burst RTF", online["rtf"]))
        lines.append(_stat_row("online burst first frame (compute)", online["first_frame_s"], "s"))
    paced = results.get("paced")
    if paced:
        lines.append(_stat_row("paced RTF (last frame / audio)", paced["rtf"]))
        lines.append(_stat_row("paced first frame from first chunk", paced["first_frame_from_first_chunk_s"], "s"))
        lines.append(_stat_row("paced first frame from speech onset", paced["first_frame_from_onset_s"], "s"))
        lines.append(_stat_row("paced lag, median frame", paced["lag_median_s"], "s"))
        lines.append(_stat_row("paced lag, last frame of the audio", paced["lag_last_s"], "s"))
        lines.append(_stat_row("paced lag growth", paced["lag_growth"], "s per s"))
        lines.append(f"{'paced keeps up':<44} {'yes' if paced['keeps_up'] else 'no':>10}")
    reference = results.get("paced_reference")
    if reference:
        lines.append(_stat_row("paced, reference latency: first frame (chunk)",
                               reference["first_frame_from_first_chunk_s"], "s"))
        lines.append(_stat_row("  ... from speech onset", reference["first_frame_from_onset_s"], "s"))
    streams = results.get("streams")
    if streams:
        lines.append(_stat_row(f"{streams['streams']} concurrent paced streams: kept up", streams["kept_up"],
                               f"of {streams['streams']}", 1))
        lines.append(_stat_row("  worst lag growth", streams["worst_lag_growth"], "s per s"))
        lines.append(_stat_row("  first frame from onset (worst stream)", streams["first_frame_from_onset_max_s"], "s"))
    smooth = results.get("smoothness")
    if smooth:
        lines += ["", f"{'streamed motion (same speech and seed)':<44} {'overlap':>10} {'accel rms':>10} "
                      f"{'seam ratio':>10} {'exp seam':>9}"]
        for label, entry in smooth.items():
            lines.append(f"{'  ' + label:<44} {entry['overlap']:>10d} {entry['all']['accel_rms']:>10.4f} "
                         f"{entry['all']['seam_ratio']:>10.2f} {entry['expression']['seam_ratio']:>9.2f}")
    networks = results.get("networks")
    if networks:
        lines += ["", f"{'network (ms per call)':<24} {'ours':>10} {'p05':>9} {'p95':>9} {'eager fp32':>11} "
                      f"{'ratio':>6} {'+ms':>7}  backend"]
        for name, entry in networks.items():
            eager = entry["eager_fp32_ms"]
            lines.append(
                f"{name:<24} {entry['ms']['median']:>10.3f} {entry['ms']['p05']:>9.3f} {entry['ms']['p95']:>9.3f} "
                f"{_fmt(eager['median'] if eager else None):>11} {_fmt(entry['ratio'], 2):>6} "
                f"{_fmt(entry['wrapper_overhead_ms']):>7}  "
                f"{entry['backend']}/{entry['device']}" + (f" ({entry['note']})" if entry.get("note") else "")
            )
    overhead = results.get("overhead")
    if overhead:
        lines += ["", "per-frame overhead outside the networks (ms)"]
        for key, stats in overhead["direct"].items():
            lines.append(_stat_row(f"  {key}", stats, "ms", 2))
        if overhead["derived"]:
            lines.append("  derived from the offline stages (stage − isolated network; includes contention):")
            for key, value in overhead["derived"].items():
                lines.append(f"  {key:<42} {value:>10.2f}")
        parts = " + ".join(f"{k} {v:.2f}" for k, v in overhead["components_ms"].items())
        verdict = "within" if overhead["within_budget"] else "OVER"
        lines.append(f"  total {overhead['total_ms']:.2f} ms ({parts}): {verdict} the {overhead['budget_ms']:.0f} ms "
                     f"budget" + ("" if overhead["complete"] else " (direct parts only: offline not run)"))
        levers = overhead.get("levers")
        if levers:
            lines.append(f"  levers on {levers['device']} (ms per frame; before → after; paste-back picked: "
                         f"{levers['paste_back_picked']})")
            for name in ("render_path", "paste_back"):
                lever = levers[name]
                lines.append(_stat_row(f"  {name} before", lever["before_ms"], f"ms  ({lever['before']})", 2))
                lines.append(_stat_row(f"  {name} after", lever["after_ms"], f"ms  ({lever['after']})", 2))
                lines.append(f"  {name + ' speed-up':<42} {lever['speedup']:>10.2f}x")
    memory = results.get("memory") or {}
    lines += ["", "peak memory"]
    for part, peak in memory.items():
        if isinstance(peak, dict):
            gpu = f", CUDA allocated {peak['cuda_allocated_mb']:.0f} MB" if "cuda_allocated_mb" in peak else ""
            lines.append(f"  {part:<20} RSS {peak['rss_mb']:.0f} MB ({peak['rss_scope']}){gpu}")
    if "process_peak_rss_mb" in memory:
        lines.append(f"  {'whole process':<20} RSS {memory['process_peak_rss_mb']:.0f} MB")
    setup = results.get("setup") or {}
    lines.append("setup: " + ", ".join(f"{k} {v:.2f}" for k, v in setup.items()))
    return "\n".join(lines)
