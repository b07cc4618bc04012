"""Shared helpers for tests of the app: start ``python app.py`` as a newcomer would, and drive Chromium.

The app runs in its own process on a free loopback port with the tiny test checkpoints; the browser is Debian's
Chromium (installed by ``make test``), driven by Playwright without any browser download.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def launched_app(checkpoints: Path, work: Path, extra_env: dict[str, str] | None = None) -> Iterator[str]:
    """``python app.py`` with ``DITTO_CHECKPOINTS=checkpoints``; yields its URL, stops it afterwards."""
    port = free_port()
    env = {
        **os.environ,
        "DITTO_CHECKPOINTS": str(checkpoints),
        "DITTO_BACKEND": "torch",
        "DITTO_DEVICE": "cpu",
        "DITTO_OUTPUT_DIR": str(work / "outputs"),
        "GRADIO_SERVER_NAME": "127.0.0.1",
        "GRADIO_SERVER_PORT": str(port),
        "GRADIO_ANALYTICS_ENABLED": "False",
        "GRADIO_TEMP_DIR": str(work / "gradio"),
        "GRADIO_EXAMPLES_CACHE": str(work / "examples-cache"),
        **(extra_env or {}),
    }
    log_path = work / "app.log"
    with log_path.open("w") as log:
        process = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 180
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"app.py exited with {process.returncode}:\n{log_path.read_text()[-4000:]}")
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"app.py did not answer within 180 s:\n{log_path.read_text()[-4000:]}")
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def chromium_path() -> str | None:
    """Debian's Chromium, if installed."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


@contextmanager
def launched_chromium(extra_args: list[str] | None = None) -> Iterator[object]:
    """Headless Debian Chromium driven by Playwright (the browser tests' one launcher); skips the test without it."""
    import pytest

    executable = chromium_path()
    if executable is None:
        pytest.skip("Chromium is not installed (make test installs it from packages-test.txt)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, args=[*CHROMIUM_FLAGS, *(extra_args or [])])
        try:
            yield chromium
        finally:
            chromium.close()
