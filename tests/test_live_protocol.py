"""The live protocol's messages: byte layouts as docs/live_protocol.md states them, and checks on client input."""

from __future__ import annotations

import json
import math
import struct

import numpy as np
import pytest

from ditto_demo.errors import InputError
from ditto_demo.live import protocol


def test_microphone_packet_layout_and_round_trip() -> None:
    samples = np.array([0.0, 0.5, -0.5, 1.0, -1.0, 2.0], np.float32)
    data = protocol.encode_mic(1234.5, samples)
    assert data[0] == 0x01
    assert struct.unpack_from("<d", data, 1)[0] == 1234.5
    assert np.frombuffer(data[9:], "<i2").tolist() == [0, 16384, -16384, 32767, -32767, 32767]  # rounded, clipped
    packet = protocol.decode_mic(data)
    assert packet.client_time_ms == 1234.5
    np.testing.assert_allclose(packet.samples, np.clip(samples, -1, 1), atol=1 / 32768)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x02" + bytes(8), "microphone audio"),
        (b"\x01" + bytes(3), "microphone audio"),
        (struct.pack("<Bd", 1, 0.0) + bytes(3), "whole 16-bit samples"),
        (struct.pack("<Bd", 1, 0.0) + bytes(2 * 1601), "at most 1600 samples"),
        (struct.pack("<Bd", 1, math.nan) + bytes(2), "finite capture time"),
    ],
)
def test_bad_microphone_packets_are_refused_in_words(data: bytes, message: str) -> None:
    with pytest.raises(InputError, match=message):
        protocol.decode_mic(data)


def test_video_layout() -> None:
    data = protocol.encode_video(1.24, 31, None, b"\xff\xd8jpeg")
    assert data[0] == 0x02
    assert struct.unpack_from("<dId", data, 1)[:2] == (1.24, 31)
    assert math.isnan(struct.unpack_from("<d", data, 13)[0])
    assert data[21:] == b"\xff\xd8jpeg"
    frame = protocol.decode_video(protocol.encode_video(2.0, 50, 987.25, b"x"))
    assert (frame.media_time, frame.index, frame.driven_by_ms, frame.jpeg) == (2.0, 50, 987.25, b"x")


def test_audio_out_layout() -> None:
    samples = np.linspace(-1, 1, 640, dtype=np.float32)
    data = protocol.encode_audio_out(3.5, samples)
    assert data[0] == 0x03
    assert struct.unpack_from("<d", data, 1)[0] == 3.5
    assert len(data) == 9 + 2 * 640
    out = protocol.decode_audio_out(data)
    assert out.media_time == 3.5
    np.testing.assert_allclose(out.samples, samples, atol=2 / 32768)


def test_server_json_has_no_nan() -> None:
    text = protocol.encode_json({"type": "pong", "client_time_ms": 1.0, "server_time_s": math.nan})
    assert json.loads(text) == {"type": "pong", "client_time_ms": 1.0, "server_time_s": None}


def test_client_text_messages_are_checked() -> None:
    assert protocol.decode_client_text('{"type": "hello", "mode": "text"}')["mode"] == "text"
    assert protocol.decode_client_text('{"type": "interrupt"}') == {"type": "interrupt"}
    for text, message in [
        ("not json", "must be JSON"),
        ('["hello"]', "type is one of"),
        ('{"type": "dance"}', "type is one of"),
        ('{"type": "hello", "mode": "video"}', "hello needs a mode"),
        ('{"type": "speak"}', "speak needs the text"),
        ('{"type": "controls", "controls": 5}', "controls needs an object"),
        ('{"type": "speak", "text": "' + "a" * 70_000 + '"}', "at most 64 KiB"),
    ]:
        with pytest.raises(InputError, match=message):
            protocol.decode_client_text(text)
