"""Finding the face: SCRFD detection, 106-point landmarks, 203-point landmarks (ditto_spec.md §2.8–§2.10, §4.2).

The cascade runs once per source frame. The first frame (or the image) is searched with the detector; the
largest face's box seeds the 106-point landmark net, whose points anchor a 224 px crop for LivePortrait's 203-point
net. Later video frames skip detection and anchor that crop on the previous frame's 203 points (tracking), as the
reference does.

Input quirk kept on purpose (ditto_spec.md Appendix A.11): Ditto hands RGB frames to code written for BGR frames,
which swaps the channels while building the input blob, so the detector and the 106-point net actually see BGR.
We reproduce that so crops match the reference; the 203-point net gets RGB.

Networks are passed in (anything callable with the binding names); nothing here loads a model.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import cv2
import numpy as np

from ditto_demo.pipeline.crop import Crop, crop_image, transform_points

__all__ = [
    "DETECTOR_SIZE",
    "LANDMARK106_SIZE",
    "LANDMARK203_SIZE",
    "Detection",
    "NetworkFn",
    "anchor_centres",
    "decode_detections",
    "detect_faces",
    "detector_blob",
    "landmark106",
    "landmark106_matrix",
    "landmark203",
    "letterbox",
    "nms",
]

log = logging.getLogger(__name__)

#: A network as this module uses it: keyword arrays in (binding names), ``{output name: array}`` out.
NetworkFn = Callable[..., Mapping[str, np.ndarray]]

DETECTOR_SIZE = 512
DETECTOR_STRIDES = (8, 16, 32)
DETECTOR_ANCHORS = 2
DETECTOR_MEAN = 127.5
DETECTOR_STD = 128.0
DETECTION_THRESHOLD = 0.5
NMS_THRESHOLD = 0.4

LANDMARK106_SIZE = 192
#: The 106-point crop is a square of 1.5 × the detection box's longer side.
LANDMARK106_BOX_SCALE = 1.5

LANDMARK203_SIZE = 224
LANDMARK203_SCALE = 1.5
LANDMARK203_VY = -0.1


@dataclass(frozen=True)
class Detection:
    """One face: box (x1, y1, x2, y2) and 5 keypoints (eyes, nose, mouth corners) in image pixels, and a score."""

    box: tuple[float, float, float, float]
    score: float
    keypoints: np.ndarray

    @property
    def area(self) -> float:
        x1, y1, x2, y2 = self.box
        return (x2 - x1) * (y2 - y1)


def letterbox(image: np.ndarray, size: int = DETECTOR_SIZE) -> tuple[np.ndarray, float]:
    """Fit ``image`` into a black ``size`` square at the top-left corner, keeping its aspect ratio.

    Returns the canvas and ``det_scale`` (canvas pixels per image pixel), which maps detections back. The new
    side lengths are truncated to integers, and ``det_scale`` is computed from the new height, as the reference
    does (so it can differ from the width ratio by under a pixel's worth).
    """
    height, width = image.shape[:2]
    if height / width > 1.0:
        new_height = size
        new_width = int(new_height / (height / width))
    else:
        new_width = size
        new_height = int(new_width * (height / width))
    new_width, new_height = max(new_width, 1), max(new_height, 1)
    det_scale = new_height / height
    canvas = np.zeros((size, size, 3), dtype=np.uint8)
    canvas[:new_height, :new_width] = cv2.resize(image, (new_width, new_height))
    return canvas, det_scale


def detector_blob(canvas: np.ndarray) -> np.ndarray:
    """(1, 3, H, W) float32 input for SCRFD: channels reversed, (x − 127.5) / 128."""
    swapped = canvas[..., ::-1].astype(np.float32)
    return ((swapped - DETECTOR_MEAN) * (1.0 / DETECTOR_STD)).transpose(2, 0, 1)[None].copy()


def anchor_centres(stride: int, size: int = DETECTOR_SIZE, num_anchors: int = DETECTOR_ANCHORS) -> np.ndarray:
    """(N, 2) anchor centres (x, y) in canvas pixels of one stride's grid, row-major, each repeated per anchor."""
    side = size // stride
    ys, xs = np.mgrid[:side, :side]
    centres = np.stack([xs, ys], axis=-1).reshape(-1, 2).astype(np.float32) * stride
    return np.repeat(centres, num_anchors, axis=0)


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float = NMS_THRESHOLD) -> list[int]:
    """Greedy non-maximum suppression; indices kept, best first.

    Box sizes use insightface's inclusive-pixel convention (width = x2 − x1 + 1), which changes which boxes
    overlap "enough" near the threshold, so we keep it for identical detections.
    """
    x1, y1, x2, y2 = (boxes[:, i].astype(np.float64) for i in range(4))
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(int(best))
        w = np.maximum(0.0, np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]) + 1)
        inter = w * h
        overlap = inter / (areas[best] + areas[rest] - inter)
        order = rest[overlap <= threshold]
    return keep


