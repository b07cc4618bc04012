"""``load_network``: pick a backend and device for a network and load it from a checkpoint root.

This module is the only place that turns a backend name into code. ``backend="auto"`` prefers TensorRT (CUDA,
the ``tensorrt`` package and something to build from), then PyTorch on CUDA, then PyTorch on the CPU, then ONNX
Runtime (a root with only ONNX files), and logs the choice with its reason. The auxiliary models (face detector,
landmarks, HuBERT) exist only as ONNX, so "torch" runs them through ONNX Runtime on the same device.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ditto_demo.engine.backends.base import Network
from ditto_demo.engine.cache import export_cache_path, file_lock
from ditto_demo.engine.host import HostInfo, probe_host
from ditto_demo.engine.specs import NetworkSpec, OnnxSource, get_spec
from ditto_demo.errors import BackendUnavailableError, CheckpointError

__all__ = ["BACKENDS", "DEVICES", "BackendChoice", "choose_backend", "load_network"]

log = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "onnx", "tensorrt")
DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class BackendChoice:
    backend: str
    device: str
    reason: str


def _resolve_device(device: str, host: HostInfo) -> str:
    if device not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}; got {device!r}")
    if device == "auto":
        return "cuda" if host.cuda_available else "cpu"
    if device == "cuda" and not host.cuda_available:
        raise BackendUnavailableError("No CUDA GPU is visible to PyTorch here; use --device cpu (or auto).")
    return device


def _has_onnx(spec: NetworkSpec, root: Path) -> bool:
    return any((root / s.path).is_file() for s in spec.onnx)


def _has_checkpoint(spec: NetworkSpec, root: Path) -> bool:
    return spec.checkpoint is not None and (root / spec.checkpoint).is_file()


def choose_backend(spec: NetworkSpec, root: Path, backend: str = "auto", device: str = "auto") -> BackendChoice:
    """Decide where ``spec`` runs. Explicit requests are honoured or refused with the reason, never swapped."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
    host = probe_host()
    if backend == "tensorrt" or (backend == "auto" and device in ("auto", "cuda") and host.tensorrt_usable):
        if not host.tensorrt_usable:
            raise BackendUnavailableError(
                f"The tensorrt backend is not usable here ({host.tensorrt_error or 'no CUDA GPU'}); "
                "use --backend torch or onnx."
            )
        if device == "cpu":
            raise BackendUnavailableError("TensorRT runs on the GPU only; use --device cuda or --backend torch.")
        if backend == "tensorrt" or _has_onnx(spec, root) or _has_checkpoint(spec, root):
            return BackendChoice("tensorrt", "cuda", f"CUDA and TensorRT {host.tensorrt_version} are available")
    resolved = _resolve_device(device, host)
    if spec.module is not None and (backend == "torch" or (backend == "auto" and _has_checkpoint(spec, root))):
        why = "requested" if backend == "torch" else f"its checkpoint is present and {resolved} is the device"
        return BackendChoice("torch", resolved, why)
    if backend == "torch":
        return BackendChoice("onnx", resolved, "no PyTorch implementation of this auxiliary model: ONNX Runtime")
    why = "requested" if backend == "onnx" else "only ONNX files are available for it"
    return BackendChoice("onnx", resolved, why)


def _load_torch(spec: NetworkSpec, root: Path, device: str, compile_mode: str = "off") -> Network:
    from ditto_demo.engine.backends.torch_backend import TorchNetwork
    from ditto_demo.engine.checkpoints import build_module, configured_input_shapes, model_config

    shapes = configured_input_shapes(spec, model_config(root))
    return TorchNetwork(spec, build_module(spec, root), device, shapes, compile_mode=compile_mode)


