"""The local worker pool (``DITTO_WORKERS=local``): two CPU worker processes on the tiny test checkpoints.

What is checked: requests are spread over both workers and every result is a correct video (ffprobe); a live
stream stays on its worker from first frame to last while the other worker serves a video; control changes and
frame admission reach the worker; a worker killed mid-request ends that request with the sentence, the request on
the other worker is unaffected, the next one succeeds and the killed worker is replaced; Stop cancels on the worker;
a worker that cannot load is reported and skipped; the settings; and, through the launched app with
``gradio_client``, 8 users × 3 requests spread over both workers, each report naming its worker.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from app_support import ROOT, launched_app

from ditto_demo.errors import DittoError
from ditto_demo.pipeline.controls import Controls
from ditto_demo.pipeline.live_controls import LiveControls
from ditto_demo.pipeline.runner import CancelledError
from ditto_demo.workers import (
    WORKER_STOPPED,
    NoWorkerError,
    PoolSettings,
    WorkerConfig,
    WorkerStoppedError,
    describe_plan,
    open_pool,
)
from ditto_demo.workers.local import LocalPool

PORTRAIT = ROOT / "assets" / "portrait_illustration.png"
SPEECH = ROOT / "assets" / "speech_en.wav"
#: 0.4 s of speech: 10 frames, the shortest run that still goes through every stage.
CLIP_SECONDS = 0.4
CLIP_FRAMES = 10

pytestmark = pytest.mark.skipif(subprocess.run(["which", "ffprobe"], capture_output=True).returncode != 0,
                                reason="needs ffmpeg/ffprobe (packages.txt)")


def clip(path: Path, seconds: float = CLIP_SECONDS) -> Path:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(SPEECH), "-t", f"{seconds}", str(path)],
                   check=True)
    return path


def probe(video: Path) -> dict[str, dict[str, Any]]:
    """The video's streams by type, frames counted."""
    out = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-show_streams", "-of", "json", str(video)],
                         check=True, capture_output=True, text=True).stdout
    return {s["codec_type"]: s for s in json.loads(out)["streams"]}


def assert_video(video: Path, frames: int = CLIP_FRAMES) -> None:
    streams = probe(video)
    assert streams["video"]["codec_name"] == "h264"
    assert streams["video"]["r_frame_rate"] == "25/1"
    assert int(streams["video"]["nb_read_frames"]) == frames
    assert streams["audio"]["codec_name"] == "aac"


def paced_chunks(count: int, seconds: float = 0.1, pause: float = 0.03) -> Iterator[np.ndarray]:
    """``count`` pieces of quiet noise (seconds each), a little apart like a microphone's."""
    rng = np.random.default_rng(0)
    for _ in range(count):
        time.sleep(pause)
        yield (0.01 * rng.standard_normal(int(16000 * seconds))).astype(np.float32)


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return clip(tmp_path_factory.mktemp("speech") / "clip.wav")


@pytest.fixture(scope="module")
def pool(tiny_root: Path) -> Iterator[LocalPool]:
    pool = LocalPool(WorkerConfig(checkpoints=str(tiny_root), backend="torch"), ("cpu", "cpu"))
    try:
        infos = pool.wait_ready(180)
        assert [info.state for info in infos] == ["ready", "ready"], infos
        yield pool
    finally:
        pool.close()
    for info in pool.workers():  # closing leaves no worker process behind
        assert info.pid is None or not _alive(info.pid), info


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _folder(tmp_path: Path, name: str) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    return folder


def test_workers_are_separate_processes_with_their_own_index(pool: LocalPool) -> None:
    infos = pool.workers()
    assert [info.id.index for info in infos] == [0, 1]
    assert all(info.id.device == "cpu" for info in infos)
    pids = {info.pid for info in infos}
    assert len(pids) == 2
    assert os.getpid() not in pids
    assert pool.capacity == 2
    assert "#0" in pool.describe()
    assert "#1" in pool.describe()


def test_a_stream_stays_on_one_worker_while_the_other_serves(pool: LocalPool, speech: Path, tmp_path: Path) -> None:
    """Frames come from the pinned worker until the end; meanwhile a video runs on the other worker."""
    stream = pool.stream(PORTRAIT, paced_chunks(12), Controls(steps=2, seed=1))
    seen: list[tuple[str | None, ...]] = []
    other: dict[str, Any] = {}
    frames = []
    for frame in stream:
        frames.append(frame.index)
        seen.append(tuple(info.task for info in pool.workers()))
        if len(frames) == 1:
            def run_other() -> None:
                other["done"] = pool.generate(PORTRAIT, speech, Controls(steps=2, seed=2),
                                              folder=_folder(tmp_path, "other"))

            runner = threading.Thread(target=run_other)
            runner.start()
    runner.join(120)
    pinned = stream.worker.index
    assert all(tasks[pinned] == "live" for tasks in seen)  # busy with this stream from first frame to last
    assert frames == list(range(len(frames)))
    assert len(frames) >= 30
    assert other["done"].worker.index == 1 - pinned  # the video went to the other worker
    assert_video(other["done"].result.video)
    assert [info.state for info in pool.workers()] == ["ready", "ready"]


