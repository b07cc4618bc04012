"""Fetch the checkpoints in the background and say how far along it is: the app serves its page meanwhile.

On a fresh host the checkpoints are a multi-GB download. :func:`ditto_demo.engine.hub.resolve_checkpoints` blocks
until they are there, which suits the CLI; a public app would show nothing for minutes. A
:class:`CheckpointDownload` runs the same resolution in a thread and keeps a snapshot of its progress that any
thread may read (:meth:`CheckpointDownload.progress`):

1. ``checking``: a local folder (``DITTO_CHECKPOINTS`` / ``local``) is used as it is. Otherwise a dry run of
   ``snapshot_download`` lists the files the backend needs at the pinned revision, their sizes and which of them
   the Hugging Face cache already holds. When the Hub cannot be reached, a complete cached snapshot is used.
2. ``downloading``: ``hf_hub_download`` fetches the missing files one at a time, at the commit the listing resolved
   (so a branch that moves during the download cannot mix two commits). Bytes are counted through its public
   ``tqdm_class`` hook; one file at a time keeps "the current file" a fact, and the Hub serves each file at full
   speed anyway.
3. ``verifying``: each freshly downloaded file is hashed against the sha256 the Hub named its blob after
   (:mod:`ditto_demo.engine.integrity`); huggingface_hub checks only the length. Files that were already cached are
   checked for presence only: hashing gigabytes on every start would delay readiness, and the loaders hash a file
   whose load fails.
4. ``ready`` with :attr:`CheckpointDownload.root`, or ``failed`` with one sentence that names the file and the fix.

A file that fails its hash is removed from the cache (snapshot link and blob), so the next start fetches it afresh
instead of trusting it; a failed download can be started again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Literal

from ditto_demo.engine.hub import (
    HUB_REPO_ID,
    allow_patterns,
    configured_revision,
    download_error,
    few,
    find_cached_checkpoints,
    incomplete_error,
    local_checkpoints,
    missing_files,
    resolve_backend,
)
from ditto_demo.engine.integrity import remove_cached_file, repair_command, verify_files
from ditto_demo.errors import CheckpointsUnavailableError

if TYPE_CHECKING:
    from huggingface_hub import DryRunFileInfo

__all__ = ["CheckpointDownload", "DownloadProgress", "DownloadState"]

log = logging.getLogger(__name__)

DownloadState = Literal["checking", "downloading", "verifying", "ready", "failed"]


@dataclass(frozen=True)
class DownloadProgress:
    """One moment of a checkpoint download, safe to hand to another thread (immutable).

    ``files_*`` and ``bytes_*`` count every file the backend needs, cached ones included (they are done from the
    start), so ``percent`` says how close generation is to being possible. ``error`` is a user-facing sentence
    when ``state == "failed"``, else ``None``.
    """

    state: DownloadState = "checking"
    files_done: int = 0
    files_total: int = 0
    bytes_done: int = 0
    bytes_total: int = 0
    percent: float = 0.0
    current_file: str | None = None
    error: str | None = None

    @property
    def finished(self) -> bool:
        """Whether the download has ended (ready or failed)."""
        return self.state in ("ready", "failed")

    def summary(self) -> str:
        """One line for a banner or a log, e.g. ``Downloading the Ditto checkpoints: 3 of 12 files, 0.4 of 1.9 GB
        (21%), now ditto_pytorch/models/decoder.pth``."""
        if self.state == "failed":
            return self.error or "The checkpoint download failed."
        if self.state == "ready":
            return "The Ditto checkpoints are ready."
        if self.state == "checking":
            return "Checking which Ditto checkpoint files are needed…"
        if self.state == "verifying":
            return f"Checking the downloaded Ditto checkpoints ({self.files_total} files)…"
        line = (
            f"Downloading the Ditto checkpoints: {self.files_done} of {self.files_total} files, "
            f"{_size(self.bytes_done, self.bytes_total)} ({self.percent:.0f}%)"
        )
        return f"{line}, now {self.current_file}" if self.current_file else line


def _size(done: int, total: int) -> str:
    """``0.4 of 1.9 GB`` in the unit that suits the total."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if total >= scale:
            return f"{done / scale:.1f} of {total / scale:.1f} {unit}"
    return f"{done} of {total} bytes"


