"""ONNX Runtime backend: our exports against torch, the released-file fix-up, the auxiliary models' name maps."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from reference_kit import relative_error, seed0_inputs

from ditto_demo.engine import CORE_NETWORKS, get_spec, load_network
from ditto_demo.engine.backends.onnx_backend import fix_gridsample_opset
from ditto_demo.engine.checkpoints import build_module
from ditto_demo.engine.export import example_inputs, export_network
from ditto_demo.errors import CheckpointError
from ditto_demo.testing.standins import STANDIN_FILES, write_standin_aux_models


def _worst(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    return max(float(np.abs(a[k] - b[k]).max() / (np.std(b[k]) or 1.0)) for k in b)


@pytest.mark.slow
@pytest.mark.parametrize("name", CORE_NETWORKS)
def test_export_round_trip(seed0_root: Path, tmp_path: Path, name: str) -> None:
    """Export the random-weight (seed-0) module, run the file in ONNX Runtime, compare with torch and reference."""
    root = tmp_path / "root"
    (root / "ditto_onnx").mkdir(parents=True)
    onnx_name = Path(get_spec(name).onnx[0].path).name
    export_network(name, seed0_root, root / "ditto_onnx" / onnx_name)
    model = onnx.load(str(root / "ditto_onnx" / onnx_name), load_external_data=False)
    assert [i.name for i in model.graph.input] == list(get_spec(name).input_names)
    assert [o.name for o in model.graph.output] == list(get_spec(name).output_names)
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) == 20
    if name == "warp_network":  # the released-name file is the "_ori" one, which gets the fix-up (idempotent)
        assert onnx_name == "warp_network_ori.onnx"
    via_onnx = load_network(name, root, backend="onnx", device="cpu")
    assert via_onnx.backend == "onnx"
    via_torch = load_network(name, seed0_root, backend="torch", device="cpu")
    feeds = seed0_inputs(name)
    onnx_out, torch_out = via_onnx(**feeds), via_torch(**feeds)
    assert _worst(onnx_out, torch_out) < 1e-4
    assert relative_error(onnx_out, name) < 1e-3


def test_released_warp_file_needs_and_gets_the_opset_fixup(seed0_root: Path, tmp_path: Path) -> None:
    """A file shaped like the released warp_network_ori.onnx (5-D GridSample, opset 17, mode "bilinear").

    Built with the TorchScript exporter, as the release was (PyTorch 2.4), whose other ops are valid at opset 17.
    """
    spec = get_spec("warp_network")
    exported = tmp_path / "ours.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(build_module(spec, seed0_root), example_inputs(spec), str(exported), dynamo=False,
                          opset_version=20, input_names=list(spec.input_names), output_names=["out"])
    model = onnx.load(str(exported))
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx"):
            opset.version = 17
    model.ir_version = 8
    grid_samples = [n for n in model.graph.node if n.op_type == "GridSample"]
    assert len(grid_samples) == 2  # dense motion + the final warp
    for node in grid_samples:
        for attr in node.attribute:
            if attr.name == "mode":
                attr.s = b"bilinear"
    root = tmp_path / "root"
    (root / "ditto_onnx").mkdir(parents=True)
    released = root / "ditto_onnx/warp_network_ori.onnx"
    onnx.save(model, str(released))
    fixed = fix_gridsample_opset(onnx.load(str(released)))
    assert {a.s for n in fixed.graph.node if n.op_type == "GridSample" for a in n.attribute if a.name == "mode"} == {
        b"linear"
    }
    assert [o.version for o in fixed.opset_import if o.domain in ("", "ai.onnx")] == [20]
    assert fixed.ir_version >= 9
    onnx.checker.check_model(fixed)
    net = load_network("warp_network", root, backend="onnx")
    fixed_out = net(**seed0_inputs("warp_network"))
    assert relative_error(fixed_out, "warp_network") < 1e-3
    # Current ONNX Runtime (1.31) also runs the unfixed file (older releases refused it): both agree.
    raw = ort.InferenceSession(str(released), providers=["CPUExecutionProvider"])
    (raw_out,) = raw.run(None, seed0_inputs("warp_network"))
    np.testing.assert_allclose(raw_out, fixed_out["out"], atol=1e-5)
    assert released.read_bytes() == onnx.load(str(released)).SerializeToString()  # fixed in memory only


def test_onnx_backend_exports_from_pth_when_no_onnx_file(seed0_root: Path) -> None:
    net = load_network("stitch_network", seed0_root, backend="onnx")
    assert net.backend == "onnx"
    assert net.path.name.startswith("stitch_network-native-")
    again = load_network("stitch_network", seed0_root, backend="onnx")
    assert again.path == net.path  # cached, keyed by the checkpoint file
    assert relative_error(net(**seed0_inputs("stitch_network")), "stitch_network") < 1e-3


@pytest.fixture(scope="module")
def standin_roots(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two roots: stand-ins with the ``ditto_onnx`` names, and with the original ``aux_models`` names."""
    full = tmp_path_factory.mktemp("standins")
    write_standin_aux_models(full)
    roots = {}
    for layout in ("ditto_onnx", "ditto_pytorch"):
        roots[layout] = tmp_path_factory.mktemp(layout)
        shutil.copytree(full / layout, roots[layout] / layout)
    return roots


