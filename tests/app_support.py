"""Shared helpers for tests of the app: start ``python app.py`` as a newcomer would, and drive Chromium.

The app runs in its own process on a free loopback port with the tiny test checkpoints; the browser is Debian's
Chromium (installed by ``make test``), driven by Playwright without any browser download.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ditto_demo.testing.app_process import free_port, served_app

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
    with served_app([sys.executable, "app.py"], env, port, work / "app.log", cwd=ROOT) as url:
        yield url


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
