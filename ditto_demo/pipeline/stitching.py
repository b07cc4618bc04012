"""Motion stitching: turn one generated motion frame into the (source, driving) keypoints the renderer warps with.

LMDM generates a whole motion (pose, translation, scale, expression) per output frame, but the portrait must keep
its identity, framing and — for video sources — its own head movement. :class:`MotionStitcher` combines the source
frame's motion with the generated one, applies every per-run control, and returns LivePortrait keypoints, in
exactly the reference's order of operations (ditto_spec.md §5.4; the steps are numbered the same below):

1. controls for this output frame (constants, or per-frame arrays indexed by the output frame);
2. relative mixing ``x = x_s + (x_d − d0)·w`` — pose mixed as **66-bin logits**, not degrees;
3. key selection: only the driving keys come from the generated motion, everything else (and ``kp``) from the
   source frame (images: exp, pose, t; videos: exp only);
4. expression masks: lip keypoints {6,12,14,17,19,20} always driven, eye keypoints {11,13,15,16,18} driven,
   template-blinked or kept from the source, every other keypoint kept from the source;
5. the blink template (:mod:`ditto_demo.pipeline.blink`) on the eye keypoints;
6. ``vad_alpha`` pulls the whole expression towards the source's;
7. pose offsets (degrees) and gains, expression offset;
8. fade towards a destination (the first frame, or the source) at the clip's ends;
9. gaze correction: the released head-pose → eye-keypoint linear fix (only when the eyes are driven);
10. keypoint transform of both sides, then the stitching network nudges the driving keypoints.

Deviations from the reference, each deliberate
----------------------------------------------
* **Fade setup never overwrites per-frame controls** (Appendix A quirk 3). The reference writes ``fade_alpha``
  into the same ``ctrl_info`` dict the caller's per-frame controls live in, and ``run()`` always hands a fresh
  dict, silently dropping controls given to ``setup()``. Here fade weights are computed from ``fade_in`` /
  ``fade_out`` on their own and per-frame controls are separate typed fields, so neither can erase the other.
* **``alpha_pitch/yaw/roll`` scale degrees** (quirk 4). The reference multiplies whatever is stored: the 66-bin
  logits (which sharpens or flattens the bin distribution instead of scaling the angle) unless a ``delta_*`` for
  the same angle converted it to degrees first. ``alpha_in_logits=True`` restores the reference behaviour.
* **Fading a pose key with mixed representations blends degrees.** When the frame's angle is in degrees (a
  ``delta_*`` was applied) and the destination's is still logits, the reference multiplies a (1, 1) by a (1, 66)
  array and decodes the broadcast as logits — meaningless. Both sides are decoded to degrees first; when both are
  logits the reference's logit blend is kept.
* **The blink row follows the output frame index**, not a count of calls; identical when frames are stitched in
  order (as the reference does), and correct if a caller ever retries or skips a frame.
* **Streaming without a known length ignores ``fade_out``** (with a warning): the reference needs ``N_d`` to
  place the ramp and has no meaning for it otherwise.
* **Per-frame ``fade_alpha`` / ``fade_out_keys`` entries of a reference ``ctrl_info`` are not supported**
  (:func:`ditto_demo.testing.reference.stitch_options_from_reference`, the tests' reader of reference kwargs,
  warns and drops them): fades come from ``fade_in`` / ``fade_out`` only.

Kept on purpose: ``vad_alpha`` blends *all* 63 expression dims towards the source (quirk 5; the reference builds a
lip-only mask and never uses it) — use ``lip_amplitude`` for a lip-only effect. ``expression_amplitude`` and
``lip_amplitude`` are our additions; they are weights in the relative mixing, so 1.0 is exactly the reference
(with ``relative=False`` they scale the generated expression's distance from the source's instead).
Checked against the reference's ``MotionStitch`` on random motions (11 option sets, 400 frames, natural blinks with
the same seed): keypoints agree to 7e-7 (float32 vs float64 rounding).
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ditto_demo.errors import InputError
from ditto_demo.pipeline.blink import BLINK_MODES, DEFAULT_SCHEDULE_FRAMES, BlinkMode, blink_schedule
from ditto_demo.pipeline.motion_space import NUM_KP, POSE_BINS, MotionDict, pose_degrees, transform_keypoints
from ditto_demo.pipeline.types import Source

__all__ = [
    "EYE_KEYPOINTS",
    "GAZE_PITCH_RATIO",
    "GAZE_YAW_RATIO",
    "IMAGE_DRIVING_KEYS",
    "LIP_KEYPOINTS",
    "MOTION_KEYS",
    "PER_FRAME_CONTROLS",
    "VIDEO_DRIVING_KEYS",
    "MotionStitcher",
    "StitchOptions",
    "expression_masks",
    "fade_alphas",
    "keypoint_dims",
]

logger = logging.getLogger(__name__)

#: Keypoints whose expression offsets LMDM drives: the mouth region, and the eyes (optional).
LIP_KEYPOINTS: tuple[int, ...] = (6, 12, 14, 17, 19, 20)
EYE_KEYPOINTS: tuple[int, ...] = (11, 13, 15, 16, 18)
#: The parts of a generated motion frame (``kp`` is never generated: it always comes from the source).
MOTION_KEYS: tuple[str, ...] = ("scale", "pitch", "yaw", "roll", "t", "exp")
POSE_KEYS: tuple[str, ...] = ("pitch", "yaw", "roll")
#: Default driving keys: a still image borrows head pose and translation from the audio; a video keeps its own.
IMAGE_DRIVING_KEYS: tuple[str, ...] = ("exp", "pitch", "yaw", "roll", "t")
VIDEO_DRIVING_KEYS: tuple[str, ...] = ("exp",)
#: The per-frame controls of :class:`StitchOptions` (a number, or one number per output frame).
PER_FRAME_CONTROLS: tuple[str, ...] = (
    "expression_amplitude", "lip_amplitude", "vad_alpha",
    "delta_pitch", "delta_yaw", "delta_roll", "alpha_pitch", "alpha_yaw", "alpha_roll",
)  # fmt: skip
#: Gaze fix: degrees of head turn → eye-keypoint offset. The x offset is asymmetric between the two eyes.
GAZE_YAW_RATIO = 0.26
GAZE_PITCH_RATIO = 0.28
GAZE_STRONG = 0.001
GAZE_WEAK = 0.0007
#: exp dims moved by the gaze fix: x and y of eye keypoints 11 and 15.
GAZE_DIMS: tuple[int, ...] = (33, 34, 45, 46)

FadeType = Literal["", "d0", "s"]
#: A control given as one value for every frame, or one value per output frame (NaN, or past the end: not set).
PerFrame = float | Sequence[float] | np.ndarray
StitchNetwork = Callable[..., Mapping[str, np.ndarray]]


def keypoint_dims(keypoints: Sequence[int]) -> np.ndarray:
    """The exp dims (3k, 3k+1, 3k+2) of each keypoint k, sorted."""
    return np.sort(np.asarray([3 * k + c for k in keypoints for c in range(3)], dtype=np.int64))


def expression_masks(drive_eyes: bool, blink_template: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(a1, a2, a3), (63,) float32 0/1 masks: exp = exp_driving·a1 + exp_source·a2 + blink_row·a3.

    Eyes driven by LMDM → a1 = lip ∪ eye; eyes blinked from a template → a1 = lip, a3 = eye (the source's eyes plus
    the template offset); eyes not driven → a1 = lip. a2 = 1 − a1 in every case.
    """
    lip = np.zeros(NUM_KP * 3, dtype=np.float32)
    lip[keypoint_dims(LIP_KEYPOINTS)] = 1.0
    eye = np.zeros(NUM_KP * 3, dtype=np.float32)
    eye[keypoint_dims(EYE_KEYPOINTS)] = 1.0
    if drive_eyes and not blink_template:
        a1 = lip + eye
        a3 = np.zeros_like(lip)
    elif drive_eyes:
        a1, a3 = lip, eye
    else:
        a1, a3 = lip, np.zeros_like(lip)
    return a1, 1.0 - a1, a3


