"""From the decoder's 512×512 render to an output frame: the feathered paste-back into the source frame, and framing.

The renderer only draws the face crop. Paste-back (ditto_spec.md §4.6) warps the render and a feathered mask with
the crop → frame transform and blends them into the original frame, so the seam fades out over the crop's outer
5 %. The blend is ``mask·render + (1 − mask)·frame``, clamped and **truncated** to uint8, as the reference's C
blend does (rounding would brighten every pasted pixel by half a level on average versus the reference).

Speed: the warps only cover the bounding box of the crop's footprint in the frame (everything outside it keeps
the frame's pixels, where the mask is exactly 0). OpenCV's ``warpAffine`` derives its sampling positions from
the matrix in float32, so shifting the matrix to a sub-rectangle moves them by a few ulps and changes results;
instead the sampling positions are computed here for the *absolute* frame pixel coordinates (float64, rounded to
float32) and sampled with ``cv2.remap`` (bilinear, border 0), which is pointwise — the sub-rectangle result is
bit-identical to warping the whole frame with the same maps. It differs from ``cv2.warpAffine`` on the whole
frame by a few hundredths of a grey level before truncation, so at most 1 level on well under 1 % of the pixels
after it (OpenCV 4's fixed-point warp, which the reference ran on, differs from OpenCV 5's by as much).
:class:`PasteBack` also keeps the maps and the warped mask of the last transform: for a still image the transform
never changes, so only the render is warped per frame.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

__all__ = [
    "CROP_SIZE",
    "MASK_RATIO",
    "OutputLayout",
    "PasteBack",
    "crop_footprint",
    "decoder_output_to_image",
    "pad_to_even",
    "paste_mask",
    "pasted_output",
    "render_to_uint8",
    "side_by_side",
]

logger = logging.getLogger(__name__)

#: Side of the rendered crop and of the mask template.
CROP_SIZE = 512
#: Fraction of the crop side that the mask keeps fully opaque (centred square).
MASK_RATIO = 0.9

#: Same names as ``controls.Framing``: the pasted frame, the bare 512 crop, or source | result.
OutputLayout = Literal["full", "crop", "side_by_side"]


def paste_mask(size: int = CROP_SIZE, ratio: float = MASK_RATIO) -> np.ndarray:
    """The feathered mask template, (size, size) float32 in [0, 1].

    A centred square of side ``int(size·ratio)`` is 1. Each border band ramps linearly from 0 at the crop edge to
    1 at the square (``linspace(0, 1, band)``, so the band's innermost pixel is already 1). Each corner block
    falls off radially from the square's corner: 1 − min(1, √(u² + v²)), u and v the same ramps measured from
    the inner corner, so it reaches 0 on the crop's outer edges.
    """
    inner = int(size * ratio)
    lead = (size - inner) // 2
    trail = size - lead - inner
    # Along one axis: the linear ramp (0 at the crop edge, 1 at the square), and the distance from the square in
    # band units (1 at the crop edge, 0 inside) used by the corners.
    ramp = np.ones(size, dtype=np.float64)
    ramp[:lead] = np.linspace(0, 1, lead)
    ramp[size - trail :] = np.linspace(1, 0, trail)
    distance = np.zeros(size, dtype=np.float64)
    distance[:lead] = np.linspace(1, 0, lead)
    distance[size - trail :] = np.linspace(0, 1, trail)
    band = np.zeros(size, dtype=bool)
    band[:lead] = True
    band[size - trail :] = True

    mask = np.ones((size, size), dtype=np.float32)
    rows, cols = band[:, None], band[None, :]
    mask = np.where(rows & ~cols, ramp[:, None].astype(np.float32), mask)
    mask = np.where(cols & ~rows, ramp[None, :].astype(np.float32), mask)
    radius = np.sqrt(distance[:, None] ** 2 + distance[None, :] ** 2).astype(np.float32)
    corner = np.float32(1) - np.clip(radius, 0, 1)
    return np.where(rows & cols, corner, mask).astype(np.float32)


def decoder_output_to_image(output: np.ndarray) -> np.ndarray:
    """Decoder output (1, 3, H, W) in [0, 1] → (H, W, 3) float32 in [0, 255] (clipped first, as the reference)."""
    output = np.asarray(output)
    if output.ndim != 4 or output.shape[:2] != (1, 3):
        raise ValueError(f"expected a decoder output of shape (1, 3, H, W), got {output.shape}")
    image = np.transpose(output[0], (1, 2, 0)).clip(0, 1) * np.float32(255)
    return np.ascontiguousarray(image, dtype=np.float32)


def render_to_uint8(render: np.ndarray) -> np.ndarray:
    """A float render in [0, 255] as uint8, clamped and truncated like the paste-back blend."""
    return np.clip(render, 0, 255).astype(np.uint8)


def crop_footprint(
    crop_to_image: np.ndarray, frame_size: tuple[int, int], crop_size: int = CROP_SIZE
) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1), the frame pixels a bilinear warp of the crop can touch, clipped to the frame (W, H).

    A frame pixel gets a non-zero sample only if its crop position lies within (−1, crop_size) on both axes; the
    box of those positions' images, widened by a pixel of margin for rounding, is returned (empty: x0 == x1).
    """
    width, height = frame_size
    m = np.asarray(crop_to_image, dtype=np.float64)[:2]
    corners = np.array([[-1, -1], [crop_size, -1], [-1, crop_size], [crop_size, crop_size]], dtype=np.float64)
    mapped = corners @ m[:, :2].T + m[:, 2]
    x0 = int(np.clip(np.floor(mapped[:, 0].min()) - 1, 0, width))
    y0 = int(np.clip(np.floor(mapped[:, 1].min()) - 1, 0, height))
    x1 = int(np.clip(np.ceil(mapped[:, 0].max()) + 2, x0, width))
    y1 = int(np.clip(np.ceil(mapped[:, 1].max()) + 2, y0, height))
    return x0, y0, x1, y1


def _sampling_maps(crop_to_image: np.ndarray, box: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Crop positions (map_x, map_y) float32 of the frame pixels in ``box``, from absolute pixel coordinates.

    Each entry depends only on its own (x, y), never on the box, so any box gives the same values as the whole frame.
    """
    x0, y0, x1, y1 = box
    inverse = np.linalg.inv(np.asarray(crop_to_image, dtype=np.float64))[:2]
    xs = np.arange(x0, x1, dtype=np.float64)[None, :]
    ys = np.arange(y0, y1, dtype=np.float64)[:, None]
    map_x = (inverse[0, 0] * xs + (inverse[0, 1] * ys + inverse[0, 2])).astype(np.float32)
    map_y = (inverse[1, 0] * xs + (inverse[1, 1] * ys + inverse[1, 2])).astype(np.float32)
    return map_x, map_y


def _sample(image: np.ndarray, map_x: np.ndarray, map_y: np.ndarray) -> np.ndarray:
    return cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


@dataclass(frozen=True)
class _Placement:
    """What stays the same while the crop transform does: the box, its sampling maps, the warped mask."""

    key: bytes
    box: tuple[int, int, int, int]
    map_x: np.ndarray
    map_y: np.ndarray
    alpha: np.ndarray  # (h, w, 3) float32, the warped mask clipped to [0, 1] (3 channels: no broadcasting per frame)
    keep: np.ndarray  # 1 − alpha


class PasteBack:
    """Paste renders into frames; reuses the maps and warped mask while ``crop_to_image`` does not change.

    Holds the last placement only (one per source frame transform), so it suits one stream of frames; use one
    instance per worker thread.
    """

    def __init__(self, mask: np.ndarray | None = None) -> None:
        template = paste_mask() if mask is None else np.asarray(mask, dtype=np.float32)
        if template.ndim == 3:
            template = template[..., 0]
        if template.ndim != 2 or template.shape[0] != template.shape[1]:
            raise ValueError(f"the mask must be a square (S, S) or (S, S, C) array, got {np.shape(mask)}")
        self.mask = np.ascontiguousarray(template)
        self._placement: _Placement | None = None

    def _place(self, crop_to_image: np.ndarray, frame_shape: tuple[int, ...]) -> _Placement:
        matrix = np.ascontiguousarray(crop_to_image, dtype=np.float64)
        key = matrix.tobytes() + np.asarray(frame_shape[:2], dtype=np.int64).tobytes()
        if self._placement is not None and self._placement.key == key:
            return self._placement
        height, width = frame_shape[:2]
        box = crop_footprint(matrix, (width, height), self.mask.shape[0])
        map_x, map_y = _sampling_maps(matrix, box)
        if map_x.size:
            alpha = np.clip(_sample(self.mask, map_x, map_y), 0, 1)
        else:
            alpha = np.zeros(map_x.shape, dtype=np.float32)
        alpha = np.ascontiguousarray(np.repeat(alpha[..., None], 3, axis=2))
        self._placement = _Placement(key, box, map_x, map_y, alpha, np.float32(1) - alpha)
        return self._placement

    def __call__(self, render: np.ndarray, frame: np.ndarray, crop_to_image: np.ndarray) -> np.ndarray:
        """The frame (H, W, 3) uint8 with ``render`` (S, S, 3) float in [0, 255] pasted in; a new array."""
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f"expected an (H, W, 3) uint8 frame, got {frame.shape} {frame.dtype}")
        size = self.mask.shape[0]
        if render.shape != (size, size, 3):
            raise ValueError(f"expected a ({size}, {size}, 3) render, got {render.shape}")
        placement = self._place(crop_to_image, frame.shape)
        x0, y0, x1, y1 = placement.box
        result = frame.copy()
        if x1 <= x0 or y1 <= y0:
            return result
        blended = _sample(np.ascontiguousarray(render, dtype=np.float32), placement.map_x, placement.map_y)
        np.multiply(placement.alpha, blended, out=blended)
        background = frame[y0:y1, x0:x1].astype(np.float32)
        np.multiply(placement.keep, background, out=background)
        blended += background  # float32 mask·render + (1 − mask)·frame, the reference's order of operations
        np.clip(blended, 0, 255, out=blended)
        result[y0:y1, x0:x1] = blended.astype(np.uint8)  # truncation, as the reference's C cast
        return result

    def prepare(self, decoder_output: np.ndarray) -> np.ndarray:
        """The decoder's (1, 3, S, S) output (an array or a CPU tensor) as the host image :meth:`__call__` takes.

        :class:`~ditto_demo.pipeline.paste_tensor.TensorPasteBack` has the same method, so the renderer hands any
        paste-back the decoder output without asking which kind it holds.
        """
        return decoder_output_to_image(np.asarray(decoder_output))

    def crop(self, render: np.ndarray) -> np.ndarray:
        """The bare crop for the "crop" framing, (S, S, 3) uint8: so callers treat every paste-back alike."""
        return render_to_uint8(render)


def pad_to_even(frame: np.ndarray) -> np.ndarray:
    """The frame with its last row/column repeated where needed so both sides are even (yuv420p needs it)."""
    height, width = frame.shape[:2]
    pad_y, pad_x = height % 2, width % 2
    if not (pad_y or pad_x):
        return frame
    return np.pad(frame, ((0, pad_y), (0, pad_x), (0, 0)), mode="edge")


def side_by_side(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """``left`` and ``right`` (uint8 RGB) next to each other; ``right`` is resized to ``left``'s height; even sides."""
    height = left.shape[0]
    if right.shape[0] != height:
        width = max(1, round(right.shape[1] * height / right.shape[0]))
        shrink = right.shape[0] > height
        right = cv2.resize(right, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return pad_to_even(np.concatenate([left, right], axis=1))


def pasted_output(layout: OutputLayout, pasted: np.ndarray, source_frame: np.ndarray) -> np.ndarray:
    """The frame to write for a layout built from the pasted frame ("full", "side_by_side"); needs no render, so a
    caller whose render lives on a device does not have to bring it to the host."""
    if layout == "full":
        return pasted
    if layout == "side_by_side":
        return side_by_side(source_frame, pasted)
    raise ValueError(f"unknown output layout {layout!r}; use full, crop or side_by_side")
