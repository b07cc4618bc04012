"""Smoke tests of ``python -m ditto_demo bench`` on tiny test checkpoints (CPU).

A benchmark, not a timed test: nothing here asserts a speed. The tests check that every figure is reported, finite
and consistent (first frame within the run, p05 ≤ median ≤ p95, all six networks and their eager baselines, the
overhead parts), that the paced stream reports its delays, and that the CLI prints one parsable JSON line.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ditto_demo.bench import PARTS, BenchOptions, bench_audio, format_table, run_bench
from ditto_demo.errors import InputError

SIX = ("appearance_extractor", "motion_extractor", "warp_network", "decoder", "stitch_network", "lmdm")
REPO = Path(__file__).resolve().parents[1]


def _numbers(value: Any, path: str = "") -> Iterator[tuple[str, float]]:
    """Every number in a nested result, with where it sits."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _numbers(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _numbers(item, f"{path}[{index}]")
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield path, float(value)


def _check_stats(stats: dict[str, float], *, positive: bool = True) -> None:
    assert set(stats) >= {"median", "p05", "p95"}
    assert stats["p05"] <= stats["median"] <= stats["p95"]
    if positive:
        assert stats["median"] > 0


@pytest.fixture(scope="module")
def results(tiny_root: Path) -> dict[str, Any]:
    options = BenchOptions(backend="torch", device="cpu", size="tiny", runs=1, warmup=0, audio_seconds=1.0,
                           paced=False, checkpoints=tiny_root)
    return run_bench(options)


def test_every_figure_is_present_and_finite(results: dict[str, Any]) -> None:
    json.dumps(results)  # JSON-ready as it is
    bad = [(where, value) for where, value in _numbers(results) if not math.isfinite(value)]
    assert not bad
    for key in ("cpu", "cores", "torch", "date"):
        assert results["machine"][key]
    assert results["audio"]["seconds"] == pytest.approx(1.0)
    assert results["audio"]["onset_s"] == pytest.approx(0.5)  # the leading silence puts onset after chunk 0
    assert results["paced"] is None


def test_offline_and_online_figures_are_sensible(results: dict[str, Any]) -> None:
    offline = results["offline"]
    assert offline["frames"] == 25
    for key in ("rtf", "total_s", "first_frame_s", "render_ms_per_frame"):
        _check_stats(offline[key])
    assert offline["first_frame_s"]["median"] <= offline["total_s"]["median"]
    assert set(offline["stage_ms"]) == {"stitch", "warp", "decode", "compose"}
    for stats in offline["stage_ms"].values():
        _check_stats(stats)
    assert {"face", "audio", "motion", "render", "encode"} <= set(offline["phase_s"])

    online = results["online"]
    assert online["frames"] >= 25
    _check_stats(online["rtf"])
    assert 0 < online["first_frame_s"]["median"] <= online["total_s"]["median"]


def test_every_network_is_timed_against_its_eager_module(results: dict[str, Any]) -> None:
    networks = results["networks"]
    assert set(SIX) <= set(networks)
    for name in SIX:
        entry = networks[name]
        assert (entry["backend"], entry["device"]) == ("torch", "cpu")
        _check_stats(entry["ms"])
        _check_stats(entry["eager_fp32_ms"])
        assert entry["ratio"] > 0
        assert entry["calls_per_run"] >= 1
    assert networks["hubert"]["eager_fp32_ms"] is None  # ONNX only: no module to compare with
    assert networks["warp_network"]["shapes"]["kp_source"] == [1, 21, 3]


def test_overhead_and_memory_are_reported(results: dict[str, Any]) -> None:
    overhead = results["overhead"]
    for key in ("paste_back_512_ms", "to_image_512_ms", "encode_write_512_ms", "encode_512_ms"):
        _check_stats(overhead["direct"][key])
    derived = overhead["derived"]
    assert derived["stage_sum_ms"] > 0
    assert derived["render_wall_ms"] > 0
    assert overhead["complete"] is True
    assert overhead["total_ms"] == pytest.approx(sum(overhead["components_ms"].values()))
    assert isinstance(overhead["within_budget"], bool)
    for part in ("offline", "online", "networks"):
        assert results["memory"][part]["rss_mb"] > 0
    assert results["setup"]["load_s"] >= 0


