"""Live animation: a session fed by audio as it arrives, and a speech file streamed as playable mp4 pieces.

Both sit on :meth:`ditto_demo.pipeline.Pipeline.stream` (through anything with the same ``stream`` method, such as
the app's service) and know nothing about the transport that carries the media to a viewer.
"""

from ditto_demo.live.file_chunks import CHUNK_SECONDS, stream_file_chunks, write_chunk
from ditto_demo.live.session import SPEECH_THRESHOLD, FrameStream, LiveSession, LiveStats

__all__ = [
    "CHUNK_SECONDS",
    "SPEECH_THRESHOLD",
    "FrameStream",
    "LiveSession",
    "LiveStats",
    "stream_file_chunks",
    "write_chunk",
]
