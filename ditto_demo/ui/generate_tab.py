"""The Generate tab: portrait + speech (+ controls) → a talking-head video, in four numbered steps.

1. **Portrait**: a photo/illustration or a short video (two tabs). A file is checked as soon as it is uploaded (a
   file that is not an image or video is refused with a sentence and removed); the detected face box and the crop
   the model sees are drawn, and re-drawn when the crop settings change.
2. **Speech**: upload any format, record, or type text (when the server has a voice); the limit is shown before
   the run and the duration, or the reason a file cannot be used, right after the upload.
3. **Controls**: a preset to start from, one widget per :class:`Controls` field (:class:`ControlPanel`), load/save
   settings, reset. The seed box shows only while "New random seed for every run" is off.
4. **Result**: an example result (a showcase) until the first run; then the video, its progress (the stage: "Finding
   the face", "Rendering frame 40 of 120"), the timing report, the settings file and the seed that was used.

The Generate bar (Generate, Stop, Clear and the status line) stays at the bottom of the screen while the steps above
it scroll, so a phone user never hunts for it; when a run starts, and again when its video is ready, the result is
scrolled into view. Refusals never raise into Gradio's error path (which puts a wordless "Error" badge on every
output): a fast check writes the sentence into the status line and stops the chain (:func:`checked`), and the run
itself reports a refusal there too.

The API endpoint ``/generate`` takes ``source`` and ``audio`` (files) and every control as an optional named
parameter whose default is the widget's initial value; it raises (``AppError`` for API clients) with the same
sentences. It is bound to a hidden trigger: the page's own run is a private event that reports instead of raising.
Helper callbacks are private. Only :class:`DemoService` is used to reach the pipeline.
"""

from __future__ import annotations

import functools
import inspect
import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import gradio as gr

from ditto_demo.errors import DittoError, InputError
from ditto_demo.pipeline.controls import Controls
from ditto_demo.ui.common import (
    STOPPED,
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
from ditto_demo.ui.zerogpu import audio_duration, on_gpu

__all__ = [
    "ASSETS",
    "CONCURRENCY_ID",
    "EXAMPLE_PRESETS",
    "HELPER_API_NAMES",
    "SHOWCASE",
    "SHOWCASE_NOTE",
    "GenerateTab",
    "build_generate_tab",
    "summary_markdown",
]

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])

#: Example media shipped with the repository.
ASSETS = Path(__file__).resolve().parents[2] / "assets"
#: The landing page's example result (made by the app; see :data:`SHOWCASE_NOTE`); refreshed by the browser tests.
SHOWCASE = ASSETS / "showcase.mp4"
#: What the showcase is, said under it: it was made with the test checkpoints, not the released model.
SHOWCASE_NOTE = (
    "**An example result**, made by this app from the example portrait and speech, but with *random test weights, "
    "not the released model*: so where the face should talk there is noise. It shows the layout (portrait and "
    "result side by side) and the timing; with the released weights the portrait talks. Yours appears here."
)
#: Shared by every event that runs the pipeline (Generate, Compare, Live), so together they respect one limit.
CONCURRENCY_ID = "pipeline"
#: The helper callbacks' API names: all private (the UI calls them, API clients cannot); listed for the tests.
HELPER_API_NAMES = (
    "check_generate",
    "pick_source",
    "generate_in_page",
    "show_run_area",
    "preview_image",
    "preview_video",
    "preview_crop",
    "forget_portrait_note",
    "describe_audio",
    "check_text",
    "speak_text",
    "apply_preset",
    "reuse_seed",
    "seed_typed",
    "seed_box",
    "reset_controls",
    "check_settings",
    "load_settings",
    "stop",
    "clear_results",
    "select_image_tab",
    "select_video_tab",
    "example_chosen",
    "example_loaded",
    "owned_portrait",
    "owned_speech",
)
#: Example rows and the preset menu: a name and the controls it starts from (the seed stays the visitor's).
EXAMPLE_PRESETS: dict[str, Controls] = {
    "Voice-driven defaults": Controls(),
    "Happy, gaze on the camera": Controls(emotion="happy", gaze_lock=True),
    "Calm: half the head motion, slow blinks": Controls(
        pitch_amplitude=0.5, yaw_amplitude=0.5, roll_amplitude=0.5, blinks="every", blink_every=90),
    "Surprised mix, side by side": Controls(
        emotion={"happy": 0.6, "surprise": 0.4}, framing="side_by_side", fade_in=0.5),
}
#: The seed of the example rows' cached results (one render per row serves every visitor).
_EXAMPLE_SEED = 7
#: Crop controls that change the preview.
_CROP_NAMES = ("crop_scale", "crop_x", "crop_y", "crop_rotate")
#: A settings file is a few hundred bytes; anything much larger is not one.
_MAX_SETTINGS_BYTES = 256 * 1024
#: Preview (face detection + landmarks on a freshly lent GPU) needs little time.
_PREVIEW_GPU_SECONDS = 30
_NEED_PORTRAIT = "Add a portrait first: upload a photo, illustration or short video in step 1."
_NEED_SPEECH = "Add the speech first: upload or record it in step 2, or make it from text."


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
    status: gr.Markdown


