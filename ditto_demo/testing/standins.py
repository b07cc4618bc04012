"""Stand-in auxiliary ONNX models: the real file names, tensor names and shapes, made-up weights.

The released face detector, landmark nets and HuBERT cannot be downloaded here, yet the engine (and later the
pipeline) must load and run them through the same code as the real files. These graphs are small, deterministic
and input-dependent where it matters (HuBERT features follow the audio); the face models answer with a fixed,
plausible face (one centred detection, a symmetric landmark layout), so registration has something to work on.
They produce no real face: they are test data, nothing else.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = ["STANDIN_FILES", "write_standin_aux_models"]

_OPSET = 17
_RNG_SEED = 1234


def _save(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", _OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def _constant_outputs(
    input_name: str, input_shape: list[int], outputs: dict[str, np.ndarray], name: str
) -> onnx.GraphProto:
    """A graph whose outputs are constants plus 0 x mean(input) (so the input is really consumed)."""
    nodes = [
        helper.make_node("ReduceMean", [input_name], ["mean"], keepdims=0),
        helper.make_node("Mul", ["mean", "zero"], ["nothing"]),
    ]
    inits = [numpy_helper.from_array(np.zeros((), np.float32), "zero")]
    value_infos = []
    for out_name, value in outputs.items():
        inits.append(numpy_helper.from_array(value.astype(np.float32), f"{out_name}_const"))
        nodes.append(helper.make_node("Add", [f"{out_name}_const", "nothing"], [out_name]))
        value_infos.append(helper.make_tensor_value_info(out_name, TensorProto.FLOAT, list(value.shape)))
    inputs = [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, input_shape)]
    return helper.make_graph(nodes, name, inputs, value_infos, inits)


def _scrfd_outputs() -> dict[str, np.ndarray]:
    """One confident 240-px face centred in the 512 letterbox, on the stride-32 grid (others score ~0)."""
    out: dict[str, np.ndarray] = {}
    parts: dict[str, list[np.ndarray]] = {"scores": [], "boxes": [], "kps": []}
    for stride in (8, 16, 32):
        side = 512 // stride
        n = side * side * 2
        scores = np.full((n, 1), 0.01, np.float32)
        boxes = np.full((n, 4), 1.0, np.float32)
        kps = np.zeros((n, 10), np.float32)
        if stride == 32:
            centre = (side // 2) * side + side // 2  # anchor at (256, 256)
            scores[2 * centre] = 0.95
            boxes[2 * centre] = 120.0 / stride  # left, top, right, bottom distances in stride units
            kps[2 * centre] = np.array([-40, -30, 40, -30, 0, 10, -30, 50, 30, 50], np.float32) / stride
        parts["scores"].append(scores)
        parts["boxes"].append(boxes)
        parts["kps"].append(kps)
    # insightface's order: all scores (strides 8, 16, 32), then all boxes, then all keypoints.
    for kind, arrays in parts.items():
        for k, array in enumerate(arrays, start=1):
            out[f"{kind}{k}"] = array
    return out


def _face_layout(n: int, eyes_l: list[int], eyes_r: list[int], lips: list[int], seed: int) -> np.ndarray:
    """``n`` points in a unit face box ([-1, 1]²), eyes and lips where a face has them."""
    rng = np.random.default_rng(seed)
    points = rng.uniform(-0.7, 0.7, size=(n, 2)).astype(np.float32)
    ring = np.linspace(0, 2 * np.pi, 4, endpoint=False)
    for idx, cx in ((eyes_l, -0.35), (eyes_r, 0.35)):
        for j, i in enumerate(idx):
            points[i] = (cx + 0.1 * np.cos(ring[j % 4]), -0.25 + 0.05 * np.sin(ring[j % 4]))
    for j, i in enumerate(lips):
        points[i] = (0.15 * np.cos(np.pi * j), 0.45)
    return points


def _hubert_graph(input_name: str, output_name: str) -> onnx.GraphProto:
    """Frames the audio like HuBERT's front end (25 ms window, 20 ms hop) and projects each frame to 1024-d."""
    rng = np.random.default_rng(_RNG_SEED)
    weight = (rng.standard_normal((1024, 1, 400)) / 20.0).astype(np.float32)
    nodes = [
        helper.make_node("Unsqueeze", [input_name, "axis1"], ["audio3d"]),
        helper.make_node("Conv", ["audio3d", "w"], ["frames"], kernel_shape=[400], strides=[320]),
        helper.make_node("Tanh", ["frames"], ["act"]),
        helper.make_node("Squeeze", ["act", "axis0"], ["chan_time"]),
        helper.make_node("Transpose", ["chan_time"], [output_name], perm=[1, 0]),
    ]
    inits = [
        numpy_helper.from_array(weight, "w"),
        numpy_helper.from_array(np.array([1], np.int64), "axis1"),
        numpy_helper.from_array(np.array([0], np.int64), "axis0"),
    ]
    inputs = [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [1, "samples"])]
    outputs = [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["frames", 1024])]
    return helper.make_graph(nodes, "hubert_standin", inputs, outputs, inits)


