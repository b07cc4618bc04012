"""Text handling before any voice runs: the input limits, sentences, and clauses with their closing punctuation.

A voice speaks one sentence at a time (so long text can later be spoken and animated sentence by sentence), and
within a sentence one clause at a time, because the phonemizer drops punctuation while the voice was trained with
it: the clause's closing mark is what gives a question its rising end and a comma its short pause.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from ditto_demo.errors import InputError

__all__ = ["MAX_TEXT_CHARACTERS", "Clause", "check_text", "split_clauses", "split_first_clause", "split_sentences"]

#: Longer text makes more speech than the app animates in one go, and holds the CPU for long.
MAX_TEXT_CHARACTERS = 600

# Titles: their dot never ends a sentence ("Dr. Smith"). Lower case, without the dot.
_TITLES = frozenset(["mr", "mrs", "ms", "dr", "prof", "st", "jr", "sr", "rev", "gen", "col", "lt", "sgt", "capt", "mt"])
# Other abbreviations: their dot ends a sentence only when a capital follows ("... and so on etc. Then").
_ABBREVIATIONS = frozenset(["vs", "etc", "cf", "approx", "no", "fig", "est", "dept", "inc", "ltd", "co", "jan", "feb",
                            "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec"])
# A sentence ends after . ! ? (possibly repeated, possibly followed by closing quotes or brackets) and a space.
_SENTENCE_END = re.compile(r"[.!?]+[\"'”’)\]]*(?=\s)")
# A clause ends at , ; : or a dash standing between words; not inside a number ("1,000", "3:30"): the mark must be
# followed by a space or the end.
_CLAUSE_END = re.compile(r"\s*(?:[,;:]+(?=\s|$)|\s[—–-]{1,2}(?=\s|$)|[—–])\s*")


@dataclass(frozen=True)
class Clause:
    """Words to phonemize and the mark that closes them (one of ``, ; : . ! ?``)."""

    words: str
    mark: str


def _printable(text: str) -> str:
    """Control and format characters (zero-width spaces, bidi marks, escapes) out; all whitespace as one space."""
    kept = "".join(ch if unicodedata.category(ch)[0] != "C" else " " for ch in text)
    return " ".join(kept.split())


def check_text(text: str | None, max_characters: int = MAX_TEXT_CHARACTERS) -> str:
    """The text to speak, cleaned; an :class:`InputError` sentence when it is empty, unspeakable or too long."""
    cleaned = _printable(text or "")
    if not cleaned:
        raise InputError("Type the text to speak first.")
    if len(cleaned) > max_characters:
        raise InputError(f"The text is {len(cleaned)} characters long; text-to-speech takes at most {max_characters}. "
                         "Shorten it, or upload a recording instead.")
    if not any(ch.isalnum() for ch in cleaned):
        raise InputError("The text has no words to speak; type a sentence.")
    return cleaned


def _ends_sentence(text: str, dot_at: int) -> bool:
    """Whether the punctuation at ``dot_at`` ends a sentence (not an abbreviation such as "Dr." or an initial)."""
    if text[dot_at] != ".":
        return True
    word = text[:dot_at].rsplit(" ", 1)[-1].lstrip("\"'“‘([")
    if word.lower() in _TITLES or (len(word) == 1 and word.isupper()):  # "Dr. Who", an initial: "J. R. Tolkien"
        return False
    if word.lower() in _ABBREVIATIONS or "." in word:  # "etc.", "e.g.", "U.S.A.": a sentence end if a capital follows
        following = text[dot_at:].split(" ", 1)[1:]
        return bool(following) and following[0][:1].isupper()
    return True


def split_sentences(text: str) -> list[str]:
    """Sentences of already cleaned text, in order, each with its closing punctuation; nothing is lost but spaces."""
    sentences: list[str] = []
    start = 0
    for match in _SENTENCE_END.finditer(text):
        if not _ends_sentence(text, match.start()):
            continue
        sentence = text[start:match.end()].strip()
        if sentence:
            sentences.append(sentence)
        start = match.end()
    rest = text[start:].strip()
    if rest:
        sentences.append(rest)
    # A "sentence" of punctuation only ("..." after a sentence) is spoken as part of the one before.
    merged: list[str] = []
    for sentence in sentences:
        if merged and not any(ch.isalnum() for ch in sentence):
            merged[-1] = f"{merged[-1]} {sentence}"
        else:
            merged.append(sentence)
    return merged


def _final_mark(punctuation: str) -> str:
    """The mark the voice hears for a run of closing punctuation: ``?`` beats ``!`` beats ``.``."""
    for mark in "?!.":
        if mark in punctuation:
            return mark
    return "."


def split_clauses(sentence: str) -> list[Clause]:
    """The clauses of one sentence; the last one closes with the sentence's own mark (``.`` if it has none)."""
    stripped = sentence.rstrip()
    tail = re.search(r"[.!?\"'”’)\]]*$", stripped)
    ending = tail.group(0) if tail else ""
    body = stripped[: len(stripped) - len(ending)]
    clauses: list[Clause] = []
    start = 0
    for match in _CLAUSE_END.finditer(body):
        words = body[start:match.start()].strip()
        mark = next((ch for ch in match.group(0) if ch in ",;:"), ",")
        if any(ch.isalnum() for ch in words):
            clauses.append(Clause(words, mark))
        start = match.end()
    words = body[start:].strip()
    if any(ch.isalnum() for ch in words):
        clauses.append(Clause(words, _final_mark(ending)))
    elif clauses and ending:  # "Hello." closes with its own mark; a lone "Hello," keeps its comma
        clauses[-1] = Clause(clauses[-1].words, _final_mark(ending))
    return clauses


def split_first_clause(sentence: str) -> list[str]:
    """``sentence`` as [its first clause with its mark, the rest], or [``sentence``] when it has one clause.

    A live avatar speaks the first clause as soon as it is synthesized, so the first words are heard after a
    short clause's synthesis rather than a whole sentence's ("Hello," then "and welcome to the demo.").
    """
    for match in _CLAUSE_END.finditer(sentence):
        mark = match.group(0)
        if not any(ch in ",;:" for ch in mark) and not mark[:1].isspace():
            continue  # a bare dash ("pages 10–20") is not worth a pause of its own
        head, rest = sentence[:match.end()].strip(), sentence[match.end():].strip()
        if any(ch.isalnum() for ch in head):
            return [head, rest] if any(ch.isalnum() for ch in rest) else [sentence]
    return [sentence]
