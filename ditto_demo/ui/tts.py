"""Optional text-to-speech, so a visitor without a recording can still make the portrait talk.

It runs a small Hub TTS model through ``transformers`` (default :data:`DEFAULT_TTS_MODEL`, or the model named by
``DITTO_TTS_MODEL``). Nothing is imported or downloaded until the first request, because most visits never use it
and ``transformers`` is not a dependency of the CPU test environment. The loaded model lives on a
:class:`TextToSpeech` object the app keeps (not in a module global), so tests and several apps in one process do
not share hidden state. When ``transformers`` or the model is not available (offline, no cache), the user gets one
sentence saying so and what to do instead.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
import wave
from pathlib import Path
from typing import Any

import numpy as np

from ditto_demo.errors import DittoError, InputError
from ditto_demo.pipeline.audio import SAMPLE_RATE
from ditto_demo.ui.transport import resample

__all__ = ["DEFAULT_TTS_MODEL", "MAX_TEXT_CHARACTERS", "TTS_MODEL_ENV", "TextToSpeech", "synthesize"]

log = logging.getLogger(__name__)

#: A small (36M parameters), fast English VITS voice from Meta's MMS project, 16 kHz output.
DEFAULT_TTS_MODEL = "facebook/mms-tts-eng"
TTS_MODEL_ENV = "DITTO_TTS_MODEL"
#: Longer text makes speech beyond what the app animates in one go, and holds the CPU for a long time.
MAX_TEXT_CHARACTERS = 600


def _unavailable(model: str) -> DittoError:
    return DittoError(
        f"Text-to-speech needs the transformers package and access to the Hub model {model} (pip install "
        "transformers, and be online once so the model is cached); upload or record speech instead."
    )


def check_text(text: str | None, max_characters: int = MAX_TEXT_CHARACTERS) -> str:
    """The text to speak, stripped; an :class:`InputError` sentence when it is empty or too long."""
    cleaned = " ".join((text or "").split())
    if not cleaned:
        raise InputError("Type the text to speak first.")
    if len(cleaned) > max_characters:
        raise InputError(f"The text is {len(cleaned)} characters long; text-to-speech takes at most {max_characters}. "
                         "Shorten it, or upload a recording instead.")
    return cleaned


def _write_wav(path: Path, samples: np.ndarray, rate: int) -> None:
    pcm = (np.clip(samples, -1.0, 1.0) * 32767.0).round().astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm.tobytes())


class TextToSpeech:
    """A lazily loaded TTS model; keep one per app (loading takes seconds, synthesis is thread-safe)."""

    def __init__(self, model: str | None = None, *, max_characters: int = MAX_TEXT_CHARACTERS) -> None:
        self.model = model or os.environ.get(TTS_MODEL_ENV) or DEFAULT_TTS_MODEL
        self.max_characters = max_characters
        self._speaker: Any = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._speaker is not None

    def _load(self) -> Any:
        """The transformers text-to-speech pipeline (numpy in, numpy out), loaded on first use."""
        with self._lock:
            if self._speaker is None:
                try:
                    from transformers import pipeline
                except ImportError:
                    raise _unavailable(self.model) from None
                try:
                    self._speaker = pipeline("text-to-speech", model=self.model)
                except Exception as exc:  # offline, unknown model, incompatible version: all end the same for users
                    log.warning("could not load the TTS model %s: %s", self.model, exc)
                    raise _unavailable(self.model) from exc
                log.info("text-to-speech model %s loaded", self.model)
            return self._speaker

    def synthesize(self, text: str, folder: Path) -> Path:
        """Speak ``text`` into a new 16-bit wav in ``folder`` (16 kHz or the model's higher rate)."""
        cleaned = check_text(text, self.max_characters)
        speaker = self._load()
        with self._lock:  # one synthesis at a time: the model is not documented as thread-safe
            try:
                spoken = speaker(cleaned)
            except Exception as exc:  # a model failure on odd text must not look like a server crash
                log.warning("text-to-speech failed on %d characters", len(cleaned), exc_info=exc)
                raise DittoError("Text-to-speech could not speak this text; try simpler wording, or upload or "
                                 "record speech instead.") from exc
        samples = np.asarray(spoken["audio"], dtype=np.float32).reshape(-1)
        rate = int(spoken["sampling_rate"])
        if rate < SAMPLE_RATE:
            samples, rate = resample(samples, rate, SAMPLE_RATE), SAMPLE_RATE
        peak = float(np.max(np.abs(samples))) if samples.size else 0.0
        if peak > 1.0:
            samples = samples / peak
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"tts-{uuid.uuid4().hex[:8]}.wav"
        _write_wav(target, samples, rate)
        return target


def synthesize(text: str, folder: Path, *, engine: TextToSpeech | None = None) -> Path:
    """Speak ``text`` into a wav in ``folder``. Pass the app's ``engine`` so the model is loaded only once."""
    return (engine or TextToSpeech()).synthesize(text, folder)