def _chosen_source(kind: str | None, image: Any, video: Any) -> str | None:
    """The portrait of the active tab, else whichever tab holds one (paths, or unprocessed file values)."""
    image_path, video_path = file_path(image), file_path(video)
    if kind == "video" and video_path:
        return video_path
    return image_path or video_path or None


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


def _read_settings(file: Any) -> Controls:
    """The controls of a settings file (.json saved by this app or the CLI), or an ``InputError`` sentence."""
    path_text = file_path(file)
    if not path_text:
        raise InputError("Choose a settings file (.json) saved by this app or the CLI.")
    path = Path(path_text)
    if path.stat().st_size > _MAX_SETTINGS_BYTES:
        raise InputError("That file is too large to be a settings file; choose the .json saved with a video.")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError("That file is not a text settings file; choose the .json saved with a video.") from None
    return Controls.from_json(text)


class _ExampleProgress:
    """Shows the stages of an example's first run on the click that asked for it.

    Gradio renders a lazily cached example through a private event of its own, outside the click's event, so
    ``gr.Progress`` in the example's function would report nowhere and the visitor would watch a bare spinner for
    the whole first render. The click's event is known in the thread of the "load cached output" event: :meth:`attach`
    wraps that event's function to note it per browser session, and :meth:`reporting_to` makes it current in the
    example run's thread, so ``gr.Progress`` reports the stages to the click. Should Gradio's internals change, the
    run still works, with a spinner instead of the stages (logged once).
    """

    def __init__(self) -> None:
        self._events: dict[str, tuple[Any, Any]] = {}
        self._lock = threading.Lock()

    def attach(self, examples: gr.Examples) -> None:
        from gradio.context import LocalContext

        block_fn = _cache_block_fn(examples)
        if block_fn is None or block_fn.fn is None:
            log.warning("the first run of an example shows a spinner, not its stages (Gradio internals changed)")
            return
        original = block_fn.fn

        @functools.wraps(original)
        def load_example_output(*args: Any, **kwargs: Any) -> Any:
            request = kwargs.get("request", args[-1] if args else None)
            session = getattr(request, "session_hash", None)
            if session:
                with self._lock:
                    self._events[session] = (LocalContext.blocks.get(None), LocalContext.event_id.get(None))
            try:
                return original(*args, **kwargs)
            finally:
                if session:
                    with self._lock:
                        self._events.pop(session, None)

        block_fn.fn = load_example_output

    @contextmanager
    def reporting_to(self, request: gr.Request | None) -> Iterator[None]:
        """Within the example run: ``gr.Progress`` reports to the click of ``request``'s session, if known."""
        from gradio.context import LocalContext

        with self._lock:
            blocks, event_id = self._events.get(getattr(request, "session_hash", None) or "", (None, None))
        if blocks is None or event_id is None:
            yield
            return
        blocks_token, event_token = LocalContext.blocks.set(blocks), LocalContext.event_id.set(event_id)
        try:
            yield
        finally:
            LocalContext.event_id.reset(event_token)
            LocalContext.blocks.reset(blocks_token)


def _cache_block_fn(examples: gr.Examples) -> Any:
    """The ``BlockFunction`` of the examples' "load cached output" event, or ``None`` if it cannot be found."""
    event, root = examples.cache_event, examples.root_block  # the cache event is the "load cached output" one
    if event is None or root is None or "id" not in event:
        return None
    return root.fns.get(event["id"])


@dataclass(frozen=True)
class _Example:
    """One example row: what the dataset shows (portrait image or video, speech, preset) and its label."""

    label: str
    image: str | None
    video: str | None
    speech: str
    preset: str

    @property
    def row(self) -> list[Any]:
        return [self.image, self.video, self.speech, self.preset]


def _examples(portrait: str, clip: str | None, speech: str) -> list[_Example]:
    """One example per preset with the example portrait, then the video portrait (when its clip is there)."""
    rows = [_Example(name, portrait, None, speech, name) for name in EXAMPLE_PRESETS]
    if clip:
        first = next(iter(EXAMPLE_PRESETS))
        rows.append(_Example(f"Video portrait · {first.lower()}", None, clip, speech, first))
    return rows


