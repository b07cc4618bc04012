"""Resolve a checkpoint root: a local folder, the Hugging Face cache, or a download from the Hub.

Order: ``DITTO_CHECKPOINTS`` (a folder used as it is) > an explicit ``local`` argument > the Hub repository
``digital-avatar/ditto-talkinghead`` at :data:`HUB_REVISION`, fetched with ``snapshot_download`` and limited to the
files the chosen backend reads. ``HF_HUB_OFFLINE=1`` is honoured by huggingface_hub itself: then only the local
cache is consulted. Whatever fails, the caller gets one :class:`CheckpointsUnavailableError` sentence that says
how to fix it (:func:`download_error` writes it, for this module and for :mod:`ditto_demo.engine.download`).

:func:`resolve_checkpoints` blocks until the files are there (the CLI); an app that must serve its page while the
files arrive uses :class:`ditto_demo.engine.download.CheckpointDownload`, which reports its progress.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path

from ditto_demo.engine.specs import MODEL_CONFIG_FILE, NETWORKS, PLUGIN_LIBRARY, NetworkSpec
from ditto_demo.errors import CheckpointsUnavailableError

__all__ = [
    "CHECKPOINTS_ENV",
    "HUB_REPO_ID",
    "HUB_REVISION",
    "REVISION_ENV",
    "allow_patterns",
    "configured_revision",
    "download_error",
    "find_cached_checkpoints",
    "fix_sentence",
    "incomplete_error",
    "local_checkpoints",
    "missing_files",
    "missing_networks",
    "required_files",
    "resolve_backend",
    "resolve_checkpoints",
    "verify_checkpoints",
]

log = logging.getLogger(__name__)

HUB_REPO_ID = "digital-avatar/ditto-talkinghead"
#: The Hub revision every download uses. Pin a full commit sha here (``python -m ditto_demo doctor`` prints the
#: sha a cached snapshot resolved to); ``DITTO_HUB_REVISION`` overrides it for one run.
HUB_REVISION = "main"
CHECKPOINTS_ENV = "DITTO_CHECKPOINTS"
REVISION_ENV = "DITTO_HUB_REVISION"

#: The released run-time configurations (tiny pickles) — every backend wants the one(s) it runs with.
_CFG_FILES = {
    "torch": ("ditto_cfg/v0.4_hubert_cfg_pytorch.pkl",),
    "onnx": ("ditto_cfg/v0.4_hubert_cfg_trt.pkl", "ditto_cfg/v0.4_hubert_cfg_trt_online.pkl"),
    "tensorrt": ("ditto_cfg/v0.4_hubert_cfg_trt.pkl", "ditto_cfg/v0.4_hubert_cfg_trt_online.pkl"),
}


def _first_onnx(spec: NetworkSpec, backend: str) -> str | None:
    """The ONNX file a backend reads for an auxiliary network (PyTorch sets prefer the ``aux_models`` originals)."""
    paths = [s.path for s in spec.onnx]
    if backend == "torch":
        aux = [p for p in paths if p.startswith("ditto_pytorch/")]
        return (aux or paths or [None])[0]
    return paths[0] if paths else None


def required_files(backend: str) -> list[str]:
    """Files (relative to the root) that ``backend`` needs for every network. The pattern list derives from it."""
    if backend not in _CFG_FILES:
        raise ValueError(f"unknown backend {backend!r}; expected torch, onnx or tensorrt")
    files: list[str] = []
    for spec in NETWORKS.values():
        if backend == "torch" and spec.checkpoint:
            files.append(spec.checkpoint)
        elif backend == "tensorrt" and spec.trt_from_module and spec.checkpoint:
            files.append(spec.checkpoint)  # engines are built from our plugin-free export of the module
        else:
            path = _first_onnx(spec, backend)
            if path:
                files.append(path)
    # The 478-point landmarks: MediaPipe Tasks for the PyTorch set, BlazeFace + FaceMesh (already listed) otherwise.
    if backend == "torch":
        files = [f for f in files if not f.startswith("ditto_onnx/")]
        files.append("ditto_pytorch/aux_models/face_landmarker.task")
    return files


def allow_patterns(backend: str, *, prebuilt_engines: bool = False) -> list[str]:
    """``snapshot_download`` patterns for ``backend``: its files, its cfg pickles, our optional model config.

    The released TensorRT engines are TensorRT 8.6 plans that no TensorRT 10/11 runtime can deserialise, so they
    are fetched only when asked for (``prebuilt_engines``, decided by the caller from the installed version).
    """
    files = required_files(backend)
    patterns = [*_CFG_FILES[backend], *files]
    if any(f.endswith(".pth") for f in files):
        patterns.append(MODEL_CONFIG_FILE)  # absent from the release; harmless there, used by test checkpoints
    if backend == "tensorrt" and prebuilt_engines:
        patterns += [spec.prebuilt_engine for spec in NETWORKS.values() if spec.prebuilt_engine]
        patterns.append(PLUGIN_LIBRARY)
    return sorted(set(patterns))


def missing_networks(root: Path) -> list[str]:
    """Networks for which ``root`` holds no file any backend could load (an empty or partial folder)."""
    from ditto_demo.engine.landmark478 import TASK_FILE

    def has_any(spec: NetworkSpec) -> bool:
        paths = [spec.checkpoint, spec.prebuilt_engine, *(s.path for s in spec.onnx)]
        return any(p and (root / p).is_file() for p in paths)

    missing = [name for name, spec in NETWORKS.items() if name not in ("blaze_face", "face_mesh") and not has_any(spec)]
    if not (has_any(NETWORKS["blaze_face"]) and has_any(NETWORKS["face_mesh"])) and not (root / TASK_FILE).is_file():
        missing.append("landmark478")
    return missing


def missing_files(root: Path, backend: str) -> list[str]:
    """Required files of ``backend`` that ``root`` lacks (an empty list means the root is complete)."""
    return [f for f in required_files(backend) if not (root / f).is_file()]


def configured_revision() -> str:
    """The Hub revision to fetch: ``DITTO_HUB_REVISION`` for one run, else the pinned :data:`HUB_REVISION`."""
    return os.environ.get(REVISION_ENV) or HUB_REVISION


def local_checkpoints(local: str | os.PathLike[str] | None = None) -> Path | None:
    """The local folder to use instead of the Hub (``DITTO_CHECKPOINTS``, else ``local``), or ``None`` for the Hub.

    Raises :class:`CheckpointsUnavailableError` when the chosen folder does not exist: a typo must not turn into
    a multi-GB download.
    """
    chosen = os.environ.get(CHECKPOINTS_ENV) or (os.fspath(local) if local is not None else None)
    if not chosen:
        return None
    root = Path(chosen).expanduser()
    if not root.is_dir():
        raise CheckpointsUnavailableError(
            f"The checkpoint folder {root} does not exist; fix {CHECKPOINTS_ENV} (or --checkpoints) "
            "or unset it to download from the Hub."
        )
    return root


def find_cached_checkpoints(
    revision: str | None = None, *, cache_dir: str | os.PathLike[str] | None = None
) -> Path | None:
    """The cached snapshot of the Hub repository at ``revision`` (default: the configured one), without any
    network access; ``None`` when nothing is cached."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(HUB_REPO_ID, revision=revision or configured_revision(),
                                      cache_dir=cache_dir, local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError):
        return None


