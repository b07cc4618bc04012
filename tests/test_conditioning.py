"""The 1103-d condition rows, emotion encodings and per-frame lookups of ditto_demo.pipeline.conditioning."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from ditto_demo.errors import InputError
from ditto_demo.pipeline.conditioning import (
    COND_DIM,
    COND_SLICES,
    EMOTIONS,
    NEUTRAL,
    Conditioning,
    build_conditioning,
    emotion_index,
    emotion_mix,
    emotion_probabilities,
    emotion_table,
    eye_indices,
)
from ditto_demo.pipeline.motion_space import mirror_index, pack_motion
from ditto_demo.pipeline.types import Source, SourceFrame


def test_layout_slices_and_order() -> None:
    names = list(COND_SLICES)
    assert names == ["audio", "emotion", "eye_open", "eye_ball", "canonical_kp"]
    widths = [COND_SLICES[n].stop - COND_SLICES[n].start for n in names]
    assert widths == [1024, 8, 2, 6, 63]
    assert sum(widths) == COND_DIM == 1103
    assert all(COND_SLICES[a].stop == COND_SLICES[b].start for a, b in itertools.pairwise(names))

    feats = np.full((4, 1024), 0.5, np.float32)
    emo = np.arange(8, dtype=np.float32).reshape(1, 8)
    eye_open = np.array([[10, 11]], np.float32)
    eye_ball = np.array([[20, 21, 22, 23, 24, 25]], np.float32)
    sc = np.arange(63, dtype=np.float32) + 100
    rows = build_conditioning(feats, emo, eye_open, eye_ball, sc)
    assert rows.shape == (4, 1103)
    assert rows.dtype == np.float32
    expected = np.concatenate([feats[0], emo[0], eye_open[0], eye_ball[0], sc])
    np.testing.assert_array_equal(rows, np.tile(expected, (4, 1)))


def test_emotion_label_encodings() -> None:
    assert EMOTIONS[NEUTRAL] == "Neutral"
    assert EMOTIONS[3] == "Happy"
    assert EMOTIONS[7] == "Contempt"
    one = emotion_probabilities(3)
    assert one.dtype == np.float32
    assert one.shape == (8,)
    assert one[3] == pytest.approx(0.99766, abs=1e-5)
    assert np.delete(one, 3) == pytest.approx(np.full(7, 3.35e-4), abs=1e-6)
    two = emotion_probabilities([3, 4])
    assert two[[3, 4]] == pytest.approx([0.4995, 0.4995], abs=1e-4)
    assert two.sum() == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_array_equal(emotion_probabilities("happy"), one)
    assert emotion_index("Contempt") == 7
    for bad in (8, -1, "bored", 2.0, True):
        with pytest.raises(InputError):
            emotion_probabilities(bad)  # type: ignore[arg-type]
    with pytest.raises(InputError):
        emotion_probabilities([])


def test_emotion_mix_normalises_weights() -> None:
    mix = emotion_mix({"Happy": 2, 6: 1})
    assert mix[3] == pytest.approx(2 / 3)
    assert mix[6] == pytest.approx(1 / 3)
    assert mix.sum() == pytest.approx(1)
    np.testing.assert_allclose(emotion_mix([1, 1, 0, 0, 0, 0, 0, 2]), [0.25, 0.25, 0, 0, 0, 0, 0, 0.5])
    for bad in ({"Happy": -1}, [0] * 8, [1, 2, 3]):
        with pytest.raises(InputError):
            emotion_mix(bad)  # type: ignore[arg-type]


def test_emotion_table_accepts_every_reference_form() -> None:
    assert emotion_table(4).shape == (1, 8)
    np.testing.assert_array_equal(emotion_table([3, 4])[0], emotion_probabilities([3, 4]))
    per_frame = emotion_table([[4], [3, 4], [3]])
    assert per_frame.shape == (3, 8)
    np.testing.assert_array_equal(per_frame[2], emotion_probabilities(3))
    probs = np.full(8, 0.125, np.float32)
    np.testing.assert_array_equal(emotion_table(probs), probs.reshape(1, 8))
    assert emotion_table(np.zeros((600, 8))).shape == (600, 8)
    for bad in (np.zeros((3, 7)), np.array([np.nan] * 8), [], [[1], 2]):
        with pytest.raises(InputError):
            emotion_table(bad)  # type: ignore[arg-type]


def test_per_frame_emotion_is_looked_up_cyclically_with_negative_indices_at_zero() -> None:
    table = np.zeros((3, 8), np.float32)
    table[:, 0] = [10, 11, 12]
    feats = np.zeros((8, 1024), np.float32)
    eyes = np.zeros((1, 2)), np.zeros((1, 6))

    def emo_column(start: int) -> list[float]:
        rows = build_conditioning(feats, table, *eyes, np.zeros(63), start_index=start)
        return rows[:, COND_SLICES["emotion"].start].tolist()

    assert emo_column(0) == [10, 11, 12, 10, 11, 12, 10, 11]
    assert emo_column(-2) == [10, 10, 10, 11, 12, 10, 11, 12]
    assert emo_column(5) == [12, 10, 11, 12, 10, 11, 12, 10]


def test_eye_features_follow_the_mirror_index() -> None:
    count = 3
    assert eye_indices(0, 9, count).tolist() == [0, 1, 2, 2, 1, 0, 0, 1, 2]
    assert eye_indices(0, 20, 4).tolist() == [mirror_index(i, 4) for i in range(20)]
    assert eye_indices(-3, 5, count).tolist() == [0, 0, 0, 0, 1]
    assert eye_indices(5, 4, count, frame0_only=True).tolist() == [0, 0, 0, 0]
    assert eye_indices(7, 3, 1).tolist() == [0, 0, 0]  # an image has one frame

    eye_open = np.array([[0, 1], [2, 3], [4, 5]], np.float32)
    eye_ball = np.arange(18, dtype=np.float32).reshape(3, 6)
    rows = build_conditioning(np.zeros((6, 1024)), np.ones((1, 8)), eye_open, eye_ball, np.zeros(63), start_index=2)
    np.testing.assert_array_equal(rows[:, COND_SLICES["eye_open"]], eye_open[[2, 2, 1, 0, 0, 1]])
    np.testing.assert_array_equal(rows[:, COND_SLICES["eye_ball"]], eye_ball[[2, 2, 1, 0, 0, 1]])
    f0 = build_conditioning(
        np.zeros((4, 1024)), np.ones((1, 8)), eye_open, eye_ball, np.zeros(63), start_index=2, eye_f0_mode=True
    )
    np.testing.assert_array_equal(f0[:, COND_SLICES["eye_open"]], eye_open[[0, 0, 0, 0]])


def _source(frames: int) -> Source:
    rng = np.random.default_rng(0)

    def frame(i: int) -> SourceFrame:
        motion = {
            "scale": np.array([[1.5 + i]], np.float32),
            "pitch": rng.standard_normal((1, 66)).astype(np.float32),
            "yaw": rng.standard_normal((1, 66)).astype(np.float32),
            "roll": rng.standard_normal((1, 66)).astype(np.float32),
            "t": rng.standard_normal((1, 3)).astype(np.float32),
            "exp": rng.standard_normal((1, 63)).astype(np.float32),
            "kp": rng.standard_normal((1, 63)).astype(np.float32),
        }
        return SourceFrame(
            image=np.zeros((8, 8, 3), np.uint8),
            crop_to_image=np.eye(3),
            motion=motion,
            appearance=np.zeros((1, 1, 1, 1, 1), np.float32),
            eye_open=np.array([[i, i + 0.5]], np.float32),
            eye_ball=np.full((1, 6), i, np.float32),
        )

    all_frames = tuple(frame(i) for i in range(frames))
    return Source(
        frames=all_frames,
        is_image=frames == 1,
        canonical_kp=all_frames[0].motion["kp"].reshape(63),
        face_box=(0, 0, 8, 8),
        faces_found=1,
    )


def test_conditioning_from_source() -> None:
    source = _source(4)
    cond = Conditioning.from_source(source, emotion="Happy")
    np.testing.assert_array_equal(cond.source_motion, pack_motion(source.frames[0].motion))
    assert cond.source_motion[0] == pytest.approx(0.5)  # scale is stored minus one
    np.testing.assert_array_equal(cond.canonical_kp, source.canonical_kp)
    rows = cond.rows(np.zeros((10, 1024), np.float32), start_index=-2)
    assert rows.shape == (10, 1103)
    np.testing.assert_array_equal(rows[:, 1032], [0, 0, 0, 1, 2, 3, 3, 2, 1, 0])
    np.testing.assert_array_equal(rows[:, COND_SLICES["emotion"]], np.tile(emotion_probabilities(3), (10, 1)))
    np.testing.assert_array_equal(rows[:, COND_SLICES["canonical_kp"]], np.tile(source.canonical_kp, (10, 1)))
    assert not cond.emotion.flags.writeable  # shared between threads: immutable
    still = Conditioning.from_source(source, eye_f0_mode=True).rows(np.zeros((5, 1024)), start_index=3)
    np.testing.assert_array_equal(still[:, 1032], 0)
    with pytest.raises(ValueError, match="features"):
        cond.rows(np.zeros((3, 1000)))
