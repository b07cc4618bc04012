"""The app in a process of its own, on a free loopback port, for the tests and the live-browser bench.

Both start the app the way a person would (a fresh interpreter with its own environment), wait until the page
answers, use it, and stop it, leaving its log beside the run so that a failed start shows why.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

__all__ = ["free_port", "served_app"]


def free_port() -> int:
    """A TCP port free on the loopback interface right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def served_app(
    command: Sequence[str],
    env: Mapping[str, str],
    port: int,
    log_path: Path,
    *,
    cwd: Path | None = None,
    timeout: float = 180.0,
) -> Iterator[str]:
    """Run ``command`` (an app that serves on ``port``) and yield its URL once the page answers 200.

    Raises :class:`RuntimeError` with the end of the log when the process exits first or the page does not answer
    within ``timeout`` seconds. The process is terminated (then killed) on the way out, whatever happened.
    """
    with log_path.open("w") as log:
        process = subprocess.Popen(list(command), cwd=cwd, env=dict(env), stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the app exited with {process.returncode}:\n{log_path.read_text()[-4000:]}")
            with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the app did not answer within {timeout:g} s:\n{log_path.read_text()[-4000:]}")
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)
