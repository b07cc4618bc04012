"""The app end to end over HTTP: ``python app.py`` as a newcomer starts it, driven with ``gradio_client``.

One app (tiny test checkpoints, a 1 s audio limit, two generations at once) serves most tests of this module;
two short-lived ones check the start-up without usable checkpoints. The output video is noise (random weights);
what is checked is the plumbing: parameters, files, limits, errors, folders.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from collections.abc import Iterator
from concurrent.futures import wait
from pathlib import Path
from typing import Any

import gradio as gr
import httpx
import pytest
from app_support import ROOT, launched_app
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from ditto_demo.pipeline.controls import Controls, control_info
from ditto_demo.ui.generate_tab import HELPER_API_NAMES
from ditto_demo.ui.service import AppSettings, DemoService
from ditto_demo.ui.widgets import ControlPanel

PORTRAIT = ROOT / "assets" / "portrait_illustration.png"
SPEECH = ROOT / "assets" / "speech_en.wav"

pytestmark = pytest.mark.skipif(shutil.which("ffprobe") is None, reason="needs ffmpeg/ffprobe (packages.txt)")


def _clip(seconds: float, path: Path) -> Path:
    """The first ``seconds`` of the example speech (the app must accept it as any upload)."""
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(SPEECH), "-t", f"{seconds}", str(path)],
                   check=True)
    return path


def _probe(video: Path) -> dict[str, Any]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-show_streams", "-of", "json", str(video)],
        check=True, capture_output=True, text=True,
    ).stdout
    return json.loads(out)


def _config(url: str) -> str:
    """The page's configuration (every component's props) as text."""
    return httpx.get(url + "config", timeout=10).text


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("app")


@pytest.fixture(scope="module")
def clips(work: Path) -> dict[str, Path]:
    return {"1s": _clip(1, work / "one-second.wav"), "2s": _clip(2, work / "two-seconds.wav")}


@pytest.fixture(scope="module")
def app_url(tiny_root: Path, work: Path) -> Iterator[str]:
    env = {"DITTO_MAX_AUDIO_SECONDS": "1", "DITTO_CONCURRENCY": "2"}
    with launched_app(tiny_root, work, env) as url:
        yield url


@pytest.fixture(scope="module")
def client(app_url: str, work: Path) -> Iterator[Client]:
    api = Client(app_url, verbose=False, download_files=str(work / "downloads"))
    yield api
    api.close()


def test_generate_with_named_parameters(client: Client, clips: dict[str, Path]) -> None:
    video, report, settings = client.predict(
        source=handle_file(PORTRAIT), audio=handle_file(clips["1s"]), emotion="happy", steps=10, seed=3,
        yaw_offset=4.5, api_name="/generate",
    )
    video = Path(video["video"] if isinstance(video, dict) else video)
    assert video.suffix == ".mp4"
    assert video.stat().st_size > 0
    streams = {s["codec_type"]: s for s in _probe(video)["streams"]}
    assert streams["video"]["codec_name"] == "h264"
    assert streams["video"]["pix_fmt"] == "yuv420p"
    assert streams["video"]["r_frame_rate"] == "25/1"
    assert int(streams["video"]["nb_read_frames"]) == math.ceil(1.0 * 25)
    assert streams["audio"]["codec_name"] == "aac"

    assert report["frames"] == 25
    assert report["fps"] == 25
    for key in ("rtf", "first_frame_latency_seconds", "total_seconds", "render_fps"):
        assert report[key] > 0, key
    assert {"warp", "decode"} <= set(report["per_frame_ms"])
    assert report["seed"] == 3

    saved = Controls.from_json(Path(settings).read_text())
    assert saved.emotion == "happy"
    assert saved.seed == 3
    assert saved.steps == 10
    assert saved.yaw_offset == 4.5


def test_bad_portrait_is_refused_with_a_sentence(client: Client, clips: dict[str, Path], work: Path) -> None:
    notes = work / "notes.txt"
    notes.write_text("not a portrait\n")
    with pytest.raises(AppError, match=r"notes\.txt is not an image or video we can read.*use a JPG, PNG"):
        client.predict(source=handle_file(notes), audio=handle_file(clips["1s"]), api_name="/generate")


def test_too_long_audio_is_refused_with_the_limit(client: Client, clips: dict[str, Path]) -> None:
    with pytest.raises(AppError, match=r"longer than the 1 s limit: shorten it"):
        client.predict(source=handle_file(PORTRAIT), audio=handle_file(clips["2s"]), steps=10, api_name="/generate")


def test_limit_is_shown_before_the_run(app_url: str) -> None:
    config = _config(app_url)
    assert "Up to 1 s of speech" in config
    assert "never trimmed" in config


def test_concurrent_requests_get_their_own_folders(client: Client, clips: dict[str, Path], work: Path) -> None:
    jobs = {
        seed: client.submit(source=handle_file(PORTRAIT), audio=handle_file(clips["1s"]), steps=10, seed=seed,
                            api_name="/generate")
        for seed in (11, 12)
    }
    wait([job.future for job in jobs.values()], timeout=180)
    for seed, job in jobs.items():
        _, report, settings = job.result()
        assert report["seed"] == seed
        assert Controls.from_json(Path(settings).read_text()).seed == seed
    folders = {}
    for settings in (work / "outputs").glob("*/ditto-settings.json"):
        seed = json.loads(settings.read_text())["seed"]
        if seed in jobs:
            assert (settings.parent / "ditto.mp4").is_file()
            folders.setdefault(seed, []).append(settings.parent)
    assert sorted(folders) == [11, 12]
    assert folders[11] != folders[12]
    assert len(folders[11]) == len(folders[12]) == 1


def test_api_lists_every_control_and_hides_helpers(client: Client, tiny_root: Path) -> None:
    api = client.view_api(return_format="dict", print_info=False)
    assert api["unnamed_endpoints"] == {}
    endpoint = api["named_endpoints"]["/generate"]
    parameters = {p["parameter_name"]: p for p in endpoint["parameters"]}
    assert list(parameters) == ["source", "audio", *control_info()]
    assert not parameters["source"]["parameter_has_default"]
    assert not parameters["audio"]["parameter_has_default"]

    # every control is optional, and its default is the widget's initial value
    service = DemoService(AppSettings(checkpoints=str(tiny_root), backend="torch", device="cpu"))
    with gr.Blocks():
        panel = ControlPanel(service.control_defaults())
    for name, component in zip(panel.names, panel.components, strict=True):
        assert parameters[name]["parameter_has_default"], name
        assert parameters[name]["parameter_default"] == component.value, name
    assert next(r["label"] for r in endpoint["returns"]) == "Talking head"

    listed = {name.strip("/") for name in api["named_endpoints"]}
    for helper in (*HELPER_API_NAMES, "load_example", "system_report"):
        assert not any(name == helper or name.startswith(f"{helper}_") for name in listed), helper


def test_starts_without_checkpoints_and_says_how_to_fix_it(work: Path, clips: dict[str, Path]) -> None:
    missing = work / "no-such-checkpoints"
    (work / "no-checkpoints").mkdir()
    with launched_app(missing, work / "no-checkpoints") as url:
        config = _config(url)
        assert "Generation is unavailable: the Ditto checkpoints could not be loaded." in config
        assert "DITTO_CHECKPOINTS" in config
        assert str(missing) not in config  # server folders are never shown to visitors
        refused = _refusal(url, clips["1s"])
    assert "Generation is unavailable" in refused
    assert "DITTO_CHECKPOINTS" in refused
    assert str(missing) not in refused


def test_empty_checkpoint_folder_gives_an_actionable_error(work: Path, clips: dict[str, Path]) -> None:
    empty = work / "empty-checkpoints"
    empty.mkdir()
    (work / "empty").mkdir()
    with launched_app(empty, work / "empty") as url:
        refused = _refusal(url, clips["1s"])
    assert "python -m ditto_demo download" in refused
    assert "DITTO_CHECKPOINTS" in refused
    assert str(empty) not in refused


def _refusal(url: str, audio: Path) -> str:
    """The error message ``/generate`` answers with (it must refuse)."""
    api = Client(url, verbose=False, download_files=False)
    try:
        with pytest.raises(AppError) as refused:
            api.predict(source=handle_file(PORTRAIT), audio=handle_file(audio), api_name="/generate")
    finally:
        api.close()
    return str(refused.value)


def test_examples_are_not_rendered_at_start(app_url: str, work: Path) -> None:
    """Example rows are cached lazily: nothing runs the pipeline before a visitor clicks one."""
    assert not list((work / "examples-cache").rglob("log.csv"))


# ------------------------------------------------------------------------------------------------- in-process
# The wiring that HTTP does not show (limits, private helpers), on the Blocks built in this process.


@pytest.fixture(scope="module")
def built(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[DemoService, gr.Blocks]:
    from ditto_demo.ui.app import build_app

    work = tmp_path_factory.mktemp("in-process")
    settings = AppSettings(checkpoints=str(tiny_root), backend="torch", device="cpu", concurrency=2, max_queue=5,
                           max_audio_seconds=1, output_dir=work / "outputs")
    service = DemoService(settings)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("GRADIO_EXAMPLES_CACHE", str(work / "examples"))
        demo = build_app(service)
    return service, demo


def _helper(demo: gr.Blocks, api_name: str) -> Any:
    return next(fn.fn for fn in demo.fns.values() if fn.api_name == api_name)


def test_pipeline_events_share_one_limit_and_a_bounded_queue(built: tuple[DemoService, gr.Blocks]) -> None:
    from ditto_demo.ui.app import launch_kwargs

    service, demo = built
    # Issue 11, finding 11: Gradio's copies and uploads go with the results (DITTO_RESULT_HOURS, 6 h), was 2 h.
    assert demo.delete_cache == (3600, 6 * 3600)
    assert demo._queue.max_size == 5
    running = {fn.fn.__name__: fn for fn in demo.fns.values() if fn.fn is not None}
    for name in ("generate", "load_example_output"):  # the API and a first click on an example
        assert running[name].concurrency_id == "pipeline", name
        assert running[name].concurrency_limit == 2, name
    kwargs = launch_kwargs(service.settings)
    assert kwargs["max_file_size"] == service.settings.max_file_size
    assert str(service.settings.output_dir.resolve()) in kwargs["allowed_paths"]


def test_helpers_give_sentences(built: tuple[DemoService, gr.Blocks], clips: dict[str, Path]) -> None:
    demo = built[1]
    assert _helper(demo, "describe_audio")(str(clips["1s"])).startswith("1.0 s of speech → a 25-frame video")
    assert "longer than the 1 s limit" in _helper(demo, "describe_audio")(str(clips["2s"]))
    with pytest.raises(gr.Error, match="Add a portrait first"):
        _helper(demo, "pick_source")("image", None, None, True, None)
    source, seed = _helper(demo, "pick_source")("image", str(PORTRAIT), None, False, 42)
    assert (source, seed) == (str(PORTRAIT), 42)
    assert 0 <= _helper(demo, "pick_source")("image", str(PORTRAIT), None, True, 42)[1] < 2**31
    with pytest.raises(gr.Error, match="Type the text to speak first"):
        _helper(demo, "speak_text")("  ")


def test_settings_load_back_and_reset(built: tuple[DemoService, gr.Blocks], work: Path) -> None:
    service, demo = built
    with gr.Blocks():
        panel = ControlPanel(service.control_defaults())
    saved = Controls(emotion="sad", seed=5, yaw_offset=-3.0, framing="crop")
    file = work / "ditto-settings.json"
    file.write_text(saved.to_json())
    *values, random_seed = _helper(demo, "load_settings")(str(file))
    assert panel.to_controls(*values) == panel.to_controls(*panel.values_for(saved))
    assert random_seed is False  # a saved seed is meant to be used
    *values, random_seed = _helper(demo, "reset_controls")()
    assert values == panel.values_for(Controls())
    assert random_seed is True
    file.write_text('{"emotion": "joyful"}')
    with pytest.raises(gr.Error, match="Unknown emotion 'joyful'"):
        _helper(demo, "load_settings")(str(file))


def test_server_folders_are_redacted(built: tuple[DemoService, gr.Blocks], tiny_root: Path) -> None:
    from ditto_demo.ui.common import PathRedactor

    service, _ = built
    redact = PathRedactor.for_service(service)
    text = f"The network needs ditto_onnx/hubert.onnx under {tiny_root}; outputs in {service.settings.output_dir}/x."
    shown = redact(text)
    assert str(tiny_root) not in shown
    assert str(service.settings.output_dir) not in shown
    assert "the checkpoint folder" in shown
    assert "ditto_onnx/hubert.onnx" in shown


def test_space_front_matter_matches_the_code() -> None:
    """The README's Space configuration preloads exactly the default backend's files, at the pinned revision."""
    import yaml

    from ditto_demo.engine.hub import HUB_REPO_ID, HUB_REVISION, allow_patterns
    from ditto_demo.engine.specs import MODEL_CONFIG_FILE

    text = (ROOT / "README.md").read_text()
    assert text.startswith("---\n")
    meta = yaml.safe_load(text.split("---\n")[1])
    assert meta["sdk"] == "gradio"
    assert meta["sdk_version"] == gr.__version__
    assert meta["app_file"] == "app.py"
    assert (ROOT / meta["app_file"]).is_file()
    assert meta["models"] == [HUB_REPO_ID]
    assert len(meta["short_description"]) <= 60
    (entry,) = meta["preload_from_hub"]
    repo, files, revision = entry.split(" ")
    assert repo == HUB_REPO_ID
    assert revision == HUB_REVISION
    assert sorted(files.split(",")) == [p for p in allow_patterns("torch") if p != MODEL_CONFIG_FILE]


def test_stop_cancels_the_running_generation_of_that_session(tiny_root: Path, tmp_path: Path) -> None:
    """The Stop handler (and closing the tab) sets the cancel token of that browser session only; the pipeline
    then stops every stage and leaves no files."""

    from ditto_demo.pipeline import Controls, Pipeline
    from ditto_demo.pipeline.runner import CancelledError
    from ditto_demo.ui.service import AppSettings, DemoService

    service = DemoService(AppSettings(output_dir=tmp_path / "out"),
                          pipeline=Pipeline(tiny_root, backend="torch", device="cpu"))
    token = service.cancel_token("session-a")
    other = service.cancel_token("session-b")
    seen: list[str] = []

    def progress(stage: str, fraction: float, message: str) -> None:
        seen.append(stage)
        if stage == "render" and fraction > 0:
            assert service.cancel("session-a") is True  # what the Stop button does for this session

    with pytest.raises(CancelledError):
        service.generate(ROOT / "assets/portrait_illustration.png", ROOT / "assets/speech_en.wav",
                         Controls(steps=2), progress=progress, cancel=token)
    assert token.is_set()
    assert not other.is_set()  # another visitor's run is untouched
    assert "render" in seen
    assert list((tmp_path / "out").iterdir()) == []  # no partial video, no empty request folder
    assert service.cancel("session-a") is False  # nothing left to stop
