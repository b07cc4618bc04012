"""Start-up on a fresh host and what it is configured with (issue 11, findings 9, 10, 11, and typed settings).

- Settings come from the environment once, typed (compile mode, encoder, result retention); a bad value stops
  ``python app.py`` with one sentence naming the variable.
- Results live in a :class:`~ditto_demo.results.ResultStore`: held while a request runs, swept by age and size.
- The System report does not count the optional MediaPipe task file as missing and says what unusable TensorRT
  means for its files.
- Checkpoints from the Hub download in the background: the service (and the page) is up at once, says how far the
  download is, refuses runs with that sentence, and generates once it is done, with no restart. The Hub is
  ``tests/gated_hub.py``: the real huggingface_hub client against a local server whose files arrive on cue.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gradio as gr
import huggingface_hub.constants
import imageio_ffmpeg
import pytest
from app_support import ROOT, launched_app
from gated_hub import BACKEND, GatedHub, fresh_host_env, repository_files

from ditto_demo.engine.download import CheckpointDownload
from ditto_demo.engine.hub import HUB_REPO_ID, allow_patterns
from ditto_demo.engine.report import engine_report
from ditto_demo.errors import DittoError
from ditto_demo.pipeline import Pipeline
from ditto_demo.pipeline.controls import Controls
from ditto_demo.pipeline.writer import EncoderSettings
from ditto_demo.results import RetentionPolicy
from ditto_demo.ui.service import AppSettings, DemoService, ServiceUnavailableError

PORTRAIT = ROOT / "assets" / "portrait_illustration.png"
FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()
TIMEOUT = 120.0


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """0.4 s of the example speech."""
    path = tmp_path_factory.mktemp("speech") / "speech.wav"
    subprocess.run([FFMPEG, "-v", "error", "-y", "-i", str(ROOT / "assets" / "speech_en.wav"), "-t", "0.4",
                    str(path)], check=True)
    return path


def _until(condition: Callable[[], Any], timeout: float = TIMEOUT, what: str = "the condition") -> Any:
    """Poll ``condition`` until it is truthy; its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


# ---------------------------------------------------------------------------------------------- typed settings


def test_settings_are_read_from_the_environment_typed() -> None:
    defaults = AppSettings.from_env({})
    assert defaults.compile_mode == "off"
    assert defaults.encoder == EncoderSettings()
    assert (defaults.result_hours, defaults.result_max_gb) == (6.0, 5.0)
    assert defaults.retention() == RetentionPolicy(max_age=6 * 3600.0, max_bytes=5 * 1024**3)

    chosen = AppSettings.from_env({"DITTO_TORCH_COMPILE": "Default", "DITTO_VIDEO_CODEC": "libx264",
                                   "DITTO_X264_PRESET": "veryfast", "DITTO_RESULT_HOURS": "0.5",
                                   "DITTO_RESULT_MAX_GB": "0.25"})
    assert chosen.compile_mode == "default"
    assert chosen.encoder == EncoderSettings(codec="libx264", preset="veryfast")
    policy = chosen.retention()
    assert policy.max_age == 1800.0
    assert policy.max_bytes == 1024**3 // 4


@pytest.mark.parametrize(("variable", "value"), [
    ("DITTO_TORCH_COMPILE", "fastest"),
    ("DITTO_VIDEO_CODEC", "av1"),
    ("DITTO_X264_PRESET", "quick"),
    ("DITTO_RESULT_HOURS", "0"),
    ("DITTO_RESULT_HOURS", "six"),
    ("DITTO_RESULT_MAX_GB", "-2"),
    ("DITTO_RESULT_MAX_GB", "inf"),
])
def test_a_bad_setting_is_one_sentence_naming_the_variable(variable: str, value: str) -> None:
    with pytest.raises(DittoError) as refused:
        AppSettings.from_env({variable: value})
    message = str(refused.value)
    assert variable in message
    assert repr(value) in message
    assert "\n" not in message
    assert message.endswith(".")


def test_the_service_passes_the_settings_to_its_pipeline(tiny_root: Path, tmp_path: Path) -> None:
    settings = AppSettings(checkpoints=str(tiny_root), backend="torch", device="cpu", output_dir=tmp_path,
                           encoder=EncoderSettings(preset="veryfast"), compile_mode="default")
    pipeline = DemoService(settings).require()  # networks load on first use: nothing is compiled here
    assert pipeline.encoder == EncoderSettings(preset="veryfast")
    assert pipeline.networks.compile_mode == "default"


