"""Loading the portrait: an image or a video file → RGB uint8 frames at the working resolution (ditto_spec.md §4.1).

What the file is gets decided from its content, never its name: known video container signatures go to ffmpeg
(via ``imageio_ffmpeg``), anything else must be an image Pillow recognises from its header. Files from users are
untrusted, so:

* image dimensions are checked from the header *before* any pixel is decoded (Pillow opens lazily), and images
  over ``max_pixels`` are refused — a few-hundred-byte PNG can claim gigapixels;
* only common raster formats are accepted (no EPS, which would run Ghostscript, nor exotic scientific formats);
* ffmpeg only gets files that start like a real video container and may only read local files, so a crafted
  playlist cannot make it fetch URLs;
* videos over ``max_frames`` / ``max_seconds`` are refused with the limit named rather than silently cut —
  except when the caller asks for the first ``first_frames`` frames (Ditto's ``template_n_frames``).

Every problem with the file itself becomes an :class:`~ditto_demo.errors.InputError` whose text tells the user what
to do.

Differences from the reference loader, all deliberate: Pillow instead of OpenCV for images, so transparent
pixels are composited on white (OpenCV keeps whatever colour hides under them), 16-bit, CMYK, palette and
grayscale images are converted explicitly, and EXIF orientation is applied (OpenCV does that too). The resize rule
itself is the reference's, bit for bit.
"""

from __future__ import annotations

import logging
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ditto_demo.errors import InputError

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MAX_SIZE",
    "IMAGE_FORMATS",
    "LoadedMedia",
    "fit_size",
    "load_image",
    "load_media",
    "load_video",
    "looks_like_video",
    "resize_frame",
    "to_rgb8",
    "unreadable_portrait",
]

log = logging.getLogger(__name__)

