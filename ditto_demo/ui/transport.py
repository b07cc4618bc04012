"""How one viewer's live media reaches the server: the page's player, and the Gradio-only fallback.

There are two ways, both on the app's own port:

* **The live player** (the main path, docs/live_protocol.md). ``static/live.js`` runs in the page: it asks the
  ``live_start`` event for a ticket, opens one WebSocket per session, sends the microphone in 20 ms packets and plays
  the avatar's frames and voice on one clock. :func:`live_head` is what ``launch(head=...)`` puts in the page for it
  (the script and its style sheet, inline, so nothing has to be served from a folder); the server side is
  :mod:`ditto_demo.live.server`, reached through the service.
* **The Gradio-only fallback** (:class:`GradioStreamTransport`): microphone chunks from
  ``gr.Audio(streaming=True).stream`` and frames to a streaming ``gr.Image``, over Gradio's own HTTP events. It
  needs no WebSocket, so it still works behind a proxy that blocks them (the player offers it when its socket
  cannot open), at the price of 250 ms chunks, silent frames and a second or two of delay.

:class:`LiveTransport` is the seam between a wire format and a :class:`LiveSession` that the fallback implements.
"""

from __future__ import annotations

import asyncio
import copy
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Generic, TypeVar

import gradio as gr

from ditto_demo.errors import DittoError
from ditto_demo.pipeline.controls import Controls
from ditto_demo.ui.service import DemoService, LiveSession, LiveStats

__all__ = ["PLAYER_CSS", "PLAYER_JS", "SLOW_BEHIND_FRAMES", "GradioStreamTransport", "LiveTransport", "format_stats",
           "live_head"]

_STATIC = Path(__file__).resolve().parent / "static"
#: The live player's script and style sheet.
PLAYER_JS = _STATIC / "live.js"
PLAYER_CSS = _STATIC / "live.css"


def live_head() -> str:
    """The ``<head>`` HTML of the live player: its style sheet and script, inline.

    Loaded in the head (not in the Live tab's HTML), so ``window.dittoLive`` exists as soon as the page does, even
    before the Live tab has been opened: Gradio only builds a tab's widgets when it is first shown.
    """
    script = PLAYER_JS.read_text(encoding="utf-8")
    if "</script" in script.lower():
        raise ValueError(f"{PLAYER_JS.name} must not contain a closing script tag")
    return f"<style>\n{PLAYER_CSS.read_text(encoding='utf-8')}</style>\n<script>\n{script}</script>\n"


# ------------------------------------------------------------------------------------------------ transports

AudioIn = TypeVar("AudioIn")
FramesOut = TypeVar("FramesOut")


class LiveTransport(ABC, Generic[AudioIn, FramesOut]):
    """Moves one viewer's media between a wire format and a :class:`LiveSession`.

    The session lifecycle (:meth:`open`, :meth:`close`, :attr:`session`) is shared; a transport only says how its
    audio arrives (:meth:`receive`) and how frames leave (:meth:`frames`). A WebRTC transport would implement
    ``receive`` for RTP audio frames and ``frames`` as its video track; the Live tab only needs the Gradio one.
    """

    def __init__(self, service: DemoService, **session_options: Any) -> None:
        self.service = service
        self.session_options = session_options
        self._session: LiveSession | None = None
        self._session_lock = threading.Lock()
        self._opened = 0

    @property
    def session(self) -> LiveSession | None:
        return self._session

    def open(self, source: str | Path, controls: Controls | None = None) -> LiveSession:
        """Start a new session (closing the previous one)."""
        with self._session_lock:
            previous, self._session = self._session, None
        if previous is not None:
            previous.close()
        self._opened += 1
        session = self.service.open_live_session(source, controls, name=f"live-session-{id(self):x}-{self._opened}",
                                                 **self.session_options)
        with self._session_lock:
            self._session = session
        return session

    def close(self) -> None:
        """Stop the current session, if any, and wait for its thread."""
        with self._session_lock:
            session, self._session = self._session, None
        if session is not None:
            session.close()

    @abstractmethod
    def receive(self, item: AudioIn) -> None:
        """Hand one piece of incoming audio, in the transport's format, to the session."""

    @abstractmethod
    def frames(self) -> FramesOut:
        """The outgoing frames, in the transport's format."""


def _unchanged(text: str) -> str:
    return text


#: Frames behind real time past which the fallback's figures say the server is slower than real time (one second of
#: video; the model's own look-ahead is about seven frames).
SLOW_BEHIND_FRAMES = 25


def format_stats(stats: LiveStats | None, waiting: str = "") -> str:
    """One line of Markdown for the viewer of the fallback: every figure in words with its unit."""
    if stats is None:
        return waiting or "Press **Record** and speak."
    if stats.error:
        return f"**Stopped:** {stats.error}"

    def seconds(value: float | None) -> str:
        return "…" if value is None else f"{value:.2f} s"

    parts = [
        f"**{stats.fps:.0f} fps**",
        f"lip motion starts **{seconds(stats.onset_latency)}** after you speak",
        f"first picture {seconds(stats.first_frame_latency)} after the first audio arrived",
        f"{stats.frames} frames shown",
        f"picture {stats.frames_behind} frames behind real time",
    ]
    if stats.dropped_seconds:
        parts.append(f"{stats.dropped_seconds:.1f} s of audio skipped to keep up")
    if not stats.running:
        parts.append("stopped")
    line = " · ".join(parts)
    if stats.running and (stats.dropped_seconds or stats.frames_behind > SLOW_BEHIND_FRAMES):
        line += ". **The server is slower than real time:** old audio is skipped so that the picture stays current."
    return line