def _blaze_outputs() -> dict[str, np.ndarray]:
    regressors = np.zeros((1, 896, 16), np.float32)
    scores = np.full((1, 896, 1), -10.0, np.float32)
    best = 300  # an anchor of the 16x16 stride-8 grid near the image centre
    regressors[0, best, 2:4] = 80.0  # box w, h (128-px units)
    regressors[0, best, 4:8] = [-20, -10, 20, -10]  # right eye, left eye offsets
    scores[0, best] = 8.0
    return {"regressors": regressors, "classificators": scores}


def _face_mesh_outputs() -> dict[str, np.ndarray]:
    points = np.zeros((478, 3), np.float32)
    xy = _face_layout(478, [33, 133, 159, 145, 158, 153, 160, 144], [263, 362, 386, 374, 385, 380, 387, 373],
                      [13, 14], seed=_RNG_SEED + 3)
    points[:, :2] = 128.0 + 80.0 * xy
    # Lids a little apart so the eye-openness ratio is a normal, non-zero value.
    for upper, lower in ((159, 145), (160, 144), (158, 153), (386, 374), (387, 373), (385, 380)):
        points[lower, 1] = points[upper, 1] + 6.0
    points[468, :2] = (points[33, :2] + points[133, :2]) / 2
    points[473, :2] = (points[263, :2] + points[362, :2]) / 2
    return {
        "Identity": points.reshape(1, 1, 1, 1434),
        "Identity_1": np.full((1, 1, 1, 1), 5.0, np.float32),
        "Identity_2": np.zeros((1, 1, 1, 1), np.float32),
    }


def _landmark106() -> dict[str, np.ndarray]:
    layout = _face_layout(106, [33, 35, 40, 39], [87, 89, 94, 93], [52, 61], seed=_RNG_SEED + 1)
    return {"fc1": (layout / 1.5).reshape(1, 212)}


def _landmark203() -> np.ndarray:
    layout = _face_layout(203, [0, 6, 12, 18], [24, 30, 36, 42], [48, 66], seed=_RNG_SEED + 2)
    return (0.5 + layout / 3.0).reshape(1, 406)


#: Stand-in file -> builder. Two layouts: ``ditto_onnx`` (renamed I/O) and ``ditto_pytorch/aux_models`` (original).
STANDIN_FILES = {
    "ditto_onnx/insightface_det.onnx": lambda: _constant_outputs(
        "image", [1, 3, 512, 512], _scrfd_outputs(), "insightface_det_standin"
    ),
    "ditto_pytorch/aux_models/det_10g.onnx": lambda: _constant_outputs(
        "input.1", [1, 3, 512, 512],
        {f"{i + 443}": v for i, v in enumerate(_scrfd_outputs().values())}, "det_10g_standin",
    ),
    "ditto_onnx/landmark106.onnx": lambda: _constant_outputs("data", [1, 3, 192, 192], _landmark106(), "lmk106"),
    "ditto_pytorch/aux_models/2d106det.onnx": lambda: _constant_outputs(
        "data", [1, 3, 192, 192], _landmark106(), "lmk106_ori"
    ),
    "ditto_onnx/landmark203.onnx": lambda: _constant_outputs(
        "input", [1, 3, 224, 224], {"landmarks": _landmark203()}, "lmk203"
    ),
    "ditto_pytorch/aux_models/landmark203.onnx": lambda: _constant_outputs(
        "input", [1, 3, 224, 224],
        {"out_pts_a": np.zeros((1, 214), np.float32), "out_pts_b": np.zeros((1, 1), np.float32),
         "landmarks_ori": _landmark203()},
        "lmk203_ori",
    ),
    "ditto_onnx/hubert.onnx": lambda: _hubert_graph("input_values", "encoding_out"),
    "ditto_pytorch/aux_models/hubert_streaming_fix_kv.onnx": lambda: _hubert_graph("input_values", "last_hidden"),
    "ditto_onnx/blaze_face.onnx": lambda: _constant_outputs("input", [1, 128, 128, 3], _blaze_outputs(), "blaze"),
    "ditto_onnx/face_mesh.onnx": lambda: _constant_outputs("input", [1, 256, 256, 3], _face_mesh_outputs(), "mesh"),
}


def write_standin_aux_models(root: Path) -> list[Path]:
    """Write every stand-in under ``root`` (both layouts); returns the paths written."""
    return [_save(build(), Path(root) / rel) for rel, build in STANDIN_FILES.items()]
