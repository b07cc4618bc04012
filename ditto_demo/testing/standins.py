"""Stand-in auxiliary ONNX models: the real file names, tensor names and shapes, made-up weights.

The released face detector, landmark nets and HuBERT cannot be downloaded here, yet the engine and the pipeline
must load and run them through the same code as the real files. These graphs are small, deterministic and
input-dependent where the pipeline depends on it:

* HuBERT's features follow the audio;
* the 106- and 203-point landmark nets *look* at their crop: they find the skin-coloured blob in it (a pixel
  weight from its colour alone), and place a fixed face layout at the blob's weighted centroid, sized by its
  spread. A pixel's weight does not depend on where the crop was cut, so the same face in the same place gives
  the same landmarks in image pixels whatever crop it is seen through, as with the real nets. That makes them a
  fixed point of registration's tracker (each video frame is cropped around the previous frame's landmarks): a
  still video keeps its crop, and a moving face is followed. With too little skin in the crop they fall back to
  a layout that is itself a fixed point of the tracker (the next crop equals the current one), so any picture
  gives finite landmarks;
* the detector and the MediaPipe pair answer with a fixed, plausible face (one centred detection, a symmetric
  landmark layout): the detector runs on the first frame only and MediaPipe's points feed only the eye features.

They produce no real face: they are test data, nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
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


def _unit_layout(layout: np.ndarray) -> np.ndarray:
    """``layout`` moved and scaled so that its bounding box is centred on 0 and its longer side spans [-1, 1]."""
    low, high = layout.min(axis=0), layout.max(axis=0)
    return ((layout - (low + high) / 2) / (max(high - low) / 2)).astype(np.float32)


def _layout106() -> np.ndarray:
    return _unit_layout(_face_layout(106, [33, 35, 40, 39], [87, 89, 94, 93], [52, 61], seed=_RNG_SEED + 1))


def _layout203() -> np.ndarray:
    return _unit_layout(_face_layout(203, [0, 6, 12, 18], [24, 30, 36, 42], [48, 66], seed=_RNG_SEED + 2))


@dataclass(frozen=True)
class _BlobLandmarks:
    """How a blob-locating landmark stand-in reads its input and writes its answer.

    Pixel (column j, row i) of the ``size``² input lies at ``(j, i) * unit + origin`` in the net's output units;
    ``red``/``blue`` are the channel indices, ``value_scale`` takes the input's values to [0, 1]. Without
    enough skin the answer is ``layout * prior_half + prior_centre`` (output units).
    """

    input_name: str
    output_name: str
    size: int
    unit: float
    origin: float
    red: int
    blue: int
    value_scale: float
    prior_centre: tuple[float, float]
    prior_half: float


#: Skin weight of a pixel (values in [0, 1]): ramps from 0 to 1 as red − blue goes 0.10 → 0.20 and as red goes
#: 0.40 → 0.65. Light skin, the illustrated portrait's (236, 194, 164), weighs 1; its hair, eye whites, the
#: background and a black border weigh 0. Smooth ramps keep the centroid steady under resampling.
_SKIN_RB = (0.10, 10.0)
_SKIN_R = (0.40, 4.0)
#: Below this mean weight over the crop (2 %) the prior layout is used; from twice that on, the blob alone.
_MIN_COVERAGE = 0.02
#: The layout's half-width is this many standard deviations of the blob. A uniform disc of radius r has a
#: per-axis deviation of r / 2, so 2 would match its outline; a little less, because the blob also takes in the
#: ears and neck. On the example portrait the avatar crop comes out at about 2.3 face widths, as Ditto's does.
_SPREAD = 1.8


def _blob_landmarks_graph(spec: _BlobLandmarks, layout: np.ndarray, name: str) -> onnx.GraphProto:
    """Landmarks = centre + half * layout, centre and half from the skin blob's weighted moments (see the module
    docstring), blended with the prior when the blob covers between 2 % and 4 % of the crop."""
    size = spec.size
    coords = np.arange(size, dtype=np.float32) * spec.unit + spec.origin
    grid = np.stack([np.broadcast_to(coords[None, :], (size, size)), np.broadcast_to(coords[:, None], (size, size))])
    consts = {
        "grid": grid.astype(np.float32),  # (2, size, size): x then y of every pixel, output units
        "grid_sq": (grid**2).astype(np.float32),
        "layout": layout.astype(np.float32),
        "prior_centre": np.array([spec.prior_centre], np.float32),
        "prior_half": np.array([[spec.prior_half]], np.float32),
        "value_scale": np.array(spec.value_scale, np.float32),
        "rb_at": np.array(_SKIN_RB[0], np.float32),
        "rb_gain": np.array(_SKIN_RB[1], np.float32),
        "r_at": np.array(_SKIN_R[0], np.float32),
        "r_gain": np.array(_SKIN_R[1], np.float32),
        "zero": np.array(0.0, np.float32),
        "one": np.array(1.0, np.float32),
        "tiny": np.array(1e-6, np.float32),
        "coverage_gain": np.array(1.0 / _MIN_COVERAGE, np.float32),
        "spread": np.array(_SPREAD, np.float32),
        "red_start": np.array([spec.red], np.int64),
        "red_end": np.array([spec.red + 1], np.int64),
        "blue_start": np.array([spec.blue], np.int64),
        "blue_end": np.array([spec.blue + 1], np.int64),
        "channel_axis": np.array([1], np.int64),
        "out_shape": np.array([1, 2 * len(layout)], np.int64),
    }
    node = helper.make_node
    nodes = [
        node("Slice", [spec.input_name, "red_start", "red_end", "channel_axis"], ["red_raw"]),
        node("Slice", [spec.input_name, "blue_start", "blue_end", "channel_axis"], ["blue_raw"]),
        node("Mul", ["red_raw", "value_scale"], ["red"]),
        node("Mul", ["blue_raw", "value_scale"], ["blue"]),
        # weight = clip((r - b - 0.1) * 10, 0, 1) * clip((r - 0.4) * 4, 0, 1)        (1, 1, size, size)
        node("Sub", ["red", "blue"], ["rb"]),
        node("Sub", ["rb", "rb_at"], ["rb_off"]),
        node("Mul", ["rb_off", "rb_gain"], ["rb_ramp"]),
        node("Clip", ["rb_ramp", "zero", "one"], ["rb_weight"]),
        node("Sub", ["red", "r_at"], ["r_off"]),
        node("Mul", ["r_off", "r_gain"], ["r_ramp"]),
        node("Clip", ["r_ramp", "zero", "one"], ["r_weight"]),
        node("Mul", ["rb_weight", "r_weight"], ["weight"]),
        # Moments as means over the crop (values stay within [-1, 1]², safe in fp16).
        node("ReduceMean", ["weight"], ["mass"], axes=[2, 3], keepdims=0),  # (1, 1)
        node("Mul", ["weight", "grid"], ["weighted"]),  # (1, 2, size, size)
        node("ReduceMean", ["weighted"], ["first"], axes=[2, 3], keepdims=0),  # (1, 2)
        node("Mul", ["weight", "grid_sq"], ["weighted_sq"]),
        node("ReduceMean", ["weighted_sq"], ["second"], axes=[2, 3], keepdims=0),  # (1, 2)
        node("Max", ["mass", "tiny"], ["safe_mass"]),
        node("Div", ["first", "safe_mass"], ["mean"]),
        node("Div", ["second", "safe_mass"], ["mean_sq"]),
        node("Mul", ["mean", "mean"], ["mean_2"]),
        node("Sub", ["mean_sq", "mean_2"], ["variance_xy"]),
        node("ReduceMean", ["variance_xy"], ["variance_raw"], axes=[1], keepdims=1),  # (1, 1), isotropic
        node("Max", ["variance_raw", "zero"], ["variance"]),
        node("Sqrt", ["variance"], ["deviation"]),
        node("Mul", ["deviation", "spread"], ["blob_half"]),
        # alpha = clip(mass / 2 % - 1, 0, 1): 0 below 2 % skin, 1 from 4 % on.
        node("Mul", ["mass", "coverage_gain"], ["coverage"]),
        node("Sub", ["coverage", "one"], ["coverage_off"]),
        node("Clip", ["coverage_off", "zero", "one"], ["alpha"]),
        node("Sub", ["one", "alpha"], ["beta"]),
        node("Mul", ["alpha", "mean"], ["centre_blob"]),
        node("Mul", ["beta", "prior_centre"], ["centre_prior"]),
        node("Add", ["centre_blob", "centre_prior"], ["centre"]),  # (1, 2)
        node("Mul", ["alpha", "blob_half"], ["half_blob"]),
        node("Mul", ["beta", "prior_half"], ["half_prior"]),
        node("Add", ["half_blob", "half_prior"], ["half"]),  # (1, 1)
        node("Mul", ["layout", "half"], ["scaled"]),  # (points, 2)
        node("Add", ["scaled", "centre"], ["points"]),
        node("Reshape", ["points", "out_shape"], [spec.output_name]),
    ]
    inits = [numpy_helper.from_array(np.asarray(value), key) for key, value in consts.items()]
    inputs = [helper.make_tensor_value_info(spec.input_name, TensorProto.FLOAT, [1, 3, size, size])]
    outputs = [helper.make_tensor_value_info(spec.output_name, TensorProto.FLOAT, [1, 2 * len(layout)])]
    return helper.make_graph(nodes, name, inputs, outputs, inits)


#: The 106-point net: BGR pixels in 0–255 (see pipeline.face), answers in [-1, 1] of its 192 px crop (pixel j at
#: j / 96 - 1). The prior sits centred and spans 45 % of the crop.
_LMK106 = _BlobLandmarks("data", "fc1", 192, 1.0 / 96.0, -1.0, red=2, blue=0, value_scale=1.0 / 255.0,
                         prior_centre=(0.0, 0.0), prior_half=0.45)
#: The 203-point net: RGB in [0, 1], answers in [0, 1] of its 224 px crop (pixel j at j / 224). The prior is the
#: tracker's fixed point for that crop (scale 1.5, vy -0.1, pipeline.face): a box 2/3 of the crop wide, centred
#: at (0.5, 0.6), gives back the same crop.
_LMK203 = _BlobLandmarks("input", "landmarks", 224, 1.0 / 224.0, 0.0, red=0, blue=2, value_scale=1.0,
                         prior_centre=(0.5, 0.6), prior_half=1.0 / 3.0)


def _landmark203_original() -> onnx.GraphProto:
    """LivePortrait's file: the landmarks are its third output, after two the pipeline never reads."""
    spec = replace(_LMK203, output_name="landmarks_ori")
    graph = _blob_landmarks_graph(spec, _layout203(), "lmk203_ori")
    extra = {"out_pts_a": np.zeros((1, 214), np.float32), "out_pts_b": np.zeros((1, 1), np.float32)}
    outputs = list(graph.output)
    del graph.output[:]
    for out_name, value in extra.items():
        graph.initializer.append(numpy_helper.from_array(value, f"{out_name}_const"))
        graph.node.append(helper.make_node("Identity", [f"{out_name}_const"], [out_name]))
        graph.output.append(helper.make_tensor_value_info(out_name, TensorProto.FLOAT, list(value.shape)))
    graph.output.extend(outputs)
    return graph