def fade_alphas(n_frames: int, fade_in: int, fade_out: int) -> np.ndarray:
    """Per-frame fade weight (n_frames,) float64; NaN = no fade on that frame (ditto_spec.md §3.1 item 5).

    Fade-in: frame i < fade_in gets i/fade_in (the clip starts exactly at the destination). Fade-out: frames
    N−fade_out−1 … N−1 get (N−1−i)/fade_out (the clip ends exactly at the destination); where the two overlap the
    fade-out wins, as in the reference.
    """
    alphas = np.full(n_frames, np.nan)
    if fade_in > 0:
        count = min(fade_in, n_frames)
        alphas[:count] = np.arange(count) / fade_in
    if fade_out > 0:
        first = max(n_frames - fade_out - 1, 0)
        index = np.arange(first, n_frames)
        alphas[first:] = np.maximum((n_frames - 1 - index) / fade_out, 0.0)
    return alphas


def _check_per_frame(name: str, value: object, allow_none: bool) -> None:
    if value is None:
        if not allow_none:
            raise InputError(f"{name} must be a number or a per-frame list of numbers, not None.")
        return
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name} must be a number or a per-frame list of numbers.") from exc
    if array.ndim > 1 or (array.ndim == 1 and array.size == 0):
        raise InputError(f"{name} must be a number or a non-empty 1-D per-frame list of numbers.")
    if np.isinf(array).any() or (array.ndim == 0 and np.isnan(array)):
        raise InputError(f"{name} must be finite (NaN is only allowed inside a per-frame list, as 'not set').")


