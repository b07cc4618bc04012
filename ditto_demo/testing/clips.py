"""Portrait video clips made from a still picture: a still shot or a gentle pan and zoom, as H.264 mp4.

Used for the example clip ``assets/portrait_clip.mp4`` (``python -m ditto_demo.testing.clips`` rewrites it) and by
the tests, which need video portraits of a known length whose face moves by a known amount: frame ``i`` is the
picture taken through :func:`clip_matrix` ``(i)``, a similarity transform, so a point of the picture lies at
``clip_matrix(i) @ point`` in that frame.

The motion eases out and back (``(1 - cos 2πt) / 2``), so the clip starts and ends on the same frame and loops
without a jump. Zoom is about the picture's centre and never below 1, and the pan stays within what the zoom
adds, so no frame shows anything beyond the picture's edges.
"""

from __future__ import annotations

import argparse
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import imageio_ffmpeg
import numpy as np
from PIL import Image

__all__ = ["EXAMPLE_CLIP", "GENTLE", "STILL", "ClipMotion", "clip_frames", "clip_matrix", "write_clip"]

log = logging.getLogger(__name__)

_ASSETS = Path(__file__).resolve().parents[2] / "assets"
#: The example clip in the repository, and the picture it is made from.
EXAMPLE_CLIP = _ASSETS / "portrait_clip.mp4"
_EXAMPLE_PORTRAIT = _ASSETS / "portrait_illustration.png"


@dataclass(frozen=True)
class ClipMotion:
    """Peak zoom (0.06: up to 6 % closer) and peak pan in pixels of the picture, reached halfway through."""

    zoom: float = 0.0
    pan_x: float = 0.0
    pan_y: float = 0.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.zoom) and self.zoom >= 0):
            raise ValueError(f"zoom must be a finite number >= 0, not {self.zoom}")


#: No motion at all: every frame is the picture.
STILL = ClipMotion()
#: The example clip's motion: 6 % closer and a little to the side and up at the midpoint.
GENTLE = ClipMotion(zoom=0.06, pan_x=12.0, pan_y=-8.0)


def clip_matrix(index: int, frames: int, size: tuple[int, int], motion: ClipMotion) -> np.ndarray:
    """3×3 map from picture pixels to frame ``index`` of ``frames`` (``size`` = width, height)."""
    progress = (1.0 - math.cos(2.0 * math.pi * index / frames)) / 2.0 if frames > 1 else 0.0
    scale = 1.0 + motion.zoom * progress
    width, height = size
    # Keep the pan within the margin the zoom adds, so the frame never reaches past the picture.
    limit_x, limit_y = (scale - 1.0) * width / 2.0, (scale - 1.0) * height / 2.0
    dx = float(np.clip(motion.pan_x * progress, -limit_x, limit_x))
    dy = float(np.clip(motion.pan_y * progress, -limit_y, limit_y))
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    return np.array(
        [[scale, 0.0, cx - scale * cx + dx], [0.0, scale, cy - scale * cy + dy], [0.0, 0.0, 1.0]], np.float64
    )


def clip_frames(picture: np.ndarray, frames: int, motion: ClipMotion) -> list[np.ndarray]:
    """``frames`` RGB uint8 frames of ``picture`` moved by ``motion`` (bilinear resampling)."""
    if frames < 1:
        raise ValueError(f"a clip needs at least one frame, not {frames}")
    height, width = picture.shape[:2]
    out = []
    for index in range(frames):
        matrix = clip_matrix(index, frames, (width, height), motion)
        if np.allclose(matrix, np.eye(3)):
            out.append(np.ascontiguousarray(picture))
            continue
        out.append(cv2.warpAffine(picture, matrix[:2], (width, height), flags=cv2.INTER_LINEAR,
                                  borderMode=cv2.BORDER_REPLICATE))
    return out


def write_clip(
    picture: np.ndarray,
    path: Path,
    seconds: float = 4.0,
    fps: int = 25,
    motion: ClipMotion = GENTLE,
    crf: int = 26,
) -> Path:
    """Write ``seconds`` of ``picture`` moving by ``motion`` to ``path`` (H.264, yuv420p, fast start)."""
    frames = round(seconds * fps)
    height, width = picture.shape[:2]
    if width % 2 or height % 2:
        raise ValueError(f"H.264 in yuv420p needs even sides, not {width}×{height}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = imageio_ffmpeg.write_frames(
        str(path), (width, height), fps=fps, codec="libx264", quality=None, macro_block_size=1,
        ffmpeg_log_level="error",
        output_params=["-crf", str(crf), "-preset", "slow", "-movflags", "+faststart", "-map_metadata", "-1"],
    )
    writer.send(None)
    for frame in clip_frames(picture, frames, motion):
        writer.send(np.ascontiguousarray(frame))
    writer.close()
    log.info("Wrote %s: %d frames at %d fps, %d bytes", path, frames, fps, path.stat().st_size)
    return path


def main(argv: list[str] | None = None) -> None:
    """Rewrite the example clip (or write one elsewhere): ``python -m ditto_demo.testing.clips [OUTPUT]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", nargs="?", type=Path, default=EXAMPLE_CLIP)
    parser.add_argument("--picture", type=Path, default=_EXAMPLE_PORTRAIT)
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    picture = np.asarray(Image.open(args.picture).convert("RGB"))
    write_clip(picture, args.output, seconds=args.seconds)


if __name__ == "__main__":
    main()
