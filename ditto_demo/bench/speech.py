"""The benchmark's speech: half a second of silence, then the example speech looped, cut into chunks.

The silence makes speech onset differ from the first chunk, so the paced "from onset" delay is meaningful.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ditto_demo.bench.options import SPEECH_ASSET
from ditto_demo.pipeline.timebase import SAMPLE_RATE

__all__ = ["LEAD_SILENCE_S", "ONSET_RMS", "bench_audio", "onset_chunk", "split_chunks", "synthetic_speech"]

#: Silence in front of the benchmark speech, so that speech onset is not the first chunk.
LEAD_SILENCE_S = 0.5
#: A chunk whose RMS exceeds this (−40 dBFS) holds speech.
ONSET_RMS = 0.01


def bench_audio(seconds: float, lead_silence: float = LEAD_SILENCE_S) -> np.ndarray:
    """``seconds`` of 16 kHz mono speech: ``lead_silence`` of zeros, then the example speech looped.

    Without the asset (an installed package), :func:`synthetic_speech` stands in.
    """
    total = round(seconds * SAMPLE_RATE)
    lead = min(total, round(lead_silence * SAMPLE_RATE))
    if SPEECH_ASSET.is_file():
        from ditto_demo.pipeline.audio import load_audio

        speech = load_audio(SPEECH_ASSET)
    else:
        speech = synthetic_speech(8.0)
    body = np.resize(speech, total - lead) if total > lead else np.zeros(0, np.float32)
    return np.concatenate([np.zeros(lead, np.float32), body.astype(np.float32)])


def synthetic_speech(seconds: float) -> np.ndarray:
    """A speech-like signal: a voiced 120 Hz harmonic series under a 4 Hz syllable envelope, a little noise (seeded).

    Enough to drive the networks with speech-shaped energy where the example recording is not installed.
    """
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    f0 = 120 * (1 + 0.1 * np.sin(2 * np.pi * 0.7 * t))
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    voiced = sum(np.sin(k * phase) / k for k in range(1, 12))
    envelope = np.clip(np.sin(2 * np.pi * 4 * t), 0, None) ** 2
    signal = 0.2 * envelope * voiced + 0.005 * rng.standard_normal(t.size)
    return signal.astype(np.float32)


def split_chunks(samples: np.ndarray, size: int) -> list[np.ndarray]:
    """``samples`` in consecutive chunks of ``size`` (the last one may be shorter), as a live source sends them."""
    return [samples[i : i + size] for i in range(0, len(samples), size)]


def onset_chunk(chunks: Sequence[np.ndarray]) -> int:
    """Index of the first chunk whose RMS exceeds ``ONSET_RMS`` (0 if none does: all silence)."""
    for index, chunk in enumerate(chunks):
        if chunk.size and float(np.sqrt(np.mean(np.square(chunk, dtype=np.float64)))) > ONSET_RMS:
            return index
    return 0
