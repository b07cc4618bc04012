"""The Live tab without a browser: its events (the live_start event in the pipeline's concurrency group, the page's
JavaScript-only buttons and live controls), the player's head HTML, the start handler's answers, and the fallback's
figures in words with units (issue 11, finding 8)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import pytest

from ditto_demo.ui.live_tab import LIVE_CHANGEABLE, MODES, _request_id, _stream_note, build_live_tab
from ditto_demo.ui.service import AppSettings, DemoService, LiveStats
from ditto_demo.ui.transport import PLAYER_JS, SLOW_BEHIND_FRAMES, format_stats, live_head


@pytest.fixture(scope="module")
def offline(tmp_path_factory: pytest.TempPathFactory) -> DemoService:
    """A server whose checkpoints are missing: the tab still builds, and a start is refused in words."""
    folder = tmp_path_factory.mktemp("offline")
    return DemoService(AppSettings(checkpoints=str(folder / "nothing-here"), output_dir=folder, concurrency=2))


def _tab(service: DemoService) -> gr.Blocks:
    with gr.Blocks() as demo, gr.Tab("Live"):
        build_live_tab(service)
    return demo


def _component(demo: gr.Blocks, elem_id: str) -> gr.components.Component:
    return next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == elem_id)


def test_the_tab_wires_live_start_and_the_page_events(offline: DemoService) -> None:
    demo = _tab(offline)
    events = {fn.name: fn for fn in demo.fns.values()}
    start = events["live_start"]
    assert start.api_name == "live_start"
    assert start.api_visibility == "undocumented"  # callable by name, not advertised
    assert (start.concurrency_id, start.concurrency_limit) == ("pipeline", 2)  # shares Generate's slots
    assert "_requestJson" in (start.js or "")
    ticket = _component(demo, "ditto-live-ticket")
    assert [o._id for o in start.outputs] == [ticket._id]
    for elem_id in ("ditto-live-request", "ditto-live-start-btn", "ditto-live-ticket"):
        component = _component(demo, elem_id)
        assert component.visible is True  # in the page (off screen by CSS), as the protocol asks
        assert "ditto-offscreen" in component.elem_classes
    page_only = [fn for fn in demo.fns.values() if fn.fn is None and fn.js]
    bodies = " ".join(fn.js for fn in page_only)
    for call in ("dittoLive.start(", "dittoLive.speak(", "dittoLive.playFile(", "dittoLive.interrupt(",
                 "dittoLive.stop(", "dittoLive._onTicket("):
        assert call in bodies, call
    for name in LIVE_CHANGEABLE:
        assert f'dittoLive._control("{name}"' in bodies, name
    assert "dittoLive._control(\"seed\"" not in bodies  # fixed for a session: read at Start only
    assert any(t[1] == "unload" for fn in demo.fns.values() for t in fn.targets)
    assert [value for _, value in MODES] == ["microphone", "file", "text"]


def test_a_refused_start_answers_with_its_request_id(offline: DemoService) -> None:
    demo = _tab(offline)
    handler = next(fn for fn in demo.fns.values() if fn.name == "live_start").fn
    request = SimpleNamespace(session_hash="tab-1")
    values = [None] * (len(next(fn for fn in demo.fns.values() if fn.name == "live_start").inputs) - 3)
    updates = [json.loads(u) for u in handler(request, json.dumps({"mode": "microphone", "id": "abc"}), "p.png", None,
                                              *values)]
    assert len(updates) == 1
    assert updates[0]["state"] == "error"
    assert updates[0]["request_id"] == "abc"
    assert "checkpoints" in updates[0]["message"]
    assert offline.live_hub.active() == 0
    assert _request_id('{"mode": "text", "id": 7}') == "7"
    assert _request_id("not json") is None
    assert _request_id('["a"]') is None


def test_the_player_goes_in_the_head_whole() -> None:
    head = live_head()
    script = PLAYER_JS.read_text(encoding="utf-8")
    assert head.count("<script>") == 1
    assert script in head
    assert "window.dittoLive" in script
    assert ".ditto-offscreen" in head  # its style sheet too


def _stats(**changes: object) -> LiveStats:
    base = {"frames": 120, "fps": 14.0, "audio_seconds": 6.0, "dropped_seconds": 0.0, "frames_behind": 9,
            "first_frame_latency": 0.8, "onset_latency": 0.62, "onset_at": 1.0, "running": True, "error": None}
    return LiveStats(**{**base, **changes})  # type: ignore[arg-type]


def test_fallback_figures_are_words_with_units() -> None:
    line = format_stats(_stats())
    assert "**14 fps**" in line
    assert "lip motion starts **0.62 s** after you speak" in line
    assert "first picture 0.80 s after the first audio arrived" in line
    assert "120 frames shown" in line
    assert "picture 9 frames behind real time" in line
    assert "slower than real time" not in line
    slow = format_stats(_stats(frames_behind=SLOW_BEHIND_FRAMES + 1))
    assert "**The server is slower than real time:**" in slow
    skipped = format_stats(_stats(dropped_seconds=2.5))
    assert "2.5 s of audio skipped to keep up" in skipped
    assert "slower than real time" in skipped
    stopped = format_stats(_stats(running=False, dropped_seconds=2.5))
    assert stopped.endswith("stopped")
    assert format_stats(_stats(error="No face found.")) == "**Stopped:** No face found."


def test_the_file_stream_says_why_playback_pauses() -> None:
    assert "first second" in _stream_note({"elapsed_seconds": 0.0, "seconds_streamed": 0.0, "finished": False})
    slow = _stream_note({"elapsed_seconds": 4.0, "seconds_streamed": 2.0, "finished": False})
    assert "slower than real time" in slow
    assert "0.50 s of video per second" in slow
    assert "pauses" in slow
    fast = _stream_note({"elapsed_seconds": 2.0, "seconds_streamed": 3.0, "finished": False})
    assert "faster than real time" in fast
    assert _stream_note({"elapsed_seconds": 5.0, "seconds_streamed": 3.0, "finished": True}).startswith("Done")


def test_the_portrait_defaults_to_the_example(offline: DemoService) -> None:
    portrait = _component(_tab(offline), "ditto-live-portrait")
    assert portrait.value is not None
    assert Path(portrait.value["path"] if isinstance(portrait.value, dict) else portrait.value).name.startswith(
        "portrait")
