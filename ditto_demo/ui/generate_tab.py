"""The Generate tab: portrait + speech + controls → a talking-head video, in four numbered steps.

1. **Portrait**: a photo/illustration or a short video (two tabs), with the detected face box and the crop the
   model sees drawn as soon as it is uploaded, and re-drawn when the crop settings change.
2. **Speech**: upload any format, record, or type text (text to speech when the server has it); the limit is shown
   before the run and the duration of an upload right after it.
3. **Controls**: one widget per :class:`Controls` field (:class:`ControlPanel`), load/save settings, reset.
4. **Result**: the video, the timing report, the settings file and the seed that was used.

The API endpoint ``/generate`` takes ``source`` and ``audio`` (files) and every control as an optional named
parameter whose default is the widget's initial value; helper callbacks are private. Only :class:`DemoService` is
used to reach the pipeline, and every failure is a ``gr.Error`` whose sentence never names a server folder.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import gradio as gr

from ditto_demo.errors import DittoError, InputError
from ditto_demo.pipeline.controls import Controls
from ditto_demo.ui.common import progress_adapter, public_errors
from ditto_demo.ui.service import DemoService, Outcome
from ditto_demo.ui.widgets import ControlPanel
from ditto_demo.ui.zerogpu import audio_duration, on_gpu

__all__ = [
    "ASSETS",
    "CONCURRENCY_ID",
    "HELPER_API_NAMES",
    "GenerateTab",
    "build_generate_tab",
    "summary_markdown",
]

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])

#: Example media shipped with the repository.
ASSETS = Path(__file__).resolve().parents[2] / "assets"
#: Shared by every event that runs the pipeline (Generate, Compare, Live), so together they respect one limit.
CONCURRENCY_ID = "pipeline"
#: The helper callbacks' API names: all private (the UI calls them, API clients cannot); listed for the tests.
HELPER_API_NAMES = (
    "pick_source",
    "preview_image",
    "preview_video",
    "preview_crop",
    "describe_audio",
    "speak_text",
    "show_result",
    "reuse_seed",
    "seed_typed",
    "reset_controls",
    "load_settings",
    "stop",
    "select_image_tab",
    "select_video_tab",
    "example_loaded",
)
#: Crop controls that change the preview.
_CROP_NAMES = ("crop_scale", "crop_x", "crop_y", "crop_rotate")
#: A settings file is a few hundred bytes; anything much larger is not one.
_MAX_SETTINGS_BYTES = 256 * 1024
#: Preview (face detection + landmarks on a freshly lent GPU) needs little time.
_PREVIEW_GPU_SECONDS = 30


# ----------------------------------------------------------------------------------------------- user messages


def summary_markdown(report: Mapping[str, Any] | None) -> str:
    """The timing report in two short lines a visitor can read (the JSON holds everything)."""
    if not report:
        return ""
    seconds = float(report.get("audio_seconds", 0.0))
    rtf = float(report.get("rtf", 0.0))
    pace = "faster than real time" if 0 < rtf < 1 else "slower than real time" if rtf > 1 else "real time"
    per_frame = " · ".join(f"{stage} {ms:g} ms" for stage, ms in (report.get("per_frame_ms") or {}).items())
    phases = " · ".join(f"{phase} {s:g} s" for phase, s in (report.get("phase_seconds") or {}).items())
    backends = sorted(set((report.get("backends") or {}).values()))
    lines = [
        f"**{report.get('frames', 0)} frames at {report.get('fps', 25)} fps** for {seconds:g} s of speech, made in "
        f"**{report.get('total_seconds', 0):g} s** (RTF {rtf:g}, {pace}); first frame after "
        f"**{report.get('first_frame_latency_seconds', 0):g} s**, rendering at {report.get('render_fps', 0):g} fps.",
    ]
    if per_frame:
        lines.append(f"Per frame: {per_frame}.")
    if phases:
        lines.append(f"Phases: {phases}.")
    if backends:
        lines.append(f"Seed {report.get('seed')} · faces found: {report.get('faces_found')} · "
                     f"backends: {', '.join(backends)}.")
    return "\n\n".join(lines)


# ----------------------------------------------------------------------------------------------------- the tab


@dataclass(frozen=True)
class GenerateTab:
    """The components other code (and tests) may need to reach."""

    panel: ControlPanel
    image: gr.Image
    video: gr.Video
    audio: gr.Audio
    source_file: gr.File
    video_out: gr.Video
    report: gr.JSON
    settings_out: gr.File
    generate_button: gr.Button


def _chosen_source(kind: str | None, image: str | None, video: str | None) -> str | None:
    """The portrait of the active tab, else whichever tab holds one."""
    if kind == "video" and video:
        return video
    return image or video or None


def _with_random_seed(service: DemoService, controls: Controls) -> Controls:
    """An empty seed means "random": the service draws one now, so it can be echoed, saved and reused."""
    if controls.seed is not None:
        return controls
    return controls.with_changes(seed=service.new_seed())


def _signature(panel: ControlPanel, *, progress: bool) -> inspect.Signature:
    """``(source, audio, <every control>=<its widget's initial value>[, progress])``: what Gradio and the API read."""
    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    parameters = [inspect.Parameter("source", kind, annotation=str), inspect.Parameter("audio", kind, annotation=str)]
    parameters += [
        inspect.Parameter(name, kind, default=component.value)
        for name, component in zip(panel.names, panel.components, strict=True)
    ]
    if progress:
        parameters.append(inspect.Parameter("progress", kind, default=gr.Progress()))
        # Injected by Gradio (not an API parameter): identifies the browser session, so Stop can cancel its run.
        parameters.append(inspect.Parameter("request", kind, default=None, annotation=gr.Request))
    return inspect.Signature(parameters)


def _handlers(service: DemoService, panel: ControlPanel, redact: Callable[[str], str]) -> dict[str, Callable[..., Any]]:
    """The tab's callbacks, closed over the service and the panel (no module state)."""
    count = len(panel.names)
    settings = service.settings

    def run(
        source: str | None,
        audio: str | None,
        values: Sequence[Any],
        progress: gr.Progress | None,
        session: str | None = None,
    ) -> Outcome:
        portrait = service.check_file(source, "a portrait (step 1: a photo, illustration or short video)")
        speech = service.check_file(audio, "the speech (step 2: upload, record or type it)")
        controls = _with_random_seed(service, panel.to_controls(*values))
        if progress is not None:
            progress(0.0, desc="Starting")
        token = service.cancel_token(session) if session else None
        try:
            return service.generate(portrait, speech, controls, cancel=token,
                                    progress=progress_adapter(progress) if progress is not None else None)
        finally:
            if session and token is not None:
                service.release(session, token)

    def generate(*args: Any) -> tuple[str, dict[str, Any], str]:
        """Portrait + speech → talking-head video. Returns (video mp4, timing report, settings JSON file)."""
        progress = args[2 + count] if len(args) > 2 + count else None
        request = args[3 + count] if len(args) > 3 + count else None
        session = getattr(request, "session_hash", None)
        outcome = run(args[0], args[1], args[2:2 + count], progress, session)
        return str(outcome.video), outcome.report, str(outcome.settings_file)

    def stop(request: gr.Request) -> None:
        """Stop this browser session's running generation (the pipeline cancels every stage within ~0.1 s)."""
        service.cancel(request.session_hash)

    generate.__signature__ = _signature(panel, progress=True)  # type: ignore[attr-defined]

    def run_example(*args: Any) -> tuple[str, dict[str, Any], str, str, int]:
        """A full example row (cached on first use): the same run, plus the summary and the seed."""
        outcome = run(args[0], args[1], args[2:2 + count], None)
        return (str(outcome.video), outcome.report, str(outcome.settings_file), summary_markdown(outcome.report),
                int(outcome.report["seed"]))

    run_example.__signature__ = _signature(panel, progress=False)  # type: ignore[attr-defined]

    def pick_source(kind: str, image: str | None, video: str | None, random_seed: bool,
                    seed: float | None) -> tuple[str, int | None]:
        """The active portrait, and the seed for this run: a fresh one (shown in the seed box) when random is on.

        Gradio's number box cannot be left empty in the browser (it shows and sends 0), so "random" is a checkbox
        here, and the seed drawn for the run is written into the box: the settings file and the echo then agree.
        """
        chosen = _chosen_source(kind, image, video)
        if chosen is None:
            raise InputError("Add a portrait first: upload a photo, illustration or short video in step 1.")
        if random_seed or seed is None:
            return chosen, service.new_seed()
        return chosen, int(seed)

    def preview(path: str | None, crop: Sequence[Any]) -> gr.Image:
        """The face box and crop, or a hidden box while there is no portrait (it would be an empty frame)."""
        if not path or not service.ready:
            return gr.Image(value=None, visible=False)
        controls = Controls(**dict(zip(_CROP_NAMES, crop, strict=True)))
        return gr.Image(value=service.preview(path, controls), visible=True)

    def preview_image(image: str | None, *crop: Any) -> Any:
        return preview(image, crop)

    def preview_video(video: str | None, *crop: Any) -> Any:
        return preview(video, crop)

    def preview_crop(kind: str, image: str | None, video: str | None, *crop: Any) -> Any:
        return preview(_chosen_source(kind, image, video), crop)

    def describe_audio(audio: str | None) -> str:
        if not audio:
            return ""
        try:
            info = service.describe_audio(audio)
        except DittoError as exc:
            return f"**Too long or unreadable:** {redact(str(exc))}"
        return (f"{info.seconds:.1f} s of speech → a {info.frames}-frame video "
                f"(limit {settings.max_audio_seconds:g} s).")

    def speak_text(text: str | None) -> str:
        return str(service.speak(text))

    def show_result(report: dict[str, Any] | None) -> tuple[str, int | None, gr.Row, gr.File]:
        return summary_markdown(report), (report or {}).get("seed"), gr.Row(visible=True), gr.File(visible=True)

    def reuse_seed(seed: float | None) -> tuple[int, bool]:
        if seed is None:
            raise InputError("Generate a video first: its seed appears here and can then be reused.")
        return int(seed), False

    def seed_typed() -> bool:
        return False  # a seed typed by hand is meant to be used

    def reset_controls() -> list[Any]:
        return [*panel.values_for(Controls()), True]

    def load_settings(file: str | None) -> list[Any]:
        if not file:
            raise InputError("Choose a settings file (.json) saved by this app or the CLI.")
        path = Path(file)
        if path.stat().st_size > _MAX_SETTINGS_BYTES:
            raise InputError("That file is too large to be a settings file; choose the .json saved with a video.")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise InputError("That file is not a text settings file; choose the .json saved with a video.") from None
        controls = Controls.from_json(text)
        return [*panel.values_for(controls), controls.seed is None]

    handlers: dict[str, Callable[..., Any]] = {
        "generate": on_gpu(generate, audio_duration(service.audio_seconds)),
        "run_example": on_gpu(run_example, audio_duration(service.audio_seconds)),
        "preview_image": on_gpu(preview_image, _PREVIEW_GPU_SECONDS),
        "preview_video": on_gpu(preview_video, _PREVIEW_GPU_SECONDS),
        "preview_crop": on_gpu(preview_crop, _PREVIEW_GPU_SECONDS),
    }
    handlers.update({fn.__name__: fn for fn in (pick_source, describe_audio, speak_text, show_result, reuse_seed,
                                                seed_typed, reset_controls, load_settings, stop)})
    guarded = {name: public_errors(fn, redact) for name, fn in handlers.items()}
    # Gradio names the API parameters after the signature; wrappers copy it, but be explicit for the endpoints.
    guarded["generate"].__signature__ = generate.__signature__  # type: ignore[attr-defined]
    guarded["run_example"].__signature__ = run_example.__signature__  # type: ignore[attr-defined]
    return guarded


def _example_rows(panel: ControlPanel, portrait: str, speech: str) -> tuple[list[list[Any]], list[str]]:
    """Full example rows (portrait, speech, every control) and their labels."""
    presets: list[tuple[str, Controls]] = [
        ("Illustration · voice-driven defaults", Controls(seed=7)),
        ("Happy, gaze on the camera", Controls(seed=7, emotion="happy", gaze_lock=True)),
        ("Calm: half the head motion, slow blinks",
         Controls(seed=7, pitch_amplitude=0.5, yaw_amplitude=0.5, roll_amplitude=0.5, blinks="every",
                  blink_every=90)),
        ("Surprised mix, side by side",
         Controls(seed=7, emotion={"happy": 0.6, "surprise": 0.4}, framing="side_by_side", fade_in=0.5)),
    ]
    rows = [[portrait, speech, *panel.values_for(controls)] for _, controls in presets]
    return rows, [label for label, _ in presets]


def build_generate_tab(service: DemoService, redact: Callable[[str], str]) -> GenerateTab:
    """Build the tab inside the caller's ``gr.Tab`` and wire its events."""
    settings = service.settings
    limit = f"{settings.max_audio_seconds:g}"
    portrait_example = str(ASSETS / "portrait_illustration.png")
    speech_example = str(ASSETS / "speech_en.wav")
    kind = gr.State("image")

    with gr.Row(equal_height=False, elem_id="ditto-generate"):
        with gr.Column(scale=3, min_width=320):
            with gr.Row(equal_height=False):
                with gr.Column(min_width=280, elem_classes=["ditto-step"]):
                    gr.Markdown("### 1 · Portrait\nA photo, illustration or short video with one clear face.")
                    with gr.Tabs(selected="image") as source_tabs:
                        with gr.Tab("Image", id="image") as image_tab:
                            image = gr.Image(label="Portrait", type="filepath", height=300,
                                             sources=["upload", "webcam", "clipboard"], elem_id="ditto-portrait")
                            gr.Examples([[portrait_example]], inputs=[image], label="Example portrait",
                                        cache_examples=False, api_visibility="private")
                        with gr.Tab("Video", id="video") as video_tab:
                            video = gr.Video(label="Portrait video (keep the mouth closed)", sources=["upload"],
                                             height=300)
                    crop_preview = gr.Image(
                        label="Face (green) and crop (orange)", type="numpy",
                        interactive=False, height=240, format="jpeg", visible=False, elem_id="ditto-crop-preview",
                    )
                with gr.Column(min_width=280, elem_classes=["ditto-step"]):
                    gr.Markdown("### 2 · Speech\nAny format: wav, mp3, m4a, ogg, flac; or record it.")
                    audio = gr.Audio(label="Speech", type="filepath", sources=["upload", "microphone"],
                                     elem_id="ditto-speech")
                    gr.Markdown(f"Up to {limit} s of speech; longer files are refused, never trimmed. "
                                f"Files up to {settings.max_file_size}.", elem_classes=["ditto-note"])
                    audio_info = gr.Markdown("", elem_classes=["ditto-note"])
                    gr.Examples([[speech_example]], inputs=[audio], label="Example speech",
                                cache_examples=False, api_visibility="private")
                    # Offered only where a voice can be had (the built-in voice's package and espeak-ng, or a Hub
                    # model named by DITTO_TTS_MODEL); the handler still refuses with a sentence if it fails later.
                    with gr.Accordion("…or type text (text to speech)", open=False, visible=service.can_speak):
                        tts_text = gr.Textbox(label="Text", lines=3, max_lines=8,
                                              placeholder="Hello! I am a portrait that talks.")
                        speak = gr.Button("Make speech from text", size="sm")
            with gr.Row():
                generate_button = gr.Button("Generate", variant="primary", size="lg", scale=3,
                                            interactive=service.ready, elem_id="ditto-generate-button")
                stop_button = gr.Button("Stop", variant="stop", size="lg", scale=1, elem_id="ditto-stop-button")
                clear = gr.ClearButton(value="Clear", size="lg", scale=1, api_visibility="private")
            examples_slot = gr.Column()
            gr.Markdown("### 3 · Controls\nEvery setting has a tip. Expect nudges, not switches: the model also reads "
                        "emotion from the voice, so an explicit emotion is subtle.")
            with gr.Row(equal_height=True):
                random_seed = gr.Checkbox(True, label="New random seed for every run", scale=2, min_width=200,
                                          elem_id="ditto-random-seed",
                                          info="Off: use the seed under Quality and seed (Reuse seed turns it off).")
                with gr.Column(scale=1, min_width=160):
                    reset = gr.Button("↺ Reset to defaults", size="sm")
                    load = gr.UploadButton("Load settings (.json)", file_types=[".json"], size="sm")
            panel = ControlPanel(service.control_defaults(), open_groups=("quality", "emotion"))
        with gr.Column(scale=2, min_width=320, elem_id="ditto-result"):
            gr.Markdown("### 4 · Result")
            video_out = gr.Video(label="Talking head", interactive=False, height=420, elem_id="ditto-video")
            summary = gr.Markdown("", elem_classes=["ditto-note"])
            # The seed and the settings file appear with the first result (empty boxes would only take room).
            with gr.Row(equal_height=False, visible=False) as seed_row:
                seed_used = gr.Number(label="Seed used", precision=0, interactive=False, min_width=140, scale=2,
                                      elem_id="ditto-seed-used")
                reuse = gr.Button("Reuse seed", size="sm", min_width=100, scale=1, elem_id="ditto-reuse-seed")
            settings_out = gr.File(label="Settings of this video (Load settings reads them back)", interactive=False,
                                   visible=False, elem_id="ditto-settings-file")
            with gr.Accordion("Full timing report (JSON)", open=False):
                report = gr.JSON(label="Report")

    source_file = gr.File(visible=False, label="source")
    handlers = _handlers(service, panel, redact)
    by_name = dict(zip(panel.names, panel.components, strict=True))
    crop = [by_name[name] for name in _CROP_NAMES]
    private: dict[str, Any] = {"api_visibility": "private"}

    # Examples: full rows, cached lazily (the first visitor who clicks one pays for it; nothing runs at start-up).
    rows, labels = _example_rows(panel, portrait_example, speech_example)
    outputs = [video_out, report, settings_out, summary, seed_used]
    with examples_slot:
        examples = gr.Examples(
            rows, inputs=[image, audio, *panel.components], outputs=outputs, fn=handlers["run_example"],
            cache_examples=True, cache_mode="lazy", example_labels=labels, api_visibility="private",
            label="Examples: portrait, speech and settings in one click (first use renders them)",
        )
    _share_pipeline_limit(examples, settings.concurrency)
    examples.load_input_event.then(
        lambda: ("image", gr.Tabs(selected="image"), False, gr.Row(visible=True), gr.File(visible=True)),
        outputs=[kind, source_tabs, random_seed, seed_row, settings_out], queue=False, api_name="example_loaded",
        **private,
    )

    # Step 1: remember the active portrait tab; draw the crop preview as soon as there is a portrait.
    image_tab.select(lambda: "image", outputs=kind, queue=False, api_name="select_image_tab", **private)
    video_tab.select(lambda: "video", outputs=kind, queue=False, api_name="select_video_tab", **private)
    preview_events: dict[str, Any] = {"outputs": crop_preview, "concurrency_limit": settings.concurrency,
                                      "concurrency_id": "preview", "show_progress": "minimal", **private}
    image.change(handlers["preview_image"], inputs=[image, *crop], api_name="preview_image", **preview_events)
    video.change(handlers["preview_video"], inputs=[video, *crop], api_name="preview_video", **preview_events)
    crop_inputs = [kind, image, video, *crop]
    for component in crop:
        trigger = component.change if isinstance(component, gr.Checkbox) else component.release
        trigger(handlers["preview_crop"], inputs=crop_inputs, api_name="preview_crop", **preview_events)

    # Step 2: the duration (and the limit) as soon as speech arrives; text to speech fills the speech input.
    audio.change(handlers["describe_audio"], inputs=audio, outputs=audio_info, queue=False,
                 api_name="describe_audio", **private)
    speak.click(handlers["speak_text"], inputs=tts_text, outputs=audio, concurrency_limit=settings.concurrency,
                concurrency_id="tts", api_name="speak_text", **private)

    # Step 3: reset and load settings (the preview follows the crop settings).
    redraw: dict[str, Any] = {"inputs": crop_inputs, "api_name": "preview_crop", **preview_events}
    reset.click(handlers["reset_controls"], outputs=[*panel.components, random_seed], queue=False,
                api_name="reset_controls", **private).then(handlers["preview_crop"], **redraw)
    load.upload(handlers["load_settings"], inputs=load, outputs=[*panel.components, random_seed], queue=False,
                api_name="load_settings", **private).then(handlers["preview_crop"], **redraw)

    # Generate: pick the active portrait, run the pipeline (the public endpoint), then show the summary.
    seed_widget = by_name["seed"]
    generation = generate_button.click(
        handlers["pick_source"], inputs=[kind, image, video, random_seed, seed_widget],
        outputs=[source_file, seed_widget], queue=False, api_name="pick_source", **private,
    ).success(
        handlers["generate"], inputs=[source_file, audio, *panel.components], outputs=[video_out, report, settings_out],
        api_name="generate", api_description="Portrait (image or video) + speech → talking-head mp4. Every control is "
        "an optional named parameter. Returns (video, timing report, settings JSON).",
        concurrency_limit=settings.concurrency, concurrency_id=CONCURRENCY_ID, scroll_to_output=True,
    )
    # Stop: a waiting request leaves the queue (cancels=), a running one is stopped by its cancel token.
    stop_button.click(handlers["stop"], queue=False, cancels=[generation], api_name="stop", **private)
    generation.success(
        handlers["show_result"], inputs=report, outputs=[summary, seed_used, seed_row, settings_out], queue=False,
        api_name="show_result", **private,
    )

    # Step 4: the seed echo can be reused (which turns "random" off); typing a seed does the same.
    reuse.click(handlers["reuse_seed"], inputs=seed_used, outputs=[seed_widget, random_seed], queue=False,
                api_name="reuse_seed", **private)
    seed_widget.input(handlers["seed_typed"], outputs=random_seed, queue=False, api_name="seed_typed", **private)

    clear.add([image, video, audio, tts_text, crop_preview, audio_info, source_file, video_out, summary, seed_used,
               settings_out, report])
    return GenerateTab(panel, image, video, audio, source_file, video_out, report, settings_out, generate_button)


def _share_pipeline_limit(examples: gr.Examples, concurrency: int) -> None:
    """Put the lazy example run into the pipeline's concurrency group.

    ``gr.Examples`` runs its function inside its own "load cached output" event, which would otherwise get a
    concurrency group of its own: a first click on an example could then render next to a running generation and
    exceed the GPU budget that ``DITTO_CONCURRENCY`` sets. Gradio has no argument for this, so the event's
    ``BlockFunction`` (public attributes) is adjusted after creation.
    """
    event = examples.cache_event
    root = examples.root_block
    if event is None or root is None or "id" not in event:
        log.warning("example runs keep their own concurrency group (Gradio internals changed)")
        return
    block_fn = root.fns.get(event["id"])
    if block_fn is None:
        log.warning("example runs keep their own concurrency group (event %s not found)", event["id"])
        return
    block_fn.concurrency_id = CONCURRENCY_ID
    block_fn.concurrency_limit = concurrency