def _handlers(
    service: DemoService,
    panel: ControlPanel,
    redact: Callable[[str], str],
    example_progress: _ExampleProgress,
    examples: Sequence[_Example],
    showcase: bool,
) -> dict[str, Callable[..., Any]]:
    """The tab's callbacks, closed over the service and the panel (no module state); ``showcase``: the page shows
    the example result until the first run."""
    count = len(panel.names)
    settings = service.settings
    seed_index = panel.names.index("seed")

    def run(
        source: str | None,
        audio: str | None,
        controls: Controls,
        progress: gr.Progress | None,
        session: str | None = None,
    ) -> Outcome:
        portrait = service.check_file(source, "a portrait (step 1: a photo, illustration or short video)")
        speech = service.check_file(audio, "the speech (step 2: upload, record or type it)")
        controls = _with_random_seed(service, controls)
        if progress is not None:
            progress(0.0, desc="Starting")
        token = service.cancel_token(session) if session else None
        try:
            return service.generate(portrait, speech, controls, cancel=token,
                                    progress=progress_adapter(progress) if progress is not None else None)
        finally:
            if session and token is not None:
                service.release(session, token)

    def split(args: Sequence[Any]) -> tuple[Any, Any, Sequence[Any], Any, str | None]:
        progress = args[2 + count] if len(args) > 2 + count else None
        request = args[3 + count] if len(args) > 3 + count else None
        return args[0], args[1], args[2:2 + count], progress, getattr(request, "session_hash", None)

    def generate(*args: Any) -> tuple[str, dict[str, Any], str]:
        """Portrait + speech → talking-head video. Returns (video mp4, timing report, settings JSON file)."""
        source, audio, values, progress, session = split(args)
        outcome = run(source, audio, panel.to_controls(*values), progress, session)
        return str(outcome.video), outcome.report, str(outcome.settings_file)

    generate.__signature__ = _signature(panel, progress=True)  # type: ignore[attr-defined]

    def generate_in_page(*args: Any) -> tuple[Any, ...]:
        """The page's run: like ``/generate``, but a refusal (or Stop) is reported in the status line, leaving the
        outputs as they were, instead of raising into Gradio's error path (which badges every output)."""
        source, audio, values, progress, session = split(args)
        try:
            outcome = run(file_path(source), file_path(audio), panel.to_controls(*values), progress, session)
        except Exception as exc:  # every failure becomes the sentence shown (refusal logs the surprising ones)
            return (*(gr.skip() for _ in range(6)), status_line(refusal(exc, redact, "generate")))
        return (str(outcome.video), outcome.report, str(outcome.settings_file), summary_markdown(outcome.report),
                outcome.report.get("seed"), gr.Column(visible=True), "")

    generate_in_page.__signature__ = _signature(panel, progress=True)  # type: ignore[attr-defined]

    def run_example(
        image: Any,
        video: Any,
        audio: Any,
        preset: str | None,
        progress: gr.Progress = gr.Progress(),  # noqa: B008 - Gradio's idiom
        request: gr.Request = None,  # type: ignore[assignment] - injected by Gradio
    ) -> tuple[str, dict[str, Any], str, str, int]:
        """An example row (cached on first use): its portrait, speech and preset, with the examples' seed."""
        controls = EXAMPLE_PRESETS.get(preset or "", Controls()).with_changes(seed=_EXAMPLE_SEED)
        with example_progress.reporting_to(request):
            outcome = run(_chosen_source("video" if video else "image", image, video), file_path(audio), controls,
                          progress)
        return (str(outcome.video), outcome.report, str(outcome.settings_file), summary_markdown(outcome.report),
                int(outcome.report["seed"]))

    def check_generate(kind: str, image: Any, video: Any, audio: Any, *values: Any) -> str | None:
        """Everything that can be refused before a run, within a fraction of a second: the sentence, or ``None``."""
        service.require()  # no checkpoints: the banner's sentence
        if _chosen_source(kind, image, video) is None:
            return _NEED_PORTRAIT
        speech = file_path(audio)
        if not speech:
            return _NEED_SPEECH
        service.describe_audio(speech)  # unreadable, or past the limit
        panel.to_controls(*values)  # a control the pipeline would refuse
        return None

    def pick_source(kind: str, image: Any, video: Any, random_seed: bool, seed: float | None) -> tuple[str, int | None]:
        """The active portrait, and the seed for this run: a fresh one when random is on (written into the hidden
        seed box, so the settings file, the echo and a later "Reuse seed" agree)."""
        chosen = _chosen_source(kind, image, video)
        if chosen is None:
            raise InputError(_NEED_PORTRAIT)
        if random_seed or seed is None:
            return chosen, service.new_seed()
        return chosen, int(seed)

    def show_run_area() -> tuple[gr.Column, gr.Video]:
        return gr.Column(visible=False), gr.Video(visible=True)

    def portrait_changed(value: Any, crop: Sequence[Any], status_now: str | None,
                         refused_before: str | None) -> tuple[Any, ...]:
        """Check a new portrait at once: refused (and removed) with the sentence, else the face box and crop drawn.

        Returns (the input, the preview, the note under the input, the status line, the refusal now shown there).
        A good portrait takes an earlier portrait refusal out of the status line, and nothing else (an example's
        note, say, stays).
        """
        path = file_path(value)
        if not path:  # removed (or our own clearing of a refused file): keep what the notes say
            return gr.skip(), gr.Image(value=None, visible=False), gr.skip(), gr.skip(), gr.skip()
        try:
            service.check_portrait(path)
        except DittoError as exc:
            message = status_line(refusal(exc, redact, "check_portrait"))
            return None, gr.Image(value=None, visible=False), message, message, message
        status = "" if refused_before and status_now == refused_before else gr.skip()
        return gr.skip(), *preview(path, crop), status, ""

    def preview(path: str | None, crop: Sequence[Any]) -> tuple[Any, str]:
        """The face box and crop (hidden while there is no portrait), and the note under the portrait."""
        if not path or not service.ready:
            return gr.Image(value=None, visible=False), ""
        try:
            controls = Controls(**dict(zip(_CROP_NAMES, crop, strict=True)))
            return gr.Image(value=service.preview(path, controls), visible=True), ""
        except DittoError as exc:  # no face found, a crop setting out of range: said under the portrait
            return gr.Image(value=None, visible=False), status_line(refusal(exc, redact, "preview"))

    def preview_image(image: Any, status_now: str | None, refused_before: str | None, *crop: Any) -> Any:
        return portrait_changed(image, crop, status_now, refused_before)

    def preview_video(video: Any, status_now: str | None, refused_before: str | None, *crop: Any) -> Any:
        return portrait_changed(video, crop, status_now, refused_before)

    def preview_crop(kind: str, image: Any, video: Any, *crop: Any) -> Any:
        return preview(_chosen_source(kind, image, video), crop)

    def describe_audio(audio: Any) -> str:
        """The speech's length and frames, or why it cannot be used (shown under the speech input)."""
        path = file_path(audio)
        if not path:
            return ""
        try:
            info = service.describe_audio(path)
        except DittoError as exc:
            return status_line(f"This speech cannot be used: {refusal(exc, redact, 'describe_audio')}")
        return (f"{info.seconds:.1f} s of speech → a {info.frames}-frame video "
                f"(limit {settings.max_audio_seconds:g} s).")

    def check_text(text: str | None) -> str | None:
        return None if (text or "").strip() else "Type the text to speak first."

    def speak_text(text: str | None) -> tuple[Any, str]:
        """The text spoken into the speech input; a voice that fails is reported under the text box."""
        if not (text or "").strip():
            raise InputError("Type the text to speak first.")
        try:
            return str(service.speak(text)), ""
        except DittoError as exc:
            return gr.skip(), status_line(refusal(exc, redact, "speak"))

    def apply_preset(name: str | None) -> list[Any]:
        """The controls of a preset (all but the seed, which stays the visitor's choice)."""
        values = panel.values_for(EXAMPLE_PRESETS.get(name or "", Controls()))
        return [value for index, value in enumerate(values) if index != seed_index]

    def reuse_seed(seed: float | None) -> tuple[Any, bool]:
        if seed is None:
            return gr.skip(), gr.skip()
        return int(seed), False

    def seed_typed() -> bool:
        return False  # a seed typed by hand is meant to be used

    def seed_box(random_seed: bool, seed: float | None) -> gr.Number:
        """The seed box shows only while random seeds are off (it would show a meaningless 0); turned off, it
        holds the last run's seed, or a fresh one."""
        if random_seed:
            return gr.Number(visible=False)
        return gr.Number(visible=True, value=int(seed) if seed else service.new_seed())

    def reset_controls() -> list[Any]:
        return [*panel.values_for(Controls()), True]

    def check_settings(file: Any) -> str | None:
        _read_settings(file)
        return None

    def load_settings(file: Any) -> list[Any]:
        controls = _read_settings(file)
        return [*panel.values_for(controls), controls.seed is None]

    def stop(request: gr.Request) -> str:
        """Stop this browser session's running generation (the pipeline cancels every stage within ~0.1 s)."""
        service.cancel(request.session_hash)
        return status_line(STOPPED)

    def clear_results() -> tuple[Any, ...]:
        """Clear hides the emptied result boxes and brings the example result back (if there is one)."""
        return (gr.Video(value=None, visible=not showcase), gr.Column(visible=False), gr.Column(visible=showcase),
                "", "", "", "", gr.Image(value=None, visible=False), {})

    def example_chosen(choice: Any, owned: Mapping[str, bool] | None) -> list[Any]:
        """An example was clicked: say what it replaced (``owned``: which inputs the visitor had given), show its
        portrait tab, its preset's controls and the result area (where the first use's progress shows). The seed
        and "New random seed for every run" stay as they were."""
        index = choice[0] if isinstance(choice, (list, tuple)) else choice
        if not isinstance(index, int) or not 0 <= index < len(examples):
            return [gr.skip()] * (6 + len(panel.names) - 1)
        example = examples[index]
        replaced = [what for what in ("portrait", "speech") if (owned or {}).get(what)]
        if replaced:
            yours = f"its portrait, speech and settings replaced your {' and '.join(replaced)}"
        else:
            yours = "its portrait, speech and settings are loaded"
        note = (f"Example **{example.label}**: {yours}. Its video is under 4 · Result (rendered on first use); "
                "Generate makes a new one.")
        kind = "video" if example.video else "image"
        return [note, kind, gr.Tabs(selected=kind), gr.Column(visible=False), gr.Video(visible=True), {},
                *apply_preset(example.preset)]

    def owned_portrait(owned: Mapping[str, bool] | None, value: Any) -> dict[str, bool]:
        """Remember whether the portrait is the visitor's own (an example then says it replaced it)."""
        return {**(owned or {}), "portrait": bool(file_path(value))}

    def owned_speech(owned: Mapping[str, bool] | None, value: Any) -> dict[str, bool]:
        """Remember whether the speech is the visitor's own (uploaded, recorded or made from text)."""
        return {**(owned or {}), "speech": bool(file_path(value))}

    def example_loaded() -> gr.Column:
        return gr.Column(visible=True)

    handlers: dict[str, Callable[..., Any]] = {
        "generate": on_gpu(generate, audio_duration(service.audio_seconds)),
        "generate_in_page": on_gpu(generate_in_page, audio_duration(service.audio_seconds)),
        "run_example": on_gpu(run_example, audio_duration(service.audio_seconds, audio_index=2)),
        "preview_image": on_gpu(preview_image, _PREVIEW_GPU_SECONDS),
        "preview_video": on_gpu(preview_video, _PREVIEW_GPU_SECONDS),
        "preview_crop": on_gpu(preview_crop, _PREVIEW_GPU_SECONDS),
    }
    handlers.update({fn.__name__: fn for fn in (
        pick_source, describe_audio, speak_text, apply_preset, reuse_seed, seed_typed, seed_box, reset_controls,
        load_settings, stop, show_run_area, clear_results, example_chosen, example_loaded, owned_portrait,
        owned_speech)})
    guarded = {name: public_errors(fn, redact) for name, fn in handlers.items()}
    # The checks report their sentence themselves (see checked()); they are not wrapped.
    guarded.update({"check_generate": check_generate, "check_text": check_text, "check_settings": check_settings})
    # Gradio names the API parameters after the signature; wrappers copy it, but be explicit for the endpoints.
    guarded["generate"].__signature__ = generate.__signature__  # type: ignore[attr-defined]
    guarded["generate_in_page"].__signature__ = generate_in_page.__signature__  # type: ignore[attr-defined]
    return guarded