def fix_sentence(backend: str) -> str:
    """How to get the checkpoints by hand (the end of every "could not get them" sentence)."""
    return (
        f"run `python -m ditto_demo download --backend {backend}` on a machine with internet access "
        f"(the files go to the Hugging Face cache), or set {CHECKPOINTS_ENV}=/path/to/checkpoints "
        "to a folder with the Hub layout"
    )


def _first_line(exc: BaseException) -> str:
    """huggingface_hub's messages carry request ids and hints on further lines; a banner shows one sentence."""
    text = str(exc).strip()
    return text.splitlines()[0].rstrip(".") if text else type(exc).__name__


def download_error(exc: BaseException, backend: str, *, file: str | None = None) -> CheckpointsUnavailableError:
    """The one-sentence :class:`CheckpointsUnavailableError` for a failed look-up or download from the Hub.

    ``file`` names the file being fetched when the failure happened (per-file downloads); the fix always ends the
    sentence. Unknown exception types are described by their first line, never by a traceback.
    """
    import httpx2
    from huggingface_hub.errors import DryRunError, HfHubHTTPError, LocalEntryNotFoundError, XetDownloadError

    what = f"{file} of the Ditto checkpoints" if file else "the Ditto checkpoints"
    # A dry run that could not list the repository wraps the reason; an HTTP status is worth naming.
    cause = exc.__cause__ if isinstance(exc, DryRunError) and exc.__cause__ is not None else exc
    if isinstance(cause, HfHubHTTPError):
        status = getattr(cause.response, "status_code", None)
        if status in (401, 403):
            reason = "access was refused (log in with `hf auth login` or set HF_TOKEN)"
        else:
            reason = _first_line(cause)
        return CheckpointsUnavailableError(f"Downloading {what} failed: {reason}; {fix_sentence(backend)}.")
    if isinstance(exc, (LocalEntryNotFoundError, DryRunError, ConnectionError, httpx2.ConnectError)):
        if file:
            return CheckpointsUnavailableError(
                f"Downloading {what} failed: the Hub cannot be reached (offline or no network); start again when "
                f"it can, or {fix_sentence(backend)}."
            )
        return CheckpointsUnavailableError(
            f"The Ditto checkpoints for the {backend} backend are not in the local Hugging Face cache and the Hub "
            f"cannot be reached (offline or no network); {fix_sentence(backend)}."
        )
    if isinstance(cause, (httpx2.HTTPError, XetDownloadError)):  # the connection broke and retries ran out
        return CheckpointsUnavailableError(
            f"Downloading {what} failed: the connection to the Hub broke ({_first_line(cause)}); check the network "
            f"and start again, or {fix_sentence(backend)}."
        )
    if isinstance(cause, OSError) and "Consistency check failed" in str(cause):  # fewer bytes than announced
        return CheckpointsUnavailableError(
            f"Downloading {what} failed: the Hub sent fewer bytes than the file has (a network problem); "
            f"start again, or {fix_sentence(backend)}."
        )
    if isinstance(cause, OSError):  # disk full, permissions on the cache folder
        return CheckpointsUnavailableError(
            f"Could not write the Ditto checkpoints to the Hugging Face cache ({_first_line(cause)}); free disk "
            "space or set HF_HOME to a writable folder."
        )
    return CheckpointsUnavailableError(f"Downloading {what} failed ({_first_line(cause)}); {fix_sentence(backend)}.")


