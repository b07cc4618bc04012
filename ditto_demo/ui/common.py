"""Glue shared by every tab: user errors become ``gr.Error``, pipeline progress becomes ``gr.Progress``, and
refusals reach the page as a sentence next to where the visitor acted.

Gradio marks every output of a failed event with a wordless red "Error" badge, and a failed event that skips the
queue answers HTTP 500 without showing its message. So the pages never let a refusal raise into Gradio's error
path: :func:`checked` runs a fast check first that writes its sentence into a status line, then stops the chain
quietly (an invisible ``gr.Error`` from an event without outputs) when the check refused; handlers that run the
pipeline for the page catch refusals themselves (:func:`refusal`). The public API endpoints still raise, so API
clients get an ``AppError`` with the same sentence.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import gradio as gr

from ditto_demo.errors import DittoError
from ditto_demo.ui.service import CancelledError, DemoService, ProgressFn

__all__ = [
    "APP_FOLDER",
    "PAGE_CSS",
    "STAGE_LABELS",
    "PathRedactor",
    "checked",
    "file_path",
    "progress_adapter",
    "public_errors",
    "refusal",
    "scroll_js",
    "status_line",
    "user_errors",
]

log = logging.getLogger(__name__)
#: The checkout / installed app folder (parent of the package), never shown to visitors.
APP_FOLDER = Path(__file__).resolve().parents[2]
F = TypeVar("F", bound=Callable[..., Any])

#: Stage → (start, span) of the overall progress bar, and what the user reads.
STAGE_LABELS: dict[str, tuple[float, float, str]] = {
    "audio": (0.00, 0.03, "Reading the speech"),
    "features": (0.03, 0.05, "Audio features"),
    "face": (0.08, 0.07, "Finding the face"),
    "motion": (0.15, 0.10, "Generating motion"),
    "render": (0.25, 0.72, "Rendering"),
    "encode": (0.97, 0.03, "Encoding the video"),
}


def progress_adapter(progress: gr.Progress) -> ProgressFn:
    """A pipeline progress callback that drives a Gradio progress bar (which shows its own ETA)."""

    def report(stage: str, fraction: float, message: str) -> None:
        start, span, label = STAGE_LABELS.get(stage, (0.0, 0.0, stage))
        progress(min(1.0, start + span * max(0.0, min(1.0, fraction))), desc=message or label)

    return report


#: What a visitor reads when something unexpected failed (the log keeps the details).
SERVER_ERROR = ("Something went wrong on the server while processing this request; please try again, and report it "
                "if it happens again.")
#: What a visitor reads when their run was stopped (Stop pressed, or the tab closed).
STOPPED = "Stopped."


def _as_gradio_error(name: str, exc: Exception) -> gr.Error:
    if isinstance(exc, gr.Error):
        return exc
    if isinstance(exc, CancelledError):
        return gr.Error(STOPPED, title="Cancelled")
    if isinstance(exc, DittoError):
        return gr.Error(str(exc), title="Cannot do that")
    log.error("unexpected failure in %s", name, exc_info=exc)
    return gr.Error(SERVER_ERROR, title="Server error")


def user_errors(fn: F) -> F:
    """Turn the pipeline's user-facing errors into ``gr.Error`` (the message only, never a traceback or a path
    outside the request), and anything unexpected into a generic sentence while the log keeps the details.
    Works on plain handlers and on generator (streaming) handlers."""
    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def streaming(*args: Any, **kwargs: Any) -> Iterator[Any]:
            try:
                yield from fn(*args, **kwargs)
            except Exception as exc:
                raise _as_gradio_error(fn.__name__, exc) from None

        return streaming  # type: ignore[return-value]

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            raise _as_gradio_error(fn.__name__, exc) from None

    return wrapper  # type: ignore[return-value]


class PathRedactor:
    """Replaces server folders (checkpoints, outputs, caches, the checkout) in text shown to visitors.

    Error sentences from the pipeline name files to help the person who runs the server; visitors of a public demo
    must not learn the server's layout from them. Uploaded file names are kept (they are the visitor's own).
    """

    def __init__(self, folders: Mapping[str | os.PathLike[str], str]) -> None:
        pairs: dict[str, str] = {}
        for folder, label in folders.items():
            text = os.fspath(folder)
            if not text or text in (os.sep, "."):
                continue
            for variant in {text.rstrip(os.sep), os.path.realpath(text).rstrip(os.sep)}:
                if variant:
                    pairs.setdefault(variant, label)
        self._pairs = sorted(pairs.items(), key=lambda item: len(item[0]), reverse=True)  # longest first

    @classmethod
    def for_service(cls, service: DemoService) -> PathRedactor:
        """The folders of this server: the service's settings, the Hugging Face cache, the checkout, the home."""
        settings = service.settings
        folders: dict[str | os.PathLike[str], str] = {}
        home = Path.home()
        hf_home = os.environ.get("HF_HOME") or str(home / ".cache" / "huggingface")
        folders[hf_home] = "the Hugging Face cache"
        if os.environ.get("HF_HUB_CACHE"):
            folders[os.environ["HF_HUB_CACHE"]] = "the Hugging Face cache"
        folders[APP_FOLDER] = "the app folder"
        folders[settings.output_dir] = "the output folder"
        pipeline_root = getattr(service.pipeline, "root", None)
        if pipeline_root is not None:
            folders[pipeline_root] = "the checkpoint folder"
        if settings.checkpoints:
            folders[settings.checkpoints] = "the checkpoint folder (DITTO_CHECKPOINTS)"
        folders[home] = "~"
        return cls(folders)

    def __call__(self, text: str) -> str:
        for folder, label in self._pairs:
            text = text.replace(folder, label)
        return text


