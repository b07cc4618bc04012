"""The Ray worker pool (``DITTO_WORKERS=ray``) on a one-machine Ray cluster that these tests start themselves.

The cluster stays on loopback (``--node-ip-address=127.0.0.1`` and ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, which is
what keeps Ray from swapping in the machine's routable address), uses free ports of its own, its own ``--temp-dir``,
no token file in the home folder (``RAY_AUTH_MODE=disabled``) and no usage reporting; it is stopped by the PIDs of
its own session (``ray stop`` would stop every Ray cluster on the machine), and the last test asserts that no
process of it is left. Workers are CPU actors on the tiny test checkpoints; the load test is the local one (8 users
× 3 requests through the launched app), run first, before the pool of the other tests takes the cluster's two CPUs.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from app_support import launched_app
from test_workers import CLIP_FRAMES, PORTRAIT, assert_video, clip, paced_chunks

from ditto_demo.pipeline.controls import Controls
from ditto_demo.testing.app_process import free_port
from ditto_demo.workers import WORKER_STOPPED, PoolSettings, WorkerConfig, WorkerStoppedError, open_pool

# Ray reads RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER when it is imported, so it is imported only once the cluster fixture
# has set it (a driver that read it unset connects to the machine's routable address, where nothing listens).
pytestmark = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                                reason="Ray is the optional extra [ray] (requirements-test.txt installs it; "
                                       "pip install '.[ray]' elsewhere)")

#: What the cluster, the test process and the app need to stay on this machine and leave no trace outside it.
RAY_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
_PORT_FLAGS = ("port", "node-manager-port", "object-manager-port", "dashboard-port", "dashboard-agent-listen-port",
               "dashboard-agent-grpc-port", "runtime-env-agent-port", "metrics-export-port")


def _session_processes(sid: int) -> list[int]:
    """Live (not zombie) processes of session ``sid``: every process ``ray start`` left running, and their
    children (raylet starts the workers)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":  # fields: state, ppid, pgrp, session
            found.append(int(entry.name))
    return found


class RayTestCluster:
    """``ray start --head`` on loopback with free ports and a temp dir of its own, in a session of its own."""

    def __init__(self) -> None:
        # Short: Ray's socket paths under the temp dir must fit in 107 characters.
        self.temp = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))
        self.ports = {flag: free_port() for flag in _PORT_FLAGS}
        self.address = f"127.0.0.1:{self.ports['port']}"
        self.sid: int | None = None

    def start(self) -> None:
        ray_cli = str(Path(sys.executable).with_name("ray"))
        command = [ray_cli, "start", "--head", "--node-ip-address=127.0.0.1", "--num-cpus=2", "--num-gpus=0",
                   f"--temp-dir={self.temp}", "--include-dashboard=false", "--disable-usage-stats",
                   *(f"--{flag}={port}" for flag, port in self.ports.items())]
        starter = subprocess.Popen(command, env={**os.environ, **RAY_ENV}, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True, start_new_session=True)
        self.sid = starter.pid
        output, _ = starter.communicate(timeout=180)
        if starter.returncode != 0:
            self.stop()
            raise RuntimeError(f"ray start failed ({starter.returncode}):\n{output[-3000:]}")

    def processes(self) -> list[int]:
        return _session_processes(self.sid) if self.sid is not None else []

    def stop(self) -> list[int]:
        """Stop this cluster's processes (TERM, then KILL what is left after 3 s: gcs_server ignores TERM for ~8 s);
        returns any that survived."""
        for sig, wait in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 5.0)):
            for pid in self.processes():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + wait
            while self.processes() and time.monotonic() < deadline:
                time.sleep(0.2)
        return self.processes()


@pytest.fixture(scope="module")
def cluster() -> Iterator[RayTestCluster]:
    cluster = RayTestCluster()
    with pytest.MonkeyPatch.context() as patch:
        for name, value in RAY_ENV.items():
            patch.setenv(name, value)
        # Should Ray have been imported before the variable was set (another test module), keep it on loopback
        # anyway: the constant is read where the node address is chosen.
        from ray._private import ray_constants

        patch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", False)
        try:
            cluster.start()
            yield cluster
        finally:
            if "ray" in sys.modules and sys.modules["ray"].is_initialized():
                sys.modules["ray"].shutdown()
            left = cluster.stop()
            subprocess.run(["rm", "-rf", str(cluster.temp)], check=False)
            assert left == [], f"Ray processes left behind: {left}"


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return clip(tmp_path_factory.mktemp("speech") / "clip.wav")


@pytest.fixture(scope="module")
def pool(cluster: RayTestCluster, tiny_root: Path) -> Iterator[Any]:
    settings = PoolSettings(kind="ray", ray_address=cluster.address, ray_workers=(2, 2))
    pool = open_pool(settings, WorkerConfig(checkpoints=str(tiny_root), backend="torch"))
    try:
        infos = pool.wait_ready(300)
        assert [info.state for info in infos] == ["ready", "ready"], infos
        yield pool
    finally:
        pool.close()  # kills the actors and disconnects (the pool joined the cluster, so it leaves it)