def test_live_changes_and_frame_admission_reach_the_worker(pool: LocalPool) -> None:
    """A control changed mid-stream changes the frames after it and not before; skipped frames are not made."""

    def run(change_at: int | None) -> tuple[list[int], list[np.ndarray]]:
        live = LiveControls(Controls(steps=2, seed=5))
        asked: list[int] = []
        indices, images = [], []
        pinned = pool.pin()
        pinned.prepare_stream(PORTRAIT, live.snapshot().controls)
        for frame in pinned.stream(PORTRAIT, paced_chunks(10, pause=0.0), live=live,
                                   skip_frame=lambda i: asked.append(i) or i % 3 == 2):
            indices.append(frame.index)
            images.append(frame.image)
            if change_at is not None and frame.index == change_at:
                live.update(yaw_offset=25.0, pitch_offset=-15.0)
                time.sleep(0.5)  # the change is forwarded within 50 ms; let the worker take it up
        assert asked == list(range(len(asked)))
        assert len(asked) >= 25
        return indices, images

    plain_indices, plain = run(None)
    changed_indices, changed = run(0)
    admitted = [i for i in range(max(plain_indices) + 1) if i % 3 != 2]
    assert plain_indices == changed_indices == admitted  # the frames the app turned down were never made
    assert np.array_equal(plain[0], changed[0])  # the same seed: identical until the change
    assert not np.array_equal(plain[-1], changed[-1])  # the turned head shows in later frames
    assert [info.state for info in pool.workers()] == ["ready", "ready"]


def test_cancel_stops_the_run_on_its_worker(pool: LocalPool, tmp_path: Path) -> None:
    long_speech = clip(tmp_path / "long.wav", 3.0)
    cancel = threading.Event()
    rendering = threading.Event()

    def progress(stage: str, fraction: float, message: str) -> None:
        if stage == "render":
            rendering.set()

    outcome: dict[str, BaseException] = {}

    def run() -> None:
        try:
            pool.generate(PORTRAIT, long_speech, Controls(steps=2), folder=_folder(tmp_path, "c"),
                          progress=progress, cancel=cancel)
        except BaseException as exc:  # recorded for the assertions below
            outcome["error"] = exc

    runner = threading.Thread(target=run)
    runner.start()
    assert rendering.wait(120)
    pids = [info.pid for info in pool.workers()]
    started = time.monotonic()
    cancel.set()
    runner.join(30)
    assert isinstance(outcome.get("error"), CancelledError)
    assert time.monotonic() - started < 5
    assert not (tmp_path / "c" / "ditto.mp4").exists()
    assert [info.pid for info in pool.workers()] == pids  # stopped, not killed
    assert [info.state for info in pool.workers()] == ["ready", "ready"]


def test_a_killed_worker_ends_only_its_request_and_is_replaced(pool: LocalPool, speech: Path, tmp_path: Path) -> None:
    long_speech = clip(tmp_path / "long.wav", 3.0)
    rendering = {0: threading.Event(), 1: threading.Event()}
    results: dict[int, Any] = {}

    def run(n: int) -> None:
        def progress(stage: str, fraction: float, message: str) -> None:
            if stage == "render":
                rendering[n].set()

        try:
            results[n] = pool.generate(PORTRAIT, long_speech if n == 0 else speech, Controls(steps=2, seed=n),
                                       folder=_folder(tmp_path, f"k{n}"), progress=progress)
        except BaseException as exc:  # recorded for the assertions below
            results[n] = exc

    victim = threading.Thread(target=run, args=(0,))
    victim.start()
    assert rendering[0].wait(120)
    busy = [info for info in pool.workers() if info.state == "busy"]
    assert len(busy) == 1
    bystander = threading.Thread(target=run, args=(1,))
    bystander.start()
    assert rendering[1].wait(120)
    os.kill(busy[0].pid, signal.SIGKILL)
    victim.join(30)
    bystander.join(120)
    assert isinstance(results[0], WorkerStoppedError)
    assert str(results[0]) == WORKER_STOPPED == "The worker running your video stopped; please try again."
    assert not (tmp_path / "k0" / "ditto.mp4").exists()
    assert results[1].worker.index != busy[0].id.index  # the other worker's request was not affected
    assert_video(results[1].result.video)

    after = pool.generate(PORTRAIT, speech, Controls(steps=2, seed=3), folder=_folder(tmp_path, "next"))
    assert_video(after.result.video)
    infos = pool.wait_ready(120)
    replaced = infos[busy[0].id.index]
    assert replaced.state == "ready"
    assert replaced.restarts == 1
    assert replaced.pid != busy[0].pid
    assert not _alive(busy[0].pid)
    assert replaced.id == busy[0].id  # same slot: same index


