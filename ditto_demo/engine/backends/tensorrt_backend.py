"""TensorRT backend: name-based I/O (TensorRT 10/11), device buffers allocated once, one CUDA stream per network.

Engines come from, in order: our cache (``engines/<gpu>-sm<cc>-trt<version>/``), the released prebuilt engine if
the installed TensorRT can deserialise it, or a build from ONNX at first use. The warp network is built from our
plugin-free export (5-D sampling as tiled 2-D GridSample), so no custom plugin is ever needed for a built engine;
the released GridSample3D plugin is loaded only to try the released warp engine, and only from the checkpoint
root. Device memory is owned by PyTorch tensors, which keeps CUDA handling in one library.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import threading
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ditto_demo.engine.backends.base import Network
from ditto_demo.engine.cache import export_cache_path, file_lock, trt_engine_dir
from ditto_demo.engine.host import HostInfo
from ditto_demo.engine.specs import PLUGIN_LIBRARY, Binding, NetworkSpec, OnnxSource
from ditto_demo.errors import BackendUnavailableError, CheckpointError

__all__ = ["TensorRTNetwork", "build_engine", "import_tensorrt", "load_tensorrt_network"]

log = logging.getLogger(__name__)


def import_tensorrt() -> Any:
    """The ``tensorrt`` module, or a :class:`BackendUnavailableError` that says how to get it."""
    try:
        import tensorrt as trt
    except (ImportError, OSError) as exc:
        raise BackendUnavailableError(
            f"TensorRT is not usable here ({exc}); install it with `pip install tensorrt-cu12==10.16.1.11` "
            "or choose --backend torch."
        ) from exc
    return trt


@cache
def _logger() -> Any:
    """One TensorRT logger per process, with NVIDIA's built-in plugins registered once."""
    trt = import_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    trt.init_libnvinfer_plugins(logger, "")
    return logger


@cache
def _load_plugin(path: str) -> bool:
    """Register a plugin library with TensorRT (once per path). Returns ``False`` if it does not load."""
    trt = import_tensorrt()
    _logger()
    try:
        handle = trt.get_plugin_registry().load_library(path)
    except (RuntimeError, OSError) as exc:
        log.warning("the TensorRT plugin %s does not load (%s)", path, exc)
        return False
    return handle is not None


def _torch_dtype(trt: Any, dtype: Any) -> torch.dtype:
    return {
        trt.float32: torch.float32,
        trt.float16: torch.float16,
        trt.int32: torch.int32,
        trt.int64: torch.int64,
        trt.bool: torch.bool,
        trt.int8: torch.int8,
    }[dtype]


def _deserialize(path: Path) -> tuple[Any, Any] | None:
    """(engine, runtime) from ``path``, or ``None`` when this TensorRT/GPU cannot use it (other version or arch).

    TensorRT signals a version or architecture mismatch by returning ``None`` (after logging), not by raising.
    """
    trt = import_tensorrt()
    runtime = trt.Runtime(_logger())
    engine = runtime.deserialize_cuda_engine(path.read_bytes())
    return None if engine is None else (engine, runtime)


