"""Speech in, HuBERT features out: decoding any audio file, and the offline and streaming feature windows.

Ditto's audio encoder is a HuBERT model exported to run on fixed windows of 6480 samples (16 kHz). Each window
spans 10 video frames of 40 ms — 3 frames of past context, 5 "current" frames and 2 frames of look-ahead — plus
80 samples of front-end slack, and yields 20 HuBERT frames at 50 Hz. Frames [-14:-4] are the ones aligned with the
5 current video frames; averaging consecutive pairs brings them to 25 fps. Features therefore come in blocks of 5
video frames, one block per 3200-sample hop (ditto_spec.md §2.7).

The reference extracts them in two slightly different ways, and we reproduce both exactly:

* offline (whole file known): 2000 zeros in front, block j reads original samples [3200j − 2000, 3200j + 4480);
* online (streaming): 1920 zeros in front, block j reads [3200j − 1920, 3200j + 4560) — 80 samples (5 ms) later.

The model is a black box that sees each window independently (its "fix_kv" context is baked in), so there is no
state to carry from one window to the next; streaming only has to keep the last window's worth of samples.

Deliberate deviation: the reference computes the frame count as ``ceil(len / 16000 * 25)`` and block starts as
``int(i * 0.04 * 16000)`` in floating point. For some lengths that are exact multiples of 640 samples the first
gives one frame too many (e.g. 4480 samples → 8 frames instead of 7), and from block 323 on (≈ 64.6 s) the second
sometimes starts a window one sample early. We use the exact integer arithmetic both formulas intend.

Audio decoding deviates from the reference too: it uses ``librosa.load`` (soxr resampling, channel mean); we decode
with an ffmpeg subprocess (ffmpeg's resampler and mono downmix), which reads every format ffmpeg knows without
extra Python packages. The difference is a resampling-filter detail well below what the model can hear.
"""

from __future__ import annotations

import logging
import math
import os
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from ditto_demo.errors import InputError
from ditto_demo.pipeline.ffmpeg import ffmpeg_executable
from ditto_demo.pipeline.timebase import HUBERT_DIM, SAMPLE_RATE, SAMPLES_PER_FRAME

__all__ = [
    "BLOCK_FRAMES",
    "HOP_SAMPLES",
    "HUBERT_DIM",
    "OFFLINE_LEAD_SAMPLES",
    "ONLINE_LEAD_SAMPLES",
    "SAMPLES_PER_FRAME",
    "SAMPLE_RATE",
    "WINDOW_SAMPLES",
    "HubertFn",
    "HubertStream",
    "audio_frame_count",
    "hubert_block",
    "hubert_features",
    "load_audio",
    "online_feature_count",
    "silence_block",
    "tile_silence",
]

log = logging.getLogger(__name__)

#: Chunk layout (past, current, future) in video frames, as released.
CHUNK_PAST, CHUNK_CURRENT, CHUNK_FUTURE = 3, 5, 2
#: Video frames produced per window.
BLOCK_FRAMES = CHUNK_CURRENT
#: Samples per HuBERT window: 10 frames of 640 plus 80 samples so the 25 ms / 20 ms front end yields 20 frames.
WINDOW_SAMPLES = (CHUNK_PAST + CHUNK_CURRENT + CHUNK_FUTURE) * SAMPLES_PER_FRAME + 80
#: Distance between consecutive windows (5 video frames).
HOP_SAMPLES = CHUNK_CURRENT * SAMPLES_PER_FRAME
#: Zeros in front of the signal: offline, the window minus (current + future); online, exactly the past frames.
OFFLINE_LEAD_SAMPLES = WINDOW_SAMPLES - (CHUNK_CURRENT + CHUNK_FUTURE) * SAMPLES_PER_FRAME
ONLINE_LEAD_SAMPLES = CHUNK_PAST * SAMPLES_PER_FRAME
#: The HuBERT frames (50 Hz) aligned with the current 5 video frames: [-14:-4] of the 20 a window yields.
_KEEP_START = -(CHUNK_CURRENT + CHUNK_FUTURE) * 2
_KEEP_STOP = -CHUNK_FUTURE * 2

#: The HuBERT network as the engine exposes it: ``hubert(input_values=(1, L) float32) -> {"encoding_out": ...}``.
HubertFn = Callable[..., Mapping[str, np.ndarray]]

#: Peak amplitude below which a file counts as silent (≈ −100 dBFS): a warning, not an error.
_SILENCE_PEAK = 1e-5


# ---------------------------------------------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------------------------------------------


