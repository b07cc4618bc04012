"""Every user control of a run, in one typed, validated, JSON-serialisable object.

The app, the CLI and the Python API all build a :class:`Controls`; validation happens here and nowhere else.
Each field carries metadata (label, range, unit, help) from which the CLI builds its flags and the app its widgets,
so a control is described once. ``None`` means "the checkpoint's default" (from the released cfg pickle, see
:mod:`ditto_demo.pipeline.config`); :meth:`Controls.resolved` fills those in.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from typing import Any, Literal, get_args

from ditto_demo.errors import InputError
from ditto_demo.pipeline.conditioning import EMOTION_NAMES as EMOTIONS  # the classes, as controls spell them

__all__ = [
    "BLINK_MODES",
    "EMOTIONS",
    "FRAMINGS",
    "ControlInfo",
    "Controls",
    "control_info",
    "parse_emotion",
    "parse_keyframes",
    "parse_timeline",
]

BlinkMode = Literal["natural", "off", "every"]
Framing = Literal["full", "crop", "side_by_side"]
BLINK_MODES: tuple[str, ...] = get_args(BlinkMode)
FRAMINGS: tuple[str, ...] = get_args(Framing)

EmotionValue = str | Mapping[str, float]


@dataclass(frozen=True)
class ControlInfo:
    """How to present and check one control."""

    label: str
    help: str
    group: str
    low: float | None = None
    high: float | None = None
    unit: str = ""
    step: float | None = None
    choices: tuple[str, ...] = ()


def _info(*args: Any, **kwargs: Any) -> dict[str, ControlInfo]:
    """Field metadata holding the control's :class:`ControlInfo`."""
    return {"info": ControlInfo(*args, **kwargs)}