def _percent(files_done: int, files_total: int, bytes_done: int, bytes_total: int) -> float:
    if bytes_total > 0:
        return round(min(100.0, 100.0 * bytes_done / bytes_total), 1)
    return round(100.0 * files_done / files_total, 1) if files_total else 0.0


class _ByteMeter:
    """Enough of tqdm's interface for huggingface_hub's ``tqdm_class`` hook; counts the bytes written to disk.

    huggingface_hub calls ``update(n)`` for bytes written and, when the class has ``update_transfer``, routes the
    network-byte count there instead of creating a second bar (Xet downloads receive fewer bytes than they write),
    so only ``update`` is counted. ``count`` is set per download by :meth:`CheckpointDownload._meter_class`.
    """

    count: Callable[[int], None] = staticmethod(lambda n: None)

    def __init__(self, *args: Any, total: int | None = None, initial: int = 0, **kwargs: Any) -> None:
        self.total = total
        self.n = 0
        if initial:
            self.update(initial)

    def __enter__(self) -> _ByteMeter:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, n: int | float | None = 1) -> None:
        step = int(n or 0)
        step = max(step, -self.n)  # a server that ignores Range restarts the file: never below zero
        self.n += step
        self.count(step)

    def update_transfer(self, n: int | float | None = 1) -> None:
        """Network bytes (Xet): not what the page shows, the written bytes are."""

    def set_postfix_str(self, *args: Any, **kwargs: Any) -> None:
        """Rates are not shown."""

    def set_transfer_postfix_str(self, *args: Any, **kwargs: Any) -> None:
        """Rates are not shown."""

    def set_description(self, *args: Any, **kwargs: Any) -> None:
        """Descriptions are not shown."""

    def set_description_str(self, *args: Any, **kwargs: Any) -> None:
        """Descriptions are not shown."""

    def refresh(self, *args: Any, **kwargs: Any) -> None:
        """Nothing is drawn."""

    def close(self) -> None:
        """Nothing to release."""