def load_audio(
    path: str | os.PathLike[str], *, max_seconds: float | None = None, min_seconds: float = 0.1
) -> np.ndarray:
    """Decode any audio (or video-with-audio) file ffmpeg reads into 16 kHz mono float32 samples.

    Raises :class:`InputError` with one actionable sentence when the path is missing or unreadable, holds no audio
    stream (an image named ``.wav``), cannot be decoded, is empty, is shorter than ``min_seconds`` or longer than
    ``max_seconds``. Long files are rejected, never trimmed: cutting someone's speech silently would be worse than
    asking them to shorten it. Decoding stops just past the limit, so a three-hour file costs no more than the limit.
    A silent file is accepted (it is valid input and animates an idle face) but logged as a warning.
    """
    file = Path(path)
    name = file.name or str(path)
    if not file.exists():
        raise InputError(f"The audio file {str(path)!r} does not exist: check the path.")
    if not file.is_file():
        raise InputError(f"The audio path {str(path)!r} is not a file: pass an audio file such as a .wav or .mp3.")
    if not os.access(file, os.R_OK):
        raise InputError(f"The audio file {name!r} cannot be read (permission denied): check its permissions.")
    if file.stat().st_size == 0:
        raise InputError(f"The audio file {name!r} is empty (0 bytes): record or export it again.")

    cmd = [ffmpeg_executable(), "-nostdin", "-hide_banner", "-v", "error", "-i", str(file), "-map", "0:a:0"]
    if max_seconds is not None:
        # read a little past the limit so "longer than" can be detected without decoding everything
        cmd += ["-t", f"{max_seconds + 0.5:.3f}"]
    cmd += ["-ac", "1", "-ar", str(SAMPLE_RATE), "-f", "f32le", "-"]
    proc = subprocess.run(cmd, capture_output=True, check=False)
    stderr = proc.stderr.decode("utf-8", errors="replace")
    if proc.returncode != 0:
        raise InputError(_decode_error_sentence(name, stderr))

    audio = np.frombuffer(proc.stdout, dtype="<f4").astype(np.float32)
    if audio.size == 0:
        raise InputError(f"The audio file {name!r} contains no audio samples: record or export it again.")
    if not np.all(np.isfinite(audio)):
        raise InputError(f"The audio file {name!r} decodes to invalid (non-finite) samples: export it again.")
    seconds = audio.size / SAMPLE_RATE
    # 10 ms of slack: resampling a file of exactly the limit can round up by a sample or two
    if max_seconds is not None and audio.size > round(max_seconds * SAMPLE_RATE) + SAMPLE_RATE // 100:
        raise InputError(
            f"The audio file {name!r} is longer than the {max_seconds:g} s limit: shorten it to at most "
            f"{max_seconds:g} seconds."
        )
    if seconds < min_seconds:
        raise InputError(
            f"The audio file {name!r} is too short ({seconds:.3f} s): use at least {min_seconds:g} s of speech."
        )
    if float(np.max(np.abs(audio))) < _SILENCE_PEAK:
        log.warning("audio file %r is completely silent (%.2f s): the face will not speak", name, seconds)
    if stderr.strip():
        log.debug("ffmpeg messages while decoding %r: %s", name, stderr.strip())
    return audio


def _decode_error_sentence(name: str, stderr: str) -> str:
    """One user-facing sentence for an ffmpeg failure, from the messages ffmpeg writes to stderr."""
    text = stderr.lower()
    if "matches no streams" in text:
        return f"The file {name!r} has no audio stream (is it an image or a silent video?): pass an audio file."
    if "permission denied" in text:
        return f"The audio file {name!r} cannot be read (permission denied): check its permissions."
    if "invalid data found" in text or "could not find codec" in text or "no 'data' tag" in text:
        return f"The file {name!r} is not readable audio (corrupt or unknown format): export it again as WAV or MP3."
    last = stderr.strip().splitlines()[-1] if stderr.strip() else "unknown error"
    return f"The audio file {name!r} could not be decoded ({last}): export it again as WAV or MP3."


# ---------------------------------------------------------------------------------------------------------------
# Window arithmetic
# ---------------------------------------------------------------------------------------------------------------