def test_table_names_the_headline_figures(results: dict[str, Any]) -> None:
    table = format_table(results)
    for text in ("offline RTF", "online burst RTF", "first frame", "eager fp32", "decoder", "budget", "peak memory"):
        assert text in table


@pytest.fixture(scope="module")
def paced_results(tiny_root: Path) -> dict[str, Any]:
    options = BenchOptions(backend="torch", device="cpu", runs=1, warmup=0, audio_seconds=1.0,
                           parts=("paced", "paced_reference", "streams"), streams=2, checkpoints=tiny_root)
    return run_bench(options)


def test_paced_stream_reports_its_delays(paced_results: dict[str, Any]) -> None:
    results = paced_results
    paced = results["paced"]
    assert paced["frames"] >= 25
    for key in ("first_frame_from_first_chunk_s", "first_frame_from_audio_start_s", "first_frame_from_onset_s",
                "lag_median_s", "rtf"):
        _check_stats(paced[key])
    # audio time 0 comes one chunk before the first chunk is handed over
    assert paced["first_frame_from_audio_start_s"]["median"] > paced["first_frame_from_first_chunk_s"]["median"]
    assert isinstance(paced["keeps_up"], bool)
    # the latency lever's "before": the reference's streaming, same keys
    reference = results["paced_reference"]
    _check_stats(reference["first_frame_from_first_chunk_s"])
    assert reference["frames"] >= 25
    streams = results["streams"]
    assert streams["streams"] == 2
    assert 0 <= streams["kept_up"]["median"] <= 2
    _check_stats(streams["first_frame_from_onset_max_s"])
    assert isinstance(streams["all_kept_up"], bool)
    table = format_table(results)
    assert "reference latency" in table
    assert "2 concurrent paced streams" in table


def test_options_are_validated() -> None:
    for bad in ({"runs": 0}, {"warmup": -1}, {"audio_seconds": 0.5}, {"size": "huge"}, {"parts": ("nope",)},
                {"steps": 0}, {"threads": 0}, {"streams": 0}, {"compile": "fast"}):
        with pytest.raises(InputError):
            BenchOptions(**bad)
    assert BenchOptions(size="full").seconds == 8.0
    assert BenchOptions().seconds == 4.0
    assert set(BenchOptions().parts) == set(PARTS)


def test_bench_audio_starts_silent_then_speaks() -> None:
    samples = bench_audio(1.5)
    assert samples.dtype == np.float32
    assert samples.shape == (24000,)
    assert not samples[:8000].any()
    assert np.sqrt(np.mean(samples[8000:] ** 2)) > 0.01