class CheckpointDownload:
    """Resolve (and if needed download) the checkpoints ``backend`` needs, in a background thread.

    Thread-safe: :meth:`progress`, :meth:`wait` and :attr:`root` may be called from any thread while the download
    runs. Typical use in an app::

        download = CheckpointDownload(settings.backend, local=settings.checkpoints).start()
        ...                                  # serve the page; show download.progress().summary()
        if download.progress().state == "ready":
            pipeline = Pipeline(download.root, backend=settings.backend)

    ``local``, ``revision`` and ``token`` as for :func:`~ditto_demo.engine.hub.resolve_checkpoints`
    (``DITTO_CHECKPOINTS`` and ``DITTO_HUB_REVISION`` apply when they are not given); ``endpoint`` and
    ``cache_dir`` override huggingface_hub's ``HF_ENDPOINT`` and ``HF_HUB_CACHE`` (tests, mirrors). ``listener``
    is called with every new snapshot, on the download thread (keep it quick).
    """

    def __init__(
        self,
        backend: str = "auto",
        *,
        local: str | os.PathLike[str] | None = None,
        revision: str | None = None,
        prebuilt_engines: bool = False,
        token: str | None = None,
        endpoint: str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        force: bool = False,
        listener: Callable[[DownloadProgress], None] | None = None,
    ) -> None:
        self.backend = backend
        self.local = local
        self.revision = revision
        self.prebuilt_engines = prebuilt_engines
        self.token = token
        self.endpoint = endpoint
        self.cache_dir = os.fspath(cache_dir) if cache_dir is not None else None
        self.force = force
        self._listener = listener
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._progress = DownloadProgress()
        self._root: Path | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------------------------------ public

    def start(self) -> CheckpointDownload:
        """Run in a daemon thread (the app may exit mid-download); no-op while running or once ready.

        After a failure, starts again (a retry button).
        """
        with self._lock:
            if (self._thread is not None and self._thread.is_alive()) or self._progress.state == "ready":
                return self
            self._thread = threading.Thread(target=self._run_quietly, name="checkpoint-download", daemon=True)
            self._done.clear()
            self._thread.start()
        return self

    def run(self) -> Path:
        """Resolve in the calling thread; the checkpoint folder, or :class:`CheckpointsUnavailableError`.

        Whatever the outcome, the final snapshot is published before :meth:`wait` returns.
        """
        self._done.clear()
        with self._lock:
            self._root = None
        self._set(DownloadProgress())
        try:
            return self._resolve()
        except CheckpointsUnavailableError as exc:
            log.error("checkpoint download failed: %s", exc)
            self._fail(str(exc))
            raise
        except Exception as exc:  # a bug or an error type nobody foresaw: the page still gets a sentence
            log.exception("checkpoint download crashed")
            self._fail(f"The checkpoint download stopped unexpectedly ({type(exc).__name__}: {exc}); see the "
                       "server log, then restart the app.")
            raise
        finally:
            self._done.set()

    def progress(self) -> DownloadProgress:
        """The current snapshot (immutable)."""
        with self._lock:
            return self._progress

    def wait(self, timeout: float | None = None) -> DownloadProgress:
        """Block until the download has ended (ready or failed) or ``timeout`` seconds passed; the snapshot then."""
        self._done.wait(timeout)
        return self.progress()

    @property
    def root(self) -> Path | None:
        """The checkpoint folder once ``ready``, else ``None``."""
        with self._lock:
            return self._root

    # ---------------------------------------------------------------------------------------- internals

    def _run_quietly(self) -> None:
        """The thread body: :meth:`run` has published the outcome and logged it, so nothing is left to raise to."""
        with contextlib.suppress(Exception):  # already in the snapshot (state "failed") and in the log
            self.run()

    def _fail(self, sentence: str) -> None:
        self._set(replace(self._snapshot(), state="failed", current_file=None, error=sentence))

    def _snapshot(self) -> DownloadProgress:
        with self._lock:
            return self._progress

    def _set(self, progress: DownloadProgress) -> None:
        """Publish a snapshot (percent recomputed) and tell the listener."""
        progress = replace(progress, percent=100.0 if progress.state == "ready" else _percent(
            progress.files_done, progress.files_total, progress.bytes_done, progress.bytes_total))
        with self._lock:
            self._progress = progress
        if self._listener is not None:
            self._listener(progress)

    def _change(self, **changes: Any) -> None:
        """Publish the current snapshot with some fields changed."""
        self._set(replace(self._snapshot(), **changes))

    def _add_bytes(self, n: int) -> None:
        with self._lock:
            current = self._progress
        self._set(replace(current, bytes_done=current.bytes_done + n))

    def _meter_class(self) -> type[_ByteMeter]:
        """A ``tqdm_class`` whose bars report into this download (a class, as huggingface_hub inspects it)."""
        return type("_DownloadMeter", (_ByteMeter,), {"count": staticmethod(self._add_bytes)})

    def _ready(self, root: Path) -> Path:
        with self._lock:
            self._root = root  # before the snapshot says "ready": a reader that sees ready finds the folder
        self._set(replace(self._snapshot(), state="ready", current_file=None, error=None))
        log.info("checkpoints ready at %s", root)
        return root

    def _resolve(self) -> Path:
        backend = resolve_backend(self.backend)
        root = local_checkpoints(self.local)
        if root is not None:
            log.info("using local checkpoints at %s", root)
            return self._ready(root)
        revision = self.revision or configured_revision()
        plan = self._list(backend, revision)
        if plan is None:  # the Hub cannot be reached, but the cache holds everything
            return self._cached(backend, revision)
        return self._fetch(backend, plan)

    def _list(self, backend: str, revision: str) -> list[DryRunFileInfo] | None:
        """The dry run: what the backend needs, with sizes and cache state; ``None`` when the Hub is unreachable."""
        import httpx2
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import DryRunError, HfHubHTTPError, LocalEntryNotFoundError

        patterns = allow_patterns(backend, prebuilt_engines=self.prebuilt_engines)
        log.info("listing %s@%s for the %s backend (%d patterns)", HUB_REPO_ID, revision, backend, len(patterns))
        try:
            return list(snapshot_download(
                HUB_REPO_ID, revision=revision, allow_patterns=patterns, token=self.token, endpoint=self.endpoint,
                cache_dir=self.cache_dir, dry_run=True, tqdm_class=_ByteMeter,
            ))
        except (DryRunError, LocalEntryNotFoundError) as exc:
            cause = exc.__cause__
            if isinstance(cause, HfHubHTTPError) and getattr(cause.response, "status_code", None) in (401, 403):
                raise download_error(exc, backend) from exc  # a token problem: the cache is no answer
            log.warning("the Hub cannot be reached (%s); trying the local cache", exc)
            return None
        except (OSError, httpx2.HTTPError) as exc:
            raise download_error(exc, backend) from exc

    def _cached(self, backend: str, revision: str) -> Path:
        """Offline: a complete cached snapshot is as good as a download; anything less is the usual sentence."""
        from huggingface_hub.errors import LocalEntryNotFoundError

        root = find_cached_checkpoints(revision, cache_dir=self.cache_dir)
        if root is None:
            raise download_error(LocalEntryNotFoundError("nothing cached"), backend)
        missing = missing_files(root, backend)
        if missing:
            raise incomplete_error(root, missing, backend)
        return self._ready(root)

    def _fetch(self, backend: str, plan: list[DryRunFileInfo]) -> Path:
        import httpx2
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import XetDownloadError

        if not plan:
            raise CheckpointsUnavailableError(
                f"The Hub repository {HUB_REPO_ID} lists none of the files the {backend} backend needs; "
                "check DITTO_HUB_REVISION (or set DITTO_CHECKPOINTS to a local copy)."
            )
        todo = [info for info in plan if info.will_download or self.force]
        done = [info for info in plan if info not in todo]
        self._set(DownloadProgress(
            state="downloading" if todo else "verifying",
            files_done=len(done), files_total=len(plan),
            bytes_done=sum(info.file_size or 0 for info in done),
            bytes_total=sum(info.file_size or 0 for info in plan),
        ))
        meter = self._meter_class()
        root = _snapshot_root(plan[0].local_path, plan[0].filename)
        for info in todo:
            before = self._snapshot().bytes_done
            self._change(current_file=info.filename)
            log.info("downloading %s (%s bytes)", info.filename, info.file_size)
            try:
                hf_hub_download(
                    HUB_REPO_ID, info.filename, revision=info.commit_hash, token=self.token, endpoint=self.endpoint,
                    cache_dir=self.cache_dir, force_download=self.force,
                    tqdm_class=meter,
                )
            except (OSError, httpx2.HTTPError, XetDownloadError) as exc:
                raise download_error(exc, backend, file=info.filename) from exc
            current = self._snapshot()
            exact = before + (info.file_size if info.file_size is not None else current.bytes_done - before)
            self._set(replace(current, files_done=current.files_done + 1, bytes_done=exact, current_file=None))
        self._change(state="verifying", current_file=None)
        fetched = [info.filename for info in todo]
        problems = verify_files(root, fetched)
        if problems:
            for name in problems:
                remove_cached_file(root / name)
            listed = "; ".join(f"{name} {problem}" for name, problem in problems.items())
            them = "them" if len(problems) > 1 else "it"
            raise CheckpointsUnavailableError(
                f"The downloaded checkpoint file {listed}, so {them} {'were' if them == 'them' else 'was'} removed "
                f"from the cache; start the download again (restart the app) to fetch {them} afresh, or "
                f"{repair_command(root, backend)}."
            )
        missing = missing_files(root, backend)
        if missing:
            raise incomplete_error(root, missing, backend)
        log.info("downloaded %d file(s): %s", len(fetched), few(fetched))
        return self._ready(root)


def _snapshot_root(local_path: str, filename: str) -> Path:
    """The snapshot folder that holds ``filename`` at ``local_path`` (the dry run names each file's final path)."""
    depth = len(PurePosixPath(filename).parts)
    return Path(local_path).parents[depth - 1]

