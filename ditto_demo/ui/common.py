"""Glue shared by every tab: user errors become ``gr.Error``, pipeline progress becomes ``gr.Progress``."""

from __future__ import annotations

import functools
import inspect
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import gradio as gr

from ditto_demo.errors import DittoError
from ditto_demo.ui.service import CancelledError, DemoService, ProgressFn

__all__ = ["APP_FOLDER", "STAGE_LABELS", "PathRedactor", "progress_adapter", "public_errors", "user_errors"]

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


def _as_gradio_error(name: str, exc: Exception) -> gr.Error:
    if isinstance(exc, gr.Error):
        return exc
    if isinstance(exc, CancelledError):
        return gr.Error("Stopped.", title="Cancelled")
    if isinstance(exc, DittoError):
        return gr.Error(str(exc), title="Cannot do that")
    log.error("unexpected failure in %s", name, exc_info=exc)
    return gr.Error(
        "Something went wrong on the server while processing this request; please try again, and report it if it "
        "happens again.",
        title="Server error",
    )


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