def public_errors(fn: F, redact: Callable[[str], str]) -> F:
    """:func:`user_errors` (every failure becomes a ``gr.Error`` sentence), with server folders taken out."""
    guarded = user_errors(fn)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return guarded(*args, **kwargs)
        except gr.Error as exc:
            log.info("%s refused: %s", getattr(fn, "__name__", "handler"), exc.message)
            raise gr.Error(redact(str(exc.message)), duration=exc.duration, visible=exc.visible, title=exc.title,
                           print_exception=False) from None

    return wrapper  # type: ignore[return-value]


# ------------------------------------------------------------------------------------------------ refusals on the page


def refusal(exc: BaseException, redact: Callable[[str], str], where: str = "handler") -> str:
    """The sentence a visitor reads for a failure caught by a page handler (never a traceback or a server folder).

    ``gr.Error`` and :class:`DittoError` keep their message, a cancelled run says :data:`STOPPED`, anything else
    is logged with its traceback and shown as :data:`SERVER_ERROR`.
    """
    if isinstance(exc, gr.Error):
        return redact(str(exc.message))
    if isinstance(exc, CancelledError):
        return STOPPED
    if isinstance(exc, DittoError):
        log.info("%s refused: %s", where, exc)
        return redact(str(exc))
    log.error("unexpected failure in %s", where, exc_info=exc)
    return SERVER_ERROR


def status_line(message: str | None) -> str:
    """Markdown for a status line: a refusal stands out (a warning sign), an empty message empties the line."""
    if not message:
        return ""
    if message == STOPPED:
        return f"**{STOPPED}**"
    return f"⚠️ **{message}**"


def file_path(value: Any) -> str | None:
    """The server path of a file input, whether Gradio preprocessed it (a path) or not (its ``FileData`` dict).

    Events on image inputs run with ``preprocess=False``: Gradio's own image decoding would otherwise fail on a file
    that is not an image (``UnidentifiedImageError``) before our check could refuse it with a sentence. The file
    has still been moved into Gradio's cache and checked to come from an upload.
    """
    if value is None or value == "":
        return None
    if isinstance(value, Mapping):
        path = value.get("path")
        return str(path) if path else None
    return os.fspath(value)


def _stop_quietly(refused: str) -> None:
    """Stop the rest of an event chain when the check refused: an invisible ``gr.Error`` (no toast, and no output
    to badge, since this event has none)."""
    if refused:
        raise gr.Error(refused, visible=False, print_exception=False)


def checked(
    trigger: Callable[..., Any],
    check: Callable[..., str | None],
    inputs: Sequence[Any],
    status: Sequence[gr.components.Component],
    redact: Callable[[str], str],
    *,
    name: str,
) -> Any:
    """``trigger(check) → stop unless it passed``; returns the dependency to chain the real work on with ``.success``.

    ``check(*inputs)`` returns a refusal sentence (or raises :class:`DittoError`), ``None``/``""`` when all is well.
    Its sentence goes to every component of ``status`` (status lines by the button or under the input) within a
    fraction of a second, since the check skips the queue; it never raises into Gradio's error path, so no output
    gets a wordless "Error" badge. Inputs arrive unprocessed (see :func:`file_path`).
    """
    verdict = gr.State("")

    def run_check(*args: Any) -> tuple[Any, ...]:
        try:
            message = check(*args) or ""
        except Exception as exc:  # every failure becomes the sentence shown (refusal logs the surprising ones)
            message = refusal(exc, redact, name)
        return (*([status_line(message)] * len(status)), message)

    run_check.__name__ = name
    first = trigger(run_check, inputs=list(inputs), outputs=[*status, verdict], queue=False, show_progress="hidden",
                    preprocess=False, api_name=name, api_visibility="private")
    return first.then(_stop_quietly, inputs=verdict, outputs=None, show_progress="hidden", concurrency_limit=None,
                      api_name=f"{name}_verdict", api_visibility="private")


def scroll_js(elem_id: str, *, wait_for_video: bool = False) -> str:
    """Browser code that brings ``#elem_id`` into view unless it already is (a phone user then sees the progress,
    and the video when it is ready); with ``wait_for_video`` it first waits (up to 20 s) until the element holds a
    video with a source."""
    return f"""() => {{
    const show = () => {{
        const box = document.getElementById({elem_id!r});
        if (!box) return;
        const r = box.getBoundingClientRect();
        if (r.top >= 0 && r.bottom <= window.innerHeight) return;
        box.scrollIntoView({{behavior: 'smooth', block: r.height > window.innerHeight ? 'start' : 'center'}});
    }};
    if (!{str(wait_for_video).lower()}) {{ show(); return; }}
    const started = Date.now();
    const poll = () => {{
        const video = document.querySelector('#{elem_id} video');
        if (video && video.getAttribute('src')) {{ show(); return; }}
        if (Date.now() - started < 20000) setTimeout(poll, 200);
    }};
    poll();
}}"""


#: Styles of the Generate and Compare pages (appended to the app's CSS): the Generate bar stays at the bottom of the
#: screen while the steps above it scroll (a phone user never hunts for it), status lines stand out.
PAGE_CSS = """
/* Gradio's container hides overflow, which makes it a scroll container and stops sticky elements; clip hides the
   same overflow without that. */
.gradio-container { overflow: clip !important; }
#ditto-generate-bar { position: sticky; bottom: 0; z-index: 20; padding: 8px 0 4px 0;
                      background: var(--background-fill-primary); box-shadow: 0 -6px 10px -8px rgba(0, 0, 0, 0.35); }
.ditto-status p { margin: 4px 0 0 0; }
.ditto-status:empty, .ditto-note:empty { display: none; }
#ditto-showcase-note, .ditto-caption { font-size: 0.88em; opacity: 0.85; }
"""