def test_a_worker_that_cannot_load_is_reported_and_skipped(tmp_path: Path, speech: Path) -> None:
    empty = tmp_path / "no-checkpoints"
    empty.mkdir()
    with LocalPool(WorkerConfig(checkpoints=str(empty), backend="torch"), ("cpu",)) as pool:
        infos = pool.wait_ready(180)
        assert infos[0].state == "failed"
        assert "could not load the checkpoints" in (infos[0].reason or "")
        assert not _alive(infos[0].pid)
        with pytest.raises(NoWorkerError, match="No worker could start"):
            pool.generate(PORTRAIT, speech, Controls(steps=2), folder=_folder(tmp_path, "x"))
        assert not pool.usable()
        assert "could not load" in (pool.problem() or "")
        time.sleep(1.0)
        assert pool.workers()[0].state == "failed"
        assert pool.workers()[0].restarts == 0


def test_settings_from_the_environment() -> None:
    local = PoolSettings.from_env({"DITTO_WORKERS": "local", "DITTO_DEVICES": "cuda:0, cuda:1",
                                   "DITTO_WORKERS_PER_DEVICE": "2"})
    assert (local.kind, local.devices, local.per_device, local.planned) == ("local", ("cuda:0", "cuda:1"), 2, 4)
    assert "#3 cuda:1" in describe_plan(local)
    assert PoolSettings.from_env({"DITTO_WORKERS": "local", "DITTO_DEVICE": "cpu"}, app_device="cpu").devices == (
        "cpu",)
    assert PoolSettings.from_env({}, app_device="cpu").kind == "inprocess"  # one worker: in the app's process
    assert PoolSettings.from_env({"DITTO_DEVICES": "cpu,cpu"}).kind == "local"  # more than one: processes
    assert PoolSettings.from_env({"DITTO_DEVICES": "cpu,cpu", "SPACES_ZERO_GPU": "1"}).kind == "inprocess"
    ray = PoolSettings.from_env({"DITTO_WORKERS": "ray", "DITTO_RAY_WORKERS": "2:5"})
    assert (ray.kind, ray.ray_address, ray.ray_workers) == ("ray", "auto", (2, 5))
    assert PoolSettings.from_env({"DITTO_WORKERS": "ray", "DITTO_RAY_WORKERS": "3"}).ray_workers == (3, 3)
    for bad in ({"DITTO_WORKERS": "cluster"}, {"DITTO_DEVICES": "gpu1"}, {"DITTO_WORKERS_PER_DEVICE": "0"},
                {"DITTO_WORKERS": "ray", "DITTO_RAY_WORKERS": "4:2"}):
        with pytest.raises(DittoError):
            PoolSettings.from_env(bad, app_device="cpu")
    with pytest.raises(DittoError):
        open_pool(PoolSettings(), WorkerConfig())


def test_the_app_does_not_import_ray() -> None:
    """Installing Ray must not slow the default app's start: it is imported only for DITTO_WORKERS=ray."""
    code = ("import sys, ditto_demo.ui.app, ditto_demo.workers, ditto_demo.ui.service\n"
            "from ditto_demo.ui.service import AppSettings\n"
            "AppSettings.from_env()\n"
            "sys.exit(1 if 'ray' in sys.modules else 0)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DITTO_")}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


