"""Text to IPA phonemes with the ``espeak-ng`` program, run as a separate process.

espeak-ng is GPL software; the app never links or imports it: it runs the Debian package's command line
(``espeak-ng -q --ipa``) the way it runs ffmpeg, and reads the phonemes it prints. Text goes in on stdin, never
on the command line, so no text can be taken for an option. The program prints one line per clause it sees and
drops the punctuation, so the caller hands it one clause at a time and adds the clause's mark itself.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
from pathlib import Path

from ditto_demo.errors import DittoError

__all__ = ["ESPEAK_PROGRAM", "Phonemizer", "espeak_path"]

log = logging.getLogger(__name__)

ESPEAK_PROGRAM = "espeak-ng"
#: espeak-ng marks a switch to another language's rules inside its output, e.g. "(fr)kafe(en)"; the voice has
#: no symbol for these markers.
_LANGUAGE_SWITCH = re.compile(r"\([a-z]{2,3}(?:-[a-z0-9]+)*\)")
#: A clause of a few hundred characters takes espeak-ng milliseconds; this only stops a wedged process.
_TIMEOUT_SECONDS = 30.0


def espeak_path() -> Path | None:
    """Where the ``espeak-ng`` program is, or ``None`` when it is not installed (Debian package ``espeak-ng``)."""
    found = shutil.which(ESPEAK_PROGRAM)
    return Path(found) if found else None


class Phonemizer:
    """IPA phonemes of English (or another espeak-ng language) text, one clause per call."""

    def __init__(self, language: str, program: Path) -> None:
        self.language = language
        self.program = program

    def phonemes(self, words: str) -> str:
        """The IPA phonemes of ``words`` (one clause, no closing mark), words separated by spaces."""
        command = [str(self.program), "-q", "--ipa", "-b", "1", "-v", self.language, "--stdin"]
        try:
            done = subprocess.run(command, input=words.encode("utf-8"), capture_output=True, check=False,
                                  timeout=_TIMEOUT_SECONDS)
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.warning("espeak-ng failed to run: %s", exc)
            raise DittoError("Text-to-speech could not read this text; try simpler wording, or upload or record "
                             "speech instead.") from exc
        if done.returncode != 0:
            log.warning("espeak-ng exited with %d: %s", done.returncode, done.stderr.decode("utf-8", "replace")[-500:])
            raise DittoError("Text-to-speech could not read this text; try simpler wording, or upload or record "
                             "speech instead.")
        printed = done.stdout.decode("utf-8", "replace")
        # Lines are the clauses espeak-ng found inside ours (it also breaks after "Dr."): joined without a pause.
        return " ".join(_LANGUAGE_SWITCH.sub("", line).strip() for line in printed.splitlines() if line.strip())