class TensorRTNetwork(Network):
    """One engine with one execution context. Calls are serialised with a lock (a context is not re-entrant)."""

    backend = "tensorrt"

    def __init__(self, spec: NetworkSpec, engine: Any, runtime: Any, io_names: Mapping[str, str] | None = None):
        super().__init__(spec, "cuda")
        trt = import_tensorrt()
        self.engine = engine
        self._runtime = runtime  # the engine must not outlive its runtime
        self.context = engine.create_execution_context()
        self._names = {n: (io_names or {}).get(n, n) for n in (*spec.input_names, *spec.output_names)}
        self._stream = torch.cuda.Stream()
        self._lock = threading.Lock()
        self._buffers: dict[str, torch.Tensor] = {}
        device = torch.device("cuda")
        # Allocate every buffer once at its largest shape; dynamic inputs later use a prefix view of it.
        for binding in spec.inputs:
            name = self._names[binding.name]
            shape = tuple(engine.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                shape = tuple(engine.get_tensor_profile_shape(name, 0)[2])
            self.context.set_input_shape(name, shape)
        for index in range(engine.num_io_tensors):
            name = engine.get_tensor_name(index)
            shape = tuple(self.context.get_tensor_shape(name))
            dtype = _torch_dtype(trt, engine.get_tensor_dtype(name))
            buffer = torch.empty(max(1, math.prod(shape)), dtype=dtype, device=device)
            self._buffers[name] = buffer
            self.context.set_tensor_address(name, buffer.data_ptr())

    def run_tensors(self, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        """Run on tensors (host or device). Outputs are views of this network's buffers, valid until the next call."""
        current = torch.cuda.current_stream()
        with self._lock:
            self._stream.wait_stream(current)  # inputs produced on the caller's stream must be complete
            with torch.cuda.stream(self._stream):
                for binding in self.spec.inputs:
                    name = self._names[binding.name]
                    value = inputs[binding.name]
                    self.context.set_input_shape(name, tuple(value.shape))
                    self._buffers[name][: value.numel()].view(value.shape).copy_(value, non_blocking=True)
                if not self.context.execute_async_v3(self._stream.cuda_stream):
                    raise RuntimeError(f"TensorRT failed to run {self.name}")
                outputs = {}
                for binding in self.spec.outputs:
                    name = self._names[binding.name]
                    shape = tuple(self.context.get_tensor_shape(name))
                    outputs[binding.name] = self._buffers[name][: math.prod(shape)].view(shape)
            current.wait_stream(self._stream)
        return outputs

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs = self.run_tensors(**{k: torch.from_numpy(v) for k, v in feeds.items()})
        return {k: v.cpu().numpy() for k, v in outputs.items()}  # .cpu() copies out of the reused buffers


# --------------------------------------------------------------------------------------------------- building


def _profile_shapes(spec: NetworkSpec, binding: Binding) -> tuple[tuple[int, ...], ...]:
    """(min, opt, max) shapes of a binding with dynamic dimensions."""
    return tuple(
        tuple(d if isinstance(d, int) else spec.dynamic[d][which] for d in binding.shape) for which in range(3)
    )


def build_engine(onnx_path: Path, engine_path: Path, spec: NetworkSpec, io_names: Mapping[str, str]) -> Path:
    """Build a serialised engine from an ONNX file; the result is written atomically to ``engine_path``.

    fp16 networks are built with the FP16 flag, with every GridSample layer pinned to fp32 (coordinates in fp16
    lose more than a pixel on a 64-wide volume). TensorRT 11 dropped weak typing: there the network is built
    strongly typed, i.e. in the ONNX file's own precision (fp32), and a warning says so.
    """
    trt = import_tensorrt()
    logger = _logger()
    builder = trt.Builder(logger)
    strongly_typed = not hasattr(trt.BuilderFlag, "FP16")
    flags = 0
    if strongly_typed:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    elif int(trt.__version__.split(".")[0]) < 10:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise CheckpointError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    if spec.precision == "fp16":
        if strongly_typed:
            log.warning("TensorRT %s builds strongly typed networks: %s is built in fp32", trt.__version__, spec.name)
        else:
            config.set_flag(trt.BuilderFlag.FP16)
            config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
            for index in range(network.num_layers):
                layer = network.get_layer(index)
                if layer.type == trt.LayerType.GRID_SAMPLE:
                    layer.precision = trt.float32
                    layer.set_output_type(0, trt.float32)
    dynamic = [b for b in spec.inputs if any(isinstance(d, str) for d in b.shape)]
    if dynamic:
        profile = builder.create_optimization_profile()
        for binding in dynamic:
            profile.set_shape(io_names.get(binding.name, binding.name), *_profile_shapes(spec, binding))
        config.add_optimization_profile(profile)
    log.info("building the TensorRT engine for %s (%s); this takes a few minutes once", spec.name, spec.precision)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BackendUnavailableError(f"TensorRT failed to build an engine for {spec.name} from {onnx_path}.")
    _atomic_write(engine_path, bytes(serialized))
    engine_path.with_suffix(".json").write_text(json.dumps({"io_names": dict(io_names), "onnx": str(onnx_path)}))
    return engine_path


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _onnx_io_names(path: Path, source: OnnxSource, spec: NetworkSpec) -> dict[str, str]:
    """Binding name -> the ONNX file's tensor name (positional outputs resolved from the graph)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    outputs = [o.name for o in graph.output]
    names = dict(zip(spec.input_names, source.inputs or spec.input_names, strict=True))
    wanted = source.outputs or spec.output_names
    names.update(
        zip(spec.output_names, (outputs[o] if isinstance(o, int) else o for o in wanted), strict=True)
    )
    return names


def _build_source(spec: NetworkSpec, root: Path) -> tuple[Path, dict[str, str]]:
    """The ONNX file an engine for ``spec`` is built from, and its binding-name map."""
    if spec.trt_from_module:
        from ditto_demo.engine.export import export_network

        assert spec.checkpoint is not None
        checkpoint = root / spec.checkpoint
        if not checkpoint.is_file():
            raise CheckpointError(
                f"Building the {spec.name} engine needs {checkpoint} (exported without the GridSample3D plugin); "
                "run `python -m ditto_demo download --backend tensorrt`."
            )
        target = export_cache_path(checkpoint, spec.name, "plugin-free")
        with file_lock(target):
            if not target.is_file():
                export_network(spec.name, root, target, plugin_free=True)
        return target, {n: n for n in (*spec.input_names, *spec.output_names)}
    for source in spec.onnx:
        path = root / source.path
        if path.is_file() and source.fixup is None:
            return path, _onnx_io_names(path, source, spec)
    wanted = ", ".join(s.path for s in spec.onnx)
    raise CheckpointError(f"Building the {spec.name} engine needs one of: {wanted} under {root}.")


def load_tensorrt_network(spec: NetworkSpec, root: Path, host: HostInfo) -> TensorRTNetwork:
    """The TensorRT network for ``spec``: cached engine, else released engine, else a fresh build."""
    if not host.tensorrt_usable:
        raise BackendUnavailableError(
            "The tensorrt backend needs a CUDA GPU and the tensorrt package "
            f"({host.tensorrt_error or 'no CUDA device'}); use --backend torch or onnx."
        )
    cache_dir = trt_engine_dir(host.gpu_slug, str(host.tensorrt_version))
    cached = cache_dir / spec.engine_file
    with file_lock(cached):
        if cached.is_file():
            loaded = _deserialize(cached)
            if loaded is not None:
                log.info("tensorrt %s: cached engine %s", spec.name, cached)
                return TensorRTNetwork(spec, *loaded, io_names=_sidecar_names(cached))
            log.warning("the cached engine %s does not load with this TensorRT/GPU; rebuilding it", cached)
        prebuilt = _try_prebuilt(spec, root)
        if prebuilt is not None:
            return prebuilt
        onnx_path, io_names = _build_source(spec, root)
        build_engine(onnx_path, cached, spec, io_names)
        loaded = _deserialize(cached)
        if loaded is None:
            raise BackendUnavailableError(f"The freshly built engine {cached} does not deserialise.")
        return TensorRTNetwork(spec, *loaded, io_names=io_names)


def _sidecar_names(engine_path: Path) -> dict[str, str] | None:
    sidecar = engine_path.with_suffix(".json")
    if not sidecar.is_file():
        return None
    return json.loads(sidecar.read_text()).get("io_names")


def _try_prebuilt(spec: NetworkSpec, root: Path) -> TensorRTNetwork | None:
    """The released engine if this TensorRT deserialises it (it is a TensorRT 8.6 plan: usually it does not)."""
    if spec.prebuilt_engine is None or not (root / spec.prebuilt_engine).is_file():
        return None
    if spec.needs_plugin:
        plugin = root / PLUGIN_LIBRARY  # plugins are loaded from the resolved checkpoint root and nowhere else
        if not plugin.is_file() or not _load_plugin(str(plugin)):
            log.warning("no loadable GridSample3D plugin in %s: building a plugin-free %s engine", root, spec.name)
            return None
    loaded = _deserialize(root / spec.prebuilt_engine)
    if loaded is None:
        log.info("the released %s engine does not load on TensorRT here; building one", spec.name)
        return None
    log.info("tensorrt %s: released engine %s", spec.name, root / spec.prebuilt_engine)
    return TensorRTNetwork(spec, *loaded)