def incomplete_error(root: Path, missing: Iterable[str], backend: str) -> CheckpointsUnavailableError:
    """The sentence for a snapshot that lacks files ``backend`` needs."""
    return CheckpointsUnavailableError(
        f"The cached Ditto checkpoints at {root} lack {few(missing)} for the {backend} backend "
        f"(an interrupted download?); {fix_sentence(backend)}."
    )


def verify_checkpoints(root: Path, backend: str) -> dict[str, str]:
    """``{file: problem}`` for the files ``backend`` needs under ``root`` (missing, empty, hash mismatch)."""
    from ditto_demo.engine.integrity import verify_files

    return verify_files(root, required_files(backend))


def resolve_backend(backend: str) -> str:
    """``auto`` -> the backend the engine's automatic choice will run (TensorRT where usable, else PyTorch)."""
    if backend != "auto":
        return backend
    from ditto_demo.engine.host import probe_host

    return "tensorrt" if probe_host().tensorrt_usable else "torch"


def resolve_checkpoints(
    backend: str,
    *,
    local: str | os.PathLike[str] | None = None,
    prebuilt_engines: bool = False,
    progress: bool = True,
    token: str | None = None,
    force: bool = False,
) -> Path:
    """A checkpoint root holding what ``backend`` needs, downloading what is missing when allowed.

    A local folder (``DITTO_CHECKPOINTS`` or ``local``) is used as it is: it must exist, but it may be partial
    (a caller that needs a missing file gets a :class:`CheckpointError` naming it when it loads that network).
    ``backend="auto"`` fetches the set the engine's automatic choice will read (TensorRT's where it is usable,
    else PyTorch's).
    """
    backend = resolve_backend(backend)
    root = local_checkpoints(local)
    if root is not None:
        log.info("using local checkpoints at %s", root)
        return root
    return _download(backend, prebuilt_engines=prebuilt_engines, progress=progress, token=token, force=force)


def _download(backend: str, *, prebuilt_engines: bool, progress: bool, token: str | None, force: bool) -> Path:
    import httpx2
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import XetDownloadError
    from huggingface_hub.utils import disable_progress_bars, enable_progress_bars

    revision = configured_revision()
    patterns = allow_patterns(backend, prebuilt_engines=prebuilt_engines)
    log.info("resolving %s@%s for the %s backend (%d patterns)", HUB_REPO_ID, revision, backend, len(patterns))
    (enable_progress_bars if progress else disable_progress_bars)()
    try:
        root = Path(
            snapshot_download(HUB_REPO_ID, revision=revision, allow_patterns=patterns, token=token,
                              force_download=force)
        )
    except (OSError, httpx2.HTTPError, XetDownloadError) as exc:  # HTTP, offline, cache, a connection that broke
        raise download_error(exc, backend) from exc
    missing = missing_files(root, backend)
    if missing:
        raise incomplete_error(root, missing, backend)
    log.info("checkpoints ready at %s", root)
    return root


def few(items: Iterable[str], limit: int = 3) -> str:
    """``a, b, c and 4 more``: a list short enough for one sentence."""
    items = list(items)
    shown = ", ".join(items[:limit])
    return f"{shown} and {len(items) - limit} more" if len(items) > limit else shown
