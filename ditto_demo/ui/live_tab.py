"""The Live tab: the portrait talks while you speak into the microphone, or while a speech file is generated.

Two modes, both on :meth:`DemoService.stream` and both in the ``"pipeline"`` concurrency group (shared with
Generate and Compare), so the server never runs more pipeline jobs than ``DITTO_CONCURRENCY``:

* **Microphone.** ``gr.Audio(streaming=True).stream`` ships a chunk every 0.25 s to the viewer's
  :class:`GradioStreamTransport` (kept in ``gr.State``), which feeds a :class:`LiveSession` running the pipeline in
  a background thread. Gradio keeps a streaming event running for the whole recording, so the slot in the
  pipeline group is held exactly while the viewer records. Frames go back through a separate, cheap event started
  with the recording (an async generator feeding a streaming JPEG ``gr.Image``), so the picture updates as fast as
  frames come instead of once per audio chunk. Stopping the recording, closing the tab (``unload``), or 10 s
  without audio end the session and its threads. The frames have no sound: you hear yourself.
* **Stream a file.** A speech file is animated and played as it is generated: ``gr.Video(streaming=True)`` gets
  1-second H.264 + AAC mp4 chunks (the frames with their slice of the speech, from
  :meth:`DemoService.stream_file_chunks`), which Gradio turns into HLS. The first chunk needs a second of frames,
  so playback starts a second or two after pressing Stream.
"""

from __future__ import annotations

import functools
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

__all__ = ["LIVE_CONTROLS", "STREAM_EVERY", "build_live_tab"]

log = logging.getLogger(__name__)

#: The controls offered live (the rest keep the checkpoint's streaming defaults).
LIVE_CONTROLS = ("seed", "emotion", "pitch_offset", "yaw_offset", "roll_offset", "framing")
#: Seconds of microphone audio per chunk sent by the browser: shorter is snappier, longer costs fewer requests.
STREAM_EVERY = 0.25
_ASSETS = Path(__file__).resolve().parents[2] / "assets"

_ZERO_GPU_NOTE = """
**The microphone mode needs a dedicated GPU.** On ZeroGPU a GPU is lent per request, and a live session would
need one for as long as you speak. Use **Stream a file** here, or run the app on your own GPU.
"""

_INTRO = """
**Microphone:** pick a portrait, press **Record** and speak: the portrait moves with your voice as you talk
(frames have no sound; you hear yourself). **Stream a file:** a speech file is animated and played while it is
being generated, in one-second pieces. Settings are read when a session starts.
"""


# ---------------------------------------------------------------------------------------------- microphone


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


def build_live_tab(service: DemoService) -> None:
    """Build the tab's content inside the caller's ``gr.Tab``."""
    defaults = service.control_defaults()
    viewers = _Viewers()
    redact = PathRedactor.for_service(service)
    mic_available = not zero_gpu_active()
    portrait = _ASSETS / "portrait_illustration.png"
    transport_state = gr.State(GradioStreamTransport(service, redact=redact, idle_timeout=10.0, max_buffer_seconds=1.0,
                                                     max_seconds=max(60.0, service.settings.max_audio_seconds)))
    gr.Markdown(_INTRO)
    with gr.Row():
        with gr.Column(scale=2, min_width=280):
            source_box = gr.Image(type="filepath", label="Portrait", sources=["upload", "clipboard"], height=300,
                                  value=str(portrait) if portrait.is_file() else None)
            panel = ControlPanel(defaults, open_groups=("emotion", "pose"), exclude=_live_exclude())
        with gr.Column(scale=3, min_width=360):
            with gr.Tab("Microphone"):
                if not mic_available:
                    gr.Markdown(_ZERO_GPU_NOTE)
                mic = gr.Audio(sources=["microphone"], streaming=True, type="numpy", label="Microphone",
                               elem_id="live-mic", interactive=mic_available)
                live_stats = gr.Markdown("Press **Record** and speak.", elem_id="live-stats")
                live_image = gr.Image(label="Live", streaming=True, sources=["webcam"], format="jpeg",
                                      interactive=False, elem_id="live-frame", height=480)
            with gr.Tab("Stream a file"):
                speech_box = gr.Audio(type="filepath", label="Speech", sources=["upload", "microphone"])
                stream_button = gr.Button("▶ Stream", variant="primary")
                stream_video = gr.Video(label="Playing as it is generated", streaming=True, autoplay=True, height=480,
                                        elem_id="live-file-video")
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

    def stream_file(source: str | None, audio: str | None, *values: Any) -> Iterator[tuple[str, dict[str, Any]]]:
        """Animate the speech file and play it while it is generated, one-second chunk by chunk."""
        controls = panel.to_controls(*values)
        source_path = service.check_file(source, "a portrait")
        audio_path = service.check_file(audio, "a speech file")
        for path, stats in service.stream_file_chunks(source_path, audio_path, controls):
            yield str(path), stats

    on_chunk = public_errors(on_chunk, redact)  # error sentences without the server's folders
    stream_file = _public_stream(stream_file, redact)
    pipeline_queue: dict[str, Any] = {"concurrency_limit": service.settings.concurrency, "concurrency_id": "pipeline"}
    stream_button.click(on_gpu(stream_file, audio_duration(service.audio_seconds)),
                        inputs=[source_box, speech_box, *panel.components], outputs=[stream_video, stream_report],
                        api_visibility="private", **pipeline_queue)
    if not mic_available:
        return
    mic.start_recording(show_frames, inputs=[transport_state], outputs=[live_image, live_stats],
                        api_visibility="private", concurrency_limit=None, show_progress="hidden")
    mic.stream(on_chunk, inputs=[mic, source_box, transport_state, *panel.components], outputs=None,
               stream_every=STREAM_EVERY, time_limit=int(max(60.0, service.settings.max_audio_seconds)),
               api_visibility="private", show_progress="hidden", **pipeline_queue)
    mic.stop_recording(on_stop, inputs=[transport_state], outputs=[live_stats], api_visibility="private",
                       concurrency_limit=None, show_progress="hidden")

    root = Context.root_block
    if root is not None:
        root.unload(viewers.close)
    else:
        log.warning("the Live tab is built outside gr.Blocks: closing the browser tab cannot stop live sessions "
                    "(they still end 10 s after the last audio)")
