"""From what the user asked (:class:`Controls`) and what the checkpoint defaults say to one plan per run.

This is the only place where controls are translated. :func:`plan_run` turns the controls, the checkpoint's
released defaults, the registered portrait, the audio length and the kind of run (a file, or a stream and its
latency choice) into one immutable :class:`RunPlan`: every stage's options, the seed (drawn here when the
controls leave it open, and nowhere else in a run) and the emotion table. Stages receive their part of the plan
when they are built and know nothing about :class:`Controls`. ``None`` controls take the checkpoint's cfg defaults
(:class:`ReleasedDefaults`). The helpers below (``motion_options``, ``stitch_options``, …) are the per-stage
pieces :func:`plan_run` is made of.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ditto_demo.pipeline.conditioning import emotion_mix, emotion_probabilities, emotion_table
from ditto_demo.pipeline.config import ReleasedDefaults
from ditto_demo.pipeline.controls import EMOTIONS, Controls
from ditto_demo.pipeline.motion import LOW_LATENCY_OVERLAP, MotionOptions
from ditto_demo.pipeline.registration import RegistrationOptions
from ditto_demo.pipeline.seeds import SEED_BOUND, draw_seed
from ditto_demo.pipeline.stitching import StitchOptions
from ditto_demo.pipeline.timebase import FPS
from ditto_demo.pipeline.types import Source

__all__ = [
    "FPS",
    "SEED_BOUND",
    "Limits",
    "RunPlan",
    "control_defaults",
    "draw_seed",
    "emotion_for",
    "motion_options",
    "plan_run",
    "registration_options",
    "stitch_options",
    "stream_overlap",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Limits:
    """What one request may ask for; refused beyond, with the limit named (never silently trimmed)."""

    #: Longest speech accepted, in seconds (``None``: no limit).
    max_audio_seconds: float | None = 600.0
    #: Longest / largest portrait video: each registered frame keeps ~8 MB of appearance features.
    max_source_seconds: float | None = 30.0
    max_source_frames: int | None = 300
    #: Largest image, in pixels, checked from the header before decoding (decompression bombs).
    max_pixels: int = 40_000_000
    #: Length of per-frame control tables while streaming, when the total length is unknown.
    max_stream_seconds: float = 3600.0


def registration_options(controls: Controls, defaults: ReleasedDefaults, limits: Limits) -> RegistrationOptions:
    """Crop and loading options for the portrait."""

    def pick(value: Any, fallback: Any) -> Any:
        return fallback if value is None else value

    return RegistrationOptions(
        max_size=defaults.max_size,
        crop_scale=float(pick(controls.crop_scale, defaults.crop_scale)),
        crop_vx_ratio=float(pick(controls.crop_x, defaults.crop_vx_ratio)),
        crop_vy_ratio=float(pick(controls.crop_y, defaults.crop_vy_ratio)),
        crop_rotate=bool(pick(controls.crop_rotate, defaults.crop_rotate)),
        smooth_kernel=int(pick(controls.source_smoothing, defaults.source_smoothing)),
        max_pixels=limits.max_pixels,
        max_frames=limits.max_source_frames,
        max_seconds=limits.max_source_seconds,
    )


def motion_options(
    controls: Controls, defaults: ReleasedDefaults, *, default_overlap: int | None = None
) -> MotionOptions:
    """Sampler and clip options, with the seed settled (drawn here when none was asked for).

    ``default_overlap`` replaces the checkpoint's overlap when the controls leave it unset (the low-latency stream
    uses :data:`~ditto_demo.pipeline.motion.LOW_LATENCY_OVERLAP`); an overlap the user chose always wins.
    """
    fallback = defaults.overlap if default_overlap is None else default_overlap
    return MotionOptions(
        steps=int(controls.steps if controls.steps is not None else defaults.steps),
        seed=controls.seed if controls.seed is not None else draw_seed(),
        overlap=int(controls.overlap if controls.overlap is not None else fallback),
        fix_kp_cond=defaults.fix_kp_cond,
        fix_kp_cond_dim=defaults.fix_kp_cond_dim,
        smooth_kernel=int(controls.motion_smoothing if controls.motion_smoothing is not None
                          else defaults.motion_smoothing),
        clip_range=defaults.clip_range,
    )


def _emotion_vector(value: Any) -> np.ndarray:
    if isinstance(value, str):
        return emotion_probabilities(EMOTIONS.index(value))
    return emotion_mix({EMOTIONS.index(k): v for k, v in value.items()})


def emotion_for(controls: Controls, defaults: ReleasedDefaults, n_frames: int) -> np.ndarray:
    """The (M, 8) emotion table: the checkpoint default, a class or mix, or a timeline over ``n_frames``."""
    base = emotion_table(defaults.emotion) if controls.emotion is None else _emotion_vector(controls.emotion)[None]
    if not controls.emotion_timeline:
        return base.astype(np.float32)
    frames = max(n_frames, 1)
    table = base[np.arange(frames) % len(base)].astype(np.float32)  # the base, cyclic when it is a table
    times = np.arange(frames) / FPS
    for start, value in controls.emotion_timeline:  # later entries override earlier ones from their start on
        table[times >= start] = _emotion_vector(value)
    return table


def _pose_track(base: float, column: int, keyframes: tuple[tuple[float, ...], ...], n_frames: int) -> Any:
    """A constant offset, or per-frame values with the keyframes interpolated on top (held after the last)."""
    if not keyframes:
        return float(base)
    times = np.array([k[0] for k in keyframes])
    values = np.array([k[column] for k in keyframes])
    frame_times = np.arange(n_frames) / FPS
    return (base + np.interp(frame_times, times, values)).astype(np.float32)


def stitch_options(
    controls: Controls, defaults: ReleasedDefaults, source: Source, n_frames: int, seed: int
) -> StitchOptions:
    """Per-frame motion controls. ``n_frames`` is the output length (the streaming maximum when unknown)."""
    overall = defaults.overall_ctrl
    amplitudes = (controls.pitch_amplitude, controls.yaw_amplitude, controls.roll_amplitude)
    driving_keys = None
    if any(a != 1.0 for a in amplitudes):
        if source.is_image:
            driving_keys = {"exp": 1.0, "pitch": amplitudes[0], "yaw": amplitudes[1], "roll": amplitudes[2], "t": 1.0}
        else:
            log.info("pose amplitude controls have no effect on a video portrait: its own head motion is kept")
    pitch = overall.get("delta_pitch", 0.0) if controls.pitch_offset is None else controls.pitch_offset
    fades = controls.fade_in > 0 or controls.fade_out > 0
    return StitchOptions(
        relative=controls.relative_motion and defaults.relative,
        driving_keys=driving_keys,
        drive_eyes=controls.drive_eyes if controls.drive_eyes is not None else defaults.drive_eyes,
        blink_template=defaults.blink_template,
        blink_mode="off" if controls.blinks == "off" else controls.blinks,
        blink_interval=controls.blink_every if controls.blinks == "every" else 0,
        blink_seed=seed,
        expression_amplitude=controls.expression_amplitude,
        lip_amplitude=controls.lip_amplitude,
        delta_pitch=_pose_track(pitch, 1, controls.pose_keyframes, n_frames),
        delta_yaw=_pose_track(overall.get("delta_yaw", 0.0) + controls.yaw_offset, 2, controls.pose_keyframes,
                              n_frames),
        delta_roll=_pose_track(overall.get("delta_roll", 0.0) + controls.roll_offset, 3, controls.pose_keyframes,
                               n_frames),
        alpha_pitch=overall.get("alpha_pitch"),
        alpha_yaw=overall.get("alpha_yaw"),
        alpha_roll=overall.get("alpha_roll"),
        fade_type=(defaults.fade_type or "d0") if fades else defaults.fade_type,
        fade_in=math.floor(controls.fade_in * FPS + 0.5),
        fade_out=math.floor(controls.fade_out * FPS + 0.5),
        fade_keys=defaults.fade_keys,
        gaze_lock=controls.gaze_lock,
        use_stitching=controls.stitching and defaults.use_stitching,
    )


def control_defaults(defaults: ReleasedDefaults) -> dict[str, Any]:
    """Concrete values of the controls whose default is "the checkpoint's" (for widgets that need a value)."""
    return {
        "steps": defaults.steps,
        "pitch_offset": float(defaults.overall_ctrl.get("delta_pitch", 0.0)),
        "overlap": defaults.overlap,
        "motion_smoothing": defaults.motion_smoothing,
        "crop_scale": defaults.crop_scale,
        "crop_x": defaults.crop_vx_ratio,
        "crop_y": defaults.crop_vy_ratio,
        "crop_rotate": defaults.crop_rotate,
        "source_smoothing": defaults.source_smoothing,
    }


@dataclass(frozen=True, eq=False)
class RunPlan:
    """Everything one run of the pipeline does, decided before any stage starts (see :func:`plan_run`).

    Immutable, so a plan can be handed to stages on different threads: each stage takes its own part when it is
    built (the motion stage ``motion``, the stitch stage ``stitch``, the conditioning ``emotion`` and
    ``eye_from_first_frame``, the compose stage ``framing``) and nothing is settled later.
    """

    #: The motion seed, also the blink seed; reported with the result.
    seed: int
    #: Output frames of a file; a stream's upper bound (per-frame control tables are this long).
    n_frames: int
    #: A stream (frames while the audio arrives) rather than a whole file.
    streaming: bool
    #: Streams only: emit each clip's rows at once, with the low-latency overlap unless one was asked for.
    low_latency: bool
    motion: MotionOptions
    stitch: StitchOptions
    #: (M, 8) emotion probabilities: one row, a cyclic table, or one row per frame (a timeline).
    emotion: np.ndarray
    eye_from_first_frame: bool
    framing: str


def stream_overlap(low_latency: bool) -> int | None:
    """The overlap a stream uses when the controls leave it unset (``None``: the checkpoint's)."""
    return LOW_LATENCY_OVERLAP if low_latency else None


def plan_run(
    controls: Controls,
    defaults: ReleasedDefaults,
    source: Source,
    *,
    n_frames: int | None,
    limits: Limits | None = None,
    low_latency: bool = True,
) -> RunPlan:
    """The one plan of one run: ``n_frames`` output frames of a file, or a stream when ``n_frames`` is ``None``.

    ``defaults`` are the checkpoint's defaults for the kind of run (offline or online cfg). A stream's per-frame
    tables are sized for ``limits.max_stream_seconds``. With ``low_latency`` a stream uses
    :data:`~ditto_demo.pipeline.motion.LOW_LATENCY_OVERLAP` unless ``controls.overlap`` is set (our documented
    deviation; ``False`` is the reference's timing). The seed is drawn here when the controls have none.
    """
    streaming = n_frames is None
    frames = int((limits or Limits()).max_stream_seconds * FPS) if n_frames is None else int(n_frames)
    motion = motion_options(controls, defaults, default_overlap=stream_overlap(low_latency) if streaming else None)
    assert motion.seed is not None  # motion_options resolves it
    return RunPlan(
        seed=motion.seed,
        n_frames=frames,
        streaming=streaming,
        low_latency=streaming and low_latency,
        motion=motion,
        stitch=stitch_options(controls, defaults, source, frames, motion.seed),
        emotion=emotion_for(controls, defaults, frames),
        eye_from_first_frame=defaults.eye_from_first_frame,
        framing=controls.framing,
    )
