"""TensorRT backend. What needs no GPU (which file an engine is built from, names, profiles, refusal here) runs
everywhere; building and running engines is marked ``gpu`` and skips, with the reason, where CUDA or TensorRT is
missing."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from ditto_demo.engine import NETWORKS, get_spec, load_network
from ditto_demo.engine.backends.tensorrt_backend import _build_source, _profile_shapes
from ditto_demo.engine.cache import trt_engine_dir
from ditto_demo.engine.host import probe_host
from ditto_demo.engine.loader import choose_backend
from ditto_demo.errors import BackendUnavailableError
from ditto_demo.testing.checkpoints import write_test_checkpoints

HAS_TRT = torch.cuda.is_available() and importlib.util.find_spec("tensorrt") is not None
needs_trt = pytest.mark.skipif(not HAS_TRT, reason="needs a CUDA GPU and the tensorrt package")


def test_engine_file_names_match_the_release() -> None:
    names = {name: spec.engine_file for name, spec in NETWORKS.items()}
    assert names["decoder"] == "decoder_fp16.engine"
    assert names["motion_extractor"] == "motion_extractor_fp32.engine"
    assert names["lmdm"] == "lmdm_v0.4_hubert_fp32.engine"
    assert names["hubert"] == "hubert_fp32.engine"
    assert names["warp_network"] == "warp_network_fp16.engine"
    for spec in NETWORKS.values():  # the cache and the release agree on every name
        assert spec.prebuilt_engine is None or spec.prebuilt_engine.endswith("/" + spec.engine_file)


def test_precisions_follow_the_release() -> None:
    fp32 = {name for name, spec in NETWORKS.items() if spec.precision == "fp32"}
    assert fp32 == {"motion_extractor", "lmdm", "hubert"}


def test_hubert_profile() -> None:
    spec = get_spec("hubert")
    assert _profile_shapes(spec, spec.inputs[0]) == ((1, 3240), (1, 6480), (1, 12960))


def test_engine_cache_folder_is_keyed_by_gpu_and_version(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DITTO_ENGINES_DIR", str(tmp_path))
    assert trt_engine_dir("nvidia-h200-sm90", "10.16.1.11") == tmp_path / "nvidia-h200-sm90-trt10.16.1.11"


@pytest.mark.skipif(HAS_TRT, reason="checks the refusal on a host without TensorRT")
def test_refused_with_the_reason_where_unusable(seed0_root: Path) -> None:
    with pytest.raises(BackendUnavailableError, match="tensorrt backend is not usable here"):
        load_network("stitch_network", seed0_root, backend="tensorrt")
    assert choose_backend(get_spec("stitch_network"), seed0_root).backend == "torch"  # auto falls back
    assert probe_host().tensorrt_usable is False


def test_warp_engine_source_is_our_plugin_free_export(seed0_root: Path) -> None:
    path, names = _build_source(get_spec("warp_network"), seed0_root)
    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    ranks = {v.name: len(v.type.tensor_type.shape.dim) for v in (*model.graph.value_info, *model.graph.input)}
    samplers = [n for n in model.graph.node if n.op_type == "GridSample"]
    assert len(samplers) == 2
    assert all(ranks[n.input[0]] == 4 for n in samplers)  # no 5-D op: stock TensorRT parses it
    assert not [n for n in model.graph.node if n.domain not in ("", "ai.onnx")]  # and no custom op
    assert names == {n: n for n in (*get_spec("warp_network").input_names, "out")}
    again, _ = _build_source(get_spec("warp_network"), seed0_root)
    assert again == path  # exported once, then cached


def test_aux_engine_sources_map_original_names(tmp_path: Path) -> None:
    root = write_test_checkpoints(tmp_path / "ckpt", "tiny", export_onnx=False)
    shutil.rmtree(root / "ditto_onnx")  # only the original aux_models files remain
    path, names = _build_source(get_spec("landmark203"), root)
    assert path.name == "landmark203.onnx"
    assert names == {"input": "input", "landmarks": "landmarks_ori"}  # the third output of three
    path, names = _build_source(get_spec("insightface_det"), root)
    assert path.name == "det_10g.onnx"
    assert names["image"] == "input.1"


@pytest.mark.gpu
@needs_trt
@pytest.mark.parametrize("name", ["stitch_network", "warp_network", "lmdm", "decoder"])
def test_engine_matches_torch(tmp_path: Path, name: str) -> None:
    root = write_test_checkpoints(tmp_path / "ckpt", "tiny")
    via_trt = load_network(name, root, backend="tensorrt")
    via_torch = load_network(name, root, backend="torch", device="cuda")
    rng = np.random.default_rng(0)
    feeds = {
        b.name: (np.full(via_torch.input_shapes[b.name], 500) if b.dtype == "int64"
                 else 0.3 * rng.standard_normal(via_torch.input_shapes[b.name])).astype(b.dtype)
        for b in via_torch.spec.inputs
    }
    a, b = via_trt(**feeds), via_torch(**feeds)
    tolerance = 1e-4 if get_spec(name).precision == "fp32" else 2e-2  # fp16 engines
    for key in a:
        assert np.abs(a[key] - b[key]).max() <= tolerance * max(float(np.std(b[key])), 1e-3)
    on_device = via_trt.run_tensors(**{k: torch.from_numpy(v).cuda() for k, v in feeds.items()})
    assert all(t.is_cuda for t in on_device.values())
    cached = load_network(name, root, backend="tensorrt")  # second load: the cached engine
    np.testing.assert_array_equal(cached(**feeds)[next(iter(a))], a[next(iter(a))])


@pytest.mark.gpu
@needs_trt
def test_hubert_engine_dynamic_lengths(tmp_path: Path) -> None:
    root = write_test_checkpoints(tmp_path / "ckpt", "tiny")
    net = load_network("hubert", root, backend="tensorrt")
    reference = load_network("hubert", root, backend="onnx", device="cpu")
    for samples in (3240, 6480, 12960):
        audio = np.random.default_rng(samples).standard_normal((1, samples)).astype(np.float32)
        np.testing.assert_allclose(net(input_values=audio)["encoding_out"],
                                   reference(input_values=audio)["encoding_out"], atol=1e-3)


def test_auto_falls_back_when_tensorrt_fails(seed0_root: Path, monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    """If auto picked TensorRT and it cannot load (plugin missing, build failed), the next backend serves, with a
    warning; an explicit backend="tensorrt" still fails with the reason."""
    from ditto_demo.engine import loader
    from ditto_demo.engine.backends.torch_backend import TorchNetwork
    from ditto_demo.engine.checkpoints import build_module

    def tensorrt_choice(spec, root, backend="auto", device="auto"):
        return loader.BackendChoice("tensorrt", "cuda", "pretend TensorRT is usable")

    def broken_tensorrt(spec, root, device):
        raise BackendUnavailableError("the GridSample3D plugin does not load")

    def torch_on_cpu(spec, root, device):
        return TorchNetwork(spec, build_module(spec, root), "cpu")

    monkeypatch.setattr(loader, "choose_backend", tensorrt_choice)
    monkeypatch.setitem(loader._LOADERS, "tensorrt", broken_tensorrt)
    monkeypatch.setitem(loader._LOADERS, "torch", torch_on_cpu)
    caplog.set_level("WARNING", logger="ditto_demo.engine.loader")
    net = loader.load_network("stitch_network", seed0_root)
    assert net.backend == "torch"
    assert "TensorRT failed (the GridSample3D plugin does not load); falling back to torch" in caplog.text
    with pytest.raises(BackendUnavailableError, match="plugin does not load"):
        loader.load_network("stitch_network", seed0_root, backend="tensorrt")
