"""``landmark478``: MediaPipe's 478 face landmarks (with irises) on the 512 avatar crop, for the eye features.

Two implementations, as in the release (ditto_spec.md §2.11):

* BlazeFace + FaceMesh (the ONNX/TensorRT sets): detect the face at 128×128, take the first detection after
  weighted NMS, cut a square ROI (long side × 1.5) rotated by the eye line, run FaceMesh on it at 256×256 and map
  the points back. The two networks run on whatever backend ``load_network`` gives them.
* MediaPipe Tasks ``face_landmarker.task`` (the PyTorch set), when the ``mediapipe`` package is installed.

Input binding ``image``: an RGB uint8 (H, W, 3) crop. Output ``landmarks``: (1, 478, 3), x and y normalised by
the crop's width and height, z in width units. The two paths differ slightly, as in the reference.
"""

from __future__ import annotations

import logging
import math
from functools import cache
from pathlib import Path

import cv2
import numpy as np

from ditto_demo.engine.backends.base import Network
from ditto_demo.engine.specs import Binding, NetworkSpec, get_spec
from ditto_demo.errors import BackendUnavailableError, CheckpointError, InputError

__all__ = ["LANDMARK478_SPEC", "blazeface_anchors", "load_landmark478"]

log = logging.getLogger(__name__)

LANDMARK478_SPEC = NetworkSpec(
    name="landmark478",
    inputs=(Binding("image", ("height", "width", 3), "uint8"),),
    outputs=(Binding("landmarks", (1, 478, 3)),),
    precision="fp16",
    dynamic={"height": (32, 512, 8192), "width": (32, 512, 8192)},
)
TASK_FILE = "ditto_pytorch/aux_models/face_landmarker.task"

_BLAZE_SIZE = 128
_MESH_SIZE = 256
_SCORE_THRESHOLD = 0.5
_NMS_IOU = 0.3
_ROI_SCALE = 1.5


@cache
def blazeface_anchors() -> np.ndarray:
    """The 896 (x, y) anchor centres of MediaPipe's short-range BlazeFace, in [0, 1].

    SSD layout with strides (8, 16, 16, 16): layers that share a stride share one grid, and every layer adds two
    anchors per cell, so the grid is 16×16×2 (stride 8) + 8×8×6 (stride 16). Sizes are fixed to 1 (the model
    regresses sizes directly), so only the centres matter.
    """
    strides = (8, 16, 16, 16)
    centres: list[tuple[float, float]] = []
    layer = 0
    while layer < len(strides):
        stride = strides[layer]
        same = sum(1 for s in strides[layer:] if s == stride)
        per_cell = 2 * same
        side = math.ceil(_BLAZE_SIZE / stride)
        for y in range(side):
            for x in range(side):
                centres.extend([((x + 0.5) / side, (y + 0.5) / side)] * per_cell)
        layer += same
    return np.asarray(centres, dtype=np.float32)


def _decode_blazeface(regressors: np.ndarray, logits: np.ndarray) -> list[tuple[np.ndarray, float]]:
    """Detections as (16 values: box x1 y1 x2 y2 in [0,1] units of 128, then 6 keypoints xy in [0,1]; score)."""
    anchors = blazeface_anchors()
    raw = regressors.reshape(-1, 16) / _BLAZE_SIZE
    scores = 1.0 / (1.0 + np.exp(-np.clip(logits.reshape(-1), -50.0, 100.0)))
    keep = np.flatnonzero(scores >= _SCORE_THRESHOLD)
    boxes = np.zeros((len(keep), 16), np.float32)
    centre = raw[keep, 0:2] + anchors[keep]
    half = raw[keep, 2:4] / 2
    boxes[:, 0:2] = centre - half
    boxes[:, 2:4] = centre + half
    boxes[:, 4:16] = (raw[keep, 4:16].reshape(-1, 6, 2) + anchors[keep, None, :]).reshape(-1, 12)
    return _weighted_nms(boxes, scores[keep])


