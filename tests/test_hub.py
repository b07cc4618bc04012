"""Checkpoint resolution against a real Hugging Face cache layout, offline (no mocks of huggingface_hub)."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from ditto_demo.engine import load_network
from ditto_demo.engine.hub import (
    CHECKPOINTS_ENV,
    HUB_REPO_ID,
    HUB_REVISION,
    allow_patterns,
    missing_files,
    required_files,
    resolve_checkpoints,
)
from ditto_demo.errors import CheckpointsUnavailableError
from ditto_demo.testing.standins import write_standin_aux_models

SHA = "0123456789abcdef0123456789abcdef01234567"


def _repo_dir(cache: Path) -> Path:
    return cache / f"models--{HUB_REPO_ID.replace('/', '--')}"


def _add_to_cache(cache: Path, files: dict[str, bytes], sha: str = SHA, ref: str | None = HUB_REVISION) -> Path:
    """Store files exactly as huggingface_hub does: content-addressed blobs, relative symlinks in snapshots/."""
    repo = _repo_dir(cache)
    for rel, data in files.items():
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = repo / "snapshots" / sha / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        link.unlink(missing_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    if ref is not None:
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / ref).write_text(sha)
    return repo / "snapshots" / sha


@pytest.fixture
def clean_cache(hf_cache: Path) -> Path:
    shutil.rmtree(_repo_dir(hf_cache), ignore_errors=True)
    yield hf_cache
    shutil.rmtree(_repo_dir(hf_cache), ignore_errors=True)


def _torch_files(seed0_root: Path, tmp_path: Path) -> dict[str, bytes]:
    """Every file the torch backend needs: the real stitch weights and stand-in aux models; placeholders for the
    other large .pth files (resolution only checks they exist; the test loads the stitch network)."""
    aux = tmp_path / "aux"
    write_standin_aux_models(aux)
    files = {}
    for rel in required_files("torch"):
        if rel.endswith("stitch_network.pth"):
            files[rel] = (seed0_root / rel).read_bytes()
        elif (aux / rel).is_file():
            files[rel] = (aux / rel).read_bytes()
        else:
            files[rel] = b"stand-in " + rel.encode()  # the MediaPipe task bundle has no stand-in graph
    files["ditto_cfg/v0.4_hubert_cfg_pytorch.pkl"] = b"\x80\x04}\x94."  # an empty dict, pickled
    return files


def test_offline_cache_resolves_and_loads(clean_cache: Path, seed0_root: Path, tmp_path: Path) -> None:
    snapshot = _add_to_cache(clean_cache, _torch_files(seed0_root, tmp_path))
    root = resolve_checkpoints("torch", progress=False)
    assert root == snapshot
    assert missing_files(root, "torch") == []
    net = load_network("stitch_network", root, backend="torch")
    assert net(kp_source=[[[0.0] * 3] * 21], kp_driving=[[[0.0] * 3] * 21])["out"].shape == (1, 21, 3)
    assert load_network("hubert", root, backend="torch").backend == "onnx"  # the aux_models original


def test_pinned_sha_needs_no_ref(clean_cache: Path, seed0_root: Path, tmp_path: Path, monkeypatch) -> None:
    snapshot = _add_to_cache(clean_cache, _torch_files(seed0_root, tmp_path), ref=None)
    monkeypatch.setenv("DITTO_HUB_REVISION", SHA)
    assert resolve_checkpoints("torch", progress=False) == snapshot


def test_nothing_cached_offline_says_how_to_fix(clean_cache: Path) -> None:
    with pytest.raises(CheckpointsUnavailableError) as info:
        resolve_checkpoints("onnx", progress=False)
    message = str(info.value)
    assert "python -m ditto_demo download --backend onnx" in message
    assert CHECKPOINTS_ENV in message
    assert "\n" not in message


def test_partial_cache_names_the_missing_files(clean_cache: Path, seed0_root: Path, tmp_path: Path) -> None:
    files = _torch_files(seed0_root, tmp_path)
    del files["ditto_pytorch/models/decoder.pth"]
    _add_to_cache(clean_cache, files)
    with pytest.raises(CheckpointsUnavailableError, match=r"lack ditto_pytorch/models/decoder\.pth"):
        resolve_checkpoints("torch", progress=False)


def test_local_folder_is_used_as_is(seed0_root: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(CHECKPOINTS_ENV, str(seed0_root))
    assert resolve_checkpoints("torch") == seed0_root  # partial (no aux models), still used as it is
    assert resolve_checkpoints("torch", local=tmp_path) == seed0_root  # the variable wins over the argument
    monkeypatch.setenv(CHECKPOINTS_ENV, str(tmp_path / "missing"))
    with pytest.raises(CheckpointsUnavailableError, match="does not exist; fix DITTO_CHECKPOINTS"):
        resolve_checkpoints("torch")
    monkeypatch.delenv(CHECKPOINTS_ENV)
    assert resolve_checkpoints("torch", local=seed0_root) == seed0_root


def test_patterns_are_limited_to_the_backend() -> None:
    torch_patterns = allow_patterns("torch")
    assert "ditto_pytorch/models/decoder.pth" in torch_patterns
    assert "ditto_pytorch/aux_models/det_10g.onnx" in torch_patterns
    assert not any(p.startswith(("ditto_onnx/", "ditto_trt")) for p in torch_patterns)

    onnx_patterns = allow_patterns("onnx")
    assert "ditto_onnx/warp_network_ori.onnx" in onnx_patterns
    assert "ditto_onnx/warp_network.onnx" not in onnx_patterns  # holds the plugin op ORT cannot run
    assert not any(p.startswith(("ditto_pytorch/", "ditto_trt")) for p in onnx_patterns)

    trt_patterns = allow_patterns("tensorrt")
    assert "ditto_pytorch/models/warp_network.pth" in trt_patterns  # for the plugin-free engine
    assert "ditto_onnx/decoder.onnx" in trt_patterns
    assert not any(p.startswith("ditto_trt") for p in trt_patterns)  # TRT 8.6 plans: only on request
    with_engines = allow_patterns("tensorrt", prebuilt_engines=True)
    assert "ditto_trt_Ampere_Plus/decoder_fp16.engine" in with_engines
    assert "ditto_onnx/libgrid_sample_3d_plugin.so" in with_engines
    with pytest.raises(ValueError, match="unknown backend"):
        allow_patterns("jax")


def test_corrupted_cached_file_is_named_with_the_repair(clean_cache: Path, seed0_root: Path, tmp_path: Path) -> None:
    """A blob whose content no longer matches its sha256 name: verify says so, loading says so, both name --force."""
    from ditto_demo.cli import main
    from ditto_demo.engine.hub import verify_checkpoints
    from ditto_demo.errors import CheckpointError

    snapshot = _add_to_cache(clean_cache, _torch_files(seed0_root, tmp_path))
    assert verify_checkpoints(snapshot, "torch") == {}
    blob = (snapshot / "ditto_pytorch/models/stitch_network.pth").resolve()
    blob.write_bytes(blob.read_bytes()[: blob.stat().st_size // 2])  # a download cut in half
    problems = verify_checkpoints(snapshot, "torch")
    assert problems == {
        "ditto_pytorch/models/stitch_network.pth": "does not match the Hub's sha256 record "
        "(a truncated or corrupted download)"
    }
    with pytest.raises(CheckpointError, match=r"sha256 record.*download --backend torch --force"):
        load_network("stitch_network", snapshot, backend="torch")
    assert main(["verify", "--backend", "torch"]) == 2
    (snapshot / "ditto_pytorch/models/decoder.pth").resolve().unlink()  # a blob deleted by hand
    assert "decoder.pth" in " ".join(verify_checkpoints(snapshot, "torch"))


def test_auto_fetches_the_set_auto_will_use(clean_cache: Path) -> None:
    """Without TensorRT here, "auto" means the PyTorch set (and the fix names it)."""
    with pytest.raises(CheckpointsUnavailableError, match="download --backend torch"):
        resolve_checkpoints("auto", progress=False)
