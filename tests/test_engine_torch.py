"""``load_network`` on the PyTorch backend: conformance through the public API, contract checks, bad files."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from reference_kit import relative_error, seed0_inputs

from ditto_demo.engine import CORE_NETWORKS, get_spec, load_network
from ditto_demo.errors import CheckpointError


@pytest.mark.parametrize("name", CORE_NETWORKS)
def test_conformance_through_load_network(seed0_root: Path, name: str) -> None:
    """Seed-0 weights in the released container layout, CPU float32: within 1e-3 of the original outputs."""
    net = load_network(name, seed0_root, backend="torch", device="cpu")
    outputs = net(**seed0_inputs(name))
    assert tuple(outputs) == get_spec(name).output_names
    assert all(isinstance(v, np.ndarray) and v.dtype == np.float32 for v in outputs.values())
    assert relative_error(outputs, name) < 1e-3


def test_auto_picks_torch_on_cpu_here(seed0_root: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="ditto_demo.engine.loader")
    net = load_network("stitch_network", seed0_root)
    assert (net.backend, net.device) == ("torch", "cpu")
    assert "stitch_network: torch on cpu" in caplog.text


def test_run_tensors_matches_numpy_call(seed0_root: Path) -> None:
    net = load_network("stitch_network", seed0_root, backend="torch")
    feeds = seed0_inputs("stitch_network")
    from_numpy = net(**feeds)["out"]
    from_tensors = net.run_tensors(**{k: torch.from_numpy(v) for k, v in feeds.items()})["out"]
    np.testing.assert_array_equal(from_numpy, from_tensors.numpy())


def test_inputs_are_checked_against_the_contract(seed0_root: Path) -> None:
    net = load_network("stitch_network", seed0_root, backend="torch")
    kp = np.zeros((1, 21, 3), np.float32)
    with pytest.raises(ValueError, match="missing \\['kp_driving'\\]"):
        net(kp_source=kp)
    with pytest.raises(ValueError, match=r"must have shape \(1, 21, 3\)"):
        net(kp_source=kp, kp_driving=np.zeros((1, 20, 3)))
    out = net(kp_source=kp.astype(np.float64), kp_driving=kp.astype(np.float64))["out"]  # float64 is cast
    assert out.dtype == np.float32


def _copy_root(seed0_root: Path, tmp_path: Path) -> Path:
    root = tmp_path / "ckpt"
    shutil.copytree(seed0_root, root)
    return root


def test_truncated_checkpoint_is_a_named_error(seed0_root: Path, tmp_path: Path) -> None:
    root = _copy_root(seed0_root, tmp_path)
    path = root / "ditto_pytorch/models/stitch_network.pth"
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(CheckpointError, match=r"stitch_network\.pth: it cannot be read.*from a complete copy"):
        load_network("stitch_network", root, backend="torch")


def test_wrong_container_and_wrong_keys(seed0_root: Path, tmp_path: Path) -> None:
    root = _copy_root(seed0_root, tmp_path)
    stitch = root / "ditto_pytorch/models/stitch_network.pth"
    torch.save(torch.load(stitch, weights_only=True)["retarget_shoulder"], stitch)  # no container key
    with pytest.raises(CheckpointError, match="no 'retarget_shoulder' entry"):
        load_network("stitch_network", root, backend="torch")
    decoder = root / "ditto_pytorch/models/decoder.pth"
    state = torch.load(decoder, weights_only=True)
    state["fc.weight"] = state["fc.weight"][:, :10]
    del state["conv_img.0.bias"]
    torch.save(state, decoder)
    with pytest.raises(CheckpointError, match=r"missing conv_img\.0\.bias.*shape fc\.weight"):
        load_network("decoder", root, backend="torch")


def test_code_in_a_checkpoint_is_refused(seed0_root: Path, tmp_path: Path) -> None:
    """``weights_only`` loading: a pickle that would run code is rejected, and the code does not run."""
    root = _copy_root(seed0_root, tmp_path)
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    torch.save({"retarget_shoulder": Evil()}, root / "ditto_pytorch/models/stitch_network.pth")
    with pytest.raises(CheckpointError, match="Cannot read checkpoint"):
        load_network("stitch_network", root, backend="torch")
    assert not marker.exists()


def test_missing_file_and_missing_root(seed0_root: Path, tmp_path: Path) -> None:
    root = _copy_root(seed0_root, tmp_path)
    (root / "ditto_pytorch/models/lmdm_v0.4_hubert.pth").unlink()
    with pytest.raises(CheckpointError, match=r"Missing checkpoint file .*lmdm_v0\.4_hubert\.pth"):
        load_network("lmdm", root, backend="torch")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_network("lmdm", tmp_path / "nowhere")
    with pytest.raises(ValueError, match="unknown network 'nope'"):
        load_network("nope", root)
    with pytest.raises(ValueError, match="backend must be one of"):
        load_network("lmdm", root, backend="jax")
