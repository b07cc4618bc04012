"""What one benchmark run measures: :class:`BenchOptions`, the parts it can run, and its default inputs.

No argument parsing here: the CLI maps its flags onto :class:`BenchOptions`, and a bad value is refused with an
:class:`~ditto_demo.errors.InputError` that names the flag, so the CLI can print it as one line.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ditto_demo.engine.backends.torch_backend import COMPILE_MODES
from ditto_demo.errors import InputError

__all__ = ["ALL_PARTS", "DEFAULT_PORTRAIT", "OPT_IN_PARTS", "PARTS", "PIPELINE_PARTS", "REAL_TIME_PARTS",
           "SPEECH_ASSET", "BenchOptions"]

_ASSETS = Path(__file__).resolve().parents[2] / "assets"
DEFAULT_PORTRAIT = _ASSETS / "portrait_illustration.png"
#: The speech the benchmark loops (absent from an installed package: then a synthetic signal stands in).
SPEECH_ASSET = _ASSETS / "speech_en.wav"

#: What a benchmark can run; ``parts`` selects a subset (a full-size run on a CPU may time the networks only).
PARTS: tuple[str, ...] = ("offline", "online", "paced", "paced_reference", "streams", "smoothness", "networks",
                          "overhead")
#: Parts run only when named: ``live-browser`` starts the app and drives headless Chromium (Playwright).
OPT_IN_PARTS: tuple[str, ...] = ("live-browser",)
#: Every part ``--parts`` accepts.
ALL_PARTS: tuple[str, ...] = PARTS + OPT_IN_PARTS
#: Parts that feed audio on a real-time clock (``--no-paced`` skips them).
REAL_TIME_PARTS = ("paced", "paced_reference", "streams")
#: Parts that run the whole pipeline, interleaved round by round.
PIPELINE_PARTS = ("offline", "online", "paced", "paced_reference", "streams")


@dataclass(frozen=True)
class BenchOptions:
    """What to benchmark. ``audio_seconds`` ``None`` means 4 s at ``micro`` and ``tiny``, 8 s at ``full``;
    ``steps`` ``None`` keeps the checkpoint's defaults (50 offline, 10 streaming); ``checkpoints`` ``None`` writes
    random-weight test checkpoints of ``size`` (seed 0) into a temporary folder, removed afterwards."""

    backend: str = "auto"
    device: str = "auto"
    size: Literal["micro", "tiny", "full"] = "tiny"
    runs: int = 5
    warmup: int = 1
    audio_seconds: float | None = None
    steps: int | None = None
    checkpoints: Path | None = None
    portrait: Path = DEFAULT_PORTRAIT
    paced: bool = True
    parts: tuple[str, ...] = PARTS
    chunk_ms: int = 100
    seed: int = 0
    #: torch intra-op threads for the run (``None``: leave torch's setting). On a small shared machine 1 thread
    #: avoids OpenMP teams of several runner threads fighting over the same cores.
    threads: int | None = None
    #: Concurrent paced live streams for the ``streams`` part (each its own seed, all on one pipeline).
    streams: int = 2
    #: The ``torch.compile`` mode of this run's PyTorch networks (``None``: ``DITTO_TORCH_COMPILE``, else off).
    #: With ``default`` the ``networks`` part is the compile lever: compiled network against the bare eager
    #: module, same weights.
    compile: str | None = None

    def __post_init__(self) -> None:
        if self.size not in ("micro", "tiny", "full"):
            raise InputError(f"--size must be micro, tiny or full, not {self.size!r}.")
        if self.runs < 1:
            raise InputError(f"--runs must be at least 1 (medians need runs), not {self.runs}.")
        if self.warmup < 0:
            raise InputError(f"--warmup cannot be negative ({self.warmup}).")
        if self.audio_seconds is not None and not (math.isfinite(self.audio_seconds) and self.audio_seconds >= 1.0):
            raise InputError(f"--audio-seconds must be at least 1 (0.5 s of it is leading silence), "
                             f"not {self.audio_seconds}.")
        if self.steps is not None and self.steps < 1:
            raise InputError(f"--steps must be at least 1, not {self.steps}.")
        if self.threads is not None and self.threads < 1:
            raise InputError(f"--threads must be at least 1, not {self.threads}.")
        if self.compile is not None and self.compile not in COMPILE_MODES:
            raise InputError(f"--compile must be one of {', '.join(COMPILE_MODES)}, not {self.compile!r}.")
        if not 1 <= self.streams <= 64:
            raise InputError(f"--streams must be between 1 and 64, not {self.streams}.")
        if not 10 <= self.chunk_ms <= 1000:
            raise InputError(f"The chunk size must be between 10 and 1000 ms, not {self.chunk_ms}.")
        unknown = sorted(set(self.parts) - set(ALL_PARTS))
        if unknown or not self.parts:
            got = ", ".join(self.parts) or "none"
            raise InputError(f"Benchmark parts must be among {', '.join(ALL_PARTS)}; got {got}.")

    @property
    def seconds(self) -> float:
        """The audio length actually used."""
        if self.audio_seconds is not None:
            return float(self.audio_seconds)
        return 8.0 if self.size == "full" else 4.0

    def runs_part(self, part: str) -> bool:
        """Whether ``part`` runs (the real-time parts also need ``paced``)."""
        return part in self.parts and (part not in REAL_TIME_PARTS or self.paced)
