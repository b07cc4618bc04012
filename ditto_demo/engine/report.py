"""A plain-text report of what the engine can do here: host, backends, checkpoint files, auto's choices.

Shared by ``python -m ditto_demo doctor`` and the app's status panel, so both say the same thing.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from ditto_demo.engine.cache import engines_dir
from ditto_demo.engine.host import HostInfo, probe_host
from ditto_demo.engine.loader import choose_backend
from ditto_demo.engine.specs import NETWORKS
from ditto_demo.errors import DittoError

__all__ = ["engine_report", "usable_backends"]


def usable_backends(host: HostInfo) -> list[str]:
    """``backend/device`` pairs this host can run."""
    candidates = (
        ("torch/cpu", True),
        ("torch/cuda", host.cuda_available),
        ("onnx/cpu", host.onnxruntime_version is not None),
        ("onnx/cuda", "CUDAExecutionProvider" in host.onnx_providers),
        ("tensorrt/cuda", host.tensorrt_usable),
    )
    return [name for name, ok in candidates if ok]


def _gpu_line(host: HostInfo) -> str:
    if not host.cuda_available:
        return "not available"
    major, minor = host.compute_capability or (0, 0)
    return f"{host.gpu_name} (sm{major}{minor})"


def _files_state(root: Path, backend: str, host: HostInfo) -> str:
    """Whether ``root`` holds what ``backend`` needs, in words: ``complete``, or ``missing N: ...``, with what an
    absent optional file means and, for TensorRT on a host that cannot run it, that the files go unused here."""
    from ditto_demo.engine.hub import missing_files
    from ditto_demo.engine.landmark478 import TASK_FILE

    missing = missing_files(root, backend)
    notes = []
    if TASK_FILE in missing and _landmark_onnx_present(root):
        # MediaPipe's task file is one of two ways to the 478-point landmarks; BlazeFace + FaceMesh is the other.
        missing.remove(TASK_FILE)
        notes.append(f"{PurePosixPath(TASK_FILE).name} is optional: without it the 478-point landmarks use "
                     "BlazeFace + FaceMesh (ONNX)")
    state = "complete" if not missing else f"missing {len(missing)}: {', '.join(missing[:4])}"
    if backend == "tensorrt" and not host.tensorrt_usable:
        notes.append("TensorRT is not usable on this host, so these files go unused here")
    return "; ".join([state, *notes])


def _landmark_onnx_present(root: Path) -> bool:
    """Both ONNX networks that stand in for MediaPipe's face landmarker are in ``root``."""
    return all(any((root / s.path).is_file() for s in NETWORKS[name].onnx) for name in ("blaze_face", "face_mesh"))


def engine_report(checkpoints: Path | None = None, *, workers: str | None = None) -> str:
    """The report for ``checkpoints`` (default: ``DITTO_CHECKPOINTS``, else the Hub cache; never downloads);
    ``workers`` (one worker per line, as the app's worker pool or ``doctor`` describes them) ends it."""
    report = _engine_lines(checkpoints)
    if workers is not None:
        report += "\nworkers\n" + "\n".join(f"  {line}" for line in workers.splitlines())
    return report


def _engine_lines(checkpoints: Path | None) -> str:
    from ditto_demo.engine.hub import CHECKPOINTS_ENV, HUB_REPO_ID, find_cached_checkpoints

    host = probe_host()
    lines = [
        f"python        {host.python}",
        f"torch         {host.torch_version}",
        f"cuda          {_gpu_line(host)}",
        f"tensorrt      {host.tensorrt_version or 'not usable: ' + str(host.tensorrt_error)}",
        f"onnxruntime   {host.onnxruntime_version or 'not installed'} {list(host.onnx_providers)}",
        f"backends      {', '.join(usable_backends(host))}",
        f"engines cache {engines_dir()}",
    ]
    root, source = checkpoints, "local folder"
    if root is None and os.environ.get(CHECKPOINTS_ENV):
        root = Path(os.environ[CHECKPOINTS_ENV])
    if root is None:
        root, source = find_cached_checkpoints(), f"Hugging Face cache of {HUB_REPO_ID}"
    if root is None:
        lines.append(f"checkpoints   none found ({CHECKPOINTS_ENV} unset, nothing cached); run `download`")
        return "\n".join(lines)
    if not root.is_dir():
        lines.append(f"checkpoints   {root} is not a folder; fix {CHECKPOINTS_ENV} or --checkpoints")
        return "\n".join(lines)
    lines.append(f"checkpoints   {root} ({source})")
    lines.append("  files each backend needs (whether this host can run it: see backends above)")
    for backend in ("torch", "onnx", "tensorrt"):
        lines.append(f"  {backend:<9}   {_files_state(root, backend, host)}")
    for name, spec in NETWORKS.items():
        try:
            choice = choose_backend(spec, root)
            lines.append(f"  {name:<21} auto -> {choice.backend}/{choice.device} ({choice.reason})")
        except DittoError as exc:
            lines.append(f"  {name:<21} unavailable: {exc}")
    return "\n".join(lines)
