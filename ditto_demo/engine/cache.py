"""Where built artefacts live: TensorRT engines and the ONNX files exported to build them.

``DITTO_ENGINES_DIR`` wins; otherwise ``engines/`` at the repository root when running from a checkout (the folder
ships with a README), else ``~/.cache/ditto-demo/engines``. Each artefact is keyed by what makes it valid, so a
stale one is never picked up: engines by GPU architecture and TensorRT version, exports by the checkpoint file
they came from (path, size and modification time) and the export flavour.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["ENGINES_ENV", "engines_dir", "export_cache_path", "file_lock", "trt_engine_dir"]

ENGINES_ENV = "DITTO_ENGINES_DIR"
_CHECKOUT_ENGINES = Path(__file__).resolve().parents[2] / "engines"


def engines_dir() -> Path:
    """The root of the artefact cache (created on demand)."""
    configured = os.environ.get(ENGINES_ENV)
    if configured:
        return Path(configured).expanduser()
    if (_CHECKOUT_ENGINES / "README.md").is_file():
        return _CHECKOUT_ENGINES
    return Path.home() / ".cache" / "ditto-demo" / "engines"


def trt_engine_dir(gpu_slug: str, trt_version: str) -> Path:
    """``engines/<gpu>-sm<cc>-trt<version>/``: engines only deserialise on the GPU arch and TensorRT that built them."""
    return engines_dir() / f"{gpu_slug}-trt{trt_version}"


def export_cache_path(source: Path, name: str, flavour: str) -> Path:
    """A cache path for an ONNX export of ``source`` that changes whenever the source file does."""
    stat = source.stat()
    key = hashlib.sha256(f"{source.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{flavour}".encode()).hexdigest()[:16]
    return engines_dir() / "onnx" / f"{name}-{flavour}-{key}.onnx"


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive inter-process lock, so two processes never build or export the same artefact at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
