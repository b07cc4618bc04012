"""Eye features for LMDM's conditioning: openness and iris displacement (ditto_spec.md §4.4).

LMDM was trained with these exact numbers (computed on MediaPipe's 478 landmarks of the 512 avatar crop), so the
formulas, the +1e−8 guards and the interleaved (L_x, R_x, L_y, R_y, L_z, R_z) layout must not change.

"L" / "R" follow MediaPipe's numbering (33/133 and 263/362), i.e. the eye on the image's left and right.

When MediaPipe finds no face in the crop, :func:`eye_features_from_203` gives an approximation from the 203
landmarks registration already has (see its docstring); :data:`DEFAULT_EYE_OPEN` is the last resort.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "DEFAULT_EYE_BALL",
    "DEFAULT_EYE_OPEN",
    "eye_features",
    "eye_features_from_203",
]

_EPS = 1e-8

# MediaPipe indices: outer and inner corner, three (lower, upper) lid pairs, iris centre.
_LEFT_CORNERS = (33, 133)
_LEFT_LIDS = ((145, 159), (144, 160), (153, 158))
_LEFT_IRIS = 468
_RIGHT_CORNERS = (263, 362)
_RIGHT_LIDS = ((374, 386), (373, 387), (380, 385))
_RIGHT_IRIS = 473

# LivePortrait 203-point indices: per eye, the two corners and the mid upper / lower lid points.
_LEFT_203 = ((0, 12), (6, 18))
_RIGHT_203 = ((24, 36), (30, 42))
#: MediaPipe's openness sums three lid gaps (at about ¼, ½ and ¾ of the eye's width); for an elliptic opening
#: that is (1 + 2·√(3/4)) ≈ 2.73 times the middle gap, the only one the 203 set gives.
_THREE_GAPS_PER_MIDDLE_GAP = 1.0 + 2.0 * np.sqrt(0.75)

#: Fallback openness when no landmarks at all are usable: a relaxed, open eye (lid gaps summing to ~0.8 of the
#: eye width, in the range MediaPipe gives for open eyes). An assumption, not a released statistic.
DEFAULT_EYE_OPEN = np.array([[0.8, 0.8]], dtype=np.float32)
#: Fallback iris displacement: looking straight ahead (iris at the eye centre gives exactly zero).
DEFAULT_EYE_BALL = np.zeros((1, 6), dtype=np.float32)


def _norm(v: np.ndarray) -> np.ndarray:
    return np.sqrt((v**2).sum(-1))


def _unit(v: np.ndarray) -> np.ndarray:
    return v / (_norm(v)[..., None] + _EPS)


def _openness(points: np.ndarray, corners: tuple[int, int], lids: tuple[tuple[int, int], ...]) -> np.ndarray:
    width = _norm(points[:, corners[0]] - points[:, corners[1]])
    gaps = sum(_norm(points[:, lower] - points[:, upper]) for lower, upper in lids)
    return gaps / (width + _EPS)


def _iris_move(points: np.ndarray, corners: tuple[int, int], iris: int) -> np.ndarray:
    """Iris offset from the eye centre, with the eye's own inner→outer direction taken out of its direction."""
    outer, inner = points[:, corners[0]], points[:, corners[1]]
    centre = (outer + inner) / 2
    offset = points[:, iris] - centre
    eye_direction = _unit(outer - inner)
    return (_unit(offset) - eye_direction) * _norm(offset)[..., None]


def eye_features(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``eye_open`` (n, 2) and ``eye_ball`` (n, 6) from (n, 478, 3) or (478, 3) normalised MediaPipe landmarks.

    Computed in float64 and returned as float32.
    """
    points = np.asarray(landmarks, dtype=np.float64)
    if points.ndim == 2:
        points = points[None]
    if points.shape[1:] != (478, 3):
        raise ValueError(f"eye features need (n, 478, 3) landmarks, got {points.shape}")
    eye_open = np.stack(
        [_openness(points, _LEFT_CORNERS, _LEFT_LIDS), _openness(points, _RIGHT_CORNERS, _RIGHT_LIDS)], -1
    )
    moves = np.stack(
        [_iris_move(points, _LEFT_CORNERS, _LEFT_IRIS), _iris_move(points, _RIGHT_CORNERS, _RIGHT_IRIS)], -1
    )
    return eye_open.astype(np.float32), moves.reshape(len(points), 6).astype(np.float32)


def eye_features_from_203(points203: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """An approximation of :func:`eye_features` from LivePortrait's 203 landmarks (any pixel frame).

    Used only when MediaPipe finds no face in the crop. Openness is scale-free, so image pixels do as well as
    crop units: the middle lid gap over the corner distance (LivePortrait's own eye-close ratio), times the
    three-gap factor above. The 203 set has no iris, so the gaze is taken as straight ahead (zeros). Which of the
    203 set's eyes is MediaPipe's "L" is an assumption (points 0–23 as L); openness is nearly symmetric anyway.
    """
    points = np.asarray(points203, dtype=np.float64).reshape(-1, 2)
    if len(points) != 203:
        raise ValueError(f"expected 203 landmarks, got {len(points)}")
    ratios = []
    for (corner_a, corner_b), (upper, lower) in (_LEFT_203, _RIGHT_203):
        width = _norm(points[corner_a] - points[corner_b])
        ratios.append(_norm(points[upper] - points[lower]) / (width + _EPS) * _THREE_GAPS_PER_MIDDLE_GAP)
    eye_open = np.array([ratios], dtype=np.float32)
    if not np.all(np.isfinite(eye_open)):
        eye_open = DEFAULT_EYE_OPEN.copy()
    return eye_open, DEFAULT_EYE_BALL.copy()