def _worker_processes(output_dir: Path) -> list[int]:
    """Local worker processes whose app writes to ``output_dir``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        ours = b"ditto_demo.workers.child" in cmdline and f"DITTO_OUTPUT_DIR={output_dir}".encode() in environ
        if ours and _alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def test_app_spreads_8_users_x_3_requests_over_both_workers(tiny_root: Path, speech: Path, tmp_path: Path) -> None:
    from gradio_client import Client, handle_file

    env = {"DITTO_WORKERS": "local", "DITTO_DEVICES": "cpu,cpu", "DITTO_MAX_QUEUE": "64"}
    with launched_app(tiny_root, tmp_path, env) as url:
        workers = _worker_processes(tmp_path / "outputs")
        assert len(workers) == 2

        def user(n: int) -> list[tuple[Path, dict[str, Any]]]:
            client = Client(url, verbose=False, download_files=str(tmp_path / f"downloads-{n}"))
            try:
                done = []
                for k in range(3):
                    video, report, _ = client.predict(source=handle_file(PORTRAIT), audio=handle_file(speech),
                                                      steps=10, seed=10 * n + k, api_name="/generate")
                    done.append((Path(video["video"] if isinstance(video, dict) else video), report))
                return done
            finally:
                client.close()

        with ThreadPoolExecutor(8) as users:
            results = [item for done in users.map(user, range(8)) for item in done]
    assert len(results) == 24
    seeds = [10 * n + k for n in range(8) for k in range(3)]
    for seed, (video, report) in zip(seeds, results, strict=True):
        assert_video(video)
        assert report["frames"] == CLIP_FRAMES
        assert report["seed"] == seed
        assert report["worker"]["device"] == "cpu"
    used = {report["worker"]["index"] for _, report in results}
    assert used == {0, 1}, used
    deadline = time.monotonic() + 15
    while _worker_processes(tmp_path / "outputs") and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _worker_processes(tmp_path / "outputs") == []  # the workers went with the app


def test_bench_measures_one_worker_against_two(tiny_root: Path) -> None:
    from ditto_demo.bench import BenchOptions
    from ditto_demo.bench.parts.workers import bench_workers, format_workers_table

    options = BenchOptions(backend="torch", device="cpu", runs=1, warmup=0, audio_seconds=1.0, steps=2,
                           checkpoints=tiny_root, paced=False)
    results = bench_workers(options, 2)
    assert [row["workers"] for row in results["scaling"]] == [1, 2]
    assert [row["videos"] for row in results["scaling"]] == [1, 2]  # --runs videos per worker
    assert all(row["videos_per_minute"] > 0 and row["devices"] == ["cpu"] * row["workers"]
               for row in results["scaling"])
    assert results["speedup"] == pytest.approx(
        results["scaling"][1]["videos_per_minute"] / results["scaling"][0]["videos_per_minute"])
    assert "speedup" in format_workers_table(results)
    with pytest.raises(DittoError, match="--workers"):
        bench_workers(options, 0)


def test_the_service_runs_on_the_pool(pool: LocalPool, speech: Path, tmp_path: Path) -> None:
    """DemoService with a pool: previews, videos and compares on the workers, reports naming them, the System
    report listing them, the queue sized to them."""
    from ditto_demo.ui.service import AppSettings, DemoService

    service = DemoService(AppSettings(output_dir=tmp_path / "out", concurrency=1), pool=pool)
    assert service.ready
    assert service.banner() is None
    assert service.settings.concurrency == 2  # one request per worker
    image = service.preview(PORTRAIT, Controls())
    assert image.ndim == 3
    assert image.dtype == np.uint8
    outcome = service.generate(PORTRAIT, speech, Controls(steps=2, seed=7))
    assert_video(outcome.video)
    assert outcome.report["seed"] == 7
    assert outcome.report["worker"]["index"] in (0, 1)
    assert outcome.report["worker"]["device"] == "cpu"
    compared = service.compare(PORTRAIT, speech, Controls(steps=2, seed=1), Controls(steps=2, seed=2))
    assert_video(compared.video)
    assert compared.video.parent.parent == tmp_path / "out"
    assert "worker" in compared.report
    assert service.control_defaults()  # read by a worker from its checkpoints
    report = service.engine_report()
    assert "workers" in report
    assert "#1" in report
    frames = list(service.stream(PORTRAIT, paced_chunks(4, pause=0.0), Controls(steps=2)))
    assert frames
    assert frames[0].image.ndim == 3
    assert [info.state for info in pool.workers()] == ["ready", "ready"]


def test_a_result_of_the_apps_own_pipeline_names_this_process_as_worker_0() -> None:
    import socket

    from ditto_demo.pipeline.pipeline import Result
    from ditto_demo.workers import worker_of

    result = Result(video=Path("x.mp4"), seed=1, frames=1, fps=25, audio_seconds=0.04, timings={}, per_frame_ms={},
                    first_frame_latency=0.1, total_seconds=0.1, faces_found=1,
                    backends={"warp_network": "torch/cpu", "hubert": "onnx/cpu"})
    assert worker_of(result).as_dict() == {"host": socket.gethostname(), "device": "cpu", "index": 0,
                                           "id": f"{socket.gethostname()}/cpu/#0"}
