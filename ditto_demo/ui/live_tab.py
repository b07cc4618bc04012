"""The Live tab: the portrait comes alive at once and talks with your voice, a speech file or typed text.

**The live player** (the main path; docs/live_protocol.md). Start asks the ``live_start`` event for a ticket: it
runs in the ``"pipeline"`` concurrency group shared with Generate and Compare, so a busy server queues the visitor
(the page says how many are ahead) and the slot is held for exactly as long as the session lives. The page's
player (``static/live.js``, put in the page's head by :func:`~ditto_demo.ui.transport.live_head`) then opens the
session's WebSocket: microphone audio goes out in 20 ms packets, frames and the avatar's voice come back with
timestamps and are played on one clock. Start, Speak, Interrupt, Stop and the live controls are handled in the
page (JavaScript-only events), so none of them waits in Gradio's queue; control changes are sent as ``controls``
messages and take effect within one motion clip. Closing the tab closes the socket, which ends the session;
``unload`` ends it too.

**The Gradio-only fallback** (an accordion below the player): the earlier microphone path over
``gr.Audio(streaming=True)`` and a streaming ``gr.Image`` (:class:`GradioStreamTransport`), and "stream a file" as
one-second H.264 + AAC chunks to ``gr.Video(streaming=True)``. Neither needs a WebSocket, so they work behind a
proxy that blocks them (the player opens the accordion when its socket cannot connect), and "stream a file" is the
one that runs on ZeroGPU, where a GPU is lent per request and cannot follow a live session.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import gradio as gr
from gradio.context import Context

from ditto_demo.errors import DittoError
from ditto_demo.pipeline.controls import control_info
from ditto_demo.ui.common import PathRedactor, public_errors, user_errors
from ditto_demo.ui.service import DemoService
from ditto_demo.ui.transport import GradioStreamTransport, format_stats
from ditto_demo.ui.widgets import ControlPanel
from ditto_demo.ui.zerogpu import audio_duration, on_gpu, zero_gpu_active

__all__ = ["LIVE_CHANGEABLE", "LIVE_CONTROLS", "MODES", "STREAM_EVERY", "build_live_tab"]

log = logging.getLogger(__name__)

#: The controls offered on the Live tab (the rest keep the checkpoint's streaming defaults).
LIVE_CONTROLS = ("seed", "emotion", "gaze_lock", "pitch_offset", "yaw_offset", "roll_offset", "expression_amplitude",
                 "framing")
#: Those a running session takes up when they change (sent as ``controls`` messages); the others apply at Start.
LIVE_CHANGEABLE = ("emotion", "gaze_lock", "pitch_offset", "yaw_offset", "roll_offset", "expression_amplitude")
#: The modes as the page names them, and as the protocol does.
MODES = (("Microphone", "microphone"), ("Speech file", "file"), ("Text", "text"))
#: Seconds of microphone audio per chunk the browser sends in the fallback: shorter is snappier, longer costs
#: fewer requests.
STREAM_EVERY = 0.25
_ASSETS = Path(__file__).resolve().parents[2] / "assets"

_ZERO_GPU_NOTE = """
**On ZeroGPU a GPU is lent per request**, and a live session would need one for as long as it lasts: the live
avatar runs without one here, far below real time. **Stream a file** in the fallback below runs on a lent GPU.
"""

_INTRO = """
Pick a portrait and where the speech comes from, then press **Start**: the portrait comes alive at once and idles
until there is speech. **Microphone:** talk, and it talks with your voice (you do not hear yourself).
**Speech file:** it speaks the file, with sound. **Text:** type and press **Speak**; more text can be queued while
it speaks. **Interrupt** cuts the current speech; emotion, gaze and head pose can be changed while it runs.
"""

_PLAYER_HTML = """
<div id="ditto-live-player">
  <div id="ditto-live-status" data-state="idle">Choose a mode and press Start.</div>
  <div id="ditto-live-notice" style="display: none"></div>
  <canvas id="ditto-live-canvas" width="512" height="640" aria-label="The live avatar"></canvas>
  <div id="ditto-live-figures"></div>
