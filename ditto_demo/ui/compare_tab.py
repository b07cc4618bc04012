"""The Compare tab: one portrait and one speech rendered with settings A and B into one side-by-side video, or
with all eight emotions tiled 4×2 — for judging what a control does without juggling two videos.

API (``gradio_client``):

* ``/compare(source, audio, settings_a, settings_b)`` → ``(video, report)``. ``settings_a`` / ``settings_b`` are
  JSON objects of :class:`Controls` fields (as in the Generate tab's settings file; ``""`` or ``{}`` is the
  defaults). The UI writes the JSON it sends into the "Settings as JSON" boxes, so what the browser ran can be
  copied into a script.
* ``/emotion_grid(source, audio, settings)`` → ``(video, report)``; the emotion in ``settings`` is ignored.

Seeds: the point of a comparison is that only the settings differ, so one seed serves both sides. A side without a
seed takes the other's; with neither, one random seed is drawn for both (and shown in the report).

On the page, refusals never raise into Gradio's error path (which badges every output with a wordless "Error"): a
portrait is checked on upload (a file that is not an image or video is refused with a sentence and removed), and a
fast check before each run writes its sentence into the status line under the buttons within a second. The page's
runs are private events that report refusals there too; the API endpoints above are bound to hidden triggers and
raise, so API clients get an ``AppError`` with the same sentence.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

import gradio as gr

from ditto_demo.errors import DittoError, InputError
from ditto_demo.pipeline.controls import EMOTIONS, FRAMINGS, Controls
from ditto_demo.ui.common import (
    PathRedactor,
    checked,
    file_path,
    progress_adapter,
    public_errors,
    refusal,
    scroll_js,
    status_line,
)
from ditto_demo.ui.service import DemoService, Outcome
from ditto_demo.ui.widgets import ControlPanel
from ditto_demo.ui.zerogpu import gpu_seconds, on_gpu

__all__ = ["COMPARE_EXCLUDE", "GRID_MAX_SECONDS", "CompareActions", "build_compare_tab", "parse_settings"]

log = logging.getLogger(__name__)

#: Controls left out of the A/B panels: rarely compared, and each panel stays short enough to scan side by side.
#: The framing is one shared choice (tiles of different framings would not line up).
COMPARE_EXCLUDE = (
    "emotion_timeline", "pose_keyframes", "relative_motion", "stitching", "overlap", "motion_smoothing", "fade_in",
    "fade_out", "crop_scale", "crop_x", "crop_y", "crop_rotate", "source_smoothing", "framing",
)  # fmt: skip
#: The grid renders the speech eight times, so it takes short clips only (a few seconds show the differences).
GRID_MAX_SECONDS = 15.0

_INTRO = """
### Compare settings side by side
The same portrait and speech, rendered with **settings A** (left) and **settings B** (right) into one video, or
with **all eight emotions** tiled 4×2 (using settings A). One seed serves both sides, so only the settings differ:
a side without a seed takes the other's; with neither, one random seed is used and shown in the report.
"""


def parse_settings(text: str | dict[str, Any] | None, what: str) -> Controls:
    """:class:`Controls` from the API's JSON text (or an already parsed object); empty means the defaults."""
    if text is None or (isinstance(text, str) and not text.strip()):
        return Controls()
    if isinstance(text, dict):
        return Controls.from_dict(text)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{what} is not valid JSON ({exc.msg} at line {exc.lineno}); give an object such as "
                         '{"emotion": "happy", "seed": 7}.') from None
    return Controls.from_dict(data)


def shared_seed(a: Controls, b: Controls) -> tuple[Controls, Controls]:
    """Both sides with one seed: a missing seed takes the other side's; with neither, one random seed (drawn by
    the service, like every seed the app shows)."""
    if a.seed is None and b.seed is None:
        seed = DemoService.new_seed()
        return a.with_changes(seed=seed), b.with_changes(seed=seed)
    if a.seed is None:
        return a.with_changes(seed=b.seed), b
    if b.seed is None:
        return a, b.with_changes(seed=a.seed)
    return a, b


