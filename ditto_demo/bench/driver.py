"""The benchmark's driver: settings read at the edge, the networks loaded and the portrait registered before
anything is timed (reported as setup), then the parts in order, every figure into one JSON-ready dict."""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ditto_demo.bench.context import BenchContext
from ditto_demo.bench.measure import MemoryProbe, load_average, machine_facts, process_peak_mb
from ditto_demo.bench.options import PARTS, PIPELINE_PARTS, SPEECH_ASSET, BenchOptions
from ditto_demo.bench.parts.networks import NETWORKS, bench_networks
from ditto_demo.bench.parts.overhead import bench_overhead
from ditto_demo.bench.parts.runs import run_pipeline_parts
from ditto_demo.bench.parts.smoothness import bench_smoothness
from ditto_demo.bench.report import options_json
from ditto_demo.bench.speech import LEAD_SILENCE_S, ONSET_RMS, bench_audio, onset_chunk, split_chunks
from ditto_demo.engine.backends.torch_backend import compile_mode_from_env
from ditto_demo.errors import InputError
from ditto_demo.pipeline.controls import Controls
from ditto_demo.pipeline.pcm import write_wav
from ditto_demo.pipeline.pipeline import Pipeline
from ditto_demo.pipeline.timebase import SAMPLE_RATE
from ditto_demo.pipeline.writer import EncoderSettings

__all__ = ["RunSettings", "run_bench", "run_settings"]

log = logging.getLogger(__name__)

#: Bumped when a key of the results changes meaning or goes away.
_SCHEMA = 1


@dataclass(frozen=True)
class RunSettings:
    """What the environment decides for one benchmark run, read once at the bench's edge and passed down typed."""

    #: ``torch.compile`` mode of the PyTorch networks (``Pipeline(compile_mode=...)``).
    compile_mode: str
    #: How the offline videos and the overhead part's encoder timing are encoded.
    encoder: EncoderSettings


def run_settings(options: BenchOptions) -> RunSettings:
    """The one place the bench reads the environment: ``--compile`` wins over ``DITTO_TORCH_COMPILE`` (default
    off); the encoder comes from ``DITTO_VIDEO_CODEC`` / ``DITTO_X264_PRESET`` as it does for the app."""
    compile_mode = options.compile if options.compile is not None else compile_mode_from_env()
    return RunSettings(compile_mode=compile_mode, encoder=EncoderSettings.from_env())


def run_bench(options: BenchOptions) -> dict[str, Any]:
    """Run the benchmark described by ``options``; returns every figure as a JSON-ready dict.

    Raises :class:`InputError` for an unusable portrait or checkpoint folder, ``BackendUnavailableError`` for a
    backend / device this host cannot run, and ``RuntimeError`` if a run produced a wrong number of frames.
    ``options.threads`` applies to this call only (restored afterwards); the compile mode is passed to the
    pipeline, the environment is left as it is.
    """
    if not Path(options.portrait).is_file():
        raise InputError(f"The portrait {options.portrait} does not exist or is not a file.")
    if options.checkpoints is not None and not Path(options.checkpoints).is_dir():
        raise InputError(f"The checkpoint folder {options.checkpoints} does not exist.")
    settings = run_settings(options)
    threads_before = torch.get_num_threads()
    if options.threads is not None:
        torch.set_num_threads(options.threads)
    try:
        return _measure(options, settings)
    finally:
        torch.set_num_threads(threads_before)


def _measure(options: BenchOptions, settings: RunSettings) -> dict[str, Any]:
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
        pipeline = Pipeline(root, backend=options.backend, device=options.device,
                            compile_mode=settings.compile_mode, encoder=settings.encoder)
        in_process = any(options.runs_part(p) for p in PARTS)  # live-browser alone runs the app in its own process
        if in_process:
            for name in NETWORKS:
                pipeline.networks[name]  # load everything now: loading is setup, not the first run's time
            setup["load_s"] = time.perf_counter() - phase
        loaded = pipeline.networks.loaded()
        device = next(iter(loaded.values())).split("/", 1)[1] if loaded else _device_of(options.device)
        results: dict[str, Any] = {
            "schema": _SCHEMA,
            "machine": machine_facts(device),
            "options": options_json(options),
            "backends": loaded,
        }
        samples = bench_audio(options.seconds)
        chunks = split_chunks(samples, SAMPLE_RATE * options.chunk_ms // 1000)
        ctx = BenchContext(
            options=options, pipeline=pipeline, controls=Controls(seed=options.seed, steps=options.steps), root=root,
            work=work, samples=samples, wav=write_wav(work / "speech.wav", samples, SAMPLE_RATE), chunks=chunks,
            onset_chunk=onset_chunk(chunks), memory=MemoryProbe(device.startswith("cuda")),
        )
        results["audio"] = {
            "seconds": ctx.audio_seconds, "lead_silence_s": LEAD_SILENCE_S, "chunk_ms": options.chunk_ms,
            "onset_s": ctx.onset_chunk * ctx.chunk_seconds, "onset_rms": ONSET_RMS,
            "source": SPEECH_ASSET.name if SPEECH_ASSET.is_file() else "synthetic",
        }
        if any(options.runs_part(p) for p in (*PIPELINE_PARTS, "smoothness")):
            phase = time.perf_counter()
            pipeline.register(options.portrait, ctx.controls)
            setup["register_s"] = time.perf_counter() - phase
        results.update(run_pipeline_parts(ctx))
        results["smoothness"] = bench_smoothness(ctx) if options.runs_part("smoothness") else None
        networks = bench_networks(ctx) if options.runs_part("networks") else None
        results["networks"] = networks
        results["overhead"] = (
            bench_overhead(ctx, results["offline"], networks) if options.runs_part("overhead") else None
        )
        if options.runs_part("live-browser"):
            from ditto_demo.bench.parts.live_browser import bench_live_browser

            results["live_browser"] = bench_live_browser(ctx)
        results["memory"] = {**ctx.peaks, "process_peak_rss_mb": process_peak_mb()}
        results["setup"] = setup
    results["machine"]["load_average_end"] = load_average()
    results["bench_seconds"] = time.perf_counter() - began
    return results


def _device_of(device: str) -> str:
    """The device a run on ``device`` uses, when no network was loaded in this process to say so."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device