def build_generate_tab(service: DemoService, redact: Callable[[str], str]) -> GenerateTab:
    """Build the tab inside the caller's ``gr.Tab`` and wire its events."""
    settings = service.settings
    limit = f"{settings.max_audio_seconds:g}"
    portrait_example = str(ASSETS / "portrait_illustration.png")
    clip_example = str(ASSETS / "portrait_clip.mp4") if (ASSETS / "portrait_clip.mp4").is_file() else None
    speech_example = str(ASSETS / "speech_en.wav")
    kind = gr.State("image")
    refused_portrait = gr.State("")  # the portrait refusal the status line shows, if any
    has_showcase = SHOWCASE.is_file()
    owned = gr.State({})  # {"portrait": bool, "speech": bool}: which inputs the visitor gave (not an example)
    private: dict[str, Any] = {"api_visibility": "private"}

    with gr.Row(equal_height=False, elem_id="ditto-generate"):
        with gr.Column(scale=3, min_width=320):
            with gr.Row(equal_height=False):
                with gr.Column(min_width=280, elem_classes=["ditto-step"]):
                    gr.Markdown("### 1 · Portrait\nA photo, illustration or short video with one clear face.")
                    with gr.Tabs(selected="image") as source_tabs:
                        with gr.Tab("Image", id="image") as image_tab:
                            image = gr.Image(label="Portrait", type="filepath", height=280,
                                             sources=["upload", "webcam", "clipboard"], elem_id="ditto-portrait")
                            gr.Examples([[portrait_example]], inputs=[image], label="Example portrait",
                                        cache_examples=False, api_visibility="private")
                        with gr.Tab("Video", id="video") as video_tab:
                            video = gr.Video(label="Portrait video (keep the mouth closed)", sources=["upload"],
                                             height=280, elem_id="ditto-portrait-video")
                            gr.Markdown(f"Up to {settings.max_source_seconds:g} s; the video's own head motion is "
                                        "kept and the speech drives the mouth.", elem_classes=["ditto-note"])
                    portrait_note = gr.Markdown("", elem_id="ditto-portrait-note", elem_classes=["ditto-status"])
                    crop_preview = gr.Image(
                        label="Face (green) and crop (orange)", type="numpy",
                        interactive=False, height=200, format="jpeg", visible=False, elem_id="ditto-crop-preview",
                    )
                with gr.Column(min_width=280, elem_classes=["ditto-step"]):
                    gr.Markdown("### 2 · Speech\nAny format: wav, mp3, m4a, ogg, flac; or record it.")
                    audio = gr.Audio(label="Speech", type="filepath", sources=["upload", "microphone"],
                                     elem_id="ditto-speech")
                    gr.Markdown(f"Up to {limit} s of speech; longer files are refused, never trimmed. "
                                f"Files up to {settings.max_file_size}.", elem_classes=["ditto-note"])
                    audio_info = gr.Markdown("", elem_classes=["ditto-note"], elem_id="ditto-speech-note")
                    gr.Examples([[speech_example]], inputs=[audio], label="Example speech",
                                cache_examples=False, api_visibility="private")
                    # Offered only where a voice can be had (the built-in voice, or a Hub model named by
                    # DITTO_TTS_MODEL); a voice that fails later is reported under the text box.
                    with gr.Accordion("…or type text (text to speech)", open=False, visible=service.can_speak,
                                      elem_id="ditto-tts"):
                        tts_text = gr.Textbox(label="Text", lines=3, max_lines=8, elem_id="ditto-tts-text",
                                              placeholder="Hello! I am a portrait that talks.")
                        speak = gr.Button("Make speech from text", size="sm", elem_id="ditto-speak")
                        tts_note = gr.Markdown("", elem_classes=["ditto-status"], elem_id="ditto-tts-note")
            examples_slot = gr.Column()
            gr.Markdown("### 3 · Controls\nOptional. Every setting has a tip. Expect nudges, not switches: the model "
                        "also reads emotion from the voice, so an explicit emotion is subtle.")
            with gr.Row(equal_height=True):
                preset = gr.Dropdown(choices=list(EXAMPLE_PRESETS), value=None, label="Start from a preset",
                                     scale=2, min_width=200, elem_id="ditto-preset",
                                     info="Sets the controls below (not the seed); each stays adjustable.")
                with gr.Column(scale=1, min_width=160):
                    reset = gr.Button("↺ Reset to defaults", size="sm")
                    load = gr.UploadButton("Load settings (.json)", file_types=[".json"], size="sm")
            settings_note = gr.Markdown("", elem_classes=["ditto-status"], elem_id="ditto-settings-note")
            random_seed = gr.Checkbox(True, label="New random seed for every run", elem_id="ditto-random-seed",
                                      info="Off: the seed box under Quality and seed is used (Reuse seed turns "
                                           "this off).")
            panel = ControlPanel(service.control_defaults(), open_groups=("quality", "emotion"), hidden=("seed",))
            with gr.Column(elem_id="ditto-generate-bar"):
                # One row on a desktop; on a phone Generate takes the full width and Stop and Clear share a row.
                with gr.Row():
                    generate_button = gr.Button("Generate", variant="primary", size="lg", scale=3, min_width=240,
                                                interactive=service.ready, elem_id="ditto-generate-button")
                    stop_button = gr.Button("Stop", variant="stop", size="lg", scale=1, min_width=100,
                                            elem_id="ditto-stop-button")
                    clear = gr.ClearButton(value="Clear", size="lg", scale=1, min_width=100, api_visibility="private",
                                           elem_id="ditto-clear-button")
                status = gr.Markdown("", elem_id="ditto-status", elem_classes=["ditto-status"])
        with gr.Column(scale=2, min_width=320, elem_id="ditto-result"):
            gr.Markdown("### 4 · Result")
            with gr.Column(visible=has_showcase, elem_id="ditto-showcase") as showcase:
                gr.Video(value=str(SHOWCASE) if has_showcase else None, label="Example result",
                         interactive=False, height=300, loop=True, elem_id="ditto-showcase-video")
                gr.Markdown(SHOWCASE_NOTE, elem_id="ditto-showcase-note")
            video_out = gr.Video(label="Talking head", interactive=False, height=420, elem_id="ditto-video",
                                 visible=not has_showcase)
            summary = gr.Markdown("", elem_classes=["ditto-note"], elem_id="ditto-summary")
            # The seed, the settings file and the report appear with the first result (empty boxes only take room).
            with gr.Column(visible=False, elem_id="ditto-result-details") as details:
                with gr.Row(equal_height=False):
                    seed_used = gr.Number(label="Seed used", precision=0, interactive=False, min_width=140, scale=2,
                                          elem_id="ditto-seed-used")
                    reuse = gr.Button("Reuse seed", size="sm", min_width=100, scale=1, elem_id="ditto-reuse-seed")
                settings_out = gr.File(label="Settings",
                                       interactive=False, elem_id="ditto-settings-file")
                with gr.Accordion("Full timing report (JSON)", open=False):
                    report = gr.JSON(label="Report")

    source_file = gr.File(visible=False, label="source")
    api_trigger = gr.Button(visible=False)  # the /generate endpoint's own (never shown) trigger
    example_progress = _ExampleProgress()
    example_rows = _examples(portrait_example, clip_example, speech_example)
    handlers = _handlers(service, panel, redact, example_progress, example_rows, has_showcase)
    by_name = dict(zip(panel.names, panel.components, strict=True))
    seed_widget = by_name["seed"]
    crop = [by_name[name] for name in _CROP_NAMES]
    preset_targets = [component for name, component in by_name.items() if name != "seed"]

    # Examples: full rows with thumbnails, cached lazily (the first visitor who clicks one pays for it; nothing runs
    # at start-up). Choosing one says what it replaced and leaves "New random seed for every run" as it was.
    with examples_slot:
        examples = gr.Examples(
            [example.row for example in example_rows], inputs=[image, video, audio, preset],
            outputs=[video_out, report, settings_out, summary, seed_used],
            fn=handlers["run_example"], cache_examples=True, cache_mode="lazy", api_visibility="private",
            label="Examples: portrait, speech and settings in one click (the first click renders one, then it is "
                  "instant)",
        )
    _share_pipeline_limit(examples, settings.concurrency)
    example_progress.attach(examples)
    examples.dataset.click(
        handlers["example_chosen"], inputs=[examples.dataset, owned],
        outputs=[status, kind, source_tabs, showcase, video_out, owned, *preset_targets], queue=False,
        preprocess=False, show_progress="hidden", api_name="example_chosen", **private,
    ).then(None, js=scroll_js("ditto-video"))
    # (Gradio's cache event is the one that shows the example's cached result.)
    examples.cache_event.then(handlers["example_loaded"], outputs=details, queue=False,
                              show_progress="hidden", api_name="example_loaded", **private)

    # Step 1: remember the active portrait tab; check a portrait as soon as it arrives and draw the crop preview.
    image_tab.select(lambda: "image", outputs=kind, queue=False, api_name="select_image_tab", **private)
    video_tab.select(lambda: "video", outputs=kind, queue=False, api_name="select_video_tab", **private)
    preview_events: dict[str, Any] = {"concurrency_limit": settings.concurrency, "concurrency_id": "preview",
                                      "show_progress": "minimal", "show_progress_on": [crop_preview],
                                      "preprocess": False, **private}
    for component, name in ((image, "preview_image"), (video, "preview_video")):
        component.change(handlers[name], inputs=[component, status, refused_portrait, *crop],
                         outputs=[component, crop_preview, portrait_note, status, refused_portrait], api_name=name,
                         **preview_events)
    for component in (image, video):
        component.clear(lambda: "", outputs=portrait_note, queue=False, api_name="forget_portrait_note", **private)
    for component, what in ((image, "portrait"), (video, "portrait"), (audio, "speech")):
        component.input(handlers[f"owned_{what}"], inputs=[owned, component], outputs=owned, queue=False,
                        preprocess=False, show_progress="hidden", api_name=f"owned_{what}", **private)
    crop_inputs = [kind, image, video, *crop]
    redraw: dict[str, Any] = {"inputs": crop_inputs, "outputs": [crop_preview, portrait_note],
                              "api_name": "preview_crop", **preview_events}
    for component in crop:
        trigger = component.change if isinstance(component, gr.Checkbox) else component.release
        trigger(handlers["preview_crop"], **redraw)

    # Step 2: the duration (and the limit), or why the speech cannot be used, as soon as it arrives; text to speech
    # fills the speech input.
    audio.change(handlers["describe_audio"], inputs=audio, outputs=audio_info, queue=False, preprocess=False,
                 show_progress="hidden", api_name="describe_audio", **private)
    checked(speak.click, handlers["check_text"], [tts_text], [tts_note], redact, name="check_text").success(
        handlers["speak_text"], inputs=tts_text, outputs=[audio, tts_note], concurrency_limit=settings.concurrency,
        concurrency_id="tts", show_progress_on=[audio], api_name="speak_text", **private,
    ).success(handlers["owned_speech"], inputs=[owned, audio], outputs=owned, queue=False, preprocess=False,
              show_progress="hidden", api_name="owned_speech", **private)

    # Step 3: presets, reset and load settings (the preview follows the crop settings); the seed box shows only
    # while random seeds are off.
    preset.input(handlers["apply_preset"], inputs=preset, outputs=preset_targets, queue=False,
                 api_name="apply_preset", **private).then(handlers["preview_crop"], **redraw)
    reset.click(handlers["reset_controls"], outputs=[*panel.components, random_seed], queue=False,
                api_name="reset_controls", **private).then(handlers["preview_crop"], **redraw)
    checked(load.upload, handlers["check_settings"], [load], [settings_note], redact, name="check_settings").success(
        handlers["load_settings"], inputs=load, outputs=[*panel.components, random_seed], queue=False,
        api_name="load_settings", **private).then(handlers["preview_crop"], **redraw)
    random_seed.change(handlers["seed_box"], inputs=[random_seed, seed_widget], outputs=seed_widget, queue=False,
                       show_progress="hidden", api_name="seed_box", **private)

    # Generate: check (the sentence by the button within a second), show the result area (scrolled into view on a
    # phone), pick the active portrait and the seed, run; the video scrolls into view when it is ready.
    accepted = checked(generate_button.click, handlers["check_generate"],
                       [kind, image, video, audio, *panel.components], [status], redact, name="check_generate")
    accepted.success(handlers["show_run_area"], outputs=[showcase, video_out], queue=False, show_progress="hidden",
                     api_name="show_run_area", **private).then(None, js=scroll_js("ditto-video"))
    run = accepted.success(
        handlers["pick_source"], inputs=[kind, image, video, random_seed, seed_widget],
        outputs=[source_file, seed_widget], queue=False, preprocess=False, show_progress="hidden",
        api_name="pick_source", **private,
    ).success(
        handlers["generate_in_page"], inputs=[source_file, audio, *panel.components],
        outputs=[video_out, report, settings_out, summary, seed_used, details, status], show_progress_on=[video_out],
        concurrency_limit=settings.concurrency, concurrency_id=CONCURRENCY_ID, api_name="generate_in_page", **private,
    )
    video_out.change(None, js=scroll_js("ditto-video", wait_for_video=True))
    # Stop: a waiting request leaves the queue (cancels=), a running one is stopped by its cancel token.
    stop_button.click(handlers["stop"], outputs=status, queue=False, cancels=[run], api_name="stop", **private)

    # The API: the same run, raising its refusals (AppError for clients); bound to a trigger the page never shows.
    api_trigger.click(
        handlers["generate"], inputs=[source_file, audio, *panel.components], outputs=[video_out, report, settings_out],
        api_name="generate", api_description="Portrait (image or video) + speech → talking-head mp4. Every control is "
        "an optional named parameter. Returns (video, timing report, settings JSON).",
        concurrency_limit=settings.concurrency, concurrency_id=CONCURRENCY_ID,
    )

    # Step 4: the seed echo can be reused (which turns "random" off); typing a seed does the same.
    reuse.click(handlers["reuse_seed"], inputs=seed_used, outputs=[seed_widget, random_seed], queue=False,
                api_name="reuse_seed", **private)
    seed_widget.input(handlers["seed_typed"], outputs=random_seed, queue=False, api_name="seed_typed", **private)

    # Clear empties the inputs and the results, hides the empty result boxes and shows the example result again.
    clear.add([image, video, audio, tts_text, source_file, summary, seed_used, report, settings_out])
    clear.click(handlers["clear_results"], outputs=[video_out, details, showcase, status, audio_info,
                                                    portrait_note, tts_note, crop_preview, owned],
                queue=False, api_name="clear_results", **private)
    return GenerateTab(panel, image, video, audio, source_file, video_out, report, settings_out, generate_button,
                       status)


def _share_pipeline_limit(examples: gr.Examples, concurrency: int) -> None:
    """Put the lazy example run into the pipeline's concurrency group.

    ``gr.Examples`` runs its function inside its own "load cached output" event, which would otherwise get a
    concurrency group of its own: a first click on an example could then render next to a running generation and
    exceed the GPU budget that ``DITTO_CONCURRENCY`` sets. Gradio has no argument for this, so the event's
    ``BlockFunction`` (public attributes) is adjusted after creation.
    """
    block_fn = _cache_block_fn(examples)
    if block_fn is None:
        log.warning("example runs keep their own concurrency group (Gradio internals changed)")
        return
    block_fn.concurrency_id = CONCURRENCY_ID
    block_fn.concurrency_limit = concurrency