def _as_json(controls: Controls) -> str:
    """Only the fields that differ from the defaults: short enough to read in a box, complete enough to rerun."""
    defaults = Controls()
    data = controls.to_dict()
    changed = {f.name: data[f.name] for f in fields(Controls) if getattr(controls, f.name) != getattr(defaults, f.name)}
    return json.dumps(changed, indent=2, sort_keys=True)


def gpu_duration(service: DemoService, renders: int) -> Callable[..., int]:
    """ZeroGPU seconds to ask for: the speech's length times the number of renders (the handler's ``audio``)."""

    def duration(*args: Any, **kwargs: Any) -> int:
        audio = file_path(kwargs.get("audio", args[1] if len(args) > 1 else None))  # the page's runs: unprocessed
        try:
            seconds = service.audio_seconds(audio) if audio else 0.0
        except DittoError:  # refused within a second by the handler itself
            seconds = 0.0
        return gpu_seconds(renders * seconds)

    return duration


def grid_refusal(seconds: float) -> str | None:
    """Why speech of ``seconds`` is too long for the emotion grid, or ``None``."""
    if seconds <= GRID_MAX_SECONDS:
        return None
    return (f"The emotion grid renders the speech eight times, so it takes at most {GRID_MAX_SECONDS:g} s of speech; "
            f"this clip is {seconds:.1f} s. Trim it, or compare two emotions with A and B instead.")


class CompareActions:
    """What the tab's buttons do, as plain calls (the tests and the Gradio handlers share them)."""

    def __init__(self, service: DemoService) -> None:
        self.service = service

    def compare(self, source: str | Path | None, audio: str | Path | None, settings_a: str | dict[str, Any] | None,
                settings_b: str | dict[str, Any] | None, progress: Any = None) -> tuple[str, dict[str, Any]]:
        """The side-by-side video and its report (with both sides' controls)."""
        a, b = shared_seed(parse_settings(settings_a, "Settings A"), parse_settings(settings_b, "Settings B"))
        source_path = self.service.check_file(source, "a portrait")
        audio_path = self.service.check_file(audio, "the speech")
        outcome = self.service.compare(source_path, audio_path, a, b, progress=progress)
        report = {**outcome.report, "controls": {"A": a.to_dict(), "B": b.to_dict()}}
        return str(outcome.video), report

    def emotion_grid(self, source: str | Path | None, audio: str | Path | None, settings: str | dict[str, Any] | None,
                     progress: Any = None) -> tuple[str, dict[str, Any]]:
        """The eight emotions tiled 4×2 (row by row in :data:`EMOTIONS` order) and the report."""
        controls = parse_settings(settings, "Settings")
        source_path = self.service.check_file(source, "a portrait")
        audio_path = self.service.check_file(audio, "the speech")
        refused = grid_refusal(self.service.audio_seconds(audio_path))
        if refused:
            raise InputError(refused)
        outcome: Outcome = self.service.emotion_grid(source_path, audio_path, controls, progress=progress)
        return str(outcome.video), {**outcome.report, "tiles": list(EMOTIONS), "columns": 4}