def test_cli_prints_one_json_line() -> None:
    command = [sys.executable, "-m", "ditto_demo", "bench", "--size", "tiny", "--runs", "1", "--warmup", "0",
               "--audio-seconds", "1", "--no-paced", "--json"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1
    data = json.loads(lines[0])
    assert data["offline"]["rtf"]["median"] > 0
    assert data["options"]["paced"] is False
    assert set(SIX) <= set(data["networks"])


def test_cli_reports_bad_options_in_one_line() -> None:
    from ditto_demo.cli import main

    assert main(["bench", "--runs", "0"]) == 2


def test_overhead_levers_are_reported(results: dict[str, Any]) -> None:
    levers = results["overhead"]["levers"]
    assert levers["device"] == "cpu"
    assert levers["paste_back_picked"] == "PasteBack"  # cv2 on the CPU
    assert levers["frames_per_run"] >= 1
    for name in ("render_path", "paste_back"):
        lever = levers[name]
        _check_stats(lever["before_ms"])
        _check_stats(lever["after_ms"])
        assert lever["before_ms"]["n"] == lever["after_ms"]["n"] == levers["frames_per_run"]
        assert lever["speedup"] > 0
        assert lever["before"]
        assert lever["after"]
    table = format_table(results)
    assert "levers on cpu" in table
    assert "render_path after" in table
    assert "paste_back speed-up" in table


def test_smoothness_compares_the_two_streaming_choices(results: dict[str, Any]) -> None:
    smooth = results["smoothness"]
    assert smooth["low_latency"]["overlap"] == 75
    assert smooth["reference"]["overlap"] == 70  # the stock online cfg of the test checkpoints
    for entry in smooth.values():
        for group in ("all", "expression"):
            figures = entry[group]
            assert figures["accel_rms"] > 0
            assert figures["seam_ratio"] > 0
    assert "streamed motion" in format_table(results)


class _StopError(Exception):
    """Raised by a stand-in ``Pipeline``: the test has seen what the bench passed it."""


def test_compile_option_reaches_the_pipeline_as_an_argument(tiny_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--compile`` goes to the pipeline as its typed ``compile_mode`` (``None``: DITTO_TORCH_COMPILE, else off)
    and the encoder settings as ``encoder``; the environment is never edited, and the torch threads are restored
    also when the run fails. (Compiling real networks is tested in test_engine_torch.py.)"""
    import os

    import torch

    import ditto_demo.bench.driver as driver
    from ditto_demo.pipeline.writer import EncoderSettings

    seen: list[tuple[str, EncoderSettings, str | None, int]] = []

    def fake_pipeline(root: Path, **kwargs: Any) -> None:
        seen.append((kwargs["compile_mode"], kwargs["encoder"], os.environ.get("DITTO_TORCH_COMPILE"),
                     torch.get_num_threads()))
        raise _StopError

    def run(**options: Any) -> None:
        with pytest.raises(_StopError):
            run_bench(BenchOptions(checkpoints=tiny_root, **options))

    monkeypatch.setattr(driver, "Pipeline", fake_pipeline)
    monkeypatch.setenv("DITTO_X264_PRESET", "veryfast")
    threads = torch.get_num_threads()
    monkeypatch.setenv("DITTO_TORCH_COMPILE", "off")
    run(compile="max-autotune-no-cudagraphs", threads=1)
    monkeypatch.setenv("DITTO_TORCH_COMPILE", "default")
    run()
    monkeypatch.delenv("DITTO_TORCH_COMPILE")
    run(compile="default")
    run()
    assert [s[0] for s in seen] == ["max-autotune-no-cudagraphs", "default", "default", "off"]
    assert [s[2] for s in seen] == ["off", "default", None, None]  # read, never written
    assert all(s[1] == EncoderSettings(preset="veryfast") for s in seen)
    assert seen[0][3] == 1
    assert torch.get_num_threads() == threads


#: A timing sample (:func:`summarize`'s shape) counts as one key: ``name{stats}``.
STATS = {"median", "p05", "p95", "min", "max", "n"}
#: Names the bench passes on without choosing them (the pipeline's stages and phases, the networks' bindings;
#: the tests above pin those): one key, ``name{...}``.
OPAQUE = {"stage_ms", "phase_s", "shapes"}
NETWORK_ENTRY = ("backend", "calls_per_run", "device", "eager_fp32_ms{stats}", "ms{stats}", "ratio", "shapes{...}",
                 "wrapper_overhead_ms")
PACED = ("first_frame_from_audio_start_s{stats}", "first_frame_from_first_chunk_s{stats}",
         "first_frame_from_onset_s{stats}", "frames", "keeps_up", "lag_growth{stats}", "lag_last_s{stats}",
         "lag_max_s{stats}", "lag_median_s{stats}", "lag_p95_s{stats}", "rtf{stats}", "runs")
#: The JSON keys of the ``results`` run (tiny, every part but the real-time ones, given checkpoints), as the bench
#: wrote them before it became a package; ``python -m ditto_demo bench --json`` prints this dict.
KEYS: dict[str, tuple[str, ...]] = {
    "machine": ("cores", "cores_usable", "cpu", "cuda", "date", "gpu", "load_average", "load_average_end",
                "memory_gb", "onnxruntime", "os", "python", "tensorrt", "torch", "torch_threads"),
    "options": ("audio_seconds", "backend", "checkpoints", "chunk_ms", "compile", "device", "paced", "parts",
                "portrait", "runs", "seed", "size", "steps", "streams", "threads", "warmup"),
    "backends": (*SIX, "hubert"),
    "audio": ("chunk_ms", "lead_silence_s", "onset_rms", "onset_s", "seconds", "source"),
    "offline": ("first_frame_s{stats}", "frames", "phase_s{...}", "render_ms_per_frame{stats}", "rtf{stats}", "runs",
                "stage_ms{...}", "total_s{stats}"),
    "online": ("first_frame_s{stats}", "frames", "rtf{stats}", "runs", "total_s{stats}"),
    "smoothness": ("low_latency.overlap", "reference.overlap",
                   *(f"{latency}.{group}.{figure}" for latency in ("low_latency", "reference")
                     for group in ("all", "expression")
                     for figure in ("accel_rms", "seam_ratio", "seam_step_rms", "step_rms"))),
    "networks": ("hubert.eager_fp32_ms",
                 *(f"{name}.{key}" for name in SIX for key in NETWORK_ENTRY),
                 *(f"hubert.{key}" for key in NETWORK_ENTRY if key != "eager_fp32_ms{stats}")),
    "overhead": ("budget_ms", "complete", "total_ms", "within_budget",
                 *(f"components_ms.{k}" for k in ("encode", "paste_back", "queue", "stitch", "to_image")),
                 *(f"derived.{k}" for k in ("compose_ms", "decode_outside_network_ms", "queue_ms", "render_wall_ms",
                                            "stage_sum_ms", "stitch_outside_network_ms", "warp_outside_network_ms")),
                 *(f"direct.{k}{{stats}}" for k in ("encode_512_ms", "encode_write_512_ms", "paste_back_512_ms",
                                                    "to_image_512_ms")),
                 "levers.device", "levers.frames_per_run", "levers.paste_back_picked", "levers.paste_frame",
                 *(f"levers.{lever}.{k}" for lever in ("paste_back", "render_path")
                   for k in ("after", "after_ms{stats}", "before", "before_ms{stats}", "speedup"))),
    "memory": ("networks.rss_mb", "networks.rss_scope", "offline.rss_mb", "offline.rss_scope", "online.rss_mb",
               "online.rss_scope", "process_peak_rss_mb"),
    "setup": ("load_s", "register_s"),
}
#: Keys whose value is not a dict in that run.
LEAVES = ("schema", "paced", "paced_reference", "streams", "bench_seconds")


def _key_paths(value: Any, path: str = "") -> Iterator[str]:
    """Every key path of a nested result, a timing sample and an opaque table counting as one key."""
    if not isinstance(value, dict):
        yield path
        return
    if set(value) == STATS:
        yield f"{path}{{stats}}"
        return
    for key, item in value.items():
        where = f"{path}.{key}" if path else key
        if key in OPAQUE:
            yield f"{where}{{...}}"
        else:
            yield from _key_paths(item, where)


def test_json_keys_are_those_of_the_single_module_bench(results: dict[str, Any]) -> None:
    expected = {f"{top}.{key}" for top, keys in KEYS.items() for key in keys} | set(LEAVES)
    got = set(_key_paths(results))
    assert got == expected, (sorted(got - expected), sorted(expected - got))


def test_json_keys_of_the_real_time_parts(paced_results: dict[str, Any]) -> None:
    expected = {f"{part}.{key}" for part in ("paced", "paced_reference") for key in PACED}
    expected |= {f"streams.{key}" for key in ("all_kept_up", "first_frame_from_onset_max_s{stats}",
                                              "first_frame_from_onset_median_s{stats}", "kept_up{stats}", "runs",
                                              "streams", "worst_lag_growth{stats}", "worst_lag_last_s{stats}")}
    expected |= {f"memory.{part}.{key}" for part in ("paced", "paced_reference", "streams")
                 for key in ("rss_mb", "rss_scope")} | {"memory.process_peak_rss_mb"}
    got = {p for p in _key_paths(paced_results) if p.split(".")[0] in ("paced", "paced_reference", "streams", "memory")}
    assert got == expected, (sorted(got - expected), sorted(expected - got))
