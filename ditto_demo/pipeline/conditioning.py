"""The per-frame condition rows LMDM reads: speech, emotion, the source's eyes and its canonical keypoints.

Each output frame i gets a 1103-d row (ditto_spec.md §2.6.2, reference ``condition_handler.py``)::

    [0:1024]     HuBERT feature of frame i
    [1024:1032]  emotion probabilities (Angry, Disgust, Fear, Happy, Neutral, Sad, Surprise, Contempt)
    [1032:1034]  eye openness (L, R) of the source frame shown at i
    [1034:1040]  iris displacement (L_x, R_x, L_y, R_y, L_z, R_z) of that source frame
    [1040:1103]  "sc": canonical keypoints of source frame 0 (the same for every frame)

The emotion, eye and keypoint parts describe *who* is talking and *how*; they are fixed when a request starts, so
they live in an immutable :class:`Conditioning` that turns any run of features (all N at once offline, one
80-frame window at a time when streaming) into rows. Frame indices below 0 — the streaming warm-up rows that
precede real frame 0 — use frame 0's emotion and eyes, as the reference does.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ditto_demo.errors import InputError
from ditto_demo.pipeline.motion_space import MOTION_DIM, NUM_KP, pack_motion
from ditto_demo.pipeline.timebase import HUBERT_DIM
from ditto_demo.pipeline.types import Source

__all__ = [
    "COND_DIM",
    "COND_SLICES",
    "EMOTIONS",
    "EMOTION_NAMES",
    "NEUTRAL",
    "Conditioning",
    "EmotionLabel",
    "EmotionSpec",
    "build_conditioning",
    "emotion_index",
    "emotion_mix",
    "emotion_probabilities",
    "emotion_table",
    "eye_indices",
]

#: Emotion classes in the order of the condition vector (HSEmotion's classes, reordered by the authors): the one
#: list of emotions in the package.
EMOTIONS: tuple[str, ...] = ("Angry", "Disgust", "Fear", "Happy", "Neutral", "Sad", "Surprise", "Contempt")
#: The same classes as the controls, the app, the CLI and the HTTP API spell them (lower case, same order).
EMOTION_NAMES: tuple[str, ...] = tuple(label.lower() for label in EMOTIONS)
NEUTRAL = EMOTIONS.index("Neutral")
_EMO_DIM = len(EMOTIONS)
_SC_DIM = NUM_KP * 3
#: Width of each part of a condition row, in row order (the layout in the module docstring).
_PART_WIDTHS: tuple[tuple[str, int], ...] = (
    ("audio", HUBERT_DIM), ("emotion", _EMO_DIM), ("eye_open", 2), ("eye_ball", 6), ("canonical_kp", _SC_DIM),
)  # fmt: skip
_PART_ENDS = tuple(itertools.accumulate(width for _, width in _PART_WIDTHS))
#: Where each part sits in a condition row.
COND_SLICES: dict[str, slice] = {
    name: slice(end - width, end) for (name, width), end in zip(_PART_WIDTHS, _PART_ENDS, strict=True)
}
#: Width of a condition row: 1103, as the released LMDM reads it.
COND_DIM = _PART_ENDS[-1]
#: The logit a chosen label gets before the softmax: makes one label ≈ 0.99766 and two ≈ 0.4995 each.
_LABEL_LOGIT = 8.0

EmotionLabel = int | str
#: A label, several labels (mixed), a list of label lists (a per-frame table of mixes), an (8,) probability vector
#: or an (M, 8) per-frame probability table.
EmotionSpec = EmotionLabel | Sequence[EmotionLabel] | Sequence[Sequence[EmotionLabel]] | np.ndarray


def emotion_index(label: EmotionLabel) -> int:
    """Class index 0..7 of a label given as an index or a name (case-insensitive, e.g. ``"happy"``)."""
    if isinstance(label, str):
        names = [name.lower() for name in EMOTIONS]
        key = label.strip().lower()
        if key in names:
            return names.index(key)
        raise InputError(f"Unknown emotion {label!r}: use one of {', '.join(EMOTIONS)} (or an index 0-7).")
    if isinstance(label, (bool, np.bool_)) or not isinstance(label, (int, np.integer)):
        raise InputError(f"An emotion label must be an index 0-7 or a name such as 'Happy', got {label!r}.")
    if not 0 <= int(label) < _EMO_DIM:
        raise InputError(f"Emotion index {int(label)} is out of range: use 0-7 ({', '.join(EMOTIONS)}).")
    return int(label)


def _softmax(logits: np.ndarray) -> np.ndarray:
    """float32 softmax in the order scipy evaluates it (max-shifted exp over the sum), so values match bit for bit."""
    shifted = np.exp(logits - logits.max())
    return shifted / shifted.sum()


def emotion_probabilities(label_or_labels: EmotionLabel | Sequence[EmotionLabel]) -> np.ndarray:
    """(8,) float32: softmax of 8 at each chosen class and 0 elsewhere — how the reference encodes labels.

    One label gives ≈ 0.99766 for it and ≈ 3.35e-4 for the others; two labels ≈ 0.4995 each. (The network was
    trained on averaged classifier probabilities, so a near-one-hot vector is inside what it has seen.)
    """
    # a list / tuple holds several labels; anything else is one label (emotion_index rejects what is not)
    labels = list(label_or_labels) if isinstance(label_or_labels, (list, tuple)) else [label_or_labels]
    if not labels:
        raise InputError("An emotion needs at least one label, e.g. 'Neutral' or 4.")
    logits = np.zeros(_EMO_DIM, dtype=np.float32)
    for label in labels:
        logits[emotion_index(label)] = _LABEL_LOGIT
    return _softmax(logits)


def emotion_mix(weights: Mapping[EmotionLabel, float] | Sequence[float] | np.ndarray) -> np.ndarray:
    """(8,) float32 probabilities from non-negative weights, normalised to sum 1.

    ``{"Happy": 2, "Surprise": 1}`` → 2/3 Happy, 1/3 Surprise; a length-8 sequence is taken in class order. Unlike
    :func:`emotion_probabilities` there is no softmax: the weights are the probabilities, as in the training data.
    """
    vector = np.zeros(_EMO_DIM, dtype=np.float64)
    if isinstance(weights, Mapping):
        for label, weight in weights.items():
            vector[emotion_index(label)] += float(weight)
    else:
        values = np.asarray(weights, dtype=np.float64).reshape(-1)
        if values.size != _EMO_DIM:
            raise InputError(f"An emotion mix needs 8 weights (one per class), got {values.size}.")
        vector[:] = values
    if not np.all(np.isfinite(vector)) or np.any(vector < 0):
        raise InputError("Emotion weights must be finite and not negative.")
    total = vector.sum()
    if total <= 0:
        raise InputError("Emotion weights sum to 0: give at least one class a positive weight.")
    return (vector / total).astype(np.float32)


def emotion_table(spec: EmotionSpec) -> np.ndarray:
    """(M, 8) float32 table from any accepted emotion input; M = 1 means one emotion for every frame.

    * int / name → one label; a list of ints / names → one mixed label (reference: ``[3, 4]``);
    * a list of lists → one mix per frame (reference: ``[[4], [3, 4], ...]``);
    * an (8,) array → one probability vector; an (M, 8) array → a per-frame table (looked up cyclically).
    """
    if isinstance(spec, np.ndarray):
        table = np.asarray(spec, dtype=np.float32)
        if table.ndim == 1:
            table = table.reshape(1, -1)
        if table.ndim != 2 or table.shape[1] != _EMO_DIM or table.shape[0] == 0:
            raise InputError(f"An emotion array must have shape (8,) or (M, 8), got {spec.shape}.")
        if not np.all(np.isfinite(table)):
            raise InputError("The emotion array contains NaN or infinite values.")
        return table
    if isinstance(spec, (str, int, np.integer)):
        return emotion_probabilities(spec).reshape(1, _EMO_DIM)
    items = list(spec)
    if not items:
        raise InputError("The emotion list is empty: give a label such as 'Neutral' or 4.")
    if all(isinstance(item, (str, int, np.integer)) for item in items):
        return emotion_probabilities(items).reshape(1, _EMO_DIM)
    if all(isinstance(item, (list, tuple)) for item in items):
        return np.stack([emotion_probabilities(item) for item in items])
    if all(isinstance(item, (float, np.floating)) for item in items):
        return emotion_table(np.asarray(items, dtype=np.float32))
    raise InputError(
        "Unsupported emotion value: use a label (0-7 or a name), a list of labels, a list of label lists, "
        "or an array of probabilities with 8 columns."
    )


def eye_indices(start_index: int, count: int, num_frames: int, *, frame0_only: bool = False) -> np.ndarray:
    """Source-frame index of the eye features for output frames start..start+count−1.

    Videos loop back and forth (mirror index, like the rendered frames), negative indices clamp to 0, and an image
    — or ``frame0_only`` (the reference's ``eye_f0_mode``) — always uses frame 0.
    """
    if num_frames <= 0:
        raise ValueError("num_frames must be positive")
    if num_frames == 1 or frame0_only:
        return np.zeros(count, dtype=np.int64)
    index = np.maximum(np.arange(start_index, start_index + count, dtype=np.int64), 0)
    turn, offset = np.divmod(index, num_frames)
    return np.where(turn % 2 == 0, offset, num_frames - 1 - offset)


def build_conditioning(
    features: np.ndarray,
    emotion: np.ndarray,
    eye_open: np.ndarray,
    eye_ball: np.ndarray,
    canonical_kp: np.ndarray,
    *,
    start_index: int = 0,
    eye_f0_mode: bool = False,
) -> np.ndarray:
    """(n, 1103) float32 condition rows for output frames start_index .. start_index + n − 1.

    ``emotion`` is an (M, 8) table used cyclically (frame i → row max(i, 0) mod M, so a one-row table applies to
    every frame); ``eye_open`` (K, 2) and ``eye_ball`` (K, 6) are per source frame (see :func:`eye_indices`);
    ``canonical_kp`` (63,) is repeated.
    """
    features = np.asarray(features, dtype=np.float32)
    if features.ndim != 2 or features.shape[1] != HUBERT_DIM:
        raise ValueError(f"features must have shape (n, {HUBERT_DIM}), got {features.shape}")
    emotion = np.asarray(emotion, dtype=np.float32).reshape(-1, _EMO_DIM)
    eye_open = np.asarray(eye_open, dtype=np.float32).reshape(-1, 2)
    eye_ball = np.asarray(eye_ball, dtype=np.float32).reshape(-1, 6)
    sc = np.asarray(canonical_kp, dtype=np.float32).reshape(_SC_DIM)
    if len(emotion) == 0 or len(eye_open) == 0 or len(eye_open) != len(eye_ball):
        raise ValueError("the emotion table and the eye features need at least one row (and as many opens as balls)")
    n = features.shape[0]
    frame = np.maximum(np.arange(start_index, start_index + n, dtype=np.int64), 0)
    eyes = eye_indices(start_index, n, len(eye_open), frame0_only=eye_f0_mode)
    rows = np.empty((n, COND_DIM), dtype=np.float32)
    rows[:, COND_SLICES["audio"]] = features
    rows[:, COND_SLICES["emotion"]] = emotion[frame % len(emotion)]
    rows[:, COND_SLICES["eye_open"]] = eye_open[eyes]
    rows[:, COND_SLICES["eye_ball"]] = eye_ball[eyes]
    rows[:, COND_SLICES["canonical_kp"]] = sc
    return rows


def _frozen(array: np.ndarray) -> np.ndarray:
    out = np.array(array, dtype=np.float32, copy=True)
    out.setflags(write=False)
    return out


@dataclass(frozen=True, eq=False)
class Conditioning:
    """Everything besides speech that conditions one request's motion; immutable, so stages can share it.

    ``source_motion`` is the 265-d motion vector of the conditioning identity's frame 0: LMDM's first ``kp_cond``
    and the vector the ``fix_kp_cond`` rule resets to. Build it with :meth:`from_source` (the registered portrait)
    or :meth:`from_arrays` (e.g. a reference identity, the reference's ``ch_info``).
    """

    emotion: np.ndarray
    eye_open: np.ndarray
    eye_ball: np.ndarray
    canonical_kp: np.ndarray
    source_motion: np.ndarray
    eye_f0_mode: bool = False

    def __post_init__(self) -> None:
        emotion = _frozen(self.emotion).reshape(-1, _EMO_DIM)
        eye_open = _frozen(self.eye_open).reshape(-1, 2)
        eye_ball = _frozen(self.eye_ball).reshape(-1, 6)
        if len(emotion) == 0 or len(eye_open) == 0 or len(eye_open) != len(eye_ball):
            raise ValueError("Conditioning needs an emotion row and matching eye_open / eye_ball rows")
        # frozen dataclass: normalised copies are stored once, here
        object.__setattr__(self, "emotion", emotion)
        object.__setattr__(self, "eye_open", eye_open)
        object.__setattr__(self, "eye_ball", eye_ball)
        object.__setattr__(self, "canonical_kp", _frozen(self.canonical_kp).reshape(_SC_DIM))
        object.__setattr__(self, "source_motion", _frozen(self.source_motion).reshape(MOTION_DIM))

    @classmethod
    def from_arrays(
        cls,
        *,
        source_motion: np.ndarray,
        canonical_kp: np.ndarray,
        eye_open: np.ndarray,
        eye_ball: np.ndarray,
        emotion: EmotionSpec = NEUTRAL,
        eye_f0_mode: bool = False,
    ) -> Conditioning:
        """From raw arrays: eye_open (K, 2), eye_ball (K, 6), canonical_kp (63,), source_motion (265,)."""
        return cls(
            emotion=emotion_table(emotion),
            eye_open=np.asarray(eye_open),
            eye_ball=np.asarray(eye_ball),
            canonical_kp=np.asarray(canonical_kp),
            source_motion=np.asarray(source_motion),
            eye_f0_mode=eye_f0_mode,
        )

    @classmethod
    def from_source(cls, source: Source, emotion: EmotionSpec = NEUTRAL, *, eye_f0_mode: bool = False) -> Conditioning:
        """From a registered portrait: its eyes per frame, its ``canonical_kp`` and frame 0's motion."""
        return cls.from_arrays(
            source_motion=pack_motion(source.frames[0].motion),
            canonical_kp=source.canonical_kp,
            eye_open=np.concatenate([np.asarray(f.eye_open).reshape(1, 2) for f in source.frames]),
            eye_ball=np.concatenate([np.asarray(f.eye_ball).reshape(1, 6) for f in source.frames]),
            emotion=emotion,
            eye_f0_mode=eye_f0_mode,
        )

    def rows(self, features: np.ndarray, start_index: int = 0) -> np.ndarray:
        """(n, 1103) rows for the features of output frames start_index, start_index + 1, … (may start below 0)."""
        return build_conditioning(
            features,
            self.emotion,
            self.eye_open,
            self.eye_ball,
            self.canonical_kp,
            start_index=start_index,
            eye_f0_mode=self.eye_f0_mode,
        )