def _iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    x1 = np.maximum(box[0], others[:, 0])
    y1 = np.maximum(box[1], others[:, 1])
    x2 = np.minimum(box[2], others[:, 2])
    y2 = np.minimum(box[3], others[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-12)


def _weighted_nms(boxes: np.ndarray, scores: np.ndarray) -> list[tuple[np.ndarray, float]]:
    """MediaPipe's blending NMS: each group (IoU > 0.3 with its best) becomes the score-weighted mean."""
    order = np.argsort(-scores, kind="stable")
    boxes, scores = boxes[order], scores[order]
    result = []
    while len(boxes):
        group = _iou(boxes[0], boxes) > _NMS_IOU
        group[0] = True
        weights = scores[group]
        result.append(((boxes[group] * weights[:, None]).sum(0) / weights.sum(), float(weights.mean())))
        boxes, scores = boxes[~group], scores[~group]
    return result


def _roi(detection: np.ndarray, width: int, height: int) -> tuple[float, float, float, float]:
    """(centre x, centre y, side, angle) of the FaceMesh input square in crop pixels.

    The reference scales x by H/128 and y by W/128 (swapped); it makes no difference on the square crops Ditto
    uses, and we scale each axis by its own size.
    """
    x1, y1, x2, y2 = detection[0] * width, detection[1] * height, detection[2] * width, detection[3] * height
    side = max(x2 - x1, y2 - y1) * _ROI_SCALE
    (ex0, ey0), (ex1, ey1) = detection[4:6] * (width, height), detection[6:8] * (width, height)
    angle = -math.atan2(ey0 - ey1, ex1 - ex0)
    angle = (angle + math.pi) % (2 * math.pi) - math.pi  # wrap to [-pi, pi)
    return (x1 + x2) / 2, (y1 + y2) / 2, side, angle


class BlazeFaceMesh(Network):
    """BlazeFace + FaceMesh as one network (pre/post-processing in numpy, the two nets on any backend)."""

    def __init__(self, detector: Network, mesh: Network) -> None:
        super().__init__(LANDMARK478_SPEC, detector.device)
        self.detector, self.mesh = detector, mesh
        self.backend = detector.backend

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        image = feeds["image"]
        height, width = image.shape[:2]
        small = cv2.resize(image, (_BLAZE_SIZE, _BLAZE_SIZE)).astype(np.float32) / 127.5 - 1.0
        found = self.detector(input=small[None])
        detections = _decode_blazeface(found["regressors"], found["classificators"])
        if not detections:
            raise InputError("No face was found in the crop for the eye landmarks; use a clearer, frontal portrait.")
        cx, cy, side, angle = _roi(detections[0][0], width, height)
        cos, sin = math.cos(angle), math.sin(angle)
        # Affine map from the 256×256 FaceMesh input to the rotated ROI square in the crop.
        scale = side / _MESH_SIZE
        to_crop = np.array(
            [
                [scale * cos, -scale * sin, cx - (cos - sin) * side / 2],
                [scale * sin, scale * cos, cy - (sin + cos) * side / 2],
            ],
            dtype=np.float64,
        )
        patch = cv2.warpAffine(
            image, to_crop, (_MESH_SIZE, _MESH_SIZE), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
        ).astype(np.float32)
        points = self.mesh(input=(patch / 255.0)[None])["Identity"].reshape(478, 3).astype(np.float64)
        local = points / _MESH_SIZE
        x, y = local[:, 0] - 0.5, local[:, 1] - 0.5
        out = np.empty((478, 3), np.float64)
        out[:, 0] = (x * cos - y * sin) * side + cx
        out[:, 1] = (x * sin + y * cos) * side + cy
        out[:, 2] = local[:, 2] * side
        out /= (width, height, width)
        return {"landmarks": out.astype(np.float32)[None]}


class MediaPipeTaskLandmarker(Network):
    """MediaPipe Tasks ``FaceLandmarker`` (CPU), the PyTorch set's path."""

    backend = "mediapipe"

    def __init__(self, task_path: Path) -> None:
        super().__init__(LANDMARK478_SPEC, "cpu")
        try:
            import mediapipe as mp
            from mediapipe.tasks.python import BaseOptions, vision
        except ImportError as exc:
            raise BackendUnavailableError(
                "The face_landmarker.task path needs the mediapipe package (`pip install mediapipe`), or put "
                "ditto_onnx/blaze_face.onnx and ditto_onnx/face_mesh.onnx in the checkpoint folder."
            ) from exc
        self._mp = mp
        options = vision.FaceLandmarkerOptions(
            base_options=BaseOptions(model_asset_path=str(task_path)), num_faces=1
        )
        self._landmarker = vision.FaceLandmarker.create_from_options(options)

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        image = self._mp.Image(image_format=self._mp.ImageFormat.SRGB, data=np.ascontiguousarray(feeds["image"]))
        result = self._landmarker.detect(image)
        if not result.face_landmarks:
            raise InputError("No face was found in the crop for the eye landmarks; use a clearer, frontal portrait.")
        points = np.array([(p.x, p.y, p.z) for p in result.face_landmarks[0]], dtype=np.float32)
        return {"landmarks": points[None]}


def load_landmark478(root: Path, backend: str, device: str) -> Network:
    """BlazeFace + FaceMesh when their files are present, else the MediaPipe task file."""
    from ditto_demo.engine.loader import load_network

    pair = [get_spec("blaze_face"), get_spec("face_mesh")]
    if all(any((root / s.path).is_file() for s in spec.onnx) for spec in pair):
        detector, mesh = (load_network(spec.name, root, backend, device) for spec in pair)
        return BlazeFaceMesh(detector, mesh)
    if (root / TASK_FILE).is_file():
        log.info("landmark478: MediaPipe Tasks (%s)", root / TASK_FILE)
        return MediaPipeTaskLandmarker(root / TASK_FILE)
    raise CheckpointError(
        f"The landmark478 model needs ditto_onnx/blaze_face.onnx and ditto_onnx/face_mesh.onnx, or {TASK_FILE}, "
        f"under {root}; run `python -m ditto_demo download`."
    )
