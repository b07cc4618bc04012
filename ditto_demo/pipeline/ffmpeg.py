"""The one ffmpeg binary every stage uses (decoding speech, reading videos, writing the result)."""

from __future__ import annotations

import shutil
from functools import cache

from ditto_demo.errors import DittoError

__all__ = ["ffmpeg_executable"]


@cache
def ffmpeg_executable() -> str:
    """imageio-ffmpeg's binary (a pinned dependency, so every install runs the same build; it honours
    ``IMAGEIO_FFMPEG_EXE``), else ``ffmpeg`` on PATH; a :class:`DittoError` saying how to get one otherwise."""
    try:
        import imageio_ffmpeg

        return str(imageio_ffmpeg.get_ffmpeg_exe())
    except (ImportError, RuntimeError):
        found = shutil.which("ffmpeg")
        if found is None:
            raise DittoError(
                "ffmpeg was not found: install the imageio-ffmpeg package or ffmpeg (apt-get install ffmpeg)."
            ) from None
        return found
