"""The app starts and reports the engine's status over HTTP (gradio_client against a launched server)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest


@pytest.fixture
def app_server(seed0_root: Path, tmp_path: Path) -> Iterator[str]:
    """``python app.py`` as a newcomer runs it, on a free local port, with the seed-0 checkpoints."""
    with socket.socket() as probe:  # a port that is free right now
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        **os.environ,
        "DITTO_CHECKPOINTS": str(seed0_root),
        "GRADIO_SERVER_NAME": "127.0.0.1",
        "GRADIO_SERVER_PORT": str(port),
        "GRADIO_ANALYTICS_ENABLED": "False",
        "GRADIO_TEMP_DIR": str(tmp_path / "gradio"),
    }
    root = Path(__file__).resolve().parents[1]
    process = subprocess.Popen([sys.executable, "app.py"], cwd=root, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(f"app.py exited: {process.stdout.read() if process.stdout else ''}")
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        else:
            pytest.fail("app.py did not answer within 120 s")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_app_serves_the_engine_status(app_server: str, seed0_root: Path) -> None:
    page = httpx.get(app_server, timeout=10).text
    assert "Ditto talking head" in page
    config = httpx.get(app_server + "config", timeout=10).json()
    values = [c.get("props", {}).get("value") for c in config["components"]]
    status = next(v for v in values if isinstance(v, str) and v.startswith("python"))
    assert f"checkpoints   {seed0_root} (local folder)" in status
    assert "torch/cpu" in status