def audio_frame_count(num_samples: int) -> int:
    """Video frames (25 fps) covered by ``num_samples`` 16 kHz samples: ⌈n / 640⌉ — a partial frame counts."""
    if num_samples < 0:
        raise ValueError("num_samples must be >= 0")
    return -(-int(num_samples) // SAMPLES_PER_FRAME)


def online_feature_count(num_samples: int) -> int:
    """Features the streaming path yields for ``num_samples``: 5 per started hop of the zero-led signal.

    This is a few more than :func:`audio_frame_count` — the reason a streamed video is a few frames longer.
    """
    return BLOCK_FRAMES * math.ceil((int(num_samples) + ONLINE_LEAD_SAMPLES) / HOP_SAMPLES)


# ---------------------------------------------------------------------------------------------------------------
# Features
# ---------------------------------------------------------------------------------------------------------------


def _mono(samples: np.ndarray) -> np.ndarray:
    """1-D float32 samples; a (n, 1) / (1, n) array is fine, several channels are a caller error (not averaged)."""
    array = np.asarray(samples, dtype=np.float32)
    if array.ndim > 1 and array.size not in array.shape:
        raise ValueError(f"expected mono 16 kHz samples, got an array of shape {array.shape}")
    return array.reshape(-1)


def hubert_block(hubert: HubertFn, window: np.ndarray) -> np.ndarray:
    """The (5, 1024) video-rate features of one 6480-sample window."""
    window = np.asarray(window, dtype=np.float32)
    if window.shape != (WINDOW_SAMPLES,):
        raise ValueError(f"a HuBERT window has {WINDOW_SAMPLES} samples, got shape {window.shape}")
    encoding = np.asarray(hubert(input_values=window.reshape(1, -1))["encoding_out"], dtype=np.float32)
    if encoding.ndim == 3:  # some exports keep the batch axis
        encoding = encoding[0]
    kept = encoding[_KEEP_START:_KEEP_STOP]
    if kept.shape[0] != 2 * BLOCK_FRAMES:
        raise ValueError(f"HuBERT returned {encoding.shape[0]} frames for a window; expected 20")
    return kept.reshape(BLOCK_FRAMES, 2, -1).mean(axis=1)


def hubert_features(hubert: HubertFn, audio: np.ndarray) -> np.ndarray:
    """Offline features (N, 1024), N = ⌈len / 640⌉: one window per 5 frames over the zero-padded signal."""
    audio = _mono(audio)
    frames = audio_frame_count(audio.size)
    if frames == 0:
        return np.zeros((0, HUBERT_DIM), dtype=np.float32)
    padded = np.concatenate([np.zeros(OFFLINE_LEAD_SAMPLES, np.float32), audio, np.zeros(WINDOW_SAMPLES, np.float32)])
    blocks = [
        hubert_block(hubert, padded[start : start + WINDOW_SAMPLES])
        for start in range(0, frames * SAMPLES_PER_FRAME, HOP_SAMPLES)
    ]
    return np.concatenate(blocks, axis=0)[:frames]


def silence_block(hubert: HubertFn) -> np.ndarray:
    """The (5, 1024) features of one all-zero window: ``hubert_features`` of zeros repeats it block after block.

    Zeros padded with zeros make every offline window the same all-zero window, so the streaming warm-up
    ("silence") rows cost one HuBERT call instead of one per 5 rows; callers cache the block and tile it
    (:func:`tile_silence`).
    """
    return hubert_block(hubert, np.zeros(WINDOW_SAMPLES, dtype=np.float32))


def tile_silence(block: np.ndarray, num_frames: int) -> np.ndarray:
    """``num_frames`` rows of silence features from a cached :func:`silence_block` (a fresh array)."""
    repeats = -(-max(num_frames, 0) // BLOCK_FRAMES)
    return np.ascontiguousarray(np.tile(np.asarray(block, dtype=np.float32), (repeats, 1))[:num_frames])


class HubertStream:
    """Streaming HuBERT features: feed samples in chunks of any size, get (5, 1024) blocks as soon as they exist.

    Reproduces the reference's online windows exactly (1920 leading zeros, 6480-sample windows every 3200
    samples, the tail zero-padded by :meth:`finish`), so feeding a signal in any chunking gives the same features
    as pushing the whole signal at once. Memory stays bounded: only the samples of the next, incomplete window are
    kept. Not thread-safe; one stream per audio source.
    """

    def __init__(self, hubert: HubertFn) -> None:
        self._hubert = hubert
        # samples from the start of the next window on; starts with the leading zeros
        self._pending: list[np.ndarray] = [np.zeros(ONLINE_LEAD_SAMPLES, dtype=np.float32)]
        self._pending_len = ONLINE_LEAD_SAMPLES
        self._finished = False
        self.samples_received = 0
        self.blocks_emitted = 0

    def push(self, samples: np.ndarray) -> list[np.ndarray]:
        """Add 16 kHz mono samples; returns the feature blocks of every window they completed (maybe none)."""
        if self._finished:
            raise RuntimeError("this HubertStream is finished; start a new one")
        chunk = _mono(samples)
        if chunk.size == 0:
            return []
        self._pending.append(chunk)
        self._pending_len += chunk.size
        self.samples_received += chunk.size
        blocks: list[np.ndarray] = []
        while self._pending_len >= WINDOW_SAMPLES:
            buffer = self._consolidate()
            blocks.append(self._run(buffer[:WINDOW_SAMPLES]))
            self._keep(buffer[HOP_SAMPLES:])
        return blocks

    def finish(self) -> list[np.ndarray]:
        """Blocks of the remaining windows (every hop that has started), zero-padded at the end like the reference."""
        if self._finished:
            return []
        self._finished = True
        blocks: list[np.ndarray] = []
        buffer = self._consolidate()
        while buffer.size > 0:
            window = np.zeros(WINDOW_SAMPLES, dtype=np.float32)
            window[: min(buffer.size, WINDOW_SAMPLES)] = buffer[:WINDOW_SAMPLES]
            blocks.append(self._run(window))
            buffer = buffer[HOP_SAMPLES:]
        self._keep(buffer)
        return blocks

    def _consolidate(self) -> np.ndarray:
        buffer = self._pending[0] if len(self._pending) == 1 else np.concatenate(self._pending)
        self._pending = [buffer]
        return buffer

    def _keep(self, rest: np.ndarray) -> None:
        self._pending = [rest]
        self._pending_len = rest.size

    def _run(self, window: np.ndarray) -> np.ndarray:
        self.blocks_emitted += 1
        return hubert_block(self._hubert, window)