def decode_detections(
    outputs: Mapping[str, np.ndarray],
    det_scale: float = 1.0,
    threshold: float = DETECTION_THRESHOLD,
    nms_threshold: float = NMS_THRESHOLD,
    size: int = DETECTOR_SIZE,
) -> list[Detection]:
    """Faces from the raw SCRFD outputs (``scores{k}``, ``boxes{k}``, ``kps{k}`` for strides 8/16/32).

    Distances are in stride units from each anchor centre; boxes are (left, top, right, bottom) distances and
    keypoints (dx, dy) offsets. Results are in image pixels (canvas / ``det_scale``), NMS applied, sorted by
    score, best first.
    """
    scores_all, boxes_all, kps_all = [], [], []
    for level, stride in enumerate(DETECTOR_STRIDES, start=1):
        scores = np.asarray(outputs[f"scores{level}"], dtype=np.float32).reshape(-1)
        distances = np.asarray(outputs[f"boxes{level}"], dtype=np.float32).reshape(-1, 4) * stride
        offsets = np.asarray(outputs[f"kps{level}"], dtype=np.float32).reshape(-1, 5, 2) * stride
        centres = anchor_centres(stride, size)
        if len(centres) != len(scores):
            raise ValueError(f"detector stride {stride}: {len(scores)} scores for {len(centres)} anchors")
        keep = np.flatnonzero(scores >= threshold)
        c = centres[keep]
        d = distances[keep]
        scores_all.append(scores[keep])
        boxes_all.append(np.stack([c[:, 0] - d[:, 0], c[:, 1] - d[:, 1], c[:, 0] + d[:, 2], c[:, 1] + d[:, 3]], -1))
        kps_all.append(c[:, None, :] + offsets[keep])
    scores = np.concatenate(scores_all)
    boxes = np.concatenate(boxes_all) / det_scale
    kps = np.concatenate(kps_all) / det_scale
    order = np.argsort(-scores, kind="stable")
    scores, boxes, kps = scores[order], boxes[order], kps[order]
    detections = []
    for i in nms(boxes, scores, nms_threshold):
        x1, y1, x2, y2 = (float(v) for v in boxes[i])
        detections.append(Detection((x1, y1, x2, y2), float(scores[i]), kps[i].astype(np.float64)))
    return detections


def detect_faces(image: np.ndarray, detector: NetworkFn) -> list[Detection]:
    """Every face SCRFD finds in an RGB uint8 image, largest box first (the reference picks by area)."""
    canvas, det_scale = letterbox(image)
    detections = decode_detections(detector(image=detector_blob(canvas)), det_scale)
    return sorted(detections, key=lambda d: d.area, reverse=True)


def landmark106_matrix(box: tuple[float, float, float, float], size: int = LANDMARK106_SIZE) -> np.ndarray:
    """3×3 map image → 106-net input: the box centre to the middle, 1.5 × the longer box side to ``size``."""
    x1, y1, x2, y2 = box
    scale = size / (max(x2 - x1, y2 - y1) * LANDMARK106_BOX_SCALE)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    return np.array(
        [[scale, 0.0, size / 2 - cx * scale], [0.0, scale, size / 2 - cy * scale], [0.0, 0.0, 1.0]], np.float64
    )


def landmark106(image: np.ndarray, box: tuple[float, float, float, float], network: NetworkFn) -> np.ndarray:
    """(106, 2) landmarks in image pixels for the face in ``box``.

    The net takes raw 0–255 pixels (channels swapped, see the module docstring) and answers in [−1, 1] crop
    units: (p + 1) · size/2 gives crop pixels, which the inverse crop map takes back to the image.
    """
    to_crop = landmark106_matrix(box)
    patch = cv2.warpAffine(image, to_crop[:2], (LANDMARK106_SIZE, LANDMARK106_SIZE), borderValue=0.0)
    blob = patch[..., ::-1].astype(np.float32).transpose(2, 0, 1)[None].copy()
    raw = np.asarray(network(data=blob)["fc1"], dtype=np.float64).reshape(-1, 2)[-106:]
    in_crop = (raw + 1.0) * (LANDMARK106_SIZE // 2)
    return transform_points(in_crop, np.linalg.inv(to_crop))


def landmark203(image: np.ndarray, anchor: np.ndarray, network: NetworkFn) -> tuple[np.ndarray, Crop]:
    """(203, 2) landmarks in image pixels, from the 224 crop anchored on ``anchor`` (106 or 203 points).

    Also returns that crop (for debugging and tests). The net takes RGB in [0, 1] and answers in [0, 1] of the
    crop.
    """
    crop = crop_image(image, anchor, LANDMARK203_SIZE, scale=LANDMARK203_SCALE, vy_ratio=LANDMARK203_VY, rotate=True)
    blob = (crop.image.astype(np.float32) / 255.0).transpose(2, 0, 1)[None].copy()
    raw = np.asarray(network(input=blob)["landmarks"], dtype=np.float64).reshape(-1, 2)
    return transform_points(raw * LANDMARK203_SIZE, crop.crop_to_image), crop
