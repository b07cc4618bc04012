"""Is a checkpoint file intact? Checked against the Hugging Face cache's own record where there is one.

In the Hub cache, a snapshot file is a symlink to ``blobs/<name>``; for large (LFS/Xet) files ``<name>`` is the
sha256 of the content the Hub served. Hashing the blob and comparing with its name therefore detects truncated or
corrupted downloads without any network access. Files outside the cache (a local ``DITTO_CHECKPOINTS`` folder) can
only be checked for existence and emptiness.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterable
from pathlib import Path

__all__ = ["cache_sha256", "file_problem", "remove_cached_file", "repair_command", "verify_files"]

log = logging.getLogger(__name__)

_SHA256 = re.compile(r"[0-9a-f]{64}")


def cache_sha256(path: Path) -> str | None:
    """The sha256 the Hub cache recorded for ``path`` (its blob's name), or ``None`` when there is no record."""
    if not path.is_symlink():
        return None
    target = path.resolve()
    if target.parent.name != "blobs" or not _SHA256.fullmatch(target.name):
        return None  # small git-stored files have 40-hex sha1 blob names: no content hash to compare with
    return target.name


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def file_problem(path: Path) -> str | None:
    """Why ``path`` is not a usable checkpoint file (missing, empty, content not what the Hub served), or ``None``."""
    if not path.exists():
        return "is missing" if not path.is_symlink() else "is missing (its cached blob was deleted)"
    if not path.is_file():
        return "is not a file"
    if path.stat().st_size == 0:
        return "is empty"
    expected = cache_sha256(path)
    if expected is not None and _sha256(path) != expected:
        return "does not match the Hub's sha256 record (a truncated or corrupted download)"
    return None


def verify_files(root: Path, files: Iterable[str]) -> dict[str, str]:
    """``{relative path: problem}`` for every damaged file among ``files`` under ``root``."""
    problems = {}
    for rel in files:
        problem = file_problem(root / rel)
        if problem is not None:
            problems[rel] = problem
    return problems


def in_hub_cache(root: Path) -> bool:
    """Whether ``root`` is a snapshot folder of the Hugging Face cache (then ``download --force`` repairs it)."""
    return root.resolve().parent.name == "snapshots" or any(p.name == "snapshots" for p in root.resolve().parents)


def repair_command(root: Path, backend: str = "torch") -> str:
    """The command (or action) that restores good copies of the files under ``root``."""
    if in_hub_cache(root):
        return f"run `python -m ditto_demo download --backend {backend} --force` to fetch them again"
    return f"replace them in {root} from a complete copy of the checkpoints (or unset DITTO_CHECKPOINTS to use the Hub)"


def remove_cached_file(path: Path) -> None:
    """Delete a damaged file: the snapshot link and the blob it points to (or the file itself, without links).

    A blob whose content does not match its name would otherwise be trusted by every later run (huggingface_hub
    finds it cached and never fetches it again); removing it makes the next download fetch it afresh.
    """
    target = path.resolve() if path.is_symlink() else None
    path.unlink(missing_ok=True)
    if target is not None:
        target.unlink(missing_ok=True)
    log.warning("removed the damaged checkpoint file %s%s", path, f" (blob {target.name})" if target else "")
