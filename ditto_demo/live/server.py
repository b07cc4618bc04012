"""The live transport on the app's own port: tickets from a Gradio event, then one WebSocket per session.

See docs/live_protocol.md for the protocol. :class:`LiveHub` keeps the tickets and the sessions of one app:

* :meth:`LiveHub.open` registers a session for a Gradio session (the ``live_start`` event's handler calls it while
  it holds a slot in the pipeline's concurrency group) and returns its :class:`LiveEntry` with a single-use ticket;
* :meth:`LiveHub.serve` is the WebSocket endpoint (``/ditto/live/ws?ticket=…``): it claims the ticket, starts an
  :class:`~ditto_demo.live.avatar.Avatar`, moves microphone packets and commands in and frames, voice and
  figures out, and ends the session when the socket closes, on ``stop``, at the time limit or on an error;
* :meth:`LiveHub.wait` lets the Gradio handler hold its slot until then, so a busy server queues the next
  visitor instead of mixing streams.

:func:`live_routes` / :func:`mount_live_routes` put the endpoint on a FastAPI (Starlette) app.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from starlette.routing import BaseRoute, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from ditto_demo.errors import DittoError, InputError
from ditto_demo.live import protocol
from ditto_demo.live.avatar import Avatar, AvatarFrame, AvatarOptions, SpeakingVoice, StreamingPipeline
from ditto_demo.pipeline.controls import Controls
from ditto_demo.pipeline.live_controls import LiveControls

__all__ = ["LIVE_WS_PATH", "LiveEntry", "LiveHub", "encode_jpeg", "live_routes", "mount_live_routes"]

log = logging.getLogger(__name__)

#: Where the WebSocket is served, relative to the app's root.
LIVE_WS_PATH = "/ditto/live/ws"
#: JPEG quality of the frames sent.
JPEG_QUALITY = 80
#: Frames waiting to be sent beyond this are dropped, oldest first (a client too slow to receive them).
MAX_QUEUED_FRAMES = 4
_HELLO_TIMEOUT_S = 10.0


def encode_jpeg(image: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    """An RGB uint8 image as JPEG bytes."""
    import cv2

    ok, data = cv2.imencode(".jpg", cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR),
                            [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise DittoError("A frame could not be encoded as JPEG.")
    return data.tobytes()


@dataclass
class LiveEntry:
    """One live session, from its ticket to its end."""

    ticket: str
    session: str | None
    mode: str
    source: Path
    speech: Path | None
    controls: Controls
    text: str | None
    created: float
    claimed: bool = False
    reason: str | None = None
    ended: threading.Event = field(default_factory=threading.Event)
    #: Set by the WebSocket side: wakes it when someone else ends the session (tab closed, a new start).
    wake: Callable[[], None] | None = None


class LiveHub:
    """Tickets and live sessions of one app (thread-safe).

    ``pipeline`` returns the pipeline to animate with (the service's, which raises a sentence when there is none);
    ``voice`` loads the voice for text (``None``: no text mode); ``read_speech`` decodes a speech file.
    ``clock`` is monotonic seconds.
    """

    def __init__(
        self,
        pipeline: Callable[[], StreamingPipeline],
        *,
        voice: Callable[[], SpeakingVoice] | None = None,
        read_speech: Callable[[Path], np.ndarray] | None = None,
        options: AvatarOptions | None = None,
        ticket_ttl_s: float = 30.0,
        max_session_s: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.pipeline = pipeline
        self.voice = voice
        self.read_speech = read_speech
        self.options = options or AvatarOptions()
        self.ticket_ttl_s = ticket_ttl_s
        self.max_session_s = max_session_s
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[str, LiveEntry] = {}

    # ------------------------------------------------------------------------------------ the Gradio side

    def open(
        self,
        session: str | None,
        source: str | Path,
        *,
        mode: str,
        controls: Controls | None = None,
        speech: str | Path | None = None,
        text: str | None = None,
    ) -> LiveEntry:
        """A new live session for Gradio session ``session`` (ending that session's previous one, if any)."""
        if mode not in protocol.MODES:
            raise InputError(f"Unknown live mode {mode!r}; use one of {', '.join(protocol.MODES)}.")
        entry = LiveEntry(
            ticket=secrets.token_urlsafe(24), session=session, mode=mode, source=Path(source),
            speech=Path(speech) if speech else None, controls=controls or Controls(), text=text or None,
            created=self._clock(),
        )
        previous = []
        with self._lock:
            if session is not None:
                previous = [e for e in self._entries.values() if e.session == session]
            self._entries[entry.ticket] = entry
        for old in previous:
            self.end(old, "A new live session was started in this tab.")
        return entry

    def wait(self, entry: LiveEntry, timeout: float) -> bool:
        """Wait up to ``timeout`` s for the session to end; True when it has. Ends a ticket nobody claimed in time."""
        if entry.ended.wait(timeout):
            return True
        with self._lock:
            expired = not entry.claimed and self._clock() - entry.created > self.ticket_ttl_s
        if expired:
            self.end(entry, "The live session was not joined in time; press Start again.")
        return entry.ended.is_set()

    def end(self, entry: LiveEntry, reason: str) -> None:
        """End a session (idempotent): its ticket dies, its WebSocket side is woken to close."""
        with self._lock:
            self._entries.pop(entry.ticket, None)
            if entry.reason is None:
                entry.reason = reason
            wake = entry.wake
        if wake is not None:
            wake()
        if not entry.claimed or wake is None:
            entry.ended.set()

    def stop_session(self, session: str | None) -> bool:
        """End the live session of a Gradio session (the tab was closed); True if there was one."""
        with self._lock:
            entries = [e for e in self._entries.values() if e.session == session] if session else []
        for entry in entries:
            self.end(entry, "The page was closed.")
        return bool(entries)

    def active(self) -> int:
        """Sessions with a ticket handed out or a socket open."""
        with self._lock:
            return len(self._entries)

    def claim(self, ticket: str | None) -> LiveEntry | None:
        """The entry of a valid, unused, unexpired ticket, now marked used; None otherwise."""
        with self._lock:
            entry = self._entries.get(ticket or "")
            if entry is None or entry.claimed or self._clock() - entry.created > self.ticket_ttl_s:
                return None
            entry.claimed = True
            return entry

    # --------------------------------------------------------------------------------- the WebSocket side

    async def serve(self, websocket: WebSocket) -> None:
        """The WebSocket endpoint of one live session."""
        await websocket.accept()
        entry = self.claim(websocket.query_params.get("ticket"))
        if entry is None:
            await _refuse(websocket, protocol.CLOSE_BAD_TICKET,
                          "This live link is not valid any more (used, expired or unknown); press Start again.")
            return
        try:
            hello = await _read_hello(websocket)
            if hello is None:
                return
            await _Connection(self, entry, websocket, str(hello["mode"])).run()
        except WebSocketDisconnect:
            log.debug("live socket closed before the session started")
        finally:
            self.end(entry, entry.reason or "The live session ended.")
            entry.ended.set()


async def _refuse(websocket: WebSocket, code: int, message: str) -> None:
    with contextlib.suppress(WebSocketDisconnect, RuntimeError):
        await websocket.send_text(protocol.encode_json({"type": "error", "message": message, "fatal": True}))
        await websocket.close(code)


async def _read_hello(websocket: WebSocket) -> dict[str, Any] | None:
    try:
        text = await asyncio.wait_for(websocket.receive_text(), _HELLO_TIMEOUT_S)
        message = protocol.decode_client_text(text)
        if message["type"] != "hello":
            raise InputError("The first message must be hello.")
    except (InputError, KeyError, TimeoutError) as exc:
        reason = str(exc) if isinstance(exc, InputError) else "The first message must be hello (as JSON text)."
        await _refuse(websocket, protocol.CLOSE_BAD_REQUEST, reason)
        return None
    return message


class _Connection:
    """One claimed session on one socket: the avatar's sink, the receive loop, the sender and the figures."""

    def __init__(self, hub: LiveHub, entry: LiveEntry, websocket: WebSocket, mode: str) -> None:
        self.hub = hub
        self.entry = entry
        self.websocket = websocket
        self.mode = mode
        self.loop = asyncio.get_running_loop()
        self.outbox: collections.deque[str | bytes] = collections.deque()
        self.queued_frames = 0
        self.dropped_frames = 0
        self.sent_frames = 0
        self.sent_at: collections.deque[float] = collections.deque()
        self.last_sent_media: float | None = None
        self.ready = asyncio.Event()
        self.finished = asyncio.Event()
        self.avatar_error: DittoError | None = None
        self.avatar: Avatar | None = None

    # -- the avatar's sink (called from its threads) ------------------------------------------------------

    def on_frame(self, frame: AvatarFrame) -> None:
        data = protocol.encode_video(frame.media_time, frame.index, frame.driven_by_ms, encode_jpeg(frame.image))
        self.loop.call_soon_threadsafe(self._queue, data, frame.media_time)

    def on_audio(self, media_time: float, samples: np.ndarray) -> None:
        self.loop.call_soon_threadsafe(self._queue, protocol.encode_audio_out(media_time, samples), None)

    def on_event(self, message: dict[str, Any]) -> None:
        if message.get("type") == "state" and message.get("state") == "live":
            message = {**message, "mode": self.mode}
        self.loop.call_soon_threadsafe(self._queue, protocol.encode_json(message), None)

    def on_end(self, error: DittoError | None) -> None:
        self.avatar_error = error
        with contextlib.suppress(RuntimeError):  # the loop is gone only when the server is shutting down
            self.loop.call_soon_threadsafe(self.finished.set)

    # -- the event loop's side --------------------------------------------------------------------------

    def _queue(self, data: str | bytes, media_time: float | None) -> None:
        if isinstance(data, bytes) and data[0] == protocol.VIDEO:
            if self.queued_frames >= MAX_QUEUED_FRAMES:  # the client cannot keep up: drop its oldest frame
                for position, item in enumerate(self.outbox):
                    if isinstance(item, bytes) and item[0] == protocol.VIDEO:
                        del self.outbox[position]
                        self.queued_frames -= 1
                        self.dropped_frames += 1
                        break
            self.queued_frames += 1
        self.outbox.append(data)
        self.ready.set()

    async def _send(self) -> None:
        while True:
            await self.ready.wait()
            self.ready.clear()
            while self.outbox:
                item = self.outbox.popleft()
                if isinstance(item, bytes):
                    if item[0] == protocol.VIDEO:
                        self.queued_frames -= 1
                        self.sent_frames += 1
                        self.sent_at.append(time.monotonic())
                        self.last_sent_media = protocol.decode_video(item[:21]).media_time
                    await self.websocket.send_bytes(item)
                else:
                    await self.websocket.send_text(item)

    async def _stats(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            avatar = self.avatar
            if avatar is None or avatar.session_time() is None:
                continue
            figures = avatar.stats()
            now = time.monotonic()
            while self.sent_at and self.sent_at[0] < now - 1.0:
                self.sent_at.popleft()
            session_time = avatar.session_time()
            behind = None
            if session_time is not None and self.last_sent_media is not None:
                behind = session_time - self.last_sent_media
            self._queue(protocol.encode_json({
                "type": "stats", "server_fps": float(len(self.sent_at)), "behind_s": behind,
                "dropped_audio_ms": figures["dropped_audio_ms"],
                "dropped_frames": figures["dropped_frames"] + self.dropped_frames,
                "frames": self.sent_frames, "media_time": figures["media_time"],
            }), None)

    def _error(self, message: str) -> None:
        self._queue(protocol.encode_json({"type": "error", "message": message, "fatal": False}), None)

    async def _receive(self) -> str:
        """Handle the client's messages until it stops or leaves; returns why."""
        avatar = self.avatar
        assert avatar is not None
        while True:
            message = await self.websocket.receive()
            if message["type"] == "websocket.disconnect":
                return "disconnect"
            try:
                if message.get("bytes") is not None:
                    packet = protocol.decode_mic(message["bytes"])
                    avatar.push_mic(packet.samples, packet.client_time_ms)
                    continue
                command = protocol.decode_client_text(message.get("text") or "")
                kind = command["type"]
                if kind == "stop":
                    return "stop"
                if kind == "ping":
                    self._queue(protocol.encode_json({"type": "pong", "client_time_ms": command.get("client_time_ms"),
                                                      "server_time_s": avatar.session_time()}), None)
                elif kind == "speak":
                    if self.hub.voice is None:
                        raise InputError("Speech from text is not available on this server.")
                    avatar.speak(command["text"])
                elif kind == "play_file":
                    if self.entry.speech is None:
                        raise InputError("Choose a speech file on the Live tab first, then start again.")
                    avatar.play_file(self.entry.speech)
                elif kind == "controls":
                    avatar.controls.update(**command["controls"])
                elif kind == "interrupt":
                    avatar.interrupt()
                else:
                    raise InputError("hello was already said.")
            except InputError as exc:
                self._error(str(exc))

    async def run(self) -> None:
        entry = self.entry
        entry.wake = lambda: self.loop.call_soon_threadsafe(self.finished.set)
        if entry.reason is not None:  # ended while the hello was awaited
            self.finished.set()
        self._queue(protocol.encode_json({"type": "state", "state": "starting",
                                          "message": "Getting the portrait ready."}), None)
        self.avatar = Avatar(self.hub.pipeline(), entry.source, LiveControls(entry.controls), self,
                             voice=self.hub.voice, read_speech=self.hub.read_speech, options=self.hub.options,
                             name=f"live-{entry.ticket[:6]}").start()
        if entry.text:
            self.avatar.speak(entry.text)
        tasks = [asyncio.ensure_future(self._receive()), asyncio.ensure_future(self._send()),
                 asyncio.ensure_future(self._stats()), asyncio.ensure_future(self.finished.wait())]
        receiver, sender = tasks[0], tasks[1]
        try:
            done, _ = await asyncio.wait(tasks, timeout=self.hub.max_session_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.to_thread(self.avatar.stop)
        code, reason = 1000, entry.reason or "The live session ended."
        disconnected = receiver in done and not receiver.cancelled() and receiver.exception() is None \
            and receiver.result() == "disconnect"
        if not done:
            code, reason = protocol.CLOSE_TIME_LIMIT, "The live session reached its time limit; press Start again."
        elif sender in done and sender.exception() is not None:
            disconnected = True  # the socket broke while sending
        elif self.avatar_error is not None:
            code, reason = protocol.CLOSE_SERVER_ERROR, str(self.avatar_error)
        elif receiver in done and receiver.exception() is not None:
            disconnected = True
        entry.reason = entry.reason or reason
        if disconnected or self.websocket.client_state != WebSocketState.CONNECTED:
            return
        with contextlib.suppress(WebSocketDisconnect, RuntimeError):
            if self.avatar_error is not None:
                await self.websocket.send_text(protocol.encode_json(
                    {"type": "error", "message": str(self.avatar_error), "fatal": True}))
            await self.websocket.send_text(protocol.encode_json({"type": "state", "state": "ended",
                                                                 "message": entry.reason}))
            await self.websocket.close(code)


def live_routes(hub: LiveHub | Callable[[], LiveHub]) -> list[BaseRoute]:
    """The live transport's routes, for ``FastAPI(routes=...)`` (e.g. through ``launch(app_kwargs=...)``).

    ``hub`` may be a function returning it, so an app can create its hub on first use.
    """
    async def endpoint(websocket: WebSocket) -> None:
        await (hub if isinstance(hub, LiveHub) else hub()).serve(websocket)

    return [WebSocketRoute(LIVE_WS_PATH, endpoint, name="ditto_live_ws")]


def mount_live_routes(app: Any, hub: LiveHub | Callable[[], LiveHub]) -> None:
    """Add the live transport's routes to an existing FastAPI / Starlette ``app`` (e.g. a ``gr.mount_gradio_app``
    parent, or a launched Gradio app's ``demo.app``)."""
    app.router.routes.extend(live_routes(hub))
