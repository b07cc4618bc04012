"""``bench --parts live-browser``: an opt-in part (the default run and its JSON keys stay as they were), its figures
per mode and transport with the issue's targets judged from the measured medians, its table, and one short real run
(the app in its own process, headless Chromium) whose JSON has every mode's figures."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from app_support import chromium_path

from ditto_demo.bench import PARTS, BenchOptions, format_table, run_bench
from ditto_demo.bench.options import ALL_PARTS, OPT_IN_PARTS
from ditto_demo.bench.parts.live_browser import LIVE_MODES, _record, _summarize, _targets
from ditto_demo.bench.report import format_live_browser
from ditto_demo.cli import _build_parser
from ditto_demo.errors import InputError


def _stats(value: float) -> dict[str, float]:
    return {"median": value, "p05": value, "p95": value, "min": value, "max": value, "n": 1}


def test_the_part_is_opt_in() -> None:
    assert "live-browser" not in PARTS
    assert OPT_IN_PARTS == ("live-browser",)
    assert set(ALL_PARTS) == {*PARTS, "live-browser"}
    assert BenchOptions().parts == PARTS  # a plain `bench` does not start a browser
    assert BenchOptions(parts=("live-browser",)).runs_part("live-browser")
    assert not BenchOptions().runs_part("live-browser")
    with pytest.raises(InputError, match="live-browser"):
        BenchOptions(parts=("live-browsers",))
    args = _build_parser().parse_args(["bench", "--parts", "live-browser", "--runs", "2"])
    assert args.parts == ["live-browser"]
    assert _build_parser().parse_args(["bench"]).parts == list(PARTS)


def test_a_session_record_keeps_what_was_measured() -> None:
    final = {"frames": 120, "late_frames": 3, "dropped_audio_ms": 40.0, "onset_to_motion_ms": 310.0,
             "frame_delay_ms": 420.0, "av_offset_ms": None, "speak_to_sound_ms": None, "playout_delay_ms": 380.0}
    samples = [{"fps": f, "server_fps": s} for f, s in ((5, None), (20, 24.0), (25, 25.0), (24, 25.0), (26, 25.0))]
    record = _record(final, samples, 2.5)
    assert record["fps"] == 25.0  # the median of the readings after the first second
    assert record["fps_min"] == 24.0
    assert record["server_fps"] == 25.0
    assert record["onset_to_motion_ms"] == 310.0
    assert "av_offset_ms" not in record  # not measured in this mode: left out, never invented
    assert record["first_frame_s"] == 2.5
    summary = _summarize([record, {**record, "fps": 23.0}])
    assert summary["fps"]["median"] == 24.0
    assert summary["fps"]["n"] == 2


def test_targets_are_judged_from_the_medians() -> None:
    modes = {mode: {"websocket": {}} for mode in LIVE_MODES}
    modes["microphone"]["websocket"] = {"onset_to_motion_ms": _stats(480.0), "fps_min": _stats(25.0),
                                        "dropped_audio_ms": _stats(0.0)}
    modes["file"]["websocket"] = {"av_offset_ms": _stats(-55.0), "fps_min": _stats(12.0),
                                  "dropped_audio_ms": _stats(300.0)}
    modes["text"]["websocket"] = {"av_offset_ms": _stats(12.0), "speak_to_sound_ms": _stats(1400.0)}
    rows = {(r["figure"], r["mode"]): r for r in _targets(modes)}
    assert rows[("onset_to_motion_ms", "microphone")]["met"] is True
    assert rows[("av_offset_ms", "file")]["met"] is False  # 55 ms late is out, whichever side
    assert rows[("av_offset_ms", "text")]["met"] is True
    assert rows[("fps_min", "microphone")]["met"] is True
    assert rows[("fps_min", "file")]["met"] is False
    assert rows[("fps_min", "text")]["met"] is None  # not measured: not claimed either way
    assert rows[("dropped_audio_ms", "file")]["met"] is False
    assert rows[("speak_to_sound_ms", "text")]["met"] is False
    live = {"runs": 1, "window_s": 10.0, "modes": modes, "targets": list(rows.values())}
    lines = "\n".join(format_live_browser(live))
    assert "microphone over websocket" in lines
    assert "speech onset → motion on screen" in lines
    assert "NOT met" in lines
    assert "not measured" in lines


@pytest.mark.browser
def test_a_short_run_measures_every_mode(tiny_root: Path) -> None:
    if chromium_path() is None:
        pytest.skip("Chromium is not installed (make test installs it)")
    options = BenchOptions(backend="torch", device="cpu", runs=1, warmup=0, audio_seconds=3.0,
                           parts=("live-browser",), checkpoints=tiny_root)
    results = run_bench(options)
    json.dumps(results)
    live = results["live_browser"]
    assert live["runs"] == 1
    assert live["window_s"] == 3.0
    assert set(live["modes"]) == set(LIVE_MODES)
    for mode in LIVE_MODES:
        figures = live["modes"][mode]["websocket"]
        assert figures["frames"]["median"] > 0, mode
        assert figures["first_frame_s"]["median"] > 0, mode
        assert all(math.isfinite(v) for stats in figures.values() for v in stats.values()), mode
    for mode in ("file", "text"):
        assert "av_offset_ms" in live["modes"][mode]["websocket"], mode
    assert "av_offset_ms" not in live["modes"]["microphone"]["websocket"]
    assert {(r["figure"], r["mode"]) for r in live["targets"]} >= {("onset_to_motion_ms", "microphone"),
                                                                    ("av_offset_ms", "file"), ("av_offset_ms", "text")}
    assert results["offline"] is None  # nothing else ran, and no network was loaded in this process
    assert results["backends"] == {}
    table = format_table(results)
    assert "live tab in Chromium" in table
    assert "targets" in table
