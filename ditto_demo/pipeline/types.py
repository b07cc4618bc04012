"""Data passed between pipeline stages. Plain frozen dataclasses of NumPy arrays: no backend, no device."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ditto_demo.pipeline.motion_space import MotionDict, mirror_index

__all__ = ["Source", "SourceFrame"]


@dataclass(frozen=True)
class SourceFrame:
    """One registered frame of the portrait (an image has one, a video one per frame)."""

    #: (H, W, 3) uint8 RGB after the ``max_size`` resize: the frame results are pasted back into.
    image: np.ndarray
    #: (3, 3) float64: maps pixel coordinates of the 512×512 crop to ``image`` coordinates (M_c2o).
    crop_to_image: np.ndarray
    #: Motion extractor outputs for the crop (``scale``, ``pitch``/``yaw``/``roll`` logits, ``t``, ``exp``,
    #: ``kp``); temporally smoothed for videos.
    motion: MotionDict
    #: Appearance features of the crop, (1, C, D, 64, 64) float32 (C = 32, D = 16 for the released networks).
    appearance: np.ndarray
    #: Eye openness (left, right), (1, 2), and iris displacement (L_x, R_x, L_y, R_y, L_z, R_z), (1, 6).
    eye_open: np.ndarray
    eye_ball: np.ndarray


@dataclass(frozen=True)
class Source:
    """A registered portrait: everything the later stages need about it, computed once and cached."""

    frames: tuple[SourceFrame, ...]
    is_image: bool
    #: "sc": the canonical keypoints ``kp`` of frame 0 (before smoothing), flattened (63,).
    canonical_kp: np.ndarray
    #: The face used, as (x1, y1, x2, y2) in ``image`` pixels of frame 0, and how many faces were detected.
    face_box: tuple[float, float, float, float]
    faces_found: int
    #: Frames per second of a video source (``None`` for an image).
    fps: float | None = None

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the frames results are pasted into."""
        height, width = self.frames[0].image.shape[:2]
        return width, height

    def frame(self, index: int) -> SourceFrame:
        """The source frame for output frame ``index`` (videos loop back and forth; an image is frame 0)."""
        return self.frames[mirror_index(index, len(self.frames))]