@dataclass(frozen=True, eq=False)
class StitchOptions:
    """Every per-run control of motion stitching (ditto_spec.md §5.4, §5.5). Defaults = the reference's code defaults.

    Per-frame controls (:data:`PerFrame`) take one number for every frame, or one per output frame; a NaN entry or
    a frame past the end of the list means "not set" on that frame (the reference's per-frame ``ctrl_info``).
    The released configuration adds ``delta_pitch=2`` (a slight downward correction of the generated head tilt)
    and ``fade_type="d0"`` (:mod:`ditto_demo.pipeline.plan` sets them from the checkpoint's defaults).
    ``blink_gaps``, ``vad_alpha``, ``alpha_in_logits``, ``delta_exp`` and ``reference_scale`` are set by no control
    today: they are reference options the stitcher implements, kept so it stays checkable against the reference.
    """

    #: Mix driving motion relative to its first frame d0 (True) or use absolute generated values (False).
    relative: bool = True
    #: Keys taken from the generated motion: None = auto (image: exp, pose, t; video: exp), a tuple of keys, or a
    #: mapping key → weight that scales that key's driving delta (e.g. {"exp": 1, "yaw": 0.5} halves yaw motion;
    #: pose weights act on logits, as in the reference).
    driving_keys: tuple[str, ...] | Mapping[str, float] | None = None
    #: Let the audio drive the eyes: None = auto (images yes, videos no).
    drive_eyes: bool | None = None
    #: Blink template (B, 63) of expression offsets, row 0 = eyes open; None = eyes follow LMDM (when driven).
    blink_template: np.ndarray | None = None
    blink_mode: BlinkMode = "natural"
    #: Gap in frames for ``blink_mode="every"``; gap list (cycled) for ``blink_mode="gaps"``.
    blink_interval: int = 0
    blink_gaps: tuple[int, ...] = ()
    #: Seed of the blink schedule's own ``random.Random`` (None = a fresh, irreproducible schedule).
    blink_seed: int | None = 0
    #: Gain on the driving expression delta on all driven dims / on the lip keypoints only (1.0 = reference).
    expression_amplitude: PerFrame = 1.0
    lip_amplitude: PerFrame = 1.0
    #: < 1 pulls ALL expression dims towards the source: exp = α·exp + (1−α)·exp_source (reference behaviour).
    vad_alpha: PerFrame = 1.0
    #: Head-pose offsets in degrees, added after mixing (None = not set).
    delta_pitch: PerFrame | None = None
    delta_yaw: PerFrame | None = None
    delta_roll: PerFrame | None = None
    #: Head-pose gains (None = not set): multiply the angle in degrees, or the stored value if ``alpha_in_logits``.
    alpha_pitch: PerFrame | None = None
    alpha_yaw: PerFrame | None = None
    alpha_roll: PerFrame | None = None
    alpha_in_logits: bool = False
    #: Expression offset added after mixing: (63,) for every frame or (n, 63) per frame (NaN rows: not set).
    delta_exp: np.ndarray | None = None
    #: Fade destination: "" none, "d0" the first frame's final driving motion, "s" the source frame's motion.
    fade_type: FadeType = ""
    #: Frames of fade-in at the start and fade-out at the end; keys faded (``kp`` never is).
    fade_in: int = 0
    fade_out: int = 0
    fade_keys: tuple[str, ...] = ("exp",)
    #: Apply the head-pose → gaze correction when the eyes are driven (False disables it).
    gaze_lock: bool = True
    #: Run the stitching network on the driving keypoints (the reference's ``flag_stitching``).
    use_stitching: bool = True
    #: Scale of the conditioning identity (the reference's ``ch_info`` frame 0); when set, the exp and pose
    #: weights are multiplied by reference_scale / source frame-0 scale, as the reference does.
    reference_scale: float | None = None

    def __post_init__(self) -> None:
        keys = self.driving_keys
        if keys is not None:
            if isinstance(keys, str):
                raise InputError("driving_keys must be a tuple of keys or a mapping key → weight, not a string.")
            unknown = set(keys) - set(MOTION_KEYS)
            if unknown:
                raise InputError(f"Unknown driving key(s) {sorted(unknown)}; use any of {', '.join(MOTION_KEYS)}.")
            if isinstance(keys, Mapping):
                for key, weight in keys.items():
                    if not math.isfinite(float(weight)):
                        raise InputError(f"The weight of driving key {key!r} must be a finite number.")
        unknown_fade = set(self.fade_keys) - set(MOTION_KEYS)
        if isinstance(self.fade_keys, str) or unknown_fade:
            raise InputError(f"fade_keys must be a tuple of keys among {', '.join(MOTION_KEYS)}.")
        if self.fade_type not in ("", "d0", "s"):
            raise InputError(f'fade_type must be "", "d0" or "s", not {self.fade_type!r}.')
        if self.fade_in < 0 or self.fade_out < 0:
            raise InputError("fade_in and fade_out are frame counts and cannot be negative.")
        if self.blink_mode not in BLINK_MODES:
            raise InputError(f"Unknown blink mode {self.blink_mode!r}; use one of {', '.join(BLINK_MODES)}.")
        if self.blink_template is not None:
            template = np.asarray(self.blink_template)
            if template.ndim != 2 or template.shape[0] < 1 or template.shape[1] != NUM_KP * 3:
                raise InputError(f"The blink template must have shape (B, 63), not {template.shape}.")
        if self.delta_exp is not None:
            delta = np.asarray(self.delta_exp, dtype=np.float64)
            if delta.shape[-1:] != (NUM_KP * 3,) or delta.ndim > 2 or delta.size == 0:
                raise InputError(f"delta_exp must have shape (63,) or (frames, 63), not {delta.shape}.")
        for name in PER_FRAME_CONTROLS:
            _check_per_frame(name, getattr(self, name), allow_none=name.startswith(("delta_", "alpha_")))
        vad = np.asarray(self.vad_alpha, dtype=np.float64)
        if ((vad < 0) | (vad > 1)).any():
            raise InputError("vad_alpha must lie between 0 and 1.")
        if self.reference_scale is not None and not self.reference_scale > 0:
            raise InputError("reference_scale must be a positive number.")