class GradioStreamTransport(LiveTransport[tuple[int, Any], AsyncIterator[tuple[Any, str]]]):
    """The Live tab's transport: ``gr.Audio(streaming=True)`` chunks in, ``(image, stats)`` updates out.

    The microphone's ``.stream`` event calls :meth:`receive` with each chunk (``(sample_rate, int16 samples)``);
    the recording's start event iterates :meth:`frames`, an async generator that yields the newest frame whenever
    there is one (skipping frames when the browser is slower than the model) and the statistics twice a second.
    Held in a ``gr.State``: Gradio deep-copies the initial value for each browser session, and a copy is a fresh,
    empty transport on the same service.
    """

    def __init__(self, service: DemoService, *, poll_seconds: float = 0.02, max_seconds: float = 3600.0,
                 start_timeout: float = 300.0, redact: Callable[[str], str] | None = None,
                 **session_options: Any) -> None:
        super().__init__(service, **session_options)
        self.redact = redact or _unchanged
        self.poll_seconds = poll_seconds
        self.max_seconds = max_seconds
        self.start_timeout = start_timeout
        self._epoch = 0
        self._stopped = False

    def __deepcopy__(self, memo: dict[int, Any]) -> GradioStreamTransport:
        """A fresh transport for a new browser session (the service is shared, never copied)."""
        fresh = type(self)(self.service, poll_seconds=self.poll_seconds, max_seconds=self.max_seconds,
                           start_timeout=self.start_timeout, redact=self.redact,
                           **copy.deepcopy(self.session_options, memo))
        memo[id(self)] = fresh
        return fresh

    def ensure_session(self, source: str | Path | None, controls: Controls) -> LiveSession:
        """The running session, or a new one for ``source`` when there is none (or the last one ended).

        A session that failed is dropped and its error raised, so the next recording starts afresh.
        """
        session = self._session
        if session is not None and session.error is not None:
            self.close()
            raise session.error
        if session is None or session.finished:
            path = self.service.check_file(source, "a portrait")
            self.service.require()
            session = self.open(path, controls)
        return session

    def receive(self, item: tuple[int, Any] | None) -> None:
        session = self._session
        if item is None or session is None:
            return
        sample_rate, samples = item
        try:
            session.push_audio(int(sample_rate), samples)
        except DittoError:
            self.close()
            raise

    @property
    def stopped(self) -> bool:
        """The viewer stopped recording: audio still in flight is ignored until the next recording begins."""
        return self._stopped

    def begin(self) -> int:
        """A recording starts: frames() calls from before stop showing frames."""
        self._epoch += 1
        self._stopped = False
        return self._epoch

    def stop(self) -> LiveStats | None:
        """The recording stopped: end the session and the frame updates; returns the session's last figures."""
        self._stopped = True
        session = self._session
        self.close()
        return None if session is None else session.stats()

    async def frames(self) -> AsyncIterator[tuple[Any, str]]:
        """Frame and statistics updates until the recording stops (async: waiting holds no worker thread).

        Ends when :meth:`stop` is called, when a newer recording takes over, when the session fails, when no
        session has been running for twice the idle timeout (``start_timeout`` before the first one: the audio may
        be waiting in the queue for another viewer's job), or after ``max_seconds``.
        """
        epoch = self.begin()
        started = time.perf_counter()
        idle_limit = 2 * float(self.session_options.get("idle_timeout", 10.0))
        current: LiveSession | None = None
        shown = -1
        text = format_stats(None, "Waiting for the first audio… (when another generation is running, the live "
                                  "session starts as soon as it finishes)")
        text_at = 0.0
        idle_since = started
        seen_session = False
        yield gr.skip(), text
        while epoch == self._epoch and not self._stopped and time.perf_counter() - started < self.max_seconds:
            now = time.perf_counter()
            session = self._session
            if session is not current:
                current, shown = session, -1
            image: Any = gr.skip()
            changed = False
            if session is not None:
                frame = session.latest_frame()
                if frame is not None and frame.index > shown:
                    shown, image, changed = frame.index, frame.image, True
                if changed or now - text_at >= 0.5:
                    text_at = now
                    fresh = self.redact(format_stats(session.stats()))
                    changed = changed or fresh != text
                    text = fresh
                if session.error is not None:
                    yield image, text
                    return
            if session is not None and not session.finished:
                idle_since, seen_session = now, True
            elif now - idle_since > (idle_limit if seen_session else self.start_timeout):
                return
            if changed:
                yield image, text
            await asyncio.sleep(self.poll_seconds if session is not None else 0.1)
