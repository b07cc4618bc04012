"""What a benchmark run reports: the JSON figures' option block, and the table a person reads.

The JSON is :func:`~ditto_demo.bench.driver.run_bench`'s dict as it is (the CLI prints it as one line, keys
sorted); :func:`format_table` shows its headline figures as medians with p05 / p95.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from ditto_demo.bench.options import BenchOptions

__all__ = ["format_live_browser", "format_table", "options_json"]

#: The live-browser figures in the table: (key, label, unit, digits).
_LIVE_ROWS = (
    ("onset_to_motion_ms", "speech onset → motion on screen", "ms", 0),
    ("frame_delay_ms", "capture → display (picture behind real time)", "ms", 0),
    ("fps", "frames shown per second", "fps", 1),
    ("fps_min", "  lowest one-second count", "fps", 1),
    ("av_offset_ms", "audio/video offset at the player", "ms", 1),
    ("speak_to_sound_ms", "asked to speak → first sound heard", "ms", 0),
    ("dropped_audio_ms", "audio dropped to keep up", "ms", 0),
    ("late_frames", "frames skipped at the player", "", 0),
    ("frames", "frames shown", "", 0),
    ("server_fps", "frames sent per second by the server", "fps", 1),
    ("first_frame_s", "Start → first frame shown", "s", 2),
)


def options_json(options: BenchOptions) -> dict[str, Any]:
    """``options`` as JSON: the audio length actually used, paths as strings, parts as a list."""
    data = asdict(options)
    data["audio_seconds"] = options.seconds
    data["checkpoints"] = str(options.checkpoints) if options.checkpoints is not None else None
    data["portrait"] = str(options.portrait)
    data["parts"] = list(options.parts)
    return data


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
    live = results.get("live_browser")
    if live:
        lines += ["", *format_live_browser(live)]
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


def format_live_browser(live: Mapping[str, Any]) -> list[str]:
    """The live-browser part's lines: each mode's figures (medians, p05, p95), then the issue's targets."""
    lines = [f"live tab in Chromium ({live['runs']} runs, {live['window_s']:.0f} s measured per session)",
             f"{'':<44} {'median':>10} {'p05':>10} {'p95':>10}"]
    for mode, transports in live["modes"].items():
        for transport, figures in transports.items():
            lines.append(f"{mode} over {transport}")
            for key, label, unit, digits in _LIVE_ROWS:
                if key in figures:
                    lines.append(_stat_row(f"  {label}", figures[key], unit, digits))
    lines.append("targets")
    for row in live["targets"]:
        verdict = {True: "met", False: "NOT met", None: "not measured"}[row["met"]]
        value = "-" if row["median"] is None else f"{row['median']:.1f}"
        lines.append(f"  {row['figure'] + ' (' + row['mode'] + ')':<42} {value:>10}  {row['rule']:<16} {verdict}")
    return lines