#: Stand-in file -> builder. Two layouts: ``ditto_onnx`` (renamed I/O) and ``ditto_pytorch/aux_models`` (original).
STANDIN_FILES = {
    "ditto_onnx/insightface_det.onnx": lambda: _constant_outputs(
        "image", [1, 3, 512, 512], _scrfd_outputs(), "insightface_det_standin"
    ),
    "ditto_pytorch/aux_models/det_10g.onnx": lambda: _constant_outputs(
        "input.1", [1, 3, 512, 512],
        {f"{i + 443}": v for i, v in enumerate(_scrfd_outputs().values())}, "det_10g_standin",
    ),
    "ditto_onnx/landmark106.onnx": lambda: _blob_landmarks_graph(_LMK106, _layout106(), "lmk106"),
    "ditto_pytorch/aux_models/2d106det.onnx": lambda: _blob_landmarks_graph(_LMK106, _layout106(), "lmk106_ori"),
    "ditto_onnx/landmark203.onnx": lambda: _blob_landmarks_graph(_LMK203, _layout203(), "lmk203"),
    "ditto_pytorch/aux_models/landmark203.onnx": _landmark203_original,
    "ditto_onnx/hubert.onnx": lambda: _hubert_graph("input_values", "encoding_out"),
    "ditto_pytorch/aux_models/hubert_streaming_fix_kv.onnx": lambda: _hubert_graph("input_values", "last_hidden"),
    "ditto_onnx/blaze_face.onnx": lambda: _constant_outputs("input", [1, 128, 128, 3], _blaze_outputs(), "blaze"),
    "ditto_onnx/face_mesh.onnx": lambda: _constant_outputs("input", [1, 256, 256, 3], _face_mesh_outputs(), "mesh"),
}


def write_standin_aux_models(root: Path) -> list[Path]:
    """Write every stand-in under ``root`` (both layouts); returns the paths written."""
    return [_save(build(), Path(root) / rel) for rel, build in STANDIN_FILES.items()]
