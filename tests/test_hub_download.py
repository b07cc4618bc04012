"""The checkpoint download against a local Hub (tests/fake_hub.py) with the real huggingface_hub client.

Nothing of huggingface_hub is mocked: the client lists, HEADs, follows the CDN redirect and downloads over HTTP from
127.0.0.1. The only setting changed in-process is its offline switch (the suite sets ``HF_HUB_OFFLINE=1`` before
huggingface_hub is imported, and the library reads the variable once); the CLI test runs in a fresh process with
``HF_ENDPOINT`` and ``HF_HUB_OFFLINE=0`` in its environment.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import huggingface_hub.constants
import numpy as np
import pytest
from fake_hub import FakeHub

from ditto_demo.engine import CORE_NETWORKS, load_network
from ditto_demo.engine.download import CheckpointDownload, DownloadProgress
from ditto_demo.engine.hub import HUB_REPO_ID, allow_patterns

TASK = "ditto_pytorch/aux_models/face_landmarker.task"
DECODER = "ditto_pytorch/models/decoder.pth"
#: huggingface_hub writes what it receives in blocks of this size: a cut inside the second block resumes at the first.
BLOCK = huggingface_hub.constants.DOWNLOAD_CHUNK_SIZE
TIMEOUT = 120.0


@pytest.fixture(scope="module")
def repo_files(tiny_root: Path) -> dict[str, bytes]:
    """The released layout with tiny weights, plus a MediaPipe task stand-in larger than one download block."""
    files = {p.relative_to(tiny_root).as_posix(): p.read_bytes() for p in sorted(tiny_root.rglob("*")) if p.is_file()}
    files[TASK] = np.random.default_rng(0).bytes(BLOCK + (1 << 20))
    files[".gitattributes"] = b"*.pth filter=lfs diff=lfs merge=lfs -text\n"
    return files


@pytest.fixture
def hub(repo_files: dict[str, bytes], monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    """A fresh local Hub (faults and request log of its own) with huggingface_hub allowed online."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    server = FakeHub(HUB_REPO_ID, dict(repo_files)).start()
    yield server
    server.stop()


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face cache for this test (passed explicitly, and in the environment for subprocesses)."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    return tmp_path / "hub"


def _download(hub: FakeHub, cache: Path, seen: list[DownloadProgress] | None = None) -> CheckpointDownload:
    return CheckpointDownload("torch", endpoint=hub.url, cache_dir=cache,
                              listener=seen.append if seen is not None else None)


def _wanted(hub: FakeHub) -> list[str]:
    """The files of the repository that the PyTorch set asks for."""
    return sorted(set(allow_patterns("torch")) & set(hub.files))


def _states(seen: list[DownloadProgress]) -> list[str]:
    states: list[str] = []
    for progress in seen:
        if not states or states[-1] != progress.state:
            states.append(progress.state)
    return states


def test_full_download_reports_progress_and_gives_a_loadable_folder(hub: FakeHub, cache: Path) -> None:
    seen: list[DownloadProgress] = []
    download = _download(hub, cache, seen)
    final = download.start().wait(TIMEOUT)

    assert final.state == "ready", final.error
    assert _states(seen) == ["checking", "downloading", "verifying", "ready"]
    wanted = _wanted(hub)
    assert final.files_done == final.files_total == len(wanted)
    assert final.bytes_done == final.bytes_total == sum(len(hub.files[f]) for f in wanted)
    for name in ("percent", "bytes_done", "files_done"):
        values = [getattr(p, name) for p in seen]
        assert values == sorted(values), f"{name} went backwards"
    assert seen[-1].percent == 100.0
    assert final.error is None
    # Byte progress inside a file: the task file arrives in two blocks, and the page sees the first one land.
    during_task = {p.bytes_done for p in seen if p.current_file == TASK}
    assert len(during_task) >= 3, during_task
    assert any(0 < p.percent < 100 and p.current_file == TASK for p in seen)
    assert "now " + TASK in next(p for p in seen if p.current_file == TASK).summary()

    root = download.root
    assert root is not None
    assert root.name == hub.commit
    assert root.parent.name == "snapshots"
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()) == wanted
    for name in wanted:
        assert (root / name).read_bytes() == hub.files[name], name
    fetched = {s.path for s in hub.requests if s.method == "GET" and ("/cdn/" in s.path or "/resolve/" in s.path)}
    assert len(fetched) == len(wanted)  # nothing outside the PyTorch set (ditto_onnx/, trt cfgs) was downloaded

    from ditto_demo.pipeline import Pipeline

    pipeline = Pipeline(root, backend="torch", device="cpu")
    assert pipeline.root == root
    assert pipeline.defaults().blink_template.shape == (15, 63)  # read from the cfg pickle (no fallback has one)
    for name in CORE_NETWORKS:
        assert load_network(name, root, backend="torch", device="cpu").backend == "torch"


def test_a_second_start_finds_everything_cached(hub: FakeHub, cache: Path) -> None:
    assert _download(hub, cache).start().wait(TIMEOUT).state == "ready"
    hub.requests.clear()
    seen: list[DownloadProgress] = []
    again = _download(hub, cache, seen)
    final = again.start().wait(TIMEOUT)
    assert final.state == "ready", final.error
    assert "downloading" not in _states(seen)
    assert seen[0].state == "checking"
    assert not [s for s in hub.requests if s.method == "GET" and "/cdn/" in s.path]