def _folder(tmp_path: Path, name: str) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    return folder


def test_app_on_ray_spreads_8_users_x_3_requests_over_both_workers(
    cluster: RayTestCluster, tiny_root: Path, speech: Path, tmp_path: Path
) -> None:
    from gradio_client import Client, handle_file

    env = {**RAY_ENV, "DITTO_WORKERS": "ray", "DITTO_RAY_ADDRESS": cluster.address, "DITTO_RAY_WORKERS": "2",
           "DITTO_MAX_QUEUE": "32"}
    with launched_app(tiny_root, tmp_path, env) as url:

        def user(n: int) -> list[dict[str, Any]]:
            client = Client(url, verbose=False, download_files=str(tmp_path / f"downloads-{n}"))
            try:
                reports = []
                for k in range(3):
                    video, report, _ = client.predict(source=handle_file(PORTRAIT), audio=handle_file(speech),
                                                      steps=10, seed=10 * n + k, api_name="/generate")
                    assert_video(Path(video["video"] if isinstance(video, dict) else video))
                    reports.append(report)
                return reports
            finally:
                client.close()

        with ThreadPoolExecutor(8) as users:
            reports = [r for done in users.map(user, range(8)) for r in done]
    assert [r["seed"] for r in reports] == [10 * n + k for n in range(8) for k in range(3)]
    assert all(r["frames"] == CLIP_FRAMES for r in reports)
    assert {r["worker"]["index"] for r in reports} == {0, 1}


def test_workers_are_actors_on_the_loopback_cluster(pool: Any) -> None:
    import ray

    infos = pool.workers()
    assert [info.id.index for info in infos] == [0, 1]
    assert {info.id.device for info in infos} == {"cpu"}
    assert len({info.pid for info in infos}) == 2
    assert os.getpid() not in {info.pid for info in infos}
    assert {node["NodeManagerAddress"] for node in ray.nodes()} == {"127.0.0.1"}  # loopback only


def test_requests_spread_and_a_stream_stays_on_its_worker(pool: Any, speech: Path, tmp_path: Path) -> None:
    stream = pool.stream(PORTRAIT, paced_chunks(10), Controls(steps=2, seed=1))
    tasks, frames, other = [], [], {}
    for frame in stream:
        frames.append(frame.index)
        tasks.append(tuple(info.task for info in pool.workers()))
        if len(frames) == 1:
            def run_other() -> None:
                other["done"] = pool.generate(PORTRAIT, speech, Controls(steps=2, seed=2),
                                              folder=_folder(tmp_path, "other"))

            runner = threading.Thread(target=run_other)
            runner.start()
    runner.join(120)
    assert all(t[stream.worker.index] == "live" for t in tasks)  # pinned from first frame to last
    assert frames == list(range(len(frames)))
    assert len(frames) >= 25
    assert other["done"].worker.index == 1 - stream.worker.index
    assert_video(other["done"].result.video)  # the video came back as bytes into the request folder


def test_a_killed_worker_gives_the_sentence_and_the_next_request_succeeds(pool: Any, speech: Path,
                                                                          tmp_path: Path) -> None:
    long_speech = clip(tmp_path / "long.wav", 3.0)
    rendering = threading.Event()
    outcome: dict[str, Any] = {}

    def progress(stage: str, fraction: float, message: str) -> None:
        if stage == "render":
            rendering.set()

    def run() -> None:
        try:
            outcome["done"] = pool.generate(PORTRAIT, long_speech, Controls(steps=2), folder=_folder(tmp_path, "k"),
                                            progress=progress)
        except BaseException as exc:  # recorded for the assertions below
            outcome["error"] = exc

    victim = threading.Thread(target=run)
    victim.start()
    assert rendering.wait(120)
    busy = [info for info in pool.workers() if info.state == "busy"]
    assert len(busy) == 1
    os.kill(busy[0].pid, signal.SIGKILL)
    victim.join(60)
    assert isinstance(outcome.get("error"), WorkerStoppedError)
    assert str(outcome["error"]) == WORKER_STOPPED
    assert not (tmp_path / "k" / "ditto.mp4").exists()

    after = pool.generate(PORTRAIT, speech, Controls(steps=2, seed=4), folder=_folder(tmp_path, "next"))
    assert_video(after.result.video)
    infos = pool.wait_ready(300)
    replaced = infos[busy[0].id.index]
    assert replaced.state == "ready"
    assert replaced.restarts == 1
    assert replaced.pid != busy[0].pid


def test_zz_no_ray_process_is_left_behind(cluster: RayTestCluster, pool: Any) -> None:
    """Last: closing the pool and stopping the cluster by its own PIDs leaves nothing running."""
    import ray

    assert cluster.processes()  # it was running
    pool.close()
    assert not ray.is_initialized()
    assert cluster.stop() == []
    leftovers = [p for p in Path("/proc").iterdir() if p.name.isdigit() and _mentions(p, str(cluster.temp))]
    assert leftovers == []


def _mentions(proc: Path, text: str) -> bool:
    try:
        alive = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        return alive and text.encode() in (proc / "cmdline").read_bytes()
    except OSError:
        return False