</div>
"""

_FALLBACK_NOTE = """
For networks that block WebSockets (the player opens this when it cannot connect), and for ZeroGPU: the same
avatar over Gradio's own events. **Microphone:** press **Record** and speak; frames come without sound, in
quarter-second steps. **Stream a file:** the speech file above is animated and played in one-second pieces.
"""


# ------------------------------------------------------------------------------------------------ fallback


class _Viewers:
    """Which transport belongs to which browser session, so closing the tab can stop its live session at once.

    Weak references: an entry disappears with the viewer's state, and this index never keeps a session alive.
    """

    def __init__(self) -> None:
        self._by_session: weakref.WeakValueDictionary[str, GradioStreamTransport] = weakref.WeakValueDictionary()
        self._lock = threading.Lock()

    def remember(self, request: gr.Request | None, transport: GradioStreamTransport) -> None:
        key = getattr(request, "session_hash", None)
        if key:
            with self._lock:
                self._by_session[key] = transport

    def close(self, request: gr.Request | None) -> None:
        key = getattr(request, "session_hash", None)
        with self._lock:
            transport = self._by_session.pop(key, None) if key else None
        if transport is not None:
            log.info("viewer left: closing its live session")
            transport.stop()


def _public_stream(fn: Callable[..., Iterator[Any]], redact: Callable[[str], str]) -> Callable[..., Iterator[Any]]:
    """:func:`public_errors` for a generator handler: ``gr.Error`` sentences without the server's folders."""
    guarded = user_errors(fn)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Iterator[Any]:
        try:
            yield from guarded(*args, **kwargs)
        except gr.Error as exc:
            raise gr.Error(redact(str(exc.message)), duration=exc.duration, visible=exc.visible, title=exc.title,
                           print_exception=False) from None

    return wrapper


def _live_exclude() -> tuple[str, ...]:
    return tuple(name for name in control_info() if name not in LIVE_CONTROLS)


def _stream_note(stats: dict[str, Any]) -> str:
    """What the fallback's file stream is doing, in words: how fast video is made, and why playback pauses."""
    elapsed = float(stats.get("elapsed_seconds") or 0.0)
    made = float(stats.get("seconds_streamed") or 0.0)
    if stats.get("finished"):
        return f"Done: {made:.1f} s of video made in {elapsed:.1f} s."
    if elapsed <= 0 or made <= 0:
        return "Making the first second of video…"
    speed = made / elapsed
    if speed >= 1.0:
        return f"{made:.1f} s of video made in {elapsed:.1f} s: faster than real time, so playback runs smoothly."
    return (f"**The server is slower than real time:** it makes {speed:.2f} s of video per second, so playback "
            f"pauses between the one-second pieces while it catches up ({made:.1f} s made so far).")


def _js_call(body: str) -> str:
    """A JavaScript-only event handler that calls the page's player (present once the page's head has run)."""
    return f"(...args) => {{ if (window.dittoLive) {{ {body} }} }}"


def _request_id(request_text: str | None) -> str | None:
    """The page's id for a start request, echoed in every update so the page never reads another start's answer."""
    try:
        request = json.loads(request_text or "")
    except (TypeError, ValueError):
        return None
    return str(request["id"]) if isinstance(request, dict) and request.get("id") else None


