"""Where the app keeps its results, and for how long: one folder per request, swept by age and total size.

A public Space runs for weeks; without a sweep ``DITTO_OUTPUT_DIR`` grows forever. :class:`ResultStore` hands
each request a fresh folder and, whenever a new one is made (and at most every ``sweep_interval`` seconds),
removes

1. folders older than ``max_age`` seconds, then
2. the oldest folders while the total is above ``max_bytes``.

It never removes a folder a request is still writing (held from :meth:`ResultStore.folder` until it is released),
and never one younger than ``min_age`` (a page that just showed a result still serves it from there, even when
the size cap is tight). When only such folders are left over the cap it says so in the log and waits. Folders
are judged by their modification time; anything that is not a folder made by the store is left alone.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ResultStore", "RetentionPolicy"]

log = logging.getLogger(__name__)

_PREFIX = "r-"


@dataclass(frozen=True)
class RetentionPolicy:
    """How long results stay and how much room they may take (``DITTO_RESULT_HOURS``, ``DITTO_RESULT_MAX_GB``)."""

    #: Results older than this are removed (seconds; default 6 hours).
    max_age: float = 6 * 3600.0
    #: The oldest results go while all of them together take more than this (bytes; default 5 GB).
    max_bytes: int = 5 * 1024**3
    #: Never removed before this age, whatever the cap (seconds): a page may still be showing it.
    min_age: float = 15 * 60.0
    #: Sweep at most this often (seconds).
    sweep_interval: float = 60.0

    def __post_init__(self) -> None:
        if self.max_age <= 0 or self.max_bytes <= 0:
            raise ValueError("result retention needs a positive age and size")
        if self.min_age > self.max_age:
            object.__setattr__(self, "min_age", self.max_age)


class ResultStore:
    """Per-request result folders under ``root`` with age and size limits (thread-safe)."""

    def __init__(self, root: str | Path, policy: RetentionPolicy | None = None) -> None:
        self.root = Path(root)
        self.policy = policy or RetentionPolicy()
        self._busy: set[str] = set()
        self._lock = threading.Lock()
        self._last_sweep = float("-inf")

    def new_folder(self) -> Path:
        """A fresh folder, held until :meth:`release` (results never overwrite each other)."""
        self.maybe_sweep()
        folder = self.root / f"{_PREFIX}{uuid.uuid4().hex}"
        with self._lock:
            folder.mkdir(parents=True, exist_ok=False)
            self._busy.add(folder.name)
        return folder

    def release(self, folder: Path) -> None:
        """The request that wrote ``folder`` is done: from now on it ages like any other result."""
        with self._lock:
            self._busy.discard(folder.name)

    @contextmanager
    def folder(self) -> Iterator[Path]:
        """A held folder for one request; removed again if the request fails (a failed run leaves nothing)."""
        folder = self.new_folder()
        try:
            yield folder
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        finally:
            self.release(folder)

    def maybe_sweep(self) -> list[Path]:
        """Sweep unless the last sweep was less than ``sweep_interval`` ago."""
        now = time.monotonic()
        with self._lock:
            if now - self._last_sweep < self.policy.sweep_interval:
                return []
            self._last_sweep = now
        return self.sweep()

    def sweep(self, now: float | None = None) -> list[Path]:
        """Remove what the policy says must go; returns the folders removed."""
        now = time.time() if now is None else now
        entries = []
        for folder in self._folders():
            try:
                entries.append((folder.stat().st_mtime, _size(folder), folder))
            except FileNotFoundError:
                continue  # removed meanwhile
        entries.sort()  # oldest first
        with self._lock:
            busy = set(self._busy)
        removed: list[Path] = []
        total = sum(size for _, size, _ in entries)
        for modified, size, folder in entries:
            age = now - modified
            if folder.name in busy or age < self.policy.min_age:
                continue
            if age > self.policy.max_age or total > self.policy.max_bytes:
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder)
                total -= size
        if total > self.policy.max_bytes:
            log.warning("results take %.1f MB, over the %.1f MB cap, but every folder left is in use or younger "
                        "than %.0f s", total / 1e6, self.policy.max_bytes / 1e6, self.policy.min_age)
        if removed:
            log.info("removed %d old result folder(s) from %s", len(removed), self.root)
        return removed

    def total_bytes(self) -> int:
        return sum(_size(folder) for folder in self._folders())

    def _folders(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        return [p for p in self.root.iterdir() if p.is_dir() and p.name.startswith(_PREFIX)]


def _size(folder: Path) -> int:
    total = 0
    for path in folder.rglob("*"):
        try:
            if path.is_file():
                total += path.stat().st_size
        except FileNotFoundError:
            continue
    return total
