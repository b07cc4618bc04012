"""A speech file animated through the streaming pipeline and handed out as short playable mp4 pieces.

This is what lets a player start showing the video a second or two after the request, while the rest is still
being generated: every piece holds about a second of frames with exactly their slice of the speech, encoded with
the streaming profile (each piece is written while the viewer waits for it, so encode time is latency). The app's
Live tab feeds the pieces to a streaming ``gr.Video`` (HLS); nothing here knows about Gradio.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ditto_demo.errors import InputError
from ditto_demo.live.session import FrameStream
from ditto_demo.pipeline.audio import audio_frame_count, load_audio
from ditto_demo.pipeline.controls import Controls
from ditto_demo.pipeline.pcm import write_wav
from ditto_demo.pipeline.timebase import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME
from ditto_demo.pipeline.writer import EncoderSettings, VideoWriter

__all__ = ["CHUNK_SECONDS", "stream_file_chunks", "write_chunk"]

#: Seconds per streamed video chunk. Gradio's guide asks for about a second or more for smooth HLS playback.
CHUNK_SECONDS = 1.0
#: Speech is fed to the pipeline in pieces of this many samples (0.2 s), as if it were arriving.
_FEED_SAMPLES = 3200


def write_chunk(folder: Path, number: int, frames: Sequence[np.ndarray], samples: np.ndarray) -> Path:
    """One playable piece, ``chunk-<number>.mp4`` in ``folder``: the frames as H.264 with their speech as AAC.

    Encoded with the streaming profile (x264 ultrafast, zerolatency): a chunk played once does not need the offline
    files' compression, and its encode time is latency. The temporary wav is removed again.
    """
    wav = write_wav(folder / f"chunk-{number:04d}.wav", samples, SAMPLE_RATE)
    target = folder / f"chunk-{number:04d}.mp4"
    try:
        with VideoWriter(target, fps=FPS, audio_path=wav, encoder=EncoderSettings.streaming()) as writer:
            for frame in frames:
                writer.write(frame)
    finally:
        wav.unlink(missing_ok=True)
    return target


def stream_file_chunks(
    frames_from: FrameStream,
    source: str | Path,
    audio: str | Path,
    controls: Controls,
    folder: Path,
    *,
    max_audio_seconds: float | None = None,
    chunk_seconds: float = CHUNK_SECONDS,
    cancel: threading.Event | None = None,
) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Animate a speech file through ``frames_from.stream``, yielding ``(mp4 chunk, statistics)`` as they are made.

    Chunks hold ``chunk_seconds`` of frames (the last one what is left) with the matching slice of the speech, so
    their durations add up to the speech's. Speech longer than ``max_audio_seconds`` is refused before anything
    runs. Closing the iterator stops the pipeline; setting ``cancel`` stops it from elsewhere.
    """
    started = time.perf_counter()
    samples = load_audio(Path(audio), max_seconds=max_audio_seconds)
    total = audio_frame_count(len(samples))
    if total == 0:
        raise InputError("The speech file is empty.")
    per_chunk = max(1, round(chunk_seconds * FPS))
    feed = (samples[i:i + _FEED_SAMPLES] for i in range(0, len(samples), _FEED_SAMPLES))
    stream = frames_from.stream(source, feed, controls, cancel=cancel)
    frames: list[np.ndarray] = []
    done = 0
    first_chunk: float | None = None
    try:
        for frame in stream:
            if frame.index >= total:  # the streaming path pads its last window: frames past the speech
                break
            frames.append(frame.image)
            if len(frames) < per_chunk and frame.index < total - 1:
                continue
            piece = samples[done * SAMPLES_PER_FRAME:(done + len(frames)) * SAMPLES_PER_FRAME]
            piece = np.pad(piece, (0, len(frames) * SAMPLES_PER_FRAME - len(piece)))
            path = write_chunk(folder, done // per_chunk, frames, piece)
            done += len(frames)
            frames = []
            elapsed = time.perf_counter() - started
            first_chunk = first_chunk if first_chunk is not None else elapsed
            yield path, {
                "frames": done,
                "of_frames": total,
                "seconds_streamed": round(done / FPS, 3),
                "audio_seconds": round(len(samples) / SAMPLE_RATE, 3),
                "first_chunk_seconds": round(first_chunk, 3),
                "elapsed_seconds": round(elapsed, 3),
                "render_fps": round(done / max(elapsed, 1e-9), 2),
                "finished": done >= total,
            }
            if done >= total:
                break
    finally:
        stream.close()
