"""Face-aligned square crops from landmarks: the geometry of LivePortrait's ``crop_image`` (ditto_spec.md §4.2).

Registration cuts two crops per frame: a 224 px one for the 203-point landmark net, anchored on the previous
landmarks, and the 512 px avatar crop every later stage works in. Both come from the same recipe:

1. two anchor points — the centre between the eyes and the centre of the mouth — fix the face's vertical axis
   ``u_y`` (eyes → mouth) and its horizontal axis ``u_x`` (``u_y`` turned by −90°);
2. the landmarks, expressed in that rotated frame, give a bounding box whose longer side, times ``scale``, is the
   side of the square crop and whose centre is the crop centre;
3. the centre is shifted by ``vy_ratio · side`` along ``u_y`` (negative: up, more forehead) and by
   ``vx_ratio · side`` along ``u_x``;
4. a similarity transform maps that rotated square onto a ``dsize`` × ``dsize`` image.

Deliberate deviation: the reference never passes ``vx_ratio`` on to the transform (a bug shared with
LivePortrait, ditto_spec.md Appendix A.1), so its horizontal offset is always 0. We apply it. The default of 0
gives the reference's crop exactly; only a non-zero ``crop_vx_ratio`` behaves differently (it now does what the
option says).

The reference computes in float32; we compute in float64 (differences are far below a pixel). Everything here is a
pure function of its arguments.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

__all__ = [
    "Crop",
    "CropRect",
    "anchor_points",
    "crop_image",
    "crop_matrix",
    "crop_rect",
    "crop_transform",
    "transform_points",
    "warp_crop",
]

#: Eye corner/lid points whose mean is each eye's centre, and the two lip points whose mean is the mouth centre.
_ANCHORS: dict[int, tuple[tuple[int, ...], tuple[int, ...], tuple[int, int]]] = {
    203: ((0, 6, 12, 18), (24, 30, 36, 42), (48, 66)),
    106: ((33, 35, 40, 39), (87, 89, 94, 93), (52, 61)),
}
#: Below this eye-to-mouth distance (pixels) the direction is meaningless and the crop is left upright.
_MIN_AXIS_LENGTH = 1e-3


@dataclass(frozen=True)
class CropRect:
    """A rotated square in image pixels: centre (x, y), side length, and rotation angle in radians."""

    centre: tuple[float, float]
    side: float
    angle: float


@dataclass(frozen=True)
class Crop:
    """A cut-out and the two affine maps between it and the image it came from (both 3×3, float64)."""

    image: np.ndarray
    image_to_crop: np.ndarray
    crop_to_image: np.ndarray


def anchor_points(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(eye centre, mouth centre) of a 203- or 106-point landmark set, as float64 (2,) arrays."""
    points = np.asarray(points, dtype=np.float64)
    try:
        left, right, lips = _ANCHORS[len(points)]
    except KeyError:
        raise ValueError(f"crop anchors are defined for 203 or 106 landmarks, not {len(points)}") from None
    eyes = (points[list(left)].mean(axis=0) + points[list(right)].mean(axis=0)) / 2
    mouth = (points[lips[0]] + points[lips[1]]) / 2
    return eyes, mouth


def crop_rect(points: np.ndarray, scale: float, vx_ratio: float = 0.0, vy_ratio: float = 0.0) -> CropRect:
    """The rotated square around ``points`` (steps 1–3 of the module docstring)."""
    points = np.asarray(points, dtype=np.float64)[:, :2]
    eyes, mouth = anchor_points(points)
    axis = mouth - eyes
    length = float(np.linalg.norm(axis))
    u_y = axis / length if length > _MIN_AXIS_LENGTH else np.array([0.0, 1.0])
    u_x = np.array([u_y[1], -u_y[0]])
    # Angle of the crop's x axis in image coordinates (y down): positive when the face leans clockwise.
    angle = math.acos(float(np.clip(u_x[0], -1.0, 1.0)))
    if u_x[1] < 0:
        angle = -angle

    centre0 = points.mean(axis=0)
    rotated = (points - centre0) @ np.stack([u_x, u_y]).T
    low, high = rotated.min(axis=0), rotated.max(axis=0)
    box_centre = (low + high) / 2
    side = float(max(high - low)) * scale
    centre = centre0 + u_x * box_centre[0] + u_y * box_centre[1]
    centre = centre + u_x * (vx_ratio * side) + u_y * (vy_ratio * side)
    return CropRect((float(centre[0]), float(centre[1])), side, angle)


def crop_matrix(rect: CropRect, dsize: int, rotate: bool = True) -> np.ndarray:
    """3×3 map from image pixels to crop pixels: ``rect`` becomes the ``dsize`` square, upright if ``rotate``."""
    s = dsize / rect.side
    cx, cy = rect.centre
    half = dsize / 2
    if rotate:
        cos, sin = math.cos(rect.angle), math.sin(rect.angle)
    else:
        cos, sin = 1.0, 0.0
    return np.array(
        [
            [s * cos, s * sin, half - s * (cos * cx + sin * cy)],
            [-s * sin, s * cos, half - s * (-sin * cx + cos * cy)],
            [0.0, 0.0, 1.0],
        ],
        dtype=np.float64,
    )


def crop_transform(
    points: np.ndarray,
    dsize: int,
    scale: float = 1.5,
    vx_ratio: float = 0.0,
    vy_ratio: float = -0.1,
    rotate: bool = True,
) -> np.ndarray:
    """M_o2c (3×3) for the crop of ``points`` — the defaults are those of the landmark203 crop."""
    return crop_matrix(crop_rect(points, scale, vx_ratio, vy_ratio), dsize, rotate)


def warp_crop(image: np.ndarray, image_to_crop: np.ndarray, dsize: int) -> np.ndarray:
    """Resample ``image`` into the ``dsize`` square (bilinear; outside the image is black, as in the reference)."""
    return cv2.warpAffine(
        image,
        np.ascontiguousarray(image_to_crop[:2], dtype=np.float64),
        (dsize, dsize),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )


def crop_image(
    image: np.ndarray,
    points: np.ndarray,
    dsize: int,
    scale: float = 1.5,
    vx_ratio: float = 0.0,
    vy_ratio: float = -0.1,
    rotate: bool = True,
) -> Crop:
    """Cut the face described by ``points`` (203 or 106 landmarks, image pixels) out of ``image``."""
    to_crop = crop_transform(points, dsize, scale, vx_ratio, vy_ratio, rotate)
    return Crop(warp_crop(image, to_crop, dsize), to_crop, np.linalg.inv(to_crop))


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a 2×3 or 3×3 affine map to (N, 2) points (float64 result)."""
    points = np.asarray(points, dtype=np.float64)
    matrix = np.asarray(matrix, dtype=np.float64)
    return points @ matrix[:2, :2].T + matrix[:2, 2]