def _value_at(values: np.ndarray | None, index: int) -> float | None:
    """A control's value on output frame ``index`` (0-d: every frame; 1-d: per frame), or None where not set."""
    if values is None:
        return None
    if values.ndim == 0:
        return float(values)
    if index >= values.size:
        return None
    item = float(values[index])
    return None if math.isnan(item) else item


def _degrees(value: np.ndarray) -> np.ndarray:
    """An angle as (1, 1) float32 degrees, from logits (1, 66) or from degrees already."""
    return np.asarray(pose_degrees(value), dtype=np.float32).reshape(1, 1)


def _is_logits(value: np.ndarray) -> bool:
    return np.asarray(value).shape[-1] == POSE_BINS


def _copy_motion(motion: Mapping[str, np.ndarray]) -> MotionDict:
    return {key: np.array(value, dtype=np.float32, copy=True) for key, value in motion.items()}


class MotionStitcher:
    """Per-frame stitching of generated motion onto one registered source (ditto_spec.md §3.5 step 1, §5.4).

    ``n_frames``: the number of output frames when known (sizes the blink schedule so the clip ends with open eyes,
    and places the fade-out); None when streaming (3000-frame blink schedule that wraps, no fade-out).
    ``stitch_network``: any callable ``(kp_source=(1,21,3), kp_driving=(1,21,3)) -> {"out": (1,21,3)}``.
    ``d0``: the relative-motion anchor; None = the first generated frame passed in (offline). Streaming passes the
    motion of the first LMDM clip's first frame (or calls :meth:`set_d0` before the first frame).

    Call it once per output frame, in order, from one thread: it caches the first frame's values (d0, the fade
    destination, the source pose for the gaze fix) as the reference does.
    """

    def __init__(
        self,
        source: Source,
        options: StitchOptions,
        n_frames: int | None,
        stitch_network: StitchNetwork | None,
        d0: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        if options.use_stitching and stitch_network is None:
            raise InputError("Stitching is on (use_stitching=True) but no stitching network was given.")
        if n_frames is not None and n_frames < 0:
            raise InputError(f"n_frames must be 0 or more, not {n_frames}.")
        self.source = source
        self.options = options
        self.n_frames = n_frames
        self._stitch = stitch_network
        self._d0: MotionDict | None = _copy_motion(d0) if d0 is not None else None
        self.drive_eyes = source.is_image if options.drive_eyes is None else bool(options.drive_eyes)
        self.driving_weights = self._driving_weights()

        template = options.blink_template
        self._template = None if template is None else np.asarray(template, dtype=np.float32)
        use_template = self.drive_eyes and self._template is not None
        self._a1, self._a2, self._a3 = expression_masks(self.drive_eyes, self._template is not None)
        self._lip_dims = keypoint_dims(LIP_KEYPOINTS)
        if use_template:
            assert self._template is not None
            rng = random.Random(options.blink_seed)
            self.blink_rows = blink_schedule(
                n_frames if n_frames is not None else DEFAULT_SCHEDULE_FRAMES,
                len(self._template),
                options.blink_mode,
                rng,
                interval=options.blink_interval,
                gaps=options.blink_gaps,
            )
        else:
            self.blink_rows = np.zeros(0, dtype=np.int64)

        fade_out = options.fade_out
        if n_frames is None and fade_out > 0:
            logger.warning("fade_out=%d is ignored: the number of output frames is not known.", fade_out)
            fade_out = 0
        if options.fade_type == "" and (options.fade_in > 0 or fade_out > 0):
            logger.warning('fade_in/fade_out have no effect with fade_type=""; set fade_type to "d0" or "s".')
        length = n_frames if n_frames is not None else options.fade_in
        self.fade_weights = fade_alphas(length, options.fade_in, fade_out)

        # Controls as float64 arrays once, so a per-frame list is not converted again on every frame.
        self._controls: dict[str, np.ndarray | None] = {
            name: None if getattr(options, name) is None else np.asarray(getattr(options, name), dtype=np.float64)
            for name in PER_FRAME_CONTROLS
        }
        delta_exp = options.delta_exp
        self._delta_exp = None if delta_exp is None else np.asarray(delta_exp, dtype=np.float32)
        self._fade_dst: MotionDict | None = None
        self._pose_s: tuple[float, float] | None = None
        self._x_s_image: np.ndarray | None = None
        logger.debug(
            "Motion stitching: keys %s, eyes %s, template %s, stitching %s",
            self.driving_weights,
            "driven" if self.drive_eyes else "source",
            use_template,
            options.use_stitching,
        )

    def _driving_weights(self) -> dict[str, float]:
        keys = self.options.driving_keys
        if keys is None:
            keys = IMAGE_DRIVING_KEYS if self.source.is_image else VIDEO_DRIVING_KEYS
        weights = {k: float(w) for k, w in keys.items()} if isinstance(keys, Mapping) else dict.fromkeys(keys, 1.0)
        if self.options.reference_scale is not None:
            source_scale = float(np.asarray(self.source.frames[0].motion["scale"]).reshape(-1)[0])
            ratio = self.options.reference_scale / source_scale
            weights = {k: w * ratio if k in ("exp", *POSE_KEYS) else w for k, w in weights.items()}
        return weights

    def _control_at(self, name: str, index: int) -> float | None:
        return _value_at(self._controls[name], index)

    @property
    def d0(self) -> MotionDict | None:
        return self._d0

    def set_d0(self, motion: Mapping[str, np.ndarray]) -> None:
        """Set the relative-motion anchor (streaming: the first LMDM clip's first frame)."""
        self._d0 = _copy_motion(motion)

    def retune(self, options: StitchOptions) -> None:
        """Take up changed live controls from the next frame on (a live stream; the stitch thread only).

        Re-read: the per-frame controls (:data:`PER_FRAME_CONTROLS`: pose offsets and gains, amplitudes), the
        driving-key weights (the pose amplitudes) and ``gaze_lock``. Everything the stitcher settled from its first
        frame or sized at the start (the anchor ``d0``, the blink schedule, the fades, the expression masks) is
        kept, so a change never restarts the motion.
        """
        self.options = options
        self.driving_weights = self._driving_weights()
        self._controls = {
            name: None if getattr(options, name) is None else np.asarray(getattr(options, name), dtype=np.float64)
            for name in PER_FRAME_CONTROLS
        }

    def __call__(self, gen_index: int, x_d_info: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(x_s, x_d) keypoints, (1, 21, 3) float32 each, for output frame ``gen_index``."""
        motion = self.motion(gen_index, x_d_info)
        x_s = self._source_keypoints(gen_index)
        x_d = transform_keypoints(motion)
        if self.options.use_stitching:
            assert self._stitch is not None
            x_d = np.asarray(self._stitch(kp_source=x_s, kp_driving=x_d)["out"], dtype=np.float32)
            x_d = x_d.reshape(1, NUM_KP, 3)
        return x_s, x_d

    def _source_keypoints(self, gen_index: int) -> np.ndarray:
        if self.source.is_image:
            if self._x_s_image is None:
                self._x_s_image = transform_keypoints(self.source.frames[0].motion)
            return self._x_s_image.copy()
        return transform_keypoints(self.source.frame(gen_index).motion)

    def motion(self, gen_index: int, x_d_info: Mapping[str, np.ndarray]) -> MotionDict:
        """The final driving motion of output frame ``gen_index`` (steps 1–9), before the keypoint transform."""
        if gen_index < 0:
            raise InputError(f"Output frame indices start at 0, not {gen_index}.")
        missing = [k for k in self.driving_weights if k not in x_d_info]
        if missing:
            raise InputError(f"The generated motion lacks {', '.join(missing)}.")
        source = self.source.frame(gen_index).motion
        if self.options.relative and self._d0 is None:
            self._d0 = _copy_motion(x_d_info)
        motion = self._mix(source, x_d_info, gen_index)
        motion["exp"] = self._mask_expression(motion["exp"], source["exp"], gen_index)
        vad = self._control_at("vad_alpha", gen_index)
        if vad is not None and vad < 1:
            motion["exp"] = vad * motion["exp"] + (1 - vad) * np.asarray(source["exp"], dtype=np.float32)
        self._control(motion, gen_index)
        self._fade(motion, source, gen_index)
        if self.drive_eyes and self.options.gaze_lock:
            self._fix_gaze(motion, source)
        return motion

    # -- steps 2 and 3 -------------------------------------------------------------------------------------------
    def _expression_gain(self, gen_index: int) -> np.ndarray:
        """(1, 63) gain on the driving expression: expression_amplitude everywhere, times lip_amplitude on lips."""
        expression = self._control_at("expression_amplitude", gen_index)
        lip = self._control_at("lip_amplitude", gen_index)
        gain = np.full(NUM_KP * 3, 1.0 if expression is None else expression, dtype=np.float32)
        gain[self._lip_dims] *= np.float32(1.0 if lip is None else lip)
        return gain.reshape(1, -1)

    def _mix(self, source: Mapping[str, np.ndarray], driving: Mapping[str, np.ndarray], index: int) -> MotionDict:
        mixed = _copy_motion(source)
        for key, weight in self.driving_weights.items():
            value = np.asarray(driving[key], dtype=np.float32)
            own = mixed[key]
            if self.options.relative:
                assert self._d0 is not None
                gain = self._expression_gain(index) * np.float32(weight) if key == "exp" else np.float32(weight)
                # Pose is made relative on the 66-bin logits, exactly as the reference (not in degrees).
                mixed[key] = (own + (value - self._d0[key]) * gain).astype(np.float32)
            elif key == "exp":
                # Absolute values scaled by the key weight (reference); our amplitudes act around the source.
                target, gain = value * np.float32(weight), self._expression_gain(index)
                if not np.all(gain == 1):  # skip at 1 so the reference's values come out bit for bit
                    target = own + (target - own) * gain
                mixed[key] = target.astype(np.float32)
            else:
                mixed[key] = (value * np.float32(weight)).astype(np.float32)
        return mixed

    # -- steps 4 and 5 -------------------------------------------------------------------------------------------
    def _mask_expression(self, exp: np.ndarray, exp_source: np.ndarray, index: int) -> np.ndarray:
        blink = np.zeros(NUM_KP * 3, dtype=np.float32)
        if self.blink_rows.size and self._template is not None:
            blink = self._template[self.blink_rows[index % self.blink_rows.size]]
        exp_source = np.asarray(exp_source, dtype=np.float32).reshape(1, -1)
        return (exp.reshape(1, -1) * self._a1 + exp_source * self._a2 + blink * self._a3).astype(np.float32)

    # -- step 7 ------------------------------------------------------------------------------------------------
    def _control(self, motion: MotionDict, index: int) -> None:
        options = self.options
        for angle in POSE_KEYS:
            delta = self._control_at(f"delta_{angle}", index)
            if delta is not None:
                motion[angle] = _degrees(motion[angle]) + np.float32(delta)
        for angle in POSE_KEYS:
            gain = self._control_at(f"alpha_{angle}", index)
            if gain is None:
                continue
            if options.alpha_in_logits:
                motion[angle] = (motion[angle] * np.float32(gain)).astype(np.float32)
            else:
                motion[angle] = _degrees(motion[angle]) * np.float32(gain)
        if self._delta_exp is not None:
            row = self._delta_exp
            if row.ndim == 2:
                row = row[index] if index < len(row) else np.full(row.shape[1], np.nan, np.float32)
            if not np.isnan(row).any():
                motion["exp"] = (motion["exp"] + row.reshape(1, -1)).astype(np.float32)

    # -- step 8 ------------------------------------------------------------------------------------------------
    def _fade(self, motion: MotionDict, source: Mapping[str, np.ndarray], index: int) -> None:
        fade_type = self.options.fade_type
        if fade_type == "d0" and self._fade_dst is None:
            self._fade_dst = _copy_motion(motion)
        if fade_type == "" or index >= self.fade_weights.size or math.isnan(self.fade_weights[index]):
            return
        alpha = np.float32(self.fade_weights[index])
        destination = self._fade_dst if fade_type == "d0" else source
        assert destination is not None
        for key in self.options.fade_keys:
            value, target = motion[key], np.asarray(destination[key], dtype=np.float32)
            if key in POSE_KEYS and not (_is_logits(value) and _is_logits(target)):
                value, target = _degrees(value), _degrees(target)
            motion[key] = (value * alpha + target * (1 - alpha)).astype(np.float32)

    # -- step 9 ------------------------------------------------------------------------------------------------
    def _fix_gaze(self, motion: MotionDict, source: Mapping[str, np.ndarray]) -> None:
        if self._pose_s is None:
            # Cached from the first source frame seen, as the reference does (for a video it never updates).
            self._pose_s = (float(_degrees(source["yaw"])[0, 0]), float(_degrees(source["pitch"])[0, 0]))
        yaw_s, pitch_s = self._pose_s
        dx = GAZE_YAW_RATIO * (float(_degrees(motion["yaw"])[0, 0]) - yaw_s)
        dy = GAZE_PITCH_RATIO * (float(_degrees(motion["pitch"])[0, 0]) - pitch_s)
        exp = motion["exp"].copy()
        # Turning right moves one eye's keypoint more than the other's; the pair swaps when turning left.
        first, second = (GAZE_WEAK, GAZE_STRONG) if dx > 0 else (GAZE_STRONG, GAZE_WEAK)
        exp[0, 33] += first * dx
        exp[0, 45] += second * dx
        exp[0, 34] -= GAZE_STRONG * dy
        exp[0, 46] -= GAZE_STRONG * dy
        motion["exp"] = exp