def _onnx_file(spec: NetworkSpec, root: Path) -> tuple[Path, OnnxSource]:
    """The ONNX file to run: a released one if present, else our export of the ``.pth`` (cached)."""
    for source in spec.onnx:
        if (root / source.path).is_file():
            return root / source.path, source
    if _has_checkpoint(spec, root):
        from ditto_demo.engine.export import export_network

        assert spec.checkpoint is not None
        target = export_cache_path(root / spec.checkpoint, spec.name, "native")
        with file_lock(target):
            if not target.is_file():
                log.info("no ONNX file for %s under %s: exporting it from %s", spec.name, root, spec.checkpoint)
                export_network(spec.name, root, target)
        return target, OnnxSource(str(target))
    wanted = " or ".join(s.path for s in spec.onnx) or "an ONNX file"
    extra = f" (or {spec.checkpoint} to export from)" if spec.checkpoint else ""
    raise CheckpointError(
        f"The {spec.name} network needs {wanted}{extra} under {root}; "
        "run `python -m ditto_demo download --backend onnx` or point DITTO_CHECKPOINTS at a complete copy."
    )


def _load_onnx(spec: NetworkSpec, root: Path, device: str) -> Network:
    from ditto_demo.engine.backends.onnx_backend import OnnxNetwork

    path, source = _onnx_file(spec, root)
    return OnnxNetwork(spec, path, source, device)


def _load_tensorrt(spec: NetworkSpec, root: Path, device: str) -> Network:
    from ditto_demo.engine.backends.tensorrt_backend import load_tensorrt_network

    return load_tensorrt_network(spec, root, probe_host())


#: ``loader(spec, root, device)`` per backend; see :func:`_loader` for the PyTorch loader's compile mode.
_LOADERS: dict[str, Callable[[NetworkSpec, Path, str], Network]] = {
    "torch": _load_torch,
    "onnx": _load_onnx,
    "tensorrt": _load_tensorrt,
}


def _loader(backend: str, compile_mode: str) -> Callable[[NetworkSpec, Path, str], Network]:
    """The loader of ``backend``; ``torch.compile`` is an option of the PyTorch one only."""
    load = _LOADERS[backend]
    if backend == "torch" and compile_mode != "off":
        return functools.partial(_load_torch, compile_mode=compile_mode)
    return load


def load_network(
    name: str,
    root: str | os.PathLike[str],
    backend: str = "auto",
    device: str = "auto",
    *,
    compile_mode: str | None = None,
) -> Network:
    """Load network ``name`` from the checkpoint root ``root`` on a backend and device.

    ``name``: appearance_extractor, motion_extractor, warp_network, decoder, stitch_network, lmdm, or an auxiliary
    model (insightface_det, landmark106, landmark203, landmark478, hubert, blaze_face, face_mesh).
    The result is called with numpy arrays keyed by input binding names and returns a dict of numpy arrays keyed
    by output binding names (``ditto_spec.md`` §2.0); ``run_tensors`` is the same on torch tensors.
    ``compile_mode``: ``torch.compile`` for a PyTorch network (see ``COMPILE_MODES``). ``None`` takes
    ``DITTO_TORCH_COMPILE``, for callers of this function alone; the pipeline always passes its typed setting.
    """
    root = Path(root)
    if not root.is_dir():
        raise CheckpointError(f"The checkpoint folder {root} does not exist.")
    if name == "landmark478":
        from ditto_demo.engine.landmark478 import load_landmark478

        return load_landmark478(root, backend, device)
    if compile_mode is None:
        from ditto_demo.engine.backends.torch_backend import compile_mode_from_env

        compile_mode = compile_mode_from_env()
    spec = get_spec(name)
    choice = choose_backend(spec, root, backend, device)
    log.info("%s: %s on %s (%s)", name, choice.backend, choice.device, choice.reason)
    try:
        return _loader(choice.backend, compile_mode)(spec, root, choice.device)
    except (BackendUnavailableError, CheckpointError) as exc:
        if backend != "auto" or choice.backend != "tensorrt":
            raise
        # "auto" promised the best backend that works, not TensorRT at any price: a failed engine build or a
        # missing plugin falls back to PyTorch (or ONNX Runtime) on the GPU, loudly.
        fallback = "torch" if spec.module is not None and _has_checkpoint(spec, root) else "onnx"
        log.warning("%s: TensorRT failed (%s); falling back to %s on cuda", name, exc, fallback)
        return _loader(fallback, compile_mode)(spec, root, "cuda")