def test_offline_uses_a_complete_cache_and_explains_an_empty_one(hub: FakeHub, cache: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    first = _download(hub, cache).start().wait(TIMEOUT)
    assert first.state == "ready", first.error
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    hub.requests.clear()
    offline = _download(hub, cache)
    assert offline.start().wait(TIMEOUT).state == "ready"
    assert offline.root == first_root(cache, hub)
    assert hub.requests == []

    empty = _download(hub, tmp_path / "empty-cache").start().wait(TIMEOUT)
    assert empty.state == "failed"
    assert "cannot be reached" in empty.error
    assert "python -m ditto_demo download --backend torch" in empty.error


def first_root(cache: Path, hub: FakeHub) -> Path:
    return cache / f"models--{HUB_REPO_ID.replace('/', '--')}" / "snapshots" / hub.commit


def test_an_interrupted_file_resumes_with_a_range_request(hub: FakeHub, cache: Path) -> None:
    hub.cut_first_get[TASK] = BLOCK + (512 << 10)  # the connection drops half a megabyte into the second block
    seen: list[DownloadProgress] = []
    download = _download(hub, cache, seen)
    final = download.start().wait(TIMEOUT)

    assert final.state == "ready", final.error
    gets = hub.gets_of(TASK)
    assert [g.range for g in gets] == [None, f"bytes={BLOCK}-"]  # the retry asked only for what was missing
    assert download.root is not None
    data = (download.root / TASK).read_bytes()
    assert hashlib.sha256(data).hexdigest() == hub.sha256(TASK)
    values = [p.bytes_done for p in seen]
    assert values == sorted(values)
    assert final.bytes_done == final.bytes_total


def test_a_file_that_does_not_match_its_sha256_fails_naming_it_then_a_retry_fetches_it(hub: FakeHub,
                                                                                       cache: Path) -> None:
    good = hub.files[DECODER]
    hub.serve_instead[DECODER] = bytes([good[0] ^ 0xFF]) + good[1:]  # same length: only the hash can tell
    download = _download(hub, cache)
    final = download.start().wait(TIMEOUT)

    assert final.state == "failed"
    assert download.root is None
    message = final.error or ""
    assert DECODER in message
    assert "does not match the Hub's sha256 record" in message
    assert "python -m ditto_demo download --backend torch --force" in message
    assert "\n" not in message
    assert final.summary() == message
    snapshot = first_root(cache, hub)
    assert not (snapshot / DECODER).exists()  # the damaged blob is not left for the next start to trust
    assert not (snapshot.parents[1] / "blobs" / hub.sha256(DECODER)).exists()

    del hub.serve_instead[DECODER]  # the network recovers; the page's retry starts the same object again
    final = download.start().wait(TIMEOUT)
    assert final.state == "ready", final.error
    assert (download.root / DECODER).read_bytes() == good
    assert len(hub.gets_of(DECODER)) == 2


def test_a_file_missing_from_the_hub_is_named(hub: FakeHub, cache: Path) -> None:
    del hub.files[DECODER]
    final = _download(hub, cache).start().wait(TIMEOUT)
    assert final.state == "failed"
    assert f"lack {DECODER}" in final.error
    assert "download --backend torch" in final.error


def test_an_unreachable_hub_fails_with_the_fix(hub: FakeHub, cache: Path) -> None:
    url = hub.url
    hub.stop()  # the port is closed now: connection refused
    final = CheckpointDownload("torch", endpoint=url, cache_dir=cache).start().wait(TIMEOUT)
    assert final.state == "failed"
    assert "cannot be reached" in final.error
    assert "python -m ditto_demo download --backend torch" in final.error
    assert "DITTO_CHECKPOINTS" in final.error


def test_a_local_folder_is_ready_at_once_without_the_hub(tiny_root: Path, hub: FakeHub, cache: Path) -> None:
    download = CheckpointDownload("torch", local=tiny_root, endpoint=hub.url, cache_dir=cache)
    assert download.start().wait(TIMEOUT).state == "ready"
    assert download.root == tiny_root
    assert download.progress().percent == 100.0
    assert hub.requests == []
    missing = CheckpointDownload("torch", local=tiny_root / "nope", endpoint=hub.url, cache_dir=cache)
    final = missing.start().wait(TIMEOUT)
    assert final.state == "failed"
    assert "does not exist; fix DITTO_CHECKPOINTS" in final.error


def test_cli_download_honours_hf_endpoint(hub: FakeHub, cache: Path, tmp_path: Path) -> None:
    """``python -m ditto_demo download`` in a fresh process: huggingface_hub reads HF_ENDPOINT itself."""
    env = {k: v for k, v in os.environ.items() if k not in ("DITTO_CHECKPOINTS", "DITTO_HUB_REVISION")}
    env.update(HF_ENDPOINT=hub.url, HF_HUB_OFFLINE="0", HF_HUB_DISABLE_PROGRESS_BARS="1")
    done = subprocess.run([sys.executable, "-m", "ditto_demo", "download", "--backend", "torch"], env=env,
                          cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    root = Path(done.stdout.strip().splitlines()[-1])
    assert root == first_root(cache, hub).resolve() or root == first_root(cache, hub)
    assert (root / DECODER).read_bytes() == hub.files[DECODER]
    assert hub.gets_of(TASK)
