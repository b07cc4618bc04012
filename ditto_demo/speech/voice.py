"""What every voice offers: text in, 16 kHz mono float32 speech out, sentence by sentence."""

from __future__ import annotations

import os
import secrets
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

from ditto_demo.errors import DittoError, InputError
from ditto_demo.pipeline.audio import SAMPLE_RATE
from ditto_demo.pipeline.pcm import write_wav
from ditto_demo.speech.text import MAX_TEXT_CHARACTERS, check_text, split_sentences

__all__ = ["SENTENCE_GAP_SECONDS", "SpeechUnavailableError", "Voice", "write_speech"]

#: Silence between two sentences: about the pause a reader makes.
SENTENCE_GAP_SECONDS = 0.2

UNAVAILABLE_SENTENCE = "Speech from text is not available on this server; upload or record speech instead."


class SpeechUnavailableError(DittoError):
    """No voice can be had on this host (a package or program is missing, or a voice file is damaged)."""

    def __init__(self, message: str = UNAVAILABLE_SENTENCE) -> None:
        super().__init__(message)


class Voice(ABC):
    """A loaded voice. Thread-safe: several requests may speak at once.

    :meth:`synthesize` speaks each of :meth:`sentences` and joins them with :data:`SENTENCE_GAP_SECONDS` of
    silence, so speaking the sentences one by one and joining them the same way gives the same samples.
    """

    #: Every voice delivers the pipeline's rate, whatever its model's own rate is.
    sample_rate: int = SAMPLE_RATE

    def __init__(self, name: str, *, max_characters: int = MAX_TEXT_CHARACTERS) -> None:
        self.name = name
        self.max_characters = max_characters

    def sentences(self, text: str) -> list[str]:
        """The sentences of ``text`` in the order they are spoken; :class:`InputError` for empty or too long text."""
        return split_sentences(check_text(text, self.max_characters))

    def synthesize(self, text: str, *, seed: int = 0) -> np.ndarray:
        """``text`` spoken: float32 mono samples in [-1, 1] at :attr:`sample_rate`.

        ``seed`` picks the voice's natural variation (rhythm, intonation) where the voice allows choosing it: the
        same text and seed give the same samples.
        """
        gap = np.zeros(round(SENTENCE_GAP_SECONDS * self.sample_rate), np.float32)
        pieces: list[np.ndarray] = []
        for sentence in self.sentences(text):
            if pieces:
                pieces.append(gap)
            pieces.append(np.asarray(self._speak_sentence(sentence, seed), np.float32).reshape(-1))
        audio = np.concatenate(pieces)
        if not audio.size or not np.any(audio):
            raise InputError("The text has no words to speak; type a sentence.")
        return np.clip(audio, -1.0, 1.0)

    @abstractmethod
    def _speak_sentence(self, sentence: str, seed: int) -> np.ndarray:
        """One sentence (already checked) as samples at :attr:`sample_rate`."""


def write_speech(voice: Voice, text: str, output: str | Path, *, seed: int = 0) -> Path:
    """Speak ``text`` into the 16-bit WAV file ``output``, which appears only once it is complete."""
    target = Path(output)
    if target.suffix.lower() != ".wav":
        raise InputError(f"The speech output {target} must be a .wav file.")
    samples = voice.synthesize(text, seed=seed)  # before touching the folder: bad text leaves nothing behind
    temp = target.with_name(f".{target.stem}.{secrets.token_hex(6)}.partial.wav")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        write_wav(temp, samples, voice.sample_rate)
        os.replace(temp, target)
    except OSError as exc:
        raise DittoError(f"Cannot write the speech to {target.parent} ({exc.strerror or exc}); choose a writable "
                         "output folder.") from exc
    finally:
        temp.unlink(missing_ok=True)  # a partial file after any failure; nothing once it has been renamed
    return target