AUX = ("insightface_det", "landmark106", "landmark203", "hubert")


@pytest.mark.parametrize("layout", ["ditto_onnx", "ditto_pytorch"])
@pytest.mark.parametrize("name", AUX)
def test_aux_models_present_binding_names(standin_roots: dict[str, Path], layout: str, name: str) -> None:
    spec = get_spec(name)
    net = load_network(name, standin_roots[layout], backend="torch")  # no torch version: ONNX Runtime
    assert net.backend == "onnx"
    rng = np.random.default_rng(0)
    feeds = {b.name: rng.random([6480 if isinstance(d, str) else d for d in b.shape], np.float32) for b in spec.inputs}
    outputs = net(**feeds)
    assert tuple(outputs) == spec.output_names
    for binding in spec.outputs:
        want = tuple(20 if isinstance(d, str) and d == "frames" else d for d in binding.shape)
        assert outputs[binding.name].shape == want


def test_both_layouts_give_the_same_aux_outputs(standin_roots: dict[str, Path]) -> None:
    """Positional outputs (det_10g's nine, landmark203's third) land on the right binding names."""
    image = np.random.default_rng(1).random((1, 3, 512, 512), np.float32)
    a = load_network("insightface_det", standin_roots["ditto_onnx"])(image=image)
    b = load_network("insightface_det", standin_roots["ditto_pytorch"])(image=image)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    face = np.zeros((1, 3, 224, 224), np.float32)
    np.testing.assert_array_equal(
        load_network("landmark203", standin_roots["ditto_onnx"])(input=face)["landmarks"],
        load_network("landmark203", standin_roots["ditto_pytorch"])(input=face)["landmarks"],
    )


def test_hubert_dynamic_length(standin_roots: dict[str, Path]) -> None:
    net = load_network("hubert", standin_roots["ditto_onnx"])
    for samples in (3240, 6480, 12960):
        frames = net(input_values=np.zeros((1, samples), np.float32))["encoding_out"]
        assert frames.shape == ((samples - 400) // 320 + 1, 1024)
    with pytest.raises(ValueError, match="input_values"):
        net(input_values=np.zeros((1, 100), np.float32))


def test_landmark478_composite(standin_roots: dict[str, Path]) -> None:
    net = load_network("landmark478", standin_roots["ditto_onnx"], backend="onnx")
    crop = np.random.default_rng(2).integers(0, 255, (512, 512, 3), dtype=np.uint8)
    points = net(image=crop)["landmarks"]
    assert points.shape == (1, 478, 3)
    assert np.all((points[0, :, :2] > 0) & (points[0, :, :2] < 1))  # normalised to the crop


def test_aux_file_with_wrong_tensor_names_is_refused(tmp_path: Path) -> None:
    (tmp_path / "ditto_onnx").mkdir()
    wrong = STANDIN_FILES["ditto_onnx/landmark106.onnx"]()
    wrong.input[0].name = "pixels"
    for node in wrong.node:
        node.input[:] = ["pixels" if i == "data" else i for i in node.input]
    model = onnx.helper.make_model(wrong, opset_imports=[onnx.helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "ditto_onnx/landmark106.onnx"))
    with pytest.raises(CheckpointError, match=r"does not have the tensors \['data'\]"):
        load_network("landmark106", tmp_path, backend="onnx")


def test_exporter_falls_back_to_torchscript(seed0_root: Path, tmp_path: Path, monkeypatch, caplog) -> None:
    """If the torch.export-based exporter fails on some future graph, the TorchScript one still writes the file."""
    real_export = torch.onnx.export

    def dynamo_breaks(*args, **kwargs):
        if kwargs.get("dynamo"):
            raise RuntimeError("simulated exporter failure")
        return real_export(*args, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", dynamo_breaks)
    caplog.set_level("WARNING", logger="ditto_demo.engine.export")
    path = export_network("stitch_network", seed0_root, tmp_path / "stitch.onnx")
    assert "using the TorchScript exporter" in caplog.text
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outputs = dict(zip(["out"], session.run(None, seed0_inputs("stitch_network")), strict=True))
    assert relative_error(outputs, "stitch_network") < 1e-3
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary file left behind
