"""Glue shared by every tab: user errors become ``gr.Error``, pipeline progress becomes ``gr.Progress``."""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import gradio as gr

from ditto_demo.errors import DittoError
from ditto_demo.pipeline.pipeline import ProgressFn
from ditto_demo.pipeline.runner import CancelledError

__all__ = ["STAGE_LABELS", "progress_adapter", "user_errors"]

log = logging.getLogger(__name__)
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