def build_compare_tab(service: DemoService) -> None:
    """Build the tab's content inside the caller's ``gr.Tab``."""
    actions = CompareActions(service)
    defaults = service.control_defaults()
    redact = PathRedactor.for_service(service)
    private: dict[str, Any] = {"api_visibility": "private"}
    gr.Markdown(_INTRO)
    with gr.Row(equal_height=True):
        portrait_box = gr.Image(type="filepath", label="Portrait", sources=["upload", "clipboard"], height=300,
                                elem_id="compare-portrait")
        speech_box = gr.Audio(type="filepath", label="Speech", sources=["upload", "microphone"],
                              elem_id="compare-speech")
    input_note = gr.Markdown("", elem_id="compare-input-note", elem_classes=["ditto-status"])
    framing = gr.Radio(choices=list(FRAMINGS), value="full", label="Output framing (both sides)",
                       info="full: pasted back into the portrait; crop: the 512×512 face crop (smaller video); "
                            "side_by_side: portrait and result next to each other.")
    with gr.Row():
        with gr.Column(variant="panel"):
            gr.Markdown("#### Settings A (left)")
            panel_a = ControlPanel(defaults, open_groups=("emotion",), exclude=COMPARE_EXCLUDE)
        with gr.Column(variant="panel"):
            gr.Markdown("#### Settings B (right)")
            panel_b = ControlPanel(defaults, open_groups=("emotion",), exclude=COMPARE_EXCLUDE)
    with gr.Row():
        compare_button = gr.Button("▶ Compare A | B", variant="primary", scale=2, elem_id="compare-button")
        grid_button = gr.Button("Emotion grid (settings A, 8 renders)", variant="secondary", scale=1,
                                elem_id="compare-grid-button")
    status = gr.Markdown("", elem_id="compare-status", elem_classes=["ditto-status"])
    gr.Markdown("**Result:** A on the left, B on the right (the emotion grid: row by row, angry to contempt).")
    video = gr.Video(label="Result", show_label=False, format="mp4", autoplay=True, height=520,
                     elem_id="compare-video")
    with gr.Accordion("Timing report and settings as JSON", open=False):
        report = gr.JSON(label="Timing report")
        with gr.Row():
            json_a = gr.Code(language="json", label="Settings A (JSON, as sent to /compare)", interactive=False)
            json_b = gr.Code(language="json", label="Settings B (JSON, as sent to /compare)", interactive=False)
    compare_api = gr.Button(visible=False)  # the /compare endpoint's own (never shown) trigger
    grid_api = gr.Button(visible=False)  # and /emotion_grid's

    count_a = len(panel_a.components)

    def collect(shared_framing: str, *values: Any) -> tuple[str, str]:
        """Read both panels (validating them) into the JSON the pipeline events take, with the shared seed."""
        a = panel_a.to_controls(*values[:count_a]).with_changes(framing=shared_framing or "full")
        b = panel_b.to_controls(*values[count_a:]).with_changes(framing=shared_framing or "full")
        a, b = shared_seed(a, b)
        return _as_json(a), _as_json(b)

    def check_compare(source: Any, audio: Any, shared_framing: str, *values: Any) -> str | None:
        """What can be refused before a comparison, within a fraction of a second: the sentence, or ``None``."""
        service.require()
        if not file_path(source):
            return "Add a portrait first: upload a photo or illustration above."
        speech = file_path(audio)
        if not speech:
            return "Add the speech first: upload or record it above."
        service.describe_audio(speech)  # unreadable, or past the limit
        collect(shared_framing, *values)  # a setting the pipeline would refuse
        return None

    def check_grid(source: Any, audio: Any, shared_framing: str, *values: Any) -> str | None:
        refused = check_compare(source, audio, shared_framing, *values)
        if refused:
            return refused
        return grid_refusal(service.audio_seconds(str(file_path(audio))))

    def portrait_changed(value: Any) -> tuple[Any, str]:
        """A portrait is checked on upload: one that is not an image or video we can read is refused and removed."""
        path = file_path(value)
        if not path:
            return gr.skip(), gr.skip()
        try:
            service.check_portrait(path)
        except DittoError as exc:
            return None, status_line(refusal(exc, redact, "check_portrait"))
        return gr.skip(), ""

    def compare(source: str | None, audio: str | None, settings_a: str, settings_b: str,
                progress: gr.Progress = gr.Progress()) -> tuple[str, dict[str, Any]]:  # noqa: B008 - Gradio's idiom
        """Render the portrait speaking with settings A and B, side by side in one video."""
        return actions.compare(source, audio, settings_a, settings_b, progress_adapter(progress))

    def emotion_grid(source: str | None, audio: str | None, settings: str,
                     progress: gr.Progress = gr.Progress()) -> tuple[str, dict[str, Any]]:  # noqa: B008
        """Render the portrait speaking with each of the eight emotions, tiled 4×2."""
        return actions.emotion_grid(source, audio, settings, progress_adapter(progress))

    def compare_in_page(source: Any, audio: Any, settings_a: str, settings_b: str,
                        progress: gr.Progress = gr.Progress()) -> tuple[Any, Any, str]:  # noqa: B008
        """The page's comparison: a refusal goes to the status line, the outputs stay as they were."""
        try:
            video_path, data = actions.compare(file_path(source), file_path(audio), settings_a, settings_b,
                                               progress_adapter(progress))
        except Exception as exc:  # every failure becomes the sentence shown (refusal logs the surprising ones)
            return gr.skip(), gr.skip(), status_line(refusal(exc, redact, "compare"))
        return video_path, data, ""

    def grid_in_page(source: Any, audio: Any, settings: str,
                     progress: gr.Progress = gr.Progress()) -> tuple[Any, Any, str]:  # noqa: B008
        """The page's emotion grid: a refusal goes to the status line, the outputs stay as they were."""
        try:
            video_path, data = actions.emotion_grid(file_path(source), file_path(audio), settings,
                                                    progress_adapter(progress))
        except Exception as exc:  # every failure becomes the sentence shown (refusal logs the surprising ones)
            return gr.skip(), gr.skip(), status_line(refusal(exc, redact, "emotion_grid"))
        return video_path, data, ""

    collect = public_errors(collect, redact)  # error sentences without the server's folders
    compare = public_errors(compare, redact)
    emotion_grid = public_errors(emotion_grid, redact)
    pipeline_queue: dict[str, Any] = {"concurrency_limit": service.settings.concurrency, "concurrency_id": "pipeline"}
    helper: dict[str, Any] = {"concurrency_limit": None, "show_progress": "hidden", **private}
    panels = [framing, *panel_a.components, *panel_b.components]

    portrait_box.change(portrait_changed, inputs=portrait_box, outputs=[portrait_box, input_note], queue=False,
                        preprocess=False, show_progress="hidden", api_name="compare_check_portrait", **private)
    portrait_box.clear(lambda: "", outputs=input_note, queue=False, api_name="compare_forget_note", **private)
    page_run: dict[str, Any] = {"preprocess": False, "show_progress_on": [video], **pipeline_queue, **private}
    pages = (
        (compare_button, check_compare, compare_in_page, "compare", [json_a, json_b], 2),
        (grid_button, check_grid, grid_in_page, "emotion_grid", [json_a], len(EMOTIONS)),
    )
    for button, check, run, name, settings_json, renders in pages:
        accepted = checked(button.click, check, [portrait_box, speech_box, *panels], [status], redact,
                           name=f"check_{name}")
        accepted.success(None, js=scroll_js("compare-video"))
        prepared = accepted.success(collect, inputs=panels, outputs=[json_a, json_b], api_name=f"collect_{name}",
                                    **helper)
        prepared.success(on_gpu(run, gpu_duration(service, renders)), inputs=[portrait_box, speech_box, *settings_json],
                         outputs=[video, report, status], api_name=f"{name}_in_page", **page_run)
    video.change(None, js=scroll_js("compare-video", wait_for_video=True))

    # The API: the same runs, raising their refusals (AppError for clients); bound to triggers the page never shows.
    compare_api.click(
        on_gpu(compare, gpu_duration(service, 2)), inputs=[portrait_box, speech_box, json_a, json_b],
        outputs=[video, report], api_name="compare", **pipeline_queue,
    )
    grid_api.click(
        on_gpu(emotion_grid, gpu_duration(service, len(EMOTIONS))), inputs=[portrait_box, speech_box, json_a],
        outputs=[video, report], api_name="emotion_grid", **pipeline_queue,
    )
