"""Source registration: a portrait image or video → :class:`~ditto_demo.pipeline.types.Source` (ditto_spec.md §4).

Per frame: find the face (detector → 106 → 203 landmarks on the first frame, the previous frame's 203 landmarks on
later ones), cut the 512 px avatar crop, and run the networks the later stages need on it — motion extractor and
appearance extractor on its 256 px version, MediaPipe's 478 landmarks for the eye features. A video's motion is
then smoothed over time, after frame 0's canonical keypoints were kept as ``canonical_kp``.

Registration is the slow part of a new portrait and its result depends only on the file and the crop options, so
:class:`SourceCache` keeps recent results. Every array of a registered source is made read-only: sources are
shared between requests, and a stage that wants to change one must copy it first.

Deviations from the reference, all deliberate:

* a portrait without a detectable face is an :class:`~ditto_demo.errors.InputError` (the reference crashes), and
  several faces are handled by taking the largest, as the reference does, but logged and counted;
* ``crop_vx_ratio`` is applied (the reference ignores it; see :mod:`ditto_demo.pipeline.crop`);
* when MediaPipe finds no face in the crop (the reference crashes), the eye features are estimated from the 203
  landmarks (:func:`~ditto_demo.pipeline.eyes.eye_features_from_203`: lid gap over eye width, gaze straight
  ahead), with a warning;
* images are loaded with Pillow (:mod:`ditto_demo.pipeline.media`).
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from ditto_demo.errors import InputError
from ditto_demo.pipeline.crop import crop_image, crop_rect
from ditto_demo.pipeline.eyes import eye_features, eye_features_from_203
from ditto_demo.pipeline.face import Detection, NetworkFn, detect_faces, landmark106, landmark203
from ditto_demo.pipeline.media import DEFAULT_MAX_PIXELS, DEFAULT_MAX_SIZE, load_media, unreadable_portrait
from ditto_demo.pipeline.motion_space import MotionDict
from ditto_demo.pipeline.types import Source, SourceFrame

__all__ = [
    "AVATAR_CROP_SIZE",
    "FEATURE_SIZE",
    "NetworkProvider",
    "RegistrationOptions",
    "SourceCache",
    "file_digest",
    "register_frames",
    "register_source",
    "smooth_motions",
]

log = logging.getLogger(__name__)

AVATAR_CROP_SIZE = 512
#: The motion and appearance extractors see the avatar crop at this size.
FEATURE_SIZE = 256
_MOTION_KEYS = ("pitch", "yaw", "roll", "t", "exp", "scale", "kp")

#: Called after each registered frame with (frames done, frames in total).
ProgressFn = Callable[[int, int], None]


class NetworkProvider(Protocol):
    """What registration needs from :class:`~ditto_demo.pipeline.networks.Networks`: networks by name."""

    def __getitem__(self, name: str, /) -> NetworkFn: ...


@dataclass(frozen=True)
class RegistrationOptions:
    """How a source is loaded and cropped (ditto_spec.md §5.1). Hashable: it is part of the cache key.

    ``max_pixels``, ``max_frames`` and ``max_seconds`` are safety limits — a file beyond them is refused with
    the limit named. ``template_frames`` is Ditto's ``template_n_frames``: register only a video's first frames.
    """

    max_size: int = DEFAULT_MAX_SIZE
    crop_scale: float = 2.3
    #: Shift of the crop centre along the face's horizontal axis, × crop side (applied, unlike the reference).
    crop_vx_ratio: float = 0.0
    #: Shift along the eyes→mouth axis, × crop side; negative moves the crop up (more forehead).
    crop_vy_ratio: float = -0.125
    crop_rotate: bool = True
    #: Width of the centred moving average over a video's motion (1: no smoothing).
    smooth_kernel: int = 13
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_frames: int | None = None
    max_seconds: float | None = None
    template_frames: int | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.crop_scale) and self.crop_scale > 0):
            raise InputError(f"crop_scale must be a positive number (2.3 is the default), not {self.crop_scale}.")
        for name in ("crop_vx_ratio", "crop_vy_ratio"):
            if not math.isfinite(getattr(self, name)):
                raise InputError(f"{name} must be a finite number (0 or -0.125 are typical).")
        if self.smooth_kernel < 1:
            raise InputError(f"smooth_kernel must be at least 1 (1 turns smoothing off), not {self.smooth_kernel}.")
        if self.max_pixels < 1:
            raise InputError(f"max_pixels must be positive, not {self.max_pixels}.")
        for name in ("max_frames", "template_frames"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise InputError(f"{name} must be at least 1, or unset for no limit, not {value}.")
        if self.max_seconds is not None and not self.max_seconds > 0:
            raise InputError(f"max_seconds must be positive, or unset for no limit, not {self.max_seconds}.")


def smooth_motions(motions: Sequence[MotionDict], kernel: int) -> list[MotionDict]:
    """Centred moving average of every field over time; the window is cut at both ends (no padding).

    Frame i averages frames [i − k//2, i + k//2] that exist — as the reference, so an even ``kernel`` behaves
    like ``kernel + 1``. Pose fields are averaged as logits, also as the reference does.
    """
    if kernel <= 1 or len(motions) <= 1:
        return [dict(m) for m in motions]
    half = kernel // 2
    count = len(motions)
    smoothed: list[MotionDict] = [{} for _ in motions]
    for key in motions[0]:
        stack = np.stack([np.asarray(m[key], dtype=np.float64) for m in motions])
        cumulative = np.concatenate([np.zeros_like(stack[:1]), np.cumsum(stack, axis=0)])
        for i in range(count):
            start, stop = max(0, i - half), min(count, i + half + 1)
            mean = (cumulative[stop] - cumulative[start]) / (stop - start)
            smoothed[i][key] = mean.astype(np.asarray(motions[i][key]).dtype)
    return smoothed


def _feature_input(crop: np.ndarray) -> np.ndarray:
    """(1, 3, 256, 256) float32 RGB in [0, 1] from the 512 crop (area interpolation, as the reference)."""
    small = cv2.resize(crop, (FEATURE_SIZE, FEATURE_SIZE), interpolation=cv2.INTER_AREA)
    return (small.astype(np.float32) / 255.0).transpose(2, 0, 1)[None].copy()


def _first_face(frame: np.ndarray, networks: NetworkProvider, name: str, is_image: bool) -> list[Detection]:
    detections = detect_faces(frame, networks["insightface_det"])
    if not detections:
        if is_image:
            raise InputError(f"No face was found in {name}; use a photo with one clearly visible, front-facing face.")
        raise InputError(
            f"No face was found in the first frame of {name}; use a video that starts with one clearly visible, "
            "front-facing face."
        )
    if len(detections) > 1:
        best = detections[0]
        log.info(
            "%d faces found in %s; using the largest, box (%.0f, %.0f, %.0f, %.0f) with score %.2f",
            len(detections),
            name,
            *best.box,
            best.score,
        )
    return detections


def _eyes(crop: np.ndarray, points203: np.ndarray, networks: NetworkProvider) -> tuple[np.ndarray, np.ndarray, bool]:
    """(eye_open, eye_ball, whether the 203-landmark fallback was used) for one avatar crop."""
    try:
        landmarks = networks["landmark478"](image=crop)["landmarks"]
    except InputError:
        eye_open, eye_ball = eye_features_from_203(points203)
        return eye_open, eye_ball, True
    eye_open, eye_ball = eye_features(landmarks)
    return eye_open, eye_ball, False


def _frozen(array: np.ndarray) -> np.ndarray:
    """``array`` made read-only: in place when it owns its data, else as a copy (never freezes a view's base)."""
    if not array.flags.writeable:
        return array
    if array.base is not None or not array.flags.c_contiguous:
        array = np.ascontiguousarray(array).copy()
    array.flags.writeable = False
    return array


def register_frames(
    frames: Sequence[np.ndarray],
    networks: NetworkProvider,
    options: RegistrationOptions | None = None,
    *,
    is_image: bool,
    fps: float | None = None,
    name: str = "the portrait",
    progress: ProgressFn | None = None,
) -> Source:
    """Register frames that are already loaded (RGB uint8, working resolution; see :func:`register_source`).

    ``name`` is used in messages ("No face was found in <name>"). The frames become the source's images and are
    made read-only in place (not copied: a video's frames can take gigabytes).
    """
    options = options or RegistrationOptions()
    if not frames:
        raise InputError(f"{name} has no frames; use a photo or a video of a face.")
    first = frames[0]
    if first.dtype != np.uint8 or first.ndim != 3 or first.shape[2] != 3:
        raise ValueError(f"frames must be (H, W, 3) uint8 RGB arrays, got {first.dtype} {first.shape}")
    motions: list[MotionDict] = []
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    eye_fallbacks: list[int] = []
    detections: list[Detection] = []
    previous203: np.ndarray | None = None
    for index, frame in enumerate(frames):
        if index == 0:
            detections = _first_face(frame, networks, name, is_image)
            anchor = landmark106(frame, detections[0].box, networks["landmark106"])
        else:
            assert previous203 is not None
            anchor = previous203  # tracking: no detection on later frames
        points203, _ = landmark203(frame, anchor, networks["landmark203"])
        rect = crop_rect(points203, options.crop_scale, options.crop_vx_ratio, options.crop_vy_ratio)
        if not (np.all(np.isfinite(points203)) and math.isfinite(rect.side) and rect.side > 1.0):
            raise InputError(
                f"The face in {name} (frame {index}) could not be located reliably; use a sharper, front-facing "
                "portrait."
            )
        crop = crop_image(
            frame,
            points203,
            AVATAR_CROP_SIZE,
            options.crop_scale,
            options.crop_vx_ratio,
            options.crop_vy_ratio,
            options.crop_rotate,
        )
        features = _feature_input(crop.image)
        raw = networks["motion_extractor"](image=features)
        motions.append({key: np.asarray(raw[key], dtype=np.float32).reshape(1, -1) for key in _MOTION_KEYS})
        appearance = np.asarray(networks["appearance_extractor"](image=features)["pred"], dtype=np.float32)
        eye_open, eye_ball, estimated = _eyes(crop.image, points203, networks)
        if estimated:
            eye_fallbacks.append(index)
        parts.append((frame, crop.crop_to_image, appearance, eye_open.reshape(1, 2), eye_ball.reshape(1, 6)))
        previous203 = points203
        if progress is not None:
            progress(index + 1, len(frames))

    if eye_fallbacks:
        log.warning(
            "MediaPipe found no face in the crop of %s (%d of %d frames, first: %d); eye features were estimated "
            "from the 203 landmarks instead.",
            name,
            len(eye_fallbacks),
            len(frames),
            eye_fallbacks[0],
        )
    canonical_kp = motions[0]["kp"].reshape(-1).copy()
    if len(motions) > 1 and options.smooth_kernel > 1:
        motions = smooth_motions(motions, options.smooth_kernel)
    source_frames = tuple(
        SourceFrame(
            image=_frozen(image),
            crop_to_image=_frozen(np.asarray(c2o, dtype=np.float64)),
            motion={key: _frozen(value) for key, value in motion.items()},
            appearance=_frozen(appearance),
            eye_open=_frozen(eye_open),
            eye_ball=_frozen(eye_ball),
        )
        for (image, c2o, appearance, eye_open, eye_ball), motion in zip(parts, motions, strict=True)
    )
    return Source(
        frames=source_frames,
        is_image=is_image,
        canonical_kp=_frozen(canonical_kp),
        face_box=detections[0].box,
        faces_found=len(detections),
        fps=fps,
    )


def register_source(
    path: str | Path,
    networks: NetworkProvider,
    options: RegistrationOptions | None = None,
    *,
    progress: ProgressFn | None = None,
) -> Source:
    """Load ``path`` (image or video, by content) and register it; user-facing problems are ``InputError``."""
    options = options or RegistrationOptions()
    path = Path(path)
    media = load_media(
        path,
        max_size=options.max_size,
        max_pixels=options.max_pixels,
        max_frames=options.max_frames,
        max_seconds=options.max_seconds,
        first_frames=options.template_frames,
    )
    return register_frames(
        media.frames, networks, options, is_image=media.is_image, fps=media.fps, name=path.name, progress=progress
    )


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file's content (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    try:
        with Path(path).open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError as exc:
        raise unreadable_portrait(Path(path), exc) from exc
    return digest.hexdigest()


def _networks_token(networks: NetworkProvider) -> Hashable:
    """What identifies the networks' results: checkpoint root, backend and device when known, else the object."""
    root = getattr(networks, "root", None)
    if root is None:
        return ("object", id(networks))
    return (str(root), str(getattr(networks, "backend", "")), str(getattr(networks, "device", "")))


class SourceCache:
    """A bounded, thread-safe LRU of registered sources, keyed by file content, options and networks.

    The same file (by SHA-256, so a renamed or re-uploaded copy hits too) with the same options is registered
    once; a changed crop setting registers again. Concurrent requests for the same key wait for one
    registration instead of running it twice. Failures are not cached. The pipeline owns one instance; there
    is no module-level cache.
    """

    def __init__(self, max_entries: int = 4) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self._entries: OrderedDict[Hashable, Source] = OrderedDict()
        self._pending: dict[Hashable, Future[Source]] = {}
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(
        self,
        path: str | Path,
        networks: NetworkProvider,
        options: RegistrationOptions | None = None,
        *,
        progress: ProgressFn | None = None,
    ) -> Source:
        """The registered source of ``path`` (from the cache, or registered now and remembered)."""
        options = options or RegistrationOptions()
        key = (file_digest(path), options, _networks_token(networks))
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                self.hits += 1
                log.info("Source cache hit for %s", Path(path).name)
                return self._entries[key]
            pending = self._pending.get(key)
            if pending is None:
                future: Future[Source] = Future()
                self._pending[key] = future
                self.misses += 1
        if pending is not None:
            return pending.result()  # someone else is registering this very file; share their result
        try:
            source = register_source(path, networks, options, progress=progress)
        except BaseException as exc:
            with self._lock:
                del self._pending[key]
            future.set_exception(exc)
            raise
        with self._lock:
            del self._pending[key]
            self._entries[key] = source
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        future.set_result(source)
        return source

    def clear(self) -> None:
        """Forget every cached source (registrations in progress still finish)."""
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