@dataclass(frozen=True)
class Controls:
    """Controls of one generation. Defaults reproduce the released configuration."""

    # Quality
    steps: int | None = field(default=None, metadata=_info(
        "Diffusion steps", "Denoising steps per motion clip. More is slightly smoother, fewer is faster; the "
        "checkpoint's default is used when empty (50 offline, 10 for streaming).", "quality", 2, 100, "steps", 1))
    seed: int | None = field(default=None, metadata=_info(
        "Seed", "Makes a run exactly reproducible. Empty picks a random seed; the seed used is reported.",
        "quality", 0, 2**31 - 1, step=1))
    # Emotion
    emotion: EmotionValue | None = field(default=None, metadata=_info(
        "Emotion", "A class, or a mix such as {\"happy\": 0.7, \"surprise\": 0.3}. The model also infers emotion "
        "from the voice, so the effect is subtle. Empty uses the checkpoint's default.", "emotion",
        choices=EMOTIONS))
    emotion_timeline: tuple[tuple[float, EmotionValue], ...] = field(default=(), metadata=_info(
        "Emotion timeline", "Emotion changes at given times: [[0, \"neutral\"], [2.5, \"happy\"]] (seconds). "
        "Overrides Emotion from the first entry on.", "emotion"))
    # Eyes
    drive_eyes: bool | None = field(default=None, metadata=_info(
        "Eye motion", "Let the model move the eyes (blinks, gaze). Empty: on for photos, off for videos (the "
        "video's own eyes are kept).", "eyes"))
    gaze_lock: bool = field(default=True, metadata=_info(
        "Gaze lock", "Counter-rotate the eyes when the head turns, so the gaze stays on the camera (the released "
        "head-pose to gaze correction).", "eyes"))
    blinks: BlinkMode = field(default="natural", metadata=_info(
        "Blinks", "natural: random gaps of 2.4 to 4 s; every: a blink every N frames; off: no blinks.", "eyes",
        choices=BLINK_MODES))
    blink_every: int = field(default=100, metadata=_info(
        "Blink every", "Frames between blinks when Blinks is 'every' (25 frames = 1 s).", "eyes", 20, 500,
        "frames", 1))
    # Head pose
    pitch_offset: float | None = field(default=None, metadata=_info(
        "Pitch offset", "Nod the head up (+) or down (-) for the whole clip. The checkpoint default (+2°) "
        "corrects the model's slight downward chin.", "pose", -30, 30, "°", 0.5))
    yaw_offset: float = field(default=0.0, metadata=_info(
        "Yaw offset", "Turn the head left/right for the whole clip.", "pose", -45, 45, "°", 0.5))
    roll_offset: float = field(default=0.0, metadata=_info(
        "Roll offset", "Tilt the head sideways for the whole clip.", "pose", -30, 30, "°", 0.5))
    pose_keyframes: tuple[tuple[float, float, float, float], ...] = field(default=(), metadata=_info(
        "Pose keyframes", "Extra per-frame offsets [[seconds, pitch, yaw, roll], ...], interpolated linearly "
        "between keyframes and held after the last.", "pose"))
    pitch_amplitude: float = field(default=1.0, metadata=_info(
        "Nod amplitude", "Scale of the generated up/down head motion (0 freezes it).", "pose", 0, 2, "×", 0.05))
    yaw_amplitude: float = field(default=1.0, metadata=_info(
        "Turn amplitude", "Scale of the generated left/right head motion.", "pose", 0, 2, "×", 0.05))
    roll_amplitude: float = field(default=1.0, metadata=_info(
        "Tilt amplitude", "Scale of the generated sideways head tilt.", "pose", 0, 2, "×", 0.05))
    # Expression
    expression_amplitude: float = field(default=1.0, metadata=_info(
        "Expression amplitude", "Scale of every generated facial movement (lips, eyes). Above 1.3 teeth and "
        "lips may distort.", "expression", 0, 2, "×", 0.05))
    lip_amplitude: float = field(default=1.0, metadata=_info(
        "Lip amplitude", "Extra scale of the mouth movement only.", "expression", 0, 2, "×", 0.05))
    # Motion
    relative_motion: bool = field(default=True, metadata=_info(
        "Relative motion", "Apply generated motion as changes from the portrait's own pose and expression "
        "(recommended); off uses the generated values as they are.", "motion"))
    stitching: bool = field(default=True, metadata=_info(
        "Stitching", "Keep the shoulders and face border aligned with the portrait (the stitching network).",
        "motion"))
    overlap: int | None = field(default=None, metadata=_info(
        "Clip overlap", "Frames shared by consecutive 80-frame motion clips: more is smoother and slower. "
        "Default: the checkpoint's offline (10); streaming 75, one clip per 200 ms of speech.", "motion", 1, 79,
        "frames", 1))
    motion_smoothing: int | None = field(default=None, metadata=_info(
        "Motion smoothing", "Width of the moving average over head pose (1 disables).", "motion", 1, 25,
        "frames", 1))
    fade_in: float = field(default=0.0, metadata=_info(
        "Fade in", "Seconds over which the expression eases in from rest.", "motion", 0, 5, "s", 0.1))
    fade_out: float = field(default=0.0, metadata=_info(
        "Fade out", "Seconds over which the expression eases back to rest at the end.", "motion", 0, 5, "s", 0.1))
    # Portrait crop
    crop_scale: float | None = field(default=None, metadata=_info(
        "Crop scale", "Size of the face crop relative to the face (larger shows more hair and shoulders, "
        "face smaller). Default 2.3.", "crop", 1.5, 4.0, "×", 0.05))
    crop_x: float | None = field(default=None, metadata=_info(
        "Crop x", "Horizontal shift of the crop, as a fraction of its size (+ right).", "crop", -0.5, 0.5,
        step=0.01))
    crop_y: float | None = field(default=None, metadata=_info(
        "Crop y", "Vertical shift of the crop along the face axis (- up: more forehead). Default -0.125.", "crop",
        -0.5, 0.5, step=0.01))
    crop_rotate: bool | None = field(default=None, metadata=_info(
        "Straighten crop", "Rotate the crop so the face is upright.", "crop"))
    source_smoothing: int | None = field(default=None, metadata=_info(
        "Video smoothing", "Width of the moving average over a video portrait's head motion.", "crop", 1, 31,
        "frames", 1))
    # Output
    framing: Framing = field(default="full", metadata=_info(
        "Output framing", "full: the animated face pasted back into the portrait; crop: the 512×512 face crop; "
        "side_by_side: the portrait and the result next to each other.", "output", choices=FRAMINGS))

    def __post_init__(self) -> None:
        for f in fields(self):
            _check(f.name, getattr(self, f.name), f.metadata["info"])
        object.__setattr__(self, "emotion", _normalise_emotion("emotion", self.emotion))
        timeline = []
        last = -math.inf
        for entry in self.emotion_timeline:
            if not isinstance(entry, (list, tuple)) or len(entry) != 2:
                raise InputError("Each emotion timeline entry must be [seconds, emotion].")
            time = _number("emotion timeline time", entry[0])
            if time < 0 or time < last:
                raise InputError("Emotion timeline times must be non-negative and in increasing order.")
            last = time
            timeline.append((time, _normalise_emotion("emotion timeline", entry[1])))
        object.__setattr__(self, "emotion_timeline", tuple(timeline))
        keyframes = []
        last = -math.inf
        for entry in self.pose_keyframes:
            if not isinstance(entry, (list, tuple)) or len(entry) != 4:
                raise InputError("Each pose keyframe must be [seconds, pitch, yaw, roll].")
            values = tuple(_number("pose keyframe", v) for v in entry)
            if values[0] < 0 or values[0] < last or any(abs(v) > 90 for v in values[1:]):
                raise InputError("Pose keyframes need increasing non-negative times and angles within ±90°.")
            last = values[0]
            keyframes.append(values)
        object.__setattr__(self, "pose_keyframes", tuple(keyframes))

    # ----------------------------------------------------------------------------------------------- JSON

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values (tuples become lists)."""
        return json.loads(json.dumps(asdict(self)))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Controls:
        """Controls from a dict such as :meth:`to_dict` wrote; unknown names are an error, missing ones default."""
        if not isinstance(data, Mapping):
            raise InputError("Settings must be a JSON object of control names and values.")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"Unknown control(s) {', '.join(unknown)}; valid names: {', '.join(sorted(known))}.")
        values = dict(data)
        for name in ("emotion_timeline", "pose_keyframes"):
            if name in values and values[name] is not None:
                values[name] = tuple(tuple(v) if isinstance(v, list) else v for v in values[name])
        return cls(**values)

    @classmethod
    def from_json(cls, text: str) -> Controls:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"The settings file is not valid JSON ({exc.msg} at line {exc.lineno}).") from exc
        return cls.from_dict(data)

    def with_changes(self, **changes: Any) -> Controls:
        """A copy with some controls changed (validated again)."""
        return replace(self, **changes)


def control_info() -> dict[str, tuple[ControlInfo, Any]]:
    """``{name: (info, default)}`` for every control, in declaration order (for CLIs and UIs)."""
    return {
        f.name: (f.metadata["info"], None if f.default is MISSING else f.default) for f in fields(Controls)
    }


# ------------------------------------------------------------------------------------------- text formats
# Compact text forms of the structured controls, shared by the CLI flags and the app's text boxes. Errors in the
# values surface when the result is given to Controls (one validation point); unreadable text raises ValueError.


def parse_emotion(text: str) -> Any:
    """``happy``, ``happy:0.7,surprise:0.3`` or JSON → an emotion value for :class:`Controls` (empty → None)."""
    text = text.strip()
    if not text:
        return None
    if text.startswith("{"):
        return json.loads(text)
    if ":" not in text:
        return text
    mix = {}
    for part in text.split(","):
        label, _, weight = part.partition(":")
        mix[label.strip()] = float(weight)
    return mix


def parse_timeline(text: str) -> Any:
    """``0:neutral,2.5:happy`` or JSON ``[[0, "neutral"], ...]`` → timeline entries (empty → none)."""
    text = text.strip()
    if not text:
        return ()
    if text.startswith("["):
        return json.loads(text)
    entries = []
    for part in text.split(","):
        time, _, emotion = part.partition(":")
        entries.append((float(time), emotion.strip()))
    return entries


def parse_keyframes(text: str) -> Any:
    """``0:0:0:0;1.5:5:-10:2`` (seconds:pitch:yaw:roll) or JSON → pose keyframes (empty → none)."""
    text = text.strip()
    if not text:
        return ()
    if text.startswith("["):
        return json.loads(text)
    return [tuple(float(v) for v in part.split(":")) for part in text.split(";") if part.strip()]



# ---------------------------------------------------------------------------------------------- validation


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(f"{name} must be a finite number; got {value!r}.")
    return float(value)


def _check(name: str, value: Any, info: ControlInfo) -> None:
    if value is None or name in ("emotion", "emotion_timeline", "pose_keyframes"):
        return
    if info.choices:
        if value not in info.choices:
            raise InputError(f"Control '{name}' must be one of {', '.join(info.choices)}; got {value!r}.")
        return
    if info.low is None:  # a switch
        if not isinstance(value, bool):
            raise InputError(f"Control '{name}' must be true or false; got {value!r}.")
        return
    number = _number(f"Control '{name}'", value)
    if info.step == 1 and not float(number).is_integer():
        raise InputError(f"Control '{name}' must be a whole number; got {value!r}.")
    if not info.low <= number <= (info.high if info.high is not None else math.inf):
        unit = f" {info.unit}" if info.unit and info.unit not in ("×", "°") else info.unit
        raise InputError(
            f"Control '{name}' must be between {info.low:g}{unit} and {info.high:g}{unit}; got {value!r}."
        )


def _normalise_emotion(name: str, value: Any) -> EmotionValue | None:
    """A class name (case-insensitive) or a mix {class: weight} with non-negative weights summing to > 0."""
    if value is None:
        return None
    if isinstance(value, str):
        key = value.strip().lower()
        if key not in EMOTIONS:
            raise InputError(f"Unknown {name} {value!r}; choose from {', '.join(EMOTIONS)}.")
        return key
    if isinstance(value, Mapping):
        mix: dict[str, float] = {}
        for key, weight in value.items():
            label = str(key).strip().lower()
            if label not in EMOTIONS:
                raise InputError(f"Unknown {name} {key!r} in the mix; choose from {', '.join(EMOTIONS)}.")
            if _number(f"{name} weight", weight) < 0:
                raise InputError(f"{name} weights must not be negative.")
            mix[label] = float(weight)
        if sum(mix.values()) <= 0:
            raise InputError(f"An {name} mix needs at least one positive weight.")
        return mix
    raise InputError(f"{name} must be a class name or a mix of weights; got {value!r}.")
