"""An optional larger voice from the Hugging Face Hub, run through ``transformers`` (off by default).

Where ``transformers`` is installed and the Hub (or its cache) is reachable, an operator can pick a Hub
text-to-speech model such as :data:`DEFAULT_HUB_MODEL` (``DITTO_TTS_MODEL``); :func:`ditto_demo.speech.load_voice`
falls back to the packaged voice when it cannot be loaded. Nothing is imported or downloaded until the model is
first needed.

:class:`TextToSpeech` and :func:`synthesize` keep the earlier file-writing interface of this voice (text and a
folder in, a WAV path out), for callers written against it.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from ditto_demo.errors import DittoError
from ditto_demo.pipeline.pcm import resample, write_wav
from ditto_demo.speech.text import MAX_TEXT_CHARACTERS, check_text
from ditto_demo.speech.voice import SpeechUnavailableError, Voice

__all__ = ["DEFAULT_HUB_MODEL", "TTS_MODEL_ENV", "HubVoice", "TextToSpeech", "synthesize"]

log = logging.getLogger(__name__)

#: A small (36M parameters) English VITS voice from Meta's MMS project, 16 kHz output.
DEFAULT_HUB_MODEL = "facebook/mms-tts-eng"
#: The environment variable an operator sets to a Hub model id to use that voice.
TTS_MODEL_ENV = "DITTO_TTS_MODEL"


def _unavailable(model: str) -> SpeechUnavailableError:
    return SpeechUnavailableError(
        f"Text-to-speech needs the transformers package and access to the Hub model {model} (pip install "
        "transformers, and be online once so the model is cached); upload or record speech instead."
    )


class HubVoice(Voice):
    """A ``transformers`` text-to-speech pipeline as a :class:`Voice`; it loads on first use (or :meth:`load`).

    Its noise is drawn by the model itself, so the same text may sound slightly different each time (``seed`` is
    not used).
    """

    def __init__(self, model: str = DEFAULT_HUB_MODEL, *, max_characters: int = MAX_TEXT_CHARACTERS) -> None:
        super().__init__(model, max_characters=max_characters)
        self.model = model
        self._speaker: Any = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._speaker is not None

    def load(self) -> HubVoice:
        """Load the model now; :class:`SpeechUnavailableError` (the operator's instructions) when it cannot."""
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
        return self

    def _speak_sentence(self, sentence: str, seed: int) -> np.ndarray:
        self.load()
        with self._lock:  # one synthesis at a time: the model is not documented as thread-safe
            try:
                spoken = self._speaker(sentence)
            except Exception as exc:  # a model failure on odd text must not look like a server crash
                log.warning("text-to-speech failed on %d characters", len(sentence), exc_info=exc)
                raise DittoError("Text-to-speech could not speak this text; try simpler wording, or upload or "
                                 "record speech instead.") from exc
        samples = np.asarray(spoken["audio"], dtype=np.float32).reshape(-1)
        peak = float(np.max(np.abs(samples))) if samples.size else 0.0
        if peak > 1.0:
            samples = samples / peak
        return resample(samples, int(spoken["sampling_rate"]), self.sample_rate)


class TextToSpeech:
    """The Hub voice behind the earlier interface: :meth:`synthesize` writes a new 16 kHz WAV into a folder."""

    def __init__(self, model: str | None = None, *, max_characters: int = MAX_TEXT_CHARACTERS) -> None:
        self.voice = HubVoice(model or os.environ.get(TTS_MODEL_ENV) or DEFAULT_HUB_MODEL,
                              max_characters=max_characters)

    @property
    def model(self) -> str:
        return self.voice.model

    @property
    def loaded(self) -> bool:
        return self.voice.loaded

    def synthesize(self, text: str, folder: Path) -> Path:
        """Speak ``text`` into a new 16-bit WAV in ``folder``; the text is checked before the model loads."""
        check_text(text, self.voice.max_characters)
        samples = self.voice.synthesize(text)
        folder.mkdir(parents=True, exist_ok=True)
        return write_wav(folder / f"tts-{uuid.uuid4().hex[:8]}.wav", samples, self.voice.sample_rate)


def synthesize(text: str, folder: Path, *, engine: TextToSpeech | None = None) -> Path:
    """Speak ``text`` into a WAV in ``folder`` with the Hub voice. Pass ``engine`` so the model loads only once."""
    return (engine or TextToSpeech()).synthesize(text, folder)
