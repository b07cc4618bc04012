"""The API does what ``view_api()`` documents (issue 11, finding 4): every parameter of every public endpoint, called
with values of its documented type, is accepted, and a refusal is always our sentence, never a type error.

The app is ``python app.py`` on the tiny test checkpoints, driven by ``gradio_client`` as a user of the API would:

- a parameter documented as ``Literal[...]`` is called with every listed value, a ``bool`` with both, a number
  with the example Gradio shows for it (for sliders, their minimum); each must run, and the run's report must show
  the value arrived;
- free text (emotion timeline, pose keyframes, the Compare settings JSON) is called with Gradio's example (refused:
  the sentence must be exactly the one our parser gives) and with a valid value of ours (accepted);
- files are called with a portrait and a speech clip (Gradio's examples are URLs, and the tests have no network);
- outputs have short names (they come from the components' labels), and the page's "Use via API" snippet runs.
"""

from __future__ import annotations

import ast
import contextlib
import io
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gradio as gr
import imageio_ffmpeg
import pytest
from app_support import ROOT, launched_app
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from gradio_client.utils import sanitize_parameter_names

from ditto_demo.errors import InputError
from ditto_demo.pipeline.controls import control_info
from ditto_demo.ui.app import API_SNIPPET, PAGE_ADDRESS
from ditto_demo.ui.compare_tab import parse_settings
from ditto_demo.ui.service import AppSettings, DemoService
from ditto_demo.ui.widgets import ControlPanel

PORTRAIT = ROOT / "assets" / "portrait_illustration.png"
FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()
FILES = ("source", "audio")
#: Every public endpoint and its parameters (checked against view_api() below, so none is left out).
ENDPOINTS = {
    "/generate": [*FILES, *control_info()],
    "/compare": [*FILES, "settings_a", "settings_b"],
    "/emotion_grid": [*FILES, "settings"],
}
#: Valid free text of ours, beside Gradio's example, for the parameters typed ``str``.
VALID_TEXT = {
    "emotion_timeline": "0:neutral, 0.1:happy",
    "pose_keyframes": "0:0:0:0; 0.1:5:-10:0",
    "settings_a": '{"emotion": "happy", "seed": 3}',
    "settings_b": '{"yaw_offset": 10}',
    "settings": '{"seed": 3}',
}
#: The settings JSON parameters and the name their refusals give them.
SETTINGS_NAMES = {"settings_a": "Settings A", "settings_b": "Settings B", "settings": "Settings"}
#: Known gaps, kept visible: strict, so each turns into a failure (remove the mark) once it is fixed.
PENDING: dict[tuple[str, str], str] = {}
#: The longest output name we accept (Gradio derives it from the component's label).
MAX_OUTPUT_NAME = 24


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("api-contract")


@pytest.fixture(scope="module")
def speech(work: Path) -> Path:
    """0.2 s of the example speech: five frames per run."""
    path = work / "speech.wav"
    subprocess.run([FFMPEG, "-v", "error", "-y", "-i", str(ROOT / "assets" / "speech_en.wav"), "-t", "0.2",
                    str(path)], check=True)
    return path


@pytest.fixture(scope="module")
def app_url(tiny_root: Path, work: Path) -> Iterator[str]:
    with launched_app(tiny_root, work, {"DITTO_MAX_AUDIO_SECONDS": "2", "DITTO_CONCURRENCY": "2"}) as url:
        yield url


@pytest.fixture(scope="module")
def client(app_url: str, work: Path) -> Iterator[Client]:
    api = Client(app_url, verbose=False, download_files=str(work / "downloads"))
    yield api
    api.close()


@pytest.fixture(scope="module")
def api(client: Client) -> dict[str, Any]:
    return client.view_api(return_format="dict", print_info=False)


@pytest.fixture(scope="module")
def panel(tiny_root: Path) -> ControlPanel:
    """The Generate tab's widgets, to predict what the controls' parser says about a value."""
    service = DemoService(AppSettings(checkpoints=str(tiny_root), backend="torch", device="cpu"))
    with gr.Blocks():
        return ControlPanel(service.control_defaults())


def _parameters(api: dict[str, Any], endpoint: str) -> dict[str, dict[str, Any]]:
    return {p["parameter_name"]: p for p in api["named_endpoints"][endpoint]["parameters"]}


def _literals(parameter: dict[str, Any]) -> list[Any] | None:
    """The values of a ``Literal[...]`` python type, as documented; ``None`` for other types."""
    documented = parameter["python_type"]["type"]
    match = re.fullmatch(r"Literal\[(.*)\]", documented)
    return list(ast.literal_eval(f"[{match.group(1)}]")) if match else None


def _values(parameter: dict[str, Any]) -> list[Any]:
    """Values of the documented type for one parameter (see the module's docstring)."""
    literals = _literals(parameter)
    if literals is not None:
        return literals
    documented = parameter["python_type"]["type"]
    if documented == "bool":
        return [True, False]
    if documented == "str":
        return [parameter["example_input"], VALID_TEXT[parameter["parameter_name"]]]
    return [parameter["example_input"]]


