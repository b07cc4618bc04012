"""``python -m ditto_demo bench --workers N``: how throughput scales from 1 worker to N on this machine.

For 1 and for N local workers (:class:`~ditto_demo.workers.local.LocalPool`, one process each; the GPUs round-robin,
else CPU workers sharing the cores), the same burst of offline videos is sent with as many requests in flight as
there are workers: **videos per minute** is the finished videos over the burst's wall time (after a discarded
warm-up video per worker). Then as many paced live streams as workers run at once, one per worker: a stream
**keeps up** when its frames' lag behind the audio clock grows by less than
:data:`~ditto_demo.bench.parts.runs.KEEP_UP_SLOPE` seconds per second of audio. Starting the workers (processes,
networks) is setup, reported apart. Every video is checked for its frame count; a wrong one raises instead of
reporting a speed.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from ditto_demo.bench.measure import load_average, machine_facts, summarize
from ditto_demo.bench.options import BenchOptions
from ditto_demo.bench.parts.runs import KEEP_UP_SLOPE, PacedSource
from ditto_demo.bench.report import options_json
from ditto_demo.bench.speech import bench_audio, split_chunks
from ditto_demo.errors import InputError
from ditto_demo.pipeline.audio import audio_frame_count
from ditto_demo.pipeline.controls import Controls
from ditto_demo.pipeline.pcm import write_wav
from ditto_demo.pipeline.timebase import FPS, SAMPLE_RATE
from ditto_demo.workers.jobs import WorkerConfig
from ditto_demo.workers.local import LocalPool
from ditto_demo.workers.settings import visible_gpus

__all__ = ["MAX_WORKERS", "bench_workers", "format_workers_table"]

log = logging.getLogger(__name__)

#: More workers than this on one machine is a configuration mistake, not a benchmark.
MAX_WORKERS = 64


def _devices(options: BenchOptions, count: int) -> list[str]:
    """``count`` devices: the visible GPUs in turn (``--device auto|cuda``), else CPU workers."""
    gpus = visible_gpus() if options.device != "cpu" else 0
    if options.device == "cuda" and gpus == 0:
        raise InputError("--device cuda asks for GPU workers, but no GPU is visible here.")
    return [f"cuda:{n % gpus}" for n in range(count)] if gpus else ["cpu"] * count


def _burst(pool: LocalPool, options: BenchOptions, wav: Path, work: Path, videos: int, expected: int,
           tag: str) -> list[float]:
    """``videos`` offline videos with as many in flight as the pool has workers; seconds per video."""
    def one(n: int) -> float:
        folder = work / f"{tag}-{n}"
        folder.mkdir()
        began = time.perf_counter()
        done = pool.generate(options.portrait, wav, Controls(seed=options.seed + n, steps=options.steps),
                             folder=folder)
        if done.result.frames != expected:
            raise RuntimeError(f"a video had {done.result.frames} frames, expected {expected}: no speed reported")
        return time.perf_counter() - began

    with ThreadPoolExecutor(pool.capacity) as requests:
        return list(requests.map(one, range(videos)))


def _paced_streams(pool: LocalPool, options: BenchOptions, samples: np.ndarray, count: int) -> list[dict[str, Any]]:
    """``count`` paced streams at once; per stream the lag growth, the last lag and whether it kept up."""
    chunk_seconds = options.chunk_ms / 1000.0
    chunks = split_chunks(samples, SAMPLE_RATE * options.chunk_ms // 1000)
    audio_seconds = len(samples) / SAMPLE_RATE
    records: list[dict[str, Any]] = [{} for _ in range(count)]

    def one(n: int) -> None:
        source = PacedSource(chunks, chunk_seconds)
        produced = [(frame.timestamp, frame.produced_at)
                    for frame in pool.stream(options.portrait, source, Controls(seed=options.seed + n,
                                                                                 steps=options.steps))]
        if len(produced) < audio_frame_count(len(samples)) or source.start is None:
            raise RuntimeError(f"a paced stream produced {len(produced)} frames: no speed reported")
        times = np.array([t for t, _ in produced])
        lags = np.array([p - (source.start + t) for t, p in produced])
        inside = times < audio_seconds
        slope = float(np.polyfit(times[inside], lags[inside], 1)[0]) if inside.sum() >= 2 else 0.0
        records[n] = {"lag_growth": slope, "lag_last_s": float(lags[inside][-1]), "frames": len(produced),
                      "keeps_up": slope < KEEP_UP_SLOPE}

    threads = [threading.Thread(target=one, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if any(not record for record in records):
        raise RuntimeError("a paced stream failed: no figures reported")
    return records


def _measure(options: BenchOptions, root: Path, work: Path, count: int, wav: Path,
             samples: np.ndarray) -> dict[str, Any]:
    devices = _devices(options, count)
    expected = audio_frame_count(len(samples))
    phase = time.perf_counter()
    with LocalPool(WorkerConfig(checkpoints=str(root), backend=options.backend, threads=options.threads),
                   devices) as pool:
        infos = pool.wait_ready(900)
        failed = [f"{info.id}: {info.reason}" for info in infos if info.state == "failed"]
        if failed:
            raise RuntimeError(f"workers failed to start: {'; '.join(failed)}")
        start_s = time.perf_counter() - phase
        _burst(pool, options, wav, work, options.warmup * count, expected, f"warm{count}")
        videos = options.runs * count
        began = time.perf_counter()
        per_video = _burst(pool, options, wav, work, videos, expected, f"run{count}")
        wall = time.perf_counter() - began
        streams = _paced_streams(pool, options, samples, count) if options.paced else []
    return {
        "workers": count,
        "devices": devices,
        "start_s": start_s,
        "videos": videos,
        "wall_s": wall,
        "videos_per_minute": 60.0 * videos / wall,
        "video_s": summarize(per_video),
        "streams": streams,
        "streams_keeping_up": sum(1 for record in streams if record["keeps_up"]),
    }


def bench_workers(options: BenchOptions, workers: int) -> dict[str, Any]:
    """Throughput with 1 worker and with ``workers`` (``options.runs`` videos per worker, ``options.warmup``
    discarded first), and paced streams one per worker (``options.paced``)."""
    if not 1 <= workers <= MAX_WORKERS:
        raise InputError(f"--workers must be between 1 and {MAX_WORKERS}, not {workers}.")
    if not Path(options.portrait).is_file():
        raise InputError(f"The portrait {options.portrait} does not exist or is not a file.")
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ditto-bench-workers-") as temp:
        work = Path(temp)
        if options.checkpoints is None:
            from ditto_demo.testing.checkpoints import write_test_checkpoints

            root = write_test_checkpoints(work / "checkpoints", options.size, seed=0,
                                          export_onnx=options.backend == "onnx")
        else:
            root = Path(options.checkpoints)
        samples = bench_audio(options.seconds)
        wav = write_wav(work / "speech.wav", samples, SAMPLE_RATE)
        counts = [1] if workers == 1 else [1, workers]
        scaling = [_measure(options, root, work, count, wav, samples) for count in counts]
    device = scaling[-1]["devices"][0]
    return {
        "schema": 1,
        "machine": {**machine_facts(device.split(":")[0]), "load_average_end": load_average()},
        "options": options_json(options),
        "audio_seconds": len(samples) / SAMPLE_RATE,
        "frames_per_video": audio_frame_count(len(samples)),
        "fps": FPS,
        "scaling": scaling,
        "speedup": scaling[-1]["videos_per_minute"] / scaling[0]["videos_per_minute"],
        "bench_seconds": time.perf_counter() - began,
    }


def format_workers_table(results: dict[str, Any]) -> str:
    """The scaling as a person reads it."""
    machine = results["machine"]
    lines = [
        f"Ditto worker scaling: {results['audio_seconds']:.1f} s videos ({results['frames_per_video']} frames), "
        f"size {results['options']['size']}, steps {results['options']['steps'] or 'checkpoint default'}",
        f"machine: {machine['cpu']}, {machine['cores']} cores, {machine['memory_gb']} GB"
        + (f", GPU {machine['gpu']}" if machine.get("gpu") else "") + f", load {machine['load_average']}",
        "",
        f"{'workers':>8} {'devices':<24} {'start s':>8} {'videos':>7} {'videos/min':>11} {'s/video':>8} "
        f"{'streams kept up':>16}",
    ]
    for row in results["scaling"]:
        devices = ",".join(sorted(set(row["devices"]))) + f" x{row['workers']}"
        kept = f"{row['streams_keeping_up']}/{len(row['streams'])}" if row["streams"] else "-"
        lines.append(f"{row['workers']:>8} {devices:<24} {row['start_s']:>8.1f} {row['videos']:>7} "
                     f"{row['videos_per_minute']:>11.2f} {row['video_s']['median']:>8.2f} {kept:>16}")
    lines.append(f"speedup (videos per minute, {results['scaling'][-1]['workers']} vs 1 worker): "
                 f"{results['speedup']:.2f}x")
    return "\n".join(lines)