def test_app_py_stops_with_the_sentence(tmp_path: Path) -> None:
    env = {**os.environ, "DITTO_TORCH_COMPILE": "turbo", "DITTO_OUTPUT_DIR": str(tmp_path),
           "GRADIO_ANALYTICS_ENABLED": "False"}
    done = subprocess.run([sys.executable, "app.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last == ("DITTO_TORCH_COMPILE='turbo' is not a compile mode; use one of off, default, "
                    "max-autotune-no-cudagraphs, reduce-overhead.")
    assert not list(tmp_path.iterdir())  # stopped before anything was made


# ------------------------------------------------------------------------------------------ result retention


def test_results_are_held_while_running_then_swept_by_age(tiny_root: Path, tmp_path: Path, speech: Path) -> None:
    settings = AppSettings(output_dir=tmp_path / "out", result_hours=1.0)
    service = DemoService(settings, pipeline=Pipeline(tiny_root, backend="torch", device="cpu"))
    assert service.results.policy.max_age == 3600.0
    swept_while_running: list[list[Path]] = []

    def progress(stage: str, fraction: float, message: str) -> None:
        if stage == "render" and not swept_while_running:  # the request's folder exists and is being written
            swept_while_running.append(service.results.sweep(now=time.time() + 10 * 3600))

    outcome = service.generate(PORTRAIT, speech, Controls(steps=2, seed=1), progress=progress)
    assert swept_while_running == [[]]  # ten hours "later", but in use: kept
    folder = outcome.video.parent
    assert folder.parent == tmp_path / "out"
    assert folder.name.startswith("r-")
    assert service.results.sweep(now=time.time() + 30 * 60) == []  # within the hour: kept
    assert service.results.sweep(now=time.time() + 2 * 3600) == [folder]  # past it: removed
    assert not folder.exists()


def test_stream_chunk_folders_come_from_the_store(tiny_root: Path, tmp_path: Path, speech: Path) -> None:
    service = DemoService(AppSettings(output_dir=tmp_path / "out"),
                          pipeline=Pipeline(tiny_root, backend="torch", device="cpu"))
    chunks = service.stream_file_chunks(PORTRAIT, speech, Controls(steps=2, seed=1))
    path, _ = next(chunks)
    assert path.parent.name.startswith("r-")
    assert service.results.sweep(now=time.time() + 100 * 3600) == []  # held while the stream runs
    for _ in chunks:
        pass
    assert service.results.sweep(now=time.time() + 100 * 3600) == [path.parent]


# -------------------------------------------------------------------------------------------- System report


def test_system_report_counts_only_what_is_missing(tiny_root: Path, tmp_path: Path) -> None:
    from ditto_demo.engine.host import probe_host

    lines = engine_report(tiny_root).splitlines()
    torch_line = next(line for line in lines if line.startswith("  torch "))
    assert torch_line.startswith("  torch       complete")  # the task file is optional beside BlazeFace + FaceMesh
    assert "face_landmarker.task is optional" in torch_line
    tensorrt_line = next(line for line in lines if line.startswith("  tensorrt "))
    if not probe_host().tensorrt_usable:
        assert "not usable on this host, so these files go unused here" in tensorrt_line

    # Without BlazeFace + FaceMesh the task file is the only way to the landmarks: then it is missing.
    partial = tmp_path / "partial"
    for path in tiny_root.rglob("*"):
        if path.is_file() and path.name not in ("blaze_face.onnx", "face_mesh.onnx"):
            target = partial / path.relative_to(tiny_root)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(path)
    torch_line = next(line for line in engine_report(partial).splitlines() if line.startswith("  torch "))
    assert torch_line.startswith("  torch       missing 1: ditto_pytorch/aux_models/face_landmarker.task")


# ----------------------------------------------------------------------------------- background checkpoints


@pytest.fixture(scope="module")
def repo(tiny_root: Path) -> dict[str, bytes]:
    return repository_files(tiny_root)


@pytest.fixture
def hub(repo: dict[str, bytes], monkeypatch: pytest.MonkeyPatch) -> Iterator[GatedHub]:
    """A gated local Hub, with huggingface_hub allowed online in this process."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    server = GatedHub(HUB_REPO_ID, dict(repo)).start()
    yield server
    server.stop()


def _lfs_files(hub: GatedHub) -> int:
    """How many files of the backend's set wait at the gate."""
    return len([f for f in set(allow_patterns(BACKEND)) & set(hub.files) if hub.is_lfs(f)])


def _downloading_service(hub: GatedHub, tmp_path: Path) -> DemoService:
    settings = AppSettings(backend=BACKEND, device="cpu", output_dir=tmp_path / "out")
    download = CheckpointDownload(BACKEND, endpoint=hub.url, cache_dir=tmp_path / "hub")
    return DemoService(settings, download=download)


def test_the_service_is_up_during_the_download_and_generates_after(hub: GatedHub, tmp_path: Path,
                                                                   speech: Path) -> None:
    total = len(set(allow_patterns(BACKEND)) & set(hub.files))
    service = _downloading_service(hub, tmp_path)
    _until(lambda: service.checkpoint_progress().state == "downloading", what="the download to start")
    assert not service.ready
    assert service.downloading
    banner = service.banner() or ""
    assert re.search(rf"Downloading the Ditto checkpoints: 0 of {total} files, [\d.]+ of [\d.]+ [kM]B \(0%\)", banner)
    assert "no need to reload" in banner
    with pytest.raises(ServiceUnavailableError, match=rf"0 of {total} files"):
        service.generate(PORTRAIT, speech, Controls(steps=2))
    assert service.control_defaults()  # the page can be built meanwhile (released defaults)

    hub.allow(1)
    _until(lambda: service.checkpoint_progress().files_done >= 1, what="the first file")
    progress = service.checkpoint_progress()
    assert progress.state == "downloading"
    assert 0 < progress.percent < 100
    assert f"{progress.files_done} of {total} files" in (service.banner() or "")

    hub.allow(_lfs_files(hub))
    _until(lambda: service.ready, what="the pipeline")
    assert service.banner() is None
    assert not service.downloading
    assert service.checkpoint_progress().state == "ready"
    outcome = service.generate(PORTRAIT, speech, Controls(steps=2, seed=4))
    assert outcome.video.is_file()
    assert outcome.report["frames"] == 10
    assert set(outcome.report["backends"].values()) == {f"{BACKEND}/cpu"}


def test_a_failed_download_says_the_fix_and_can_be_retried(hub: GatedHub, tmp_path: Path) -> None:
    broken = "ditto_onnx/decoder.onnx"
    hub.serve_instead[broken] = b"\0" * len(hub.files[broken])  # right length, wrong bytes
    hub.open()
    service = _downloading_service(hub, tmp_path)
    _until(lambda: service.checkpoint_progress().finished, what="the download to end")
    assert service.checkpoint_progress().state == "failed"
    assert not service.ready
    banner = service.banner() or ""
    assert banner.startswith("**Generation is unavailable: the Ditto checkpoints could not be loaded.**")
    assert broken in banner
    assert "try the download again" in banner
    with pytest.raises(ServiceUnavailableError, match=re.escape(broken)):
        service.require()

    hub.serve_instead.clear()
    assert service.retry_download()
    assert not service.retry_download()  # already running (or done)
    _until(lambda: service.ready, what="the retried download")
    assert service.banner() is None


def test_the_page_polls_until_ready_then_enables_the_run_buttons(hub: GatedHub, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from ditto_demo.ui.app import RUN_BUTTONS, build_app, run_buttons

    monkeypatch.setenv("GRADIO_EXAMPLES_CACHE", str(tmp_path / "examples"))
    service = _downloading_service(hub, tmp_path)
    _until(lambda: service.checkpoint_progress().state == "downloading", what="the download to start")
    demo = build_app(service)
    assert [button.elem_id for button in run_buttons(demo)] == list(RUN_BUTTONS)
    banner = next(b for b in demo.blocks.values() if b.elem_id == "ditto-banner")
    assert banner.visible
    assert "Downloading the Ditto checkpoints" in banner.value
    timers = [b for b in demo.blocks.values() if isinstance(b, gr.Timer)]
    assert len(timers) == 1
    assert timers[0].active
    status = next(fn for fn in demo.fns.values() if fn.api_name == "checkpoint_status")
    tick = next(fn for fn in demo.fns.values() if fn.api_name == "checkpoint_status_tick")
    assert tick.fn is status.fn
    assert tick.api_visibility == status.api_visibility == "private"

    banner_now, retry, timer, *buttons = status.fn()
    assert banner_now.visible
    assert "0 of" in banner_now.value
    assert retry.visible is False
    assert timer.active is True
    assert [button.interactive for button in buttons] == [False] * len(RUN_BUTTONS)

    hub.open()
    _until(lambda: service.ready, what="the pipeline")
    banner_now, retry, timer, *buttons = status.fn()
    assert banner_now.visible is False
    assert timer.active is False  # polling stops
    assert [button.interactive for button in buttons] == [True] * len(RUN_BUTTONS)


def test_a_service_on_a_local_folder_needs_no_polling(tiny_root: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from ditto_demo.ui.app import build_app

    monkeypatch.setenv("GRADIO_EXAMPLES_CACHE", str(tmp_path / "examples"))
    service = DemoService(AppSettings(checkpoints=str(tiny_root), backend="torch", device="cpu",
                                      output_dir=tmp_path / "out"))
    assert service.ready
    assert service.checkpoint_progress() is None
    demo = build_app(service)
    assert not [b for b in demo.blocks.values() if isinstance(b, gr.Timer)]
    assert next(b for b in demo.blocks.values() if b.elem_id == "ditto-banner").visible is False


# ------------------------------------------------------------------------------------ the app, as started


def test_the_app_serves_at_once_and_generates_when_the_download_is_done(
    repo: dict[str, bytes], tmp_path: Path, speech: Path
) -> None:
    import httpx
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    hub = GatedHub(HUB_REPO_ID, dict(repo)).start()
    try:
        with launched_app(Path(""), tmp_path, fresh_host_env(hub, tmp_path)) as url:
            assert hub.served == 0  # the page answers while no checkpoint file has arrived
            config = httpx.get(url + "config", timeout=10).text
            assert "Generation starts when the Ditto checkpoints are downloaded" in config
            assert str(tmp_path / "hf-home") not in config  # server folders are never shown
            client = Client(url, verbose=False, download_files=str(tmp_path / "downloads"))
            try:
                with pytest.raises(AppError, match=r"Downloading the Ditto checkpoints: \d+ of \d+ files"):
                    client.predict(source=handle_file(PORTRAIT), audio=handle_file(speech), api_name="/generate")
                hub.open()
                result: list[Any] = []
                refusals: list[str] = []

                def generated() -> bool:
                    try:
                        result.append(client.predict(source=handle_file(PORTRAIT), audio=handle_file(speech),
                                                     seed=2, api_name="/generate"))
                    except AppError as exc:
                        refusals.append(str(exc))
                        time.sleep(0.5)
                        return False
                    return True

                _until(generated, what="a generation after the download")
                for refused in refusals:  # only "not yet", never another failure
                    assert "Generation starts when the Ditto checkpoints are downloaded" in refused, refused
            finally:
                client.close()
        _, report, _ = result[0]
        assert report["frames"] == 10
        assert report["seed"] == 2
        log = (tmp_path / "app.log").read_text()
        assert "the page is served while the checkpoints download" in log
        assert "The Ditto checkpoints are ready." in log
    finally:
        hub.stop()


def test_the_gate_holds_files_until_allowed(repo: dict[str, bytes]) -> None:
    """The gate itself: files wait for permits, one each, and open() releases everything."""
    hub = GatedHub(HUB_REPO_ID, dict(repo)).start()
    try:
        import httpx

        lfs = next(f for f in sorted(hub.files) if hub.is_lfs(f))
        url = f"{hub.url}/cdn/{hub.sha256(lfs)}"
        answers: list[int] = []
        worker = threading.Thread(target=lambda: answers.append(httpx.get(url, timeout=30).status_code))
        worker.start()
        time.sleep(0.5)
        assert answers == []  # held
        hub.allow(1)
        worker.join(10)
        assert answers == [200]
        hub.open()
        assert httpx.get(url, timeout=10).status_code == 200
        assert hub.served == 2
    finally:
        hub.stop()
