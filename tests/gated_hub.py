"""A local Hub (tests/fake_hub.py) whose file bytes wait for the test's permission: a "slow" download on cue.

A real checkpoint download takes minutes; the tiny test checkpoints take milliseconds over loopback, too fast to see
a page show progress. Here every GET of an LFS file's bytes (the CDN) waits for one permit: the test lets files
through one at a time (:meth:`GatedHub.allow`) and can look at the page between two files, or opens the gate
(:meth:`GatedHub.open`). Listing and the small files stored in git are never held. huggingface_hub waits up to
``HF_HUB_DOWNLOAD_TIMEOUT`` seconds for an answer, so a test holding the gate longer must raise that.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

from fake_hub import FakeHub, _handler_for

__all__ = ["BACKEND", "GatedHub", "fresh_host_env", "repository_files"]

#: The backend of the download tests: its files are all in the tiny checkpoints (the PyTorch set would need a real
#: MediaPipe task file, which no test can make).
BACKEND = "onnx"


def repository_files(root: Path) -> dict[str, bytes]:
    """Every file under a checkpoint ``root`` (the released layout), as the Hub repository to serve."""
    files = {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
    files[".gitattributes"] = b"*.pth filter=lfs diff=lfs merge=lfs -text\n"
    return files


def fresh_host_env(hub: FakeHub, work: Path) -> dict[str, str]:
    """What ``python app.py`` on a fresh host sees (for ``launched_app``'s ``extra_env``): no local checkpoints, an
    empty Hugging Face cache under ``work``, and ``hub`` as the Hub."""
    return {
        "DITTO_CHECKPOINTS": "",
        "DITTO_BACKEND": BACKEND,
        "HF_ENDPOINT": hub.url,
        "HF_HUB_OFFLINE": "0",
        "HF_HOME": str(work / "hf-home"),
        "HF_HUB_CACHE": str(work / "hf-home" / "hub"),
        "HF_HUB_DOWNLOAD_TIMEOUT": "120",  # the gate may hold a file for a while
    }


@dataclass
class GatedHub(FakeHub):
    """:class:`FakeHub` whose CDN answers each wait for a permit; ``served`` counts the files let through."""

    _gate: threading.Semaphore = field(default_factory=lambda: threading.Semaphore(0))
    _opened: threading.Event = field(default_factory=threading.Event)
    served: int = 0

    def allow(self, files: int = 1) -> None:
        """Let ``files`` more LFS files through."""
        for _ in range(files):
            self._gate.release()

    def open(self) -> None:
        """Let everything through from now on (also what :meth:`stop` does, so no handler stays blocked)."""
        self._opened.set()
        self.allow(64)

    def _wait_for_permit(self) -> None:
        while not self._opened.is_set():
            if self._gate.acquire(timeout=0.1):
                break
        with self._lock:
            self.served += 1

    def start(self) -> GatedHub:
        hub = self

        class Gated(_handler_for(self)):  # type: ignore[misc, valid-type]
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                if urlsplit(self.path).path.startswith("/cdn/"):
                    hub._wait_for_permit()
                super().do_GET()

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Gated)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="gated-hub", daemon=True).start()
        return self

    def stop(self) -> None:
        self.open()
        super().stop()
