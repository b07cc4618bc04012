"""LivePortrait's motion space, as Ditto uses it: pose decoding, keypoint transform, the 265-d motion vector.

A frame's motion is a dict (``MotionDict``) with the motion extractor's outputs: ``scale`` (1, 1), ``pitch`` /
``yaw`` / ``roll`` as 66-bin logits (1, 66) or, after a pose control was applied, as degrees (1, 1), ``t`` (1, 3),
``exp`` (1, 63) and, for source frames, the canonical keypoints ``kp`` (1, 63). LMDM generates the same thing,
minus ``kp``, packed as a 265-d vector (ditto_spec.md §2.6.1). Pure NumPy; no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

__all__ = [
    "MOTION_DIM",
    "MOTION_SLICES",
    "NUM_KP",
    "POSE_BINS",
    "SMOOTHED_DIMS",
    "MotionDict",
    "mirror_index",
    "pack_motion",
    "pose_degrees",
    "rotation_matrix",
    "transform_keypoints",
    "unpack_motion",
]

MotionDict = dict[str, np.ndarray]

NUM_KP = 21
POSE_BINS = 66
MOTION_DIM = 265
#: Where each part lives in the 265-d vector; ``scale`` is stored minus one.
MOTION_SLICES: dict[str, slice] = {
    "scale": slice(0, 1),
    "pitch": slice(1, 67),
    "yaw": slice(67, 133),
    "roll": slice(133, 199),
    "t": slice(199, 202),
    "exp": slice(202, 265),
}
#: Temporal smoothing touches scale, pose and translation only, never the expression.
SMOOTHED_DIMS = slice(0, 202)


def pose_degrees(value: np.ndarray) -> np.ndarray:
    """Degrees from 66-bin logits (softmax expectation: 3·E[bin] − 97.5), or the value itself if already degrees.

    Accepts (..., 66) logits or (..., 1) / (...) degrees; returns (...,) degrees in float64 for the geometry.
    """
    value = np.asarray(value, dtype=np.float64)
    if value.shape[-1] != POSE_BINS:
        return value.reshape(value.shape[:-1] if value.ndim and value.shape[-1] == 1 else value.shape)
    shifted = value - value.max(axis=-1, keepdims=True)
    probs = np.exp(shifted)
    probs /= probs.sum(axis=-1, keepdims=True)
    return (probs * np.arange(POSE_BINS)).sum(axis=-1) * 3.0 - 97.5


def rotation_matrix(pitch: np.ndarray, yaw: np.ndarray, roll: np.ndarray) -> np.ndarray:
    """(..., 3, 3) matrices R = (R_z(roll) · R_y(yaw) · R_x(pitch))ᵀ from degrees, for row-vector keypoints."""
    p, y, r = (np.radians(np.asarray(a, dtype=np.float64)) for a in (pitch, yaw, roll))
    shape = np.broadcast(p, y, r).shape
    p, y, r = (np.broadcast_to(a, shape) for a in (p, y, r))
    one, zero = np.ones(shape), np.zeros(shape)
    rx = np.stack([one, zero, zero, zero, np.cos(p), -np.sin(p), zero, np.sin(p), np.cos(p)], -1)
    ry = np.stack([np.cos(y), zero, np.sin(y), zero, one, zero, -np.sin(y), zero, np.cos(y)], -1)
    rz = np.stack([np.cos(r), -np.sin(r), zero, np.sin(r), np.cos(r), zero, zero, zero, one], -1)
    rx, ry, rz = (m.reshape(*shape, 3, 3) for m in (rx, ry, rz))
    return np.swapaxes(rz @ ry @ rx, -1, -2)


def transform_keypoints(motion: Mapping[str, np.ndarray]) -> np.ndarray:
    """Implicit keypoints in image space (1, 21, 3): x = s·(kp·R + exp) + (tx, ty, 0) — tz is ignored."""
    kp = np.asarray(motion["kp"], dtype=np.float64).reshape(1, NUM_KP, 3)
    exp = np.asarray(motion["exp"], dtype=np.float64).reshape(1, NUM_KP, 3)
    rot = rotation_matrix(pose_degrees(motion["pitch"]), pose_degrees(motion["yaw"]), pose_degrees(motion["roll"]))
    rot = rot.reshape(1, 3, 3)
    scale = np.asarray(motion["scale"], dtype=np.float64).reshape(1, 1, 1)
    t = np.asarray(motion["t"], dtype=np.float64).reshape(1, 1, 3).copy()
    t[..., 2] = 0.0
    return (scale * (kp @ rot + exp) + t).astype(np.float32)


def pack_motion(motion: Mapping[str, np.ndarray]) -> np.ndarray:
    """The 265-d vector of a motion dict whose pose is still in logits (``kp`` is not part of it)."""
    vector = np.empty(MOTION_DIM, dtype=np.float32)
    for key, part in MOTION_SLICES.items():
        value = np.asarray(motion[key], dtype=np.float32).reshape(-1)
        if value.size != part.stop - part.start:
            raise ValueError(f"motion[{key!r}] has {value.size} values, expected {part.stop - part.start}")
        vector[part] = value - 1.0 if key == "scale" else value
    return vector


def unpack_motion(vector: np.ndarray) -> MotionDict:
    """The motion dict of a 265-d vector (shapes as the motion extractor's outputs)."""
    vector = np.asarray(vector, dtype=np.float32).reshape(MOTION_DIM)
    motion = {key: vector[part].reshape(1, -1).copy() for key, part in MOTION_SLICES.items()}
    motion["scale"] = motion["scale"] + 1.0
    return motion


def mirror_index(index: int, count: int) -> int:
    """Ping-pong index into ``count`` frames: 0, 1, …, n−1, n−1, …, 0, 0, 1, … (ends repeated at each turn)."""
    if count <= 0:
        raise ValueError("count must be positive")
    turn, offset = divmod(max(index, 0), count)
    return offset if turn % 2 == 0 else count - 1 - offset
