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


# --------------------------------------------------------------------------------------------- torch.compile


def test_compile_mode_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from ditto_demo.engine.backends.torch_backend import COMPILE_ENV, compile_mode_from_env
    from ditto_demo.errors import BackendUnavailableError

    monkeypatch.delenv(COMPILE_ENV, raising=False)
    assert compile_mode_from_env() == "off"
    monkeypatch.setenv(COMPILE_ENV, " Max-Autotune-No-Cudagraphs ")
    assert compile_mode_from_env() == "max-autotune-no-cudagraphs"
    monkeypatch.setenv(COMPILE_ENV, "fast")
    with pytest.raises(BackendUnavailableError, match=r"DITTO_TORCH_COMPILE='fast'.*off, default"):
        compile_mode_from_env()


def test_cuda_graph_mode_is_refused_on_the_cpu(seed0_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ditto_demo.errors import BackendUnavailableError

    monkeypatch.setenv("DITTO_TORCH_COMPILE", "reduce-overhead")
    with pytest.raises(BackendUnavailableError, match="needs --device cuda"):
        load_network("stitch_network", seed0_root, backend="torch", device="cpu")


def test_compiled_network_runs_through_the_same_interface(seed0_root: Path) -> None:
    """torch.compile with the graph-capturing ``aot_eager`` backend (no C++ toolchain needed): same numbers."""
    from ditto_demo.engine.backends.torch_backend import TorchNetwork
    from ditto_demo.engine.checkpoints import build_module

    spec = get_spec("stitch_network")
    eager = load_network("stitch_network", seed0_root, backend="torch", device="cpu")
    compiled = TorchNetwork(spec, build_module(spec, seed0_root), "cpu", compile_mode="default",
                            compile_backend="aot_eager")
    feeds = seed0_inputs("stitch_network")
    for _ in range(2):  # the first call traces and compiles, the second reuses it
        np.testing.assert_allclose(compiled(**feeds)["out"], eager(**feeds)["out"], rtol=1e-6, atol=1e-6)
    assert relative_error(compiled(**feeds), "stitch_network") < 1e-3


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                    reason="Inductor on CPU needs a C++ compiler (packages-test.txt installs g++)")
def test_inductor_compiled_network_matches_conformance(seed0_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real TorchInductor path on the CPU, enabled through the environment as a user would."""
    monkeypatch.setenv("DITTO_TORCH_COMPILE", "default")
    net = load_network("stitch_network", seed0_root, backend="torch", device="cpu")
    assert net.compile_mode == "default"
    outputs = net(**seed0_inputs("stitch_network"))
    assert relative_error(outputs, "stitch_network") < 1e-3
