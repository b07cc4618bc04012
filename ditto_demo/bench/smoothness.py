"""How smooth a streamed motion sequence is, and whether its clip seams show (the bench's ``smoothness`` part).

A diagnostic for the streaming emission choices, not a perceptual metric; nothing in the pipeline uses it.
"""

from __future__ import annotations

import numpy as np

__all__ = ["motion_smoothness"]


def _rms(values: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(values)))) if values.size else float("nan")


def motion_smoothness(motion: np.ndarray, period: int, dims: slice = slice(None)) -> dict[str, float]:
    """How smooth a motion sequence (L, 265) is, and whether its clip seams show.

    * ``accel_rms``: RMS of the second difference m[k+1] − 2·m[k] + m[k−1] over frames and ``dims`` — overall jitter.
    * ``seam_step_rms`` / ``step_rms``: RMS of the frame-to-frame step m[k] − m[k−1] into a seam frame (k a positive
      multiple of ``period``, where a new clip's rows start) and into every other frame.
    * ``seam_ratio``: their quotient; ≈ 1 means seams are indistinguishable from ordinary frames, ≫ 1 a visible jump.

    ``period`` is the streaming clip's valid length V.
    """
    rows = np.asarray(motion, dtype=np.float64)[:, dims]
    if rows.ndim != 2 or len(rows) < 3 or period < 1:
        raise ValueError(f"need (L ≥ 3, D) motion and a period ≥ 1; got {np.shape(motion)} and {period}")
    step = np.diff(rows, axis=0)  # step[k − 1] = m[k] − m[k − 1]
    accel = np.diff(rows, n=2, axis=0)
    index = np.arange(1, len(rows))
    seam = index % period == 0
    seam_rms, other_rms = _rms(step[seam]), _rms(step[~seam])
    return {
        "accel_rms": _rms(accel),
        "seam_step_rms": seam_rms,
        "step_rms": other_rms,
        "seam_ratio": seam_rms / other_rms if other_rms > 0 else float("nan"),
    }