def build_live_tab(service: DemoService) -> None:
    """Build the tab's content inside the caller's ``gr.Tab``."""
    defaults = service.control_defaults()
    redact = PathRedactor.for_service(service)
    portrait = _ASSETS / "portrait_illustration.png"
    gr.Markdown(_INTRO)
    with gr.Row():
        with gr.Column(scale=2, min_width=280):
            source_box = gr.Image(type="filepath", label="Portrait", sources=["upload", "clipboard"], height=300,
                                  value=str(portrait) if portrait.is_file() else None, elem_id="ditto-live-portrait")
            mode = gr.Radio(choices=list(MODES), value="microphone", label="Speech comes from",
                            elem_id="ditto-live-mode")
            speech_box = gr.Audio(type="filepath", label="Speech file", sources=["upload", "microphone"],
                                  elem_id="ditto-live-speech")
            text_box = gr.Textbox(label="Text to speak", lines=2, elem_id="ditto-live-text",
                                  placeholder="Hello! I am a portrait that talks. What shall we do today?")
            panel = ControlPanel(defaults, open_groups=("emotion", "pose"), exclude=_live_exclude())
        with gr.Column(scale=3, min_width=360):
            if zero_gpu_active():
                gr.Markdown(_ZERO_GPU_NOTE)
            with gr.Row():
                start = gr.Button("▶ Start", variant="primary", elem_id="ditto-live-start", min_width=80)
                speak = gr.Button("Speak", elem_id="ditto-live-speak", min_width=80)
                play = gr.Button("Play the file", elem_id="ditto-live-play", min_width=80)
                interrupt = gr.Button("Interrupt", elem_id="ditto-live-interrupt", min_width=80)
                stop = gr.Button("■ Stop", variant="stop", elem_id="ditto-live-stop", min_width=80)
            gr.HTML(_PLAYER_HTML, elem_id="ditto-live-player-block")
            # The live_start event's widgets (docs/live_protocol.md §1): in the page, off screen.
            request_box = gr.Textbox(label="Start request", elem_id="ditto-live-request",
                                     elem_classes=["ditto-offscreen"])
            start_event = gr.Button("Start the live session", elem_id="ditto-live-start-btn",
                                    elem_classes=["ditto-offscreen"])
            ticket_box = gr.Textbox(label="Live ticket", elem_id="ditto-live-ticket", elem_classes=["ditto-offscreen"])
            with gr.Accordion("Fallback without WebSockets (also for ZeroGPU)", open=False,
                              elem_id="ditto-live-fallback"):
                fallback = _build_fallback(service, redact, source_box, speech_box, panel)

    def live_start(request: gr.Request, request_text: str | None, source: str | None, speech: str | None,
                   *values: Any) -> Iterator[str]:
        """Ready the portrait, hand the page its ticket, then hold the slot until the session ends."""
        request_id = _request_id(request_text)

        def update_text(update: dict[str, Any]) -> str:
            for key in ("message", "reason"):
                if isinstance(update.get(key), str):
                    update = {**update, key: redact(update[key])}
            return json.dumps({**update, "request_id": request_id})

        try:
            controls = panel.to_controls(*values)
        except DittoError as exc:
            yield update_text({"state": "error", "message": str(exc)})
            return
        for update in service.live_start(request_text, request.session_hash, source, speech, controls):
            yield update_text(update)

    inputs = [request_box, source_box, speech_box, *panel.components]
    start_event.click(live_start, inputs=inputs, outputs=ticket_box, api_name="live_start",
                      api_visibility="undocumented", concurrency_id="pipeline",
                      concurrency_limit=service.settings.concurrency,
                      js=f"(...args) => [window.dittoLive ? window.dittoLive._requestJson() : args[0], "
                         f"...args.slice(1, {len(inputs)})]")
    ticket_box.change(None, inputs=ticket_box, outputs=None, js=_js_call("window.dittoLive._onTicket(args[0]);"))
    start.click(None, inputs=[mode, text_box], outputs=None, js=_js_call(
        "window.dittoLive.start({mode: args[0], text: args[0] === 'text' ? args[1] : ''}).catch(() => null);"))
    speak.click(None, inputs=text_box, outputs=None,
                js=_js_call("window.dittoLive.speak(args[0]).catch(() => null);"))
    play.click(None, inputs=None, outputs=None, js=_js_call("window.dittoLive.playFile().catch(() => null);"))
    interrupt.click(None, inputs=None, outputs=None, js=_js_call("window.dittoLive.interrupt();"))
    stop.click(None, inputs=None, outputs=None, js=_js_call("window.dittoLive.stop();"))
    for name, component in zip(panel.names, panel.components, strict=True):
        if name in LIVE_CHANGEABLE:
            component.change(None, inputs=component, outputs=None,
                             js=_js_call(f"window.dittoLive._control({json.dumps(name)}, args[0]);"))

    def tab_closed(request: gr.Request) -> None:
        """The visitor left: end their live session, and any fallback session, at once."""
        service.live_stop(request.session_hash)
        fallback.close(request)

    root = Context.root_block
    if root is not None:
        root.unload(tab_closed)
    else:
        log.warning("the Live tab is built outside gr.Blocks: closing the browser tab ends a live session only "
                    "when its socket closes")