def _baseline(endpoint: str, speech: Path) -> dict[str, Any]:
    arguments: dict[str, Any] = {"source": handle_file(PORTRAIT), "audio": handle_file(speech)}
    if endpoint == "/compare":
        arguments |= {"settings_a": "", "settings_b": ""}
    if endpoint == "/emotion_grid":
        arguments |= {"settings": ""}
    return arguments


def _expected_refusal(endpoint: str, name: str, value: Any, api: dict[str, Any], panel: ControlPanel) -> str | None:
    """What our own parser says about ``value`` (the sentence the API must answer with), or ``None`` if it takes it."""
    try:
        if name in SETTINGS_NAMES:
            parse_settings(value, SETTINGS_NAMES[name])
        elif endpoint == "/generate" and name not in FILES:
            parameters = _parameters(api, endpoint)
            values = [value if n == name else parameters[n]["parameter_default"] for n in panel.names]
            panel.to_controls(*values)
    except InputError as exc:
        return str(exc)
    return None


def _check_arrived(endpoint: str, name: str, value: Any, report: dict[str, Any]) -> None:
    """The run's report shows the value (for the controls whose widget value is the control's value)."""
    if endpoint != "/generate" or value is None:
        return
    controls = report["controls"]
    info = control_info()[name][0]
    if name == "drive_eyes":
        assert controls[name] == {"auto": None, "on": True, "off": False}[value]
    elif name == "emotion":
        assert controls[name] == (None if value.startswith("Checkpoint default") else value)
    elif name == "steps":
        assert controls[name] == int(value)
    elif isinstance(value, bool) or info.choices:
        assert controls[name] == value
    elif isinstance(value, int | float):
        assert controls[name] == pytest.approx(value)


def test_every_public_endpoint_and_parameter_is_covered(api: dict[str, Any]) -> None:
    assert api["unnamed_endpoints"] == {}
    assert sorted(api["named_endpoints"]) == sorted(ENDPOINTS)
    for endpoint, names in ENDPOINTS.items():
        assert list(_parameters(api, endpoint)) == names, endpoint


def _cases() -> list[Any]:
    """One case per parameter; the two files of an endpoint share one (the same call covers both)."""
    cases = []
    for endpoint, names in ENDPOINTS.items():
        for name in ["+".join(FILES), *(n for n in names if n not in FILES)]:
            marks = [pytest.mark.xfail(strict=True, reason=PENDING[endpoint, name])] if (endpoint, name) in PENDING \
                else []
            cases.append(pytest.param(endpoint, name, id=f"{endpoint.strip('/')}-{name}", marks=marks))
    return cases


CASES = _cases()


@pytest.mark.parametrize(("endpoint", "name"), CASES)
def test_documented_values_are_accepted(endpoint: str, name: str, api: dict[str, Any], client: Client,
                                        panel: ControlPanel, speech: Path) -> None:
    if name == "+".join(FILES):  # the baseline: a portrait and a speech clip, the documented "filepath" type
        parameter: dict[str, Any] = {"python_type": {"type": "filepath"}}
        literals, values = None, [None]
    else:
        parameter = _parameters(api, endpoint)[name]
        literals = _literals(parameter)
        if literals is not None and parameter["parameter_has_default"]:
            assert parameter["parameter_default"] in literals, "the documented default is not of the documented type"
        values = _values(parameter)
    for value in values:
        arguments = _baseline(endpoint, speech)
        if value is not None:
            arguments[name] = value
        expected = None if value is None else _expected_refusal(endpoint, name, value, api, panel)
        if literals is not None or parameter["python_type"]["type"] in ("bool", "float", "int"):
            assert expected is None, f"{name}={value!r} is documented but our parser refuses it: {expected}"
        if expected is not None:
            with pytest.raises(AppError) as refused:
                client.predict(**arguments, api_name=endpoint)
            assert str(refused.value) == expected, f"{name}={value!r}"
            continue
        try:
            outputs = client.predict(**arguments, api_name=endpoint)
        except AppError as exc:
            pytest.fail(f"{endpoint} refused {name}={value!r} of the documented type: {exc}")
        video, report = outputs[0], outputs[1]
        assert Path(video["video"] if isinstance(video, dict) else video).stat().st_size > 0
        assert report["frames"] == 5
        _check_arrived(endpoint, name, value, report)


def test_outputs_have_short_names(api: dict[str, Any]) -> None:
    for endpoint, info in api["named_endpoints"].items():
        names = [sanitize_parameter_names(r["label"]) for r in info["returns"]]
        assert len(set(names)) == len(names), endpoint
        for name in names:
            assert len(name) <= MAX_OUTPUT_NAME, f"{endpoint} returns {name!r}"


def test_the_snippet_on_the_page_runs(app_url: str, speech: Path, work: Path) -> None:
    """The "Use via API" code, with this server's address (as the page fills it in) and real files, works."""
    assert PAGE_ADDRESS in API_SNIPPET
    code = re.search(r"```python\n(.*?)```", API_SNIPPET, re.S)
    assert code is not None
    source = (code.group(1).replace(PAGE_ADDRESS, app_url)
              .replace('"portrait.png"', repr(str(PORTRAIT))).replace('"speech.wav"', repr(str(speech))))
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(source, "api-snippet", "exec"), {})
    assert ".mp4" in printed.getvalue()
    assert " 7" in printed.getvalue()  # the snippet's seed came back in the report
