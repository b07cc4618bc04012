"""What every part of a benchmark run shares: the loaded pipeline, the inputs, where to write, the memory peaks."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ditto_demo.bench.measure import MemoryProbe
from ditto_demo.bench.options import BenchOptions
from ditto_demo.pipeline.audio import audio_frame_count
from ditto_demo.pipeline.controls import Controls
from ditto_demo.pipeline.pipeline import Pipeline
from ditto_demo.pipeline.timebase import SAMPLE_RATE

__all__ = ["BenchContext"]


@dataclass
class BenchContext:
    """Everything the parts share. Built once per run, after the networks are loaded (loading is setup)."""

    options: BenchOptions
    pipeline: Pipeline
    controls: Controls
    #: The checkpoint folder the networks were loaded from (the eager baselines load the same weights).
    root: Path
    #: A temporary folder for the run's files, removed afterwards.
    work: Path
    samples: np.ndarray
    wav: Path
    chunks: list[np.ndarray]
    onset_chunk: int
    memory: MemoryProbe
    peaks: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def audio_seconds(self) -> float:
        return len(self.samples) / SAMPLE_RATE

    @property
    def chunk_seconds(self) -> float:
        return self.options.chunk_ms / 1000.0

    @property
    def expected_frames(self) -> int:
        """Video frames the speech covers: what a correct run must produce."""
        return audio_frame_count(len(self.samples))

    def note_peak(self, part: str) -> None:
        """Fold the peak since the last reset into ``part``'s figure (max over its runs)."""
        peak = self.memory.peak()
        previous = self.peaks.get(part)
        if previous is not None:
            for key, value in peak.items():
                if isinstance(value, float):
                    peak[key] = max(value, previous.get(key, value))
        self.peaks[part] = peak