def _build_fallback(service: DemoService, redact: PathRedactor, source_box: gr.Image, speech_box: gr.Audio,
                    panel: ControlPanel) -> _Viewers:
    """The Gradio-only microphone and "stream a file" paths; returns the index of the fallback's microphone viewers."""
    viewers = _Viewers()
    mic_available = not zero_gpu_active()
    transport_state = gr.State(GradioStreamTransport(service, redact=redact, idle_timeout=10.0, max_buffer_seconds=1.0,
                                                     max_seconds=max(60.0, service.settings.max_audio_seconds)))
    gr.Markdown(_FALLBACK_NOTE)
    with gr.Tab("Microphone"):
        mic = gr.Audio(sources=["microphone"], streaming=True, type="numpy", label="Microphone",
                       elem_id="live-mic", interactive=mic_available)
        live_stats = gr.Markdown("Press **Record** and speak.", elem_id="live-stats")
        live_image = gr.Image(label="Live", streaming=True, sources=["webcam"], format="jpeg",
                              interactive=False, elem_id="live-frame", height=480)
    with gr.Tab("Stream a file"):
        stream_button = gr.Button("▶ Stream the speech file", variant="primary", elem_id="live-file-stream")
        stream_video = gr.Video(label="Playing as it is generated", streaming=True, autoplay=True, height=480,
                                elem_id="live-file-video")
        stream_note = gr.Markdown(elem_id="live-file-note")
        stream_report = gr.JSON(label="Progress and timing")

    def on_chunk(request: gr.Request, chunk: tuple[int, Any] | None, source: str | None,
                 transport: GradioStreamTransport, *values: Any) -> None:
        """One microphone chunk: start the viewer's session on the first one, then queue the audio."""
        if chunk is None or transport.stopped:
            return
        viewers.remember(request, transport)
        try:
            transport.ensure_session(source, panel.to_controls(*values))
            transport.receive(chunk)
        except DittoError:
            transport.stop()  # the stream event ends with the error; the frame updates end with it
            raise

    async def show_frames(transport: GradioStreamTransport) -> AsyncIterator[tuple[Any, str]]:
        """Frames and figures while the recording lasts (outside the pipeline group: it only reads frames)."""
        async for update in transport.frames():
            yield update

    def on_stop(transport: GradioStreamTransport) -> str:
        """End the session (and its threads) now, and leave its final figures on screen."""
        final = transport.stop()
        return "Stopped. Press **Record** to start again." if final is None else redact(format_stats(final))

    def stream_file(source: str | None, audio: str | None,
                    *values: Any) -> Iterator[tuple[str, str, dict[str, Any]]]:
        """Animate the speech file and play it while it is generated, one-second chunk by chunk."""
        controls = panel.to_controls(*values)
        source_path = service.check_file(source, "a portrait")
        audio_path = service.check_file(audio, "a speech file")
        for path, stats in service.stream_file_chunks(source_path, audio_path, controls):
            yield str(path), _stream_note(stats), stats

    on_chunk = public_errors(on_chunk, redact)  # error sentences without the server's folders
    stream_file = _public_stream(stream_file, redact)
    pipeline_queue: dict[str, Any] = {"concurrency_limit": service.settings.concurrency, "concurrency_id": "pipeline"}
    stream_button.click(on_gpu(stream_file, audio_duration(service.audio_seconds)),
                        inputs=[source_box, speech_box, *panel.components],
                        outputs=[stream_video, stream_note, stream_report],
                        api_visibility="private", **pipeline_queue)
    if not mic_available:
        return viewers
    mic.start_recording(show_frames, inputs=[transport_state], outputs=[live_image, live_stats],
                        api_visibility="private", concurrency_limit=None, show_progress="hidden")
    mic.stream(on_chunk, inputs=[mic, source_box, transport_state, *panel.components], outputs=None,
               stream_every=STREAM_EVERY, time_limit=int(max(60.0, service.settings.max_audio_seconds)),
               api_visibility="private", show_progress="hidden", **pipeline_queue)
    mic.stop_recording(on_stop, inputs=[transport_state], outputs=[live_stats], api_visibility="private",
                       concurrency_limit=None, show_progress="hidden")
    return viewers
