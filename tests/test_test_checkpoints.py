"""Generated test checkpoints: complete, loadable on torch and ONNX Runtime, consistent across networks."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from ditto_demo.engine import CORE_NETWORKS, get_spec, load_network
from ditto_demo.engine.export import example_inputs
from ditto_demo.engine.hub import missing_files
from ditto_demo.engine.specs import MODEL_CONFIG_FILE
from ditto_demo.errors import CheckpointError
from ditto_demo.testing.checkpoints import MICRO_MODEL_CONFIG, TEST_SIZES, TINY_MODEL_CONFIG, write_test_checkpoints

ASSETS = Path(__file__).resolve().parents[1] / "assets"


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_test_checkpoints(tmp_path_factory.mktemp("tiny"), "tiny", seed=3)


def _feeds(net) -> dict[str, np.ndarray]:
    tensors = example_inputs(net.spec, net.input_shapes)
    return {name: t.numpy() for name, t in zip(net.spec.input_names, tensors, strict=True)}


def test_root_is_complete_for_torch_and_onnx_except_mediapipe(tiny_root: Path) -> None:
    assert missing_files(tiny_root, "onnx") == []
    assert missing_files(tiny_root, "torch") == ["ditto_pytorch/aux_models/face_landmarker.task"]
    assert json.loads((tiny_root / MODEL_CONFIG_FILE).read_text()) == TINY_MODEL_CONFIG
    cfg = pickle.loads((tiny_root / "ditto_cfg/v0.4_hubert_cfg_trt_online.pkl").read_bytes())
    assert cfg["default_kwargs"]["online_mode"] is True
    assert cfg["default_kwargs"]["delta_eye_arr"].shape == (15, 63)


@pytest.mark.parametrize("name", CORE_NETWORKS)
def test_tiny_networks_agree_across_backends(tiny_root: Path, name: str) -> None:
    via_torch = load_network(name, tiny_root, backend="torch")
    via_onnx = load_network(name, tiny_root, backend="onnx")
    feeds = _feeds(via_torch)
    a, b = via_torch(**feeds), via_onnx(**feeds)
    for key in get_spec(name).output_names:
        assert a[key].shape == b[key].shape
        spread = max(float(np.std(a[key])), float(np.abs(a[key]).max()))  # a (1, 1) output has no std
        assert np.abs(a[key] - b[key]).max() <= 1e-4 * spread


def test_tiny_networks_chain_into_a_512_frame(tiny_root: Path) -> None:
    """Appearance features feed the warp network, whose output feeds the decoder: the shapes fit."""
    image = np.random.default_rng(0).random((1, 3, 256, 256), np.float32)
    features = load_network("appearance_extractor", tiny_root)(image=image)["pred"]
    motion = load_network("motion_extractor", tiny_root)(image=image)
    kp = motion["kp"].reshape(1, 21, 3)
    warped = load_network("warp_network", tiny_root)(feature_3d=features, kp_source=kp, kp_driving=kp)["out"]
    frame = load_network("decoder", tiny_root)(feature=warped)["output"]
    assert frame.shape == (1, 3, 512, 512)
    assert frame.min() >= 0.0
    assert frame.max() <= 1.0


def test_tiny_networks_reject_released_shapes(tiny_root: Path) -> None:
    net = load_network("decoder", tiny_root)
    with pytest.raises(ValueError, match=r"must have shape \(1, 16, 32, 32\)"):
        net(feature=np.zeros((1, 256, 64, 64), np.float32))


def test_bad_model_config_is_a_checkpoint_error(tmp_path: Path) -> None:
    root = write_test_checkpoints(tmp_path / "root", "tiny")
    config = root / MODEL_CONFIG_FILE
    config.write_text("{not json")
    with pytest.raises(CheckpointError, match="is not valid JSON"):
        load_network("stitch_network", root, backend="torch")
    config.write_text(json.dumps({"stitch_network": {"hidden_size": 3}}))
    with pytest.raises(CheckpointError, match="bad arguments for stitch_network"):
        load_network("stitch_network", root, backend="torch")
    config.write_text(json.dumps({"stitch_network": {"hidden_sizes": [16, 16]}}))  # does not fit the weights
    with pytest.raises(CheckpointError, match="does not fit the stitch_network network"):
        load_network("stitch_network", root, backend="torch")


def test_full_size_has_released_shapes_and_no_model_config(tmp_path: Path) -> None:
    root = write_test_checkpoints(tmp_path / "full", "full", seed=1)
    assert not (root / MODEL_CONFIG_FILE).exists()
    net = load_network("stitch_network", root, backend="torch")
    assert net.input_shapes["kp_source"] == (1, 21, 3)
    with pytest.raises(ValueError, match="size must be"):
        write_test_checkpoints(tmp_path / "x", "medium")  # type: ignore[arg-type]


def test_micro_is_tiny_with_a_smaller_grid_that_still_renders_512(tmp_path: Path) -> None:
    """The live size: a 16×16 feature grid (tiny's is 32×32) and an ×8 pixel shuffle, so frames stay 512×512."""
    from ditto_demo.cli import TEST_SIZES as CLI_SIZES
    from ditto_demo.pipeline import Controls, Pipeline

    assert CLI_SIZES == TEST_SIZES
    root = write_test_checkpoints(tmp_path / "micro", "micro", seed=1)
    assert json.loads((root / MODEL_CONFIG_FILE).read_text()) == MICRO_MODEL_CONFIG
    assert missing_files(root, "onnx") == []
    image = np.random.default_rng(0).random((1, 3, 256, 256), np.float32)
    features = load_network("appearance_extractor", root, backend="onnx")(image=image)["pred"]
    assert features.shape == (1, 2, 2, 16, 16)
    warped = load_network("warp_network", root)(feature_3d=features, kp_source=np.zeros((1, 21, 3), np.float32),
                                                kp_driving=np.zeros((1, 21, 3), np.float32))["out"]
    assert load_network("decoder", root)(feature=warped)["output"].shape == (1, 3, 512, 512)
    pipeline = Pipeline(root, backend="torch", device="cpu")
    audio = np.zeros(16000, np.float32)
    frames = list(pipeline.stream(ASSETS / "portrait_illustration.png", [audio[:8000], audio[8000:]],
                                  Controls(steps=2, seed=3)))
    assert len(frames) >= 25  # a second of speech, plus the tail the stream flushes
    assert [f.index for f in frames] == list(range(len(frames)))
    assert frames[0].image.shape == (640, 512, 3)  # the illustration's framing, as at tiny
    assert frames[0].image.std() > 0  # a picture, not a constant