DEFAULT_MAX_SIZE = 1920
DEFAULT_MAX_PIXELS = 40_000_000
#: Smallest portrait side accepted: below it no face detector finds anything useful.
MIN_SIDE = 64
#: Pillow formats we decode. Others Pillow knows (EPS, WMF, PSD, FITS, …) are refused as "not an image we read".
IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "AVIF", "BMP", "DIB", "TIFF", "GIF", "PPM", "TGA", "JPEG2000", "QOI")
_ADVICE = "use a JPG, PNG or WebP photo or an MP4 video"
_SNIFF_BYTES = 512
# ISO-BMFF / QuickTime top-level atoms that can open a file (MP4, MOV, M4V, 3GP).
_QUICKTIME_ATOMS = (b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot")


@dataclass(frozen=True)
class LoadedMedia:
    """Decoded source frames, already resized to the working resolution."""

    #: (H, W, 3) uint8 RGB frames, all the same size; one for an image.
    frames: tuple[np.ndarray, ...]
    is_image: bool
    #: Frame rate of a video as reported by ffmpeg (``None`` for an image or when ffmpeg does not know it).
    fps: float | None
    #: (width, height) of the file before resizing.
    original_size: tuple[int, int]


def fit_size(width: int, height: int, max_size: int = DEFAULT_MAX_SIZE) -> tuple[int, int]:
    """The working (width, height): long side at most ``max_size`` (≤ 0: no limit), both sides even.

    The reference's rule: if the long side is too long it becomes ``max_size`` and the short side is scaled and
    rounded (Python's round, ties to even); then each side is floored to an even number (an odd side is shrunk
    by one pixel by resizing, not cropped).
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"invalid frame size {width}x{height}")
    new_width, new_height = width, height
    if max_size > 0 and max(width, height) > max_size:
        if height > width:
            new_height, new_width = max_size, round(width * max_size / height)
        else:
            new_width, new_height = max_size, round(height * max_size / width)
    new_width, new_height = new_width - new_width % 2, new_height - new_height % 2
    if new_width < 2 or new_height < 2:
        raise InputError(f"The source is only {width}x{height} pixels; use a picture at least 2 pixels each way.")
    return new_width, new_height


def resize_frame(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``frame`` at ``size`` (width, height); bilinear (``cv2.resize``'s default, as in the reference)."""
    if (frame.shape[1], frame.shape[0]) == size:
        return frame
    return cv2.resize(frame, size, interpolation=cv2.INTER_LINEAR)


def looks_like_video(head: bytes) -> bool:
    """Whether the first bytes of a file are those of a video container ffmpeg should decode."""
    if len(head) >= 8 and head[4:8] in _QUICKTIME_ATOMS:
        return True
    if head[:4] == b"\x1a\x45\xdf\xa3":  # Matroska / WebM (EBML)
        return True
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return True
    if head[:3] == b"FLV" or head[:4] == b"OggS":
        return True
    if head[:8] == b"\x30\x26\xb2\x75\x8e\x66\xcf\x11":  # ASF / WMV
        return True
    if head[:4] in (b"\x00\x00\x01\xba", b"\x00\x00\x01\xb3"):  # MPEG program stream / MPEG-1 video
        return True
    return len(head) > 188 and head[0] == 0x47 and head[188] == 0x47  # MPEG transport stream


def _not_readable(name: str, reason: str) -> InputError:
    return InputError(f"{name} is not an image or video we can read ({reason}); {_ADVICE}.")


def _too_large(name: str, width: int, height: int, max_pixels: int, kind: str = "picture") -> InputError:
    return InputError(
        f"{name} is {width}x{height} pixels ({width * height / 1e6:.1f} MP), more than the {max_pixels / 1e6:g} MP "
        f"we accept; use a smaller {kind} (a 1920-pixel long side is plenty)."
    )


def to_rgb8(image: Image.Image) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a decoded Pillow image, whatever its mode.

    Transparency is composited on white (a cut-out portrait on black would look like a black silhouette to the
    face detector). 16-bit grayscale (Pillow's ``I;16`` / ``I`` modes) is scaled to 8 bits (v / 256, rounded, as
    OpenCV does; Pillow already reduces 16-bit colour PNGs to 8 bits); float images are taken as 0–1 when they
    stay within it, else as 0–255.
    """
    mode = image.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        values = np.asarray(image, dtype=np.float64)
        gray = np.clip(np.rint(values / 256.0), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=-1)
    if mode == "F":
        values = np.asarray(image, dtype=np.float64)
        if np.nanmax(values, initial=0.0) <= 1.0:
            values = values * 255.0
        gray = np.clip(np.rint(np.nan_to_num(values)), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=-1)
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La")
    has_alpha = has_alpha or (mode in ("P", "L", "RGB", "1") and "transparency" in image.info)
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"), dtype=np.uint8).copy()
    if mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image, dtype=np.uint8).copy()


def load_image(
    path: str | Path, max_size: int = DEFAULT_MAX_SIZE, max_pixels: int = DEFAULT_MAX_PIXELS, min_side: int = MIN_SIDE
) -> np.ndarray:
    """One image file as (H, W, 3) uint8 RGB at the working resolution (:func:`fit_size`)."""
    frame, _ = _load_image(Path(path), max_size, max_pixels, min_side)
    return frame


def _load_image(path: Path, max_size: int, max_pixels: int, min_side: int) -> tuple[np.ndarray, tuple[int, int]]:
    name = path.name
    formats = [f for f in IMAGE_FORMATS if f in _pillow_formats()]
    try:
        with Image.open(path, formats=formats) as image:
            width, height = image.size  # from the header: nothing decoded yet
            if width * height > max_pixels:
                raise _too_large(name, width, height, max_pixels)
            if min(width, height) < min_side:
                raise InputError(
                    f"{name} is only {width}×{height} pixels, too small to find a face in; use a front-facing "
                    f"photo at least {min_side} pixels on its shorter side (256 or more works best)."
                )
            image.seek(0)  # first frame of an animation / first page of a TIFF
            image.load()  # decodes the pixels: truncated or corrupt data fails here
            rgb = to_rgb8(_upright(image, name))
    except Image.DecompressionBombError as exc:
        raise InputError(
            f"{name} claims a size far beyond the {max_pixels / 1e6:g} MP we accept ({exc}); use a smaller picture."
        ) from exc
    except UnidentifiedImageError as exc:
        raise _not_readable(name, "unknown file format") from exc
    except (OSError, SyntaxError, ValueError, EOFError, zlib.error) as exc:
        # Pillow reports truncated or corrupt data as OSError ("image file is truncated"), SyntaxError (broken
        # chunks) or ValueError; zlib errors can escape the PNG decoder.
        if isinstance(exc, InputError):
            raise
        raise _not_readable(name, f"damaged or truncated image: {exc}") from exc
    new_size = fit_size(rgb.shape[1], rgb.shape[0], max_size)
    return resize_frame(rgb, new_size), (rgb.shape[1], rgb.shape[0])


def _upright(image: Image.Image, name: str) -> Image.Image:
    """``image`` turned as its EXIF orientation says; a malformed EXIF block is ignored, not fatal."""
    try:
        return ImageOps.exif_transpose(image)
    except (ValueError, SyntaxError, TypeError, KeyError, struct.error) as exc:
        log.warning("Ignoring unreadable EXIF orientation of %s: %s", name, exc)
        return image


def _pillow_formats() -> set[str]:
    Image.init()  # registers every plugin once; idempotent
    return set(Image.OPEN)


def _ffmpeg_reason(exc: BaseException) -> str:
    """The most telling line of an imageio-ffmpeg error (its messages embed ffmpeg's whole log)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for line in reversed(lines):
        if "Error" in line or "error" in line or "Invalid" in line or "no stream" in line.lower():
            return line[:200]
    return (lines[-1] if lines else type(exc).__name__)[:200]


def unreadable_portrait(path: Path, exc: OSError) -> InputError:
    """The user-facing sentence for a portrait path that cannot be opened."""
    if isinstance(exc, FileNotFoundError):
        return InputError(f"{path} does not exist; check the path of the portrait.")
    if isinstance(exc, IsADirectoryError):
        return InputError(f"{path} is a folder; give the path of an image or video file.")
    return InputError(f"{path} cannot be read ({exc.strerror or exc}); check the file's permissions.")


def _no_frames(name: str, reason: str = "") -> InputError:
    detail = f" ({reason})" if reason else ""
    return InputError(f"{name} contains no video frames we can read{detail}; use a photo or an MP4 video of a face.")


def load_video(
    path: str | Path,
    max_size: int = DEFAULT_MAX_SIZE,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_frames: int | None = None,
    max_seconds: float | None = None,
    first_frames: int | None = None,
) -> tuple[list[np.ndarray], float | None, tuple[int, int]]:
    """Frames (RGB uint8, working resolution), fps and original (width, height) of a video file.

    ``first_frames`` keeps only the first frames (Ditto's ``template_n_frames``); ``max_frames`` and
    ``max_seconds`` are limits on what is kept, and a video beyond them is refused, not trimmed. Frames are
    streamed, so a refused video is never decoded completely.
    """
    import imageio_ffmpeg

    path = Path(path)
    name = path.name
    if first_frames is not None and first_frames <= 0:
        first_frames = None
    reader: Iterator[object] = imageio_ffmpeg.read_frames(
        str(path.resolve()), pix_fmt="rgb24", input_params=["-protocol_whitelist", "file"]
    )
    frames: list[np.ndarray] = []
    try:
        try:
            meta = next(reader)
        except (OSError, RuntimeError, StopIteration) as exc:
            text = str(exc)
            if "does not contain any stream" in text or "received no packets" in text:
                raise _no_frames(name) from exc
            raise _not_readable(name, f"ffmpeg: {_ffmpeg_reason(exc)}") from exc
        except (IndexError, AttributeError, ValueError) as exc:
            # imageio-ffmpeg parses ffmpeg's log text and trips on files without a video stream (e.g. audio).
            raise _no_frames(name, "no video stream") from exc
        meta = cast("dict[str, Any]", meta)
        width, height = meta["size"]
        if width * height > max_pixels:
            raise _too_large(name, width, height, max_pixels, "video")
        fps = float(meta.get("fps") or 0.0) or None
        duration = float(meta.get("duration") or 0.0)
        _check_duration(name, duration, fps, max_seconds, first_frames)
        target: tuple[int, int] | None = None
        for raw in reader:
            if first_frames is not None and len(frames) >= first_frames:
                break
            if max_frames is not None and len(frames) >= max_frames:
                raise InputError(f"{name} has more than {max_frames} frames, the most we accept; use a shorter video.")
            # One frame of slack, as in _check_duration: n frames last n / fps seconds.
            if max_seconds is not None and fps is not None and len(frames) + 1 > max_seconds * fps + 1:
                raise _too_long(name, max_seconds)
            frame = np.frombuffer(cast("bytes", raw), dtype=np.uint8).reshape(height, width, 3)
            if target is None:
                target = fit_size(width, height, max_size)  # decided on the first frame, kept for all
            frames.append(resize_frame(frame, target).copy())
    except RuntimeError as exc:
        raise _not_readable(name, f"ffmpeg: {_ffmpeg_reason(exc)}") from exc
    finally:
        close = getattr(reader, "close", None)
        if close is not None:
            close()  # stops ffmpeg
    if not frames:
        raise _no_frames(name)
    return frames, fps, (width, height)


def _too_long(name: str, max_seconds: float) -> InputError:
    return InputError(f"{name} is longer than {max_seconds:g} seconds, the most we accept; use a shorter video.")


def _check_duration(
    name: str, duration: float, fps: float | None, max_seconds: float | None, first_frames: int | None
) -> None:
    """Refuse from the container's duration before decoding, counting only the part we would keep."""
    if max_seconds is None or duration <= 0:
        return
    used = duration
    if first_frames is not None and fps:
        used = min(duration, first_frames / fps)
    # Container durations are rounded to 10 ms and may include a last frame's length: allow one frame of slack.
    slack = 1.0 / fps if fps else 0.05
    if used > max_seconds + slack:
        raise _too_long(name, max_seconds)


def load_media(
    path: str | Path,
    max_size: int = DEFAULT_MAX_SIZE,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_frames: int | None = None,
    max_seconds: float | None = None,
    first_frames: int | None = None,
    min_side: int = MIN_SIDE,
) -> LoadedMedia:
    """Load an image or a video, decided by the file's content (see the module docstring for the rules)."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            head = handle.read(_SNIFF_BYTES)
    except OSError as exc:
        raise unreadable_portrait(path, exc) from exc
    if not head:
        raise _not_readable(path.name, "the file is empty")
    if looks_like_video(head):
        frames, fps, original = load_video(path, max_size, max_pixels, max_frames, max_seconds, first_frames)
        log.info("Loaded %s: video, %d frames at %s fps, %dx%d", path.name, len(frames), fps, *original)
        return LoadedMedia(tuple(frames), False, fps, original)
    frame, original = _load_image(path, max_size, max_pixels, min_side)
    log.info("Loaded %s: image %dx%d (working size %dx%d)", path.name, *original, frame.shape[1], frame.shape[0])
    return LoadedMedia((frame,), True, None, original)
