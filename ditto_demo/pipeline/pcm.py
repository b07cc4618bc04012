"""Raw audio samples: any format to mono float32, sample-rate conversion, and 16-bit WAV files.

What a browser, a socket or a speech synthesizer delivers (any rate, int16 or float, stereo) becomes the 16 kHz
mono float32 the pipeline reads. Resampling is done by libsoxr (``soxr``): a well-tested, fast polyphase filter,
so our own code only keeps the contract the app relies on (the output length, how a stream ends). WAV writing
lives here once, so every file the package writes rounds and clips its samples the same way.
"""

from __future__ import annotations

import math
import numbers
import wave
from pathlib import Path
from typing import Any

import numpy as np
import soxr

from ditto_demo.errors import InputError
from ditto_demo.pipeline.timebase import SAMPLE_RATE

__all__ = ["Resampler", "resample", "to_mono_float32", "write_wav"]

#: libsoxr's "high quality": flat to well past 16 kHz speech's band, alias rejection far below 16-bit noise.
_QUALITY = "HQ"
#: Channels are averaged when the first axis is at most this long and shorter than the second.
_MAX_CHANNELS_FIRST = 8


def to_mono_float32(samples: Any) -> np.ndarray:
    """Samples in [-1, 1] as one float32 channel: ints are scaled by their type's range, channels averaged.

    A 2-D array is ``(samples, channels)`` as Gradio delivers it; ``(channels, samples)`` is recognised when the
    first axis is the short one (at most 8 channels), as torchaudio-style sources deliver it.
    """
    data = np.asarray(samples)
    if data.ndim not in (1, 2):
        raise InputError(f"Audio must be one or two dimensional (samples[, channels]); got shape {data.shape}.")
    if data.dtype.kind == "f":
        out = data.astype(np.float64)
    elif data.dtype.kind == "i":
        out = data.astype(np.float64) / float(-np.iinfo(data.dtype).min)
    elif data.dtype.kind == "u":
        half = float(np.iinfo(data.dtype).max + 1) / 2
        out = (data.astype(np.float64) - half) / half
    else:
        raise InputError(f"Audio samples must be numbers; got {data.dtype}.")
    if out.ndim == 2:
        channels_first = out.shape[0] < out.shape[1] and out.shape[0] <= _MAX_CHANNELS_FIRST
        out = out.mean(axis=0 if channels_first else 1)
    if not np.all(np.isfinite(out)):
        raise InputError("The audio contains NaN or infinite samples.")
    return out.astype(np.float32)


def _check_rate(rate: int | float, what: str) -> int:
    if isinstance(rate, bool) or not isinstance(rate, numbers.Real) or int(rate) != rate or rate <= 0:
        raise InputError(f"The {what} sample rate must be a positive whole number; got {rate!r}.")
    return int(rate)


class Resampler:
    """Streaming sample-rate conversion of mono float audio (libsoxr, high quality).

    Feed chunks of any size to :meth:`process`; :meth:`flush` returns the tail and starts over. The result does not
    depend on how the input was cut, and a whole stream of ``n`` input samples gives exactly
    ``ceil(n * rate_out / rate_in)`` output samples (the count the pipeline's frame arithmetic expects; libsoxr
    alone rounds, so :meth:`flush` pads or trims the last sample or two). Output sample ``k`` sits at input
    position ``k * rate_in / rate_out``: libsoxr compensates its filter delay.
    """

    def __init__(self, rate_in: int, rate_out: int = SAMPLE_RATE) -> None:
        self.rate_in = _check_rate(rate_in, "input")
        self.rate_out = _check_rate(rate_out, "output")
        self._stream: soxr.ResampleStream | None = None
        self.reset()

    def reset(self) -> None:
        """Forget all input: the next sample is the start of a new signal."""
        self._received = 0
        self._produced = 0
        if not self.passthrough:
            self._stream = soxr.ResampleStream(self.rate_in, self.rate_out, 1, dtype="float32", quality=_QUALITY)

    @property
    def passthrough(self) -> bool:
        """Both rates are equal: samples go through untouched."""
        return self.rate_in == self.rate_out

    def process(self, samples: np.ndarray) -> np.ndarray:
        """Resample one chunk of mono float samples; returns every output sample that is ready."""
        chunk = np.ascontiguousarray(np.asarray(samples, dtype=np.float32).reshape(-1))
        self._received += chunk.size
        if self._stream is None or self.passthrough:
            self._produced += chunk.size
            return chunk.copy()
        out = self._stream.resample_chunk(chunk)
        self._produced += out.size
        return out

    def flush(self) -> np.ndarray:
        """The remaining output (the signal is taken to be silent after its end); then starts over."""
        if self._stream is None or self.passthrough:
            self.reset()
            return np.zeros(0, np.float32)
        tail = self._stream.resample_chunk(np.zeros(0, np.float32), last=True)
        expected = math.ceil(self._received * self.rate_out / self.rate_in)
        missing = expected - (self._produced + tail.size)
        if missing > 0:
            tail = np.concatenate([tail, np.zeros(missing, np.float32)])
        elif missing < 0:
            tail = tail[:max(0, tail.size + missing)]
        self.reset()
        return tail.astype(np.float32, copy=False)


def resample(samples: Any, rate_in: int, rate_out: int = SAMPLE_RATE) -> np.ndarray:
    """A whole signal (any dtype, mono or multi-channel) as mono float32 at ``rate_out``."""
    resampler = Resampler(rate_in, rate_out)
    mono = to_mono_float32(samples)
    return np.concatenate([resampler.process(mono), resampler.flush()])


def write_wav(path: str | Path, samples: Any, rate: int = SAMPLE_RATE) -> Path:
    """Mono float samples in [-1, 1] as a 16-bit PCM WAV file (the stdlib's writer); returns the path.

    Samples are clipped to [-1, 1] and rounded to the nearest step (truncation would bias every sample towards
    zero by half a step on average).
    """
    data = np.asarray(samples, dtype=np.float64)
    if data.ndim != 1:
        raise InputError(f"write_wav takes one channel of samples; got shape {data.shape}.")
    rate = _check_rate(rate, "WAV")
    pcm = (np.clip(data, -1.0, 1.0) * 32767.0).round().astype("<i2")
    target = Path(path)
    with wave.open(str(target), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm.tobytes())
    return target
