"""Errors that carry a message meant for the person running ditto-demo.

Every error raised on purpose derives from :class:`DittoError`. Its text is one actionable sentence (what went
wrong and what to do about it), so the CLI can print it as its single line and the app can show it as a
``gr.Error`` without adding a traceback.
"""

from __future__ import annotations

__all__ = [
    "BackendUnavailableError",
    "CheckpointError",
    "CheckpointsUnavailableError",
    "DittoError",
    "InputError",
]


class DittoError(Exception):
    """Base class: the message is for the user, not a developer."""


class InputError(DittoError, ValueError):
    """An input (file, array, option) is not something we can use."""


class CheckpointError(DittoError):
    """A checkpoint file is missing, truncated, or does not match the network it should load into."""


class CheckpointsUnavailableError(CheckpointError):
    """The checkpoint folder could not be found locally nor downloaded from the Hub."""


class BackendUnavailableError(DittoError):
    """The requested backend or device cannot run on this host (missing package, no GPU, no engine)."""
