"""The live transport's wire format (docs/live_protocol.md): binary media messages and JSON control messages.

One WebSocket per live session carries both directions. Media travels as binary messages with a one-byte kind and
a little-endian header; everything else is a JSON text message with a ``type``. This module only encodes and
decodes (the server, the tests and the benchmark share it); it knows nothing about sessions or sockets.

Binary layouts (all little-endian):

* microphone audio, client → server: ``0x01`` · float64 client capture time (ms, ``performance.now()`` of the
  packet's first sample) · int16 mono PCM at 16 kHz (at most :data:`MAX_MIC_PACKET_SAMPLES` samples);
* video, server → client: ``0x02`` · float64 media time (s) · uint32 frame index · float64 "driven by" client
  capture time (ms; NaN when the frame shows no microphone audio) · JPEG bytes;
* avatar audio, server → client: ``0x03`` · float64 media time (s) of the first sample · int16 mono PCM, 16 kHz.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from ditto_demo.errors import InputError

__all__ = [
    "AUDIO_IN",
    "AUDIO_OUT",
    "CLIENT_TYPES",
    "CLOSE_BAD_REQUEST",
    "CLOSE_BAD_TICKET",
    "CLOSE_SERVER_ERROR",
    "CLOSE_TIME_LIMIT",
    "MAX_MIC_PACKET_SAMPLES",
    "MODES",
    "VIDEO",
    "AudioOut",
    "MicPacket",
    "VideoFrame",
    "decode_audio_out",
    "decode_client_text",
    "decode_mic",
    "decode_video",
    "encode_audio_out",
    "encode_json",
    "encode_mic",
    "encode_video",
    "pcm16",
]

AUDIO_IN = 0x01
VIDEO = 0x02
AUDIO_OUT = 0x03

#: The session modes a page may say hello with.
MODES: tuple[str, ...] = ("microphone", "file", "text")
#: The JSON message types a client may send.
CLIENT_TYPES: tuple[str, ...] = ("hello", "speak", "play_file", "controls", "interrupt", "stop", "ping")
#: A microphone packet holds 20–40 ms; up to 100 ms is accepted (a browser that batches), more is refused.
MAX_MIC_PACKET_SAMPLES = 1600
#: Longest JSON text message accepted (a ``speak`` with a long paragraph fits comfortably).
MAX_TEXT_MESSAGE = 64 * 1024

#: WebSocket close codes the server uses besides 1000 (normal) and 1001 (going away).
CLOSE_BAD_REQUEST = 4400  # the first message was not a valid hello, or a message could not be read
CLOSE_BAD_TICKET = 4401  # unknown, used or expired ticket
CLOSE_TIME_LIMIT = 4408  # the session reached its time limit
CLOSE_SERVER_ERROR = 4500  # the avatar stopped because of a server error (the error message says so first)

_MIC_HEADER = struct.Struct("<Bd")
_VIDEO_HEADER = struct.Struct("<BdId")
_AUDIO_HEADER = struct.Struct("<Bd")


@dataclass(frozen=True)
class MicPacket:
    """Microphone audio from the page: float32 samples in [-1, 1] at 16 kHz, captured at ``client_time_ms``."""

    client_time_ms: float
    samples: np.ndarray


@dataclass(frozen=True)
class VideoFrame:
    """One frame as sent: media time (s), index, the microphone capture time it shows (ms, or NaN), JPEG bytes."""

    media_time: float
    index: int
    driven_by_ms: float
    jpeg: bytes


@dataclass(frozen=True)
class AudioOut:
    """The avatar's voice as sent: media time (s) of the first sample and float32 samples at 16 kHz."""

    media_time: float
    samples: np.ndarray


def pcm16(samples: np.ndarray) -> bytes:
    """float samples in [-1, 1] → int16 little-endian bytes (clipped, rounded)."""
    scaled = np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0) * 32767.0
    return np.rint(scaled).astype("<i2").tobytes()


def _from_pcm16(data: bytes | memoryview) -> np.ndarray:
    if len(data) % 2:
        raise InputError("Audio must be whole 16-bit samples.")
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0


def encode_mic(client_time_ms: float, samples: np.ndarray) -> bytes:
    """A microphone packet as a page sends it."""
    return _MIC_HEADER.pack(AUDIO_IN, float(client_time_ms)) + pcm16(samples)


def decode_mic(data: bytes) -> MicPacket:
    """A microphone packet from the page; :class:`InputError` for anything else or an oversized packet."""
    if len(data) < _MIC_HEADER.size or data[0] != AUDIO_IN:
        raise InputError("A binary message must be microphone audio (kind 0x01).")
    _, client_time = _MIC_HEADER.unpack_from(data)
    samples = _from_pcm16(memoryview(data)[_MIC_HEADER.size:])
    if samples.size > MAX_MIC_PACKET_SAMPLES:
        raise InputError(f"A microphone packet holds at most {MAX_MIC_PACKET_SAMPLES} samples (100 ms).")
    if not math.isfinite(client_time):
        raise InputError("A microphone packet needs a finite capture time.")
    return MicPacket(client_time, samples)


def encode_video(media_time: float, index: int, driven_by_ms: float | None, jpeg: bytes) -> bytes:
    driven = math.nan if driven_by_ms is None else float(driven_by_ms)
    return _VIDEO_HEADER.pack(VIDEO, float(media_time), int(index), driven) + bytes(jpeg)


def decode_video(data: bytes) -> VideoFrame:
    if len(data) < _VIDEO_HEADER.size or data[0] != VIDEO:
        raise ValueError("not a video message")
    _, media_time, index, driven = _VIDEO_HEADER.unpack_from(data)
    return VideoFrame(media_time, index, driven, bytes(data[_VIDEO_HEADER.size:]))


def encode_audio_out(media_time: float, samples: np.ndarray) -> bytes:
    return _AUDIO_HEADER.pack(AUDIO_OUT, float(media_time)) + pcm16(samples)


def decode_audio_out(data: bytes) -> AudioOut:
    if len(data) < _AUDIO_HEADER.size or data[0] != AUDIO_OUT:
        raise ValueError("not an audio message")
    _, media_time = _AUDIO_HEADER.unpack_from(data)
    return AudioOut(media_time, _from_pcm16(memoryview(data)[_AUDIO_HEADER.size:]))


def encode_json(message: dict[str, Any]) -> str:
    """A server message as text (NaN and infinities become null: JSON has neither)."""
    clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in message.items()}
    return json.dumps(clean, separators=(",", ":"))


def decode_client_text(text: str) -> dict[str, Any]:
    """A client's JSON message, checked for a known ``type``; :class:`InputError` (a sentence) otherwise."""
    if len(text) > MAX_TEXT_MESSAGE:
        raise InputError(f"A message may hold at most {MAX_TEXT_MESSAGE // 1024} KiB of text.")
    try:
        message = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"A text message must be JSON ({exc.msg}).") from None
    if not isinstance(message, dict) or message.get("type") not in CLIENT_TYPES:
        raise InputError(f"A text message must be a JSON object whose type is one of {', '.join(CLIENT_TYPES)}.")
    if message["type"] == "hello" and message.get("mode") not in MODES:
        raise InputError(f"hello needs a mode: one of {', '.join(MODES)}.")
    if message["type"] == "speak" and not isinstance(message.get("text"), str):
        raise InputError("speak needs the text to speak.")
    if message["type"] == "controls" and not isinstance(message.get("controls"), dict):
        raise InputError("controls needs an object of control names and values.")
    return message
