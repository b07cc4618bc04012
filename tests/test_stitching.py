"""Motion stitching: the spec's formulas (§5.4), step by step, and each control changing only what it should."""

from __future__ import annotations

import math
import random
from collections.abc import Mapping

import numpy as np
import pytest

from ditto_demo.errors import InputError
from ditto_demo.pipeline.blink import blink_schedule
from ditto_demo.pipeline.motion_space import MotionDict, pose_degrees, transform_keypoints
from ditto_demo.pipeline.stitching import (
    EYE_KEYPOINTS,
    LIP_KEYPOINTS,
    MotionStitcher,
    StitchOptions,
    expression_masks,
    fade_alphas,
    keypoint_dims,
)
from ditto_demo.pipeline.types import Source, SourceFrame
from ditto_demo.testing.reference import stitch_options_from_reference

LIP = keypoint_dims(LIP_KEYPOINTS)
EYE = keypoint_dims(EYE_KEYPOINTS)
OTHER = np.setdiff1d(np.arange(63), np.concatenate([LIP, EYE]))
GAZE = np.array([33, 34, 45, 46])


def _motion(rng: np.random.Generator, with_kp: bool = False) -> MotionDict:
    motion = {
        "scale": rng.uniform(0.8, 1.2, (1, 1)).astype(np.float32),
        "pitch": rng.normal(0, 1.5, (1, 66)).astype(np.float32),
        "yaw": rng.normal(0, 1.5, (1, 66)).astype(np.float32),
        "roll": rng.normal(0, 1.5, (1, 66)).astype(np.float32),
        "t": rng.normal(0, 0.05, (1, 3)).astype(np.float32),
        "exp": rng.normal(0, 0.02, (1, 63)).astype(np.float32),
    }
    if with_kp:
        motion["kp"] = rng.normal(0, 0.3, (1, 63)).astype(np.float32)
    return motion


def _source(is_image: bool = True, n_frames: int = 1, seed: int = 0) -> Source:
    rng = np.random.default_rng(seed)
    frames = tuple(
        SourceFrame(
            image=np.zeros((8, 8, 3), np.uint8),
            crop_to_image=np.eye(3),
            motion=_motion(rng, with_kp=True),
            appearance=np.zeros((1, 1, 1, 1, 1), np.float32),
            eye_open=np.zeros((1, 2), np.float32),
            eye_ball=np.zeros((1, 6), np.float32),
        )
        for _ in range(n_frames)
    )
    return Source(frames, is_image, frames[0].motion["kp"].reshape(-1), (0, 0, 8, 8), 1)


def _driving(n: int, seed: int = 1) -> list[MotionDict]:
    rng = np.random.default_rng(seed)
    return [_motion(rng) for _ in range(n)]


def _stitcher(source: Source, n_frames: int | None = 10, stitch=None, d0=None, **options) -> MotionStitcher:
    options.setdefault("use_stitching", False)
    return MotionStitcher(source, StitchOptions(**options), n_frames, stitch, d0)


def _deg(value: np.ndarray) -> float:
    return float(np.asarray(pose_degrees(value)).reshape(-1)[0])


def _run(stitcher: MotionStitcher, frames: list[MotionDict]) -> list[MotionDict]:
    return [stitcher.motion(i, frame) for i, frame in enumerate(frames)]


# -- step 2: relative mixing, in logit space ------------------------------------------------------------------------
def test_relative_mixing_is_done_on_pose_logits() -> None:
    source = _source()
    s = source.frames[0].motion
    d0, d = _driving(2)
    out = _stitcher(source, drive_eyes=False, gaze_lock=False).motion(0, d0)
    # The first frame is the anchor: the driven keys come back as the source's.
    for key in ("pitch", "yaw", "roll", "t"):
        np.testing.assert_allclose(out[key], s[key], atol=1e-6)
    stitcher = _stitcher(source, drive_eyes=False, gaze_lock=False)
    stitcher.motion(0, d0)
    out = stitcher.motion(1, d)
    for key in ("pitch", "yaw", "roll"):
        np.testing.assert_allclose(out[key], s[key] + (d[key] - d0[key]), atol=1e-6)
        assert out[key].shape == (1, 66)
        degree_space = _deg(s[key]) + _deg(d[key]) - _deg(d0[key])
        assert abs(_deg(out[key]) - degree_space) > 1e-3  # logits and degrees really differ here
    np.testing.assert_allclose(out["t"], s["t"] + d["t"] - d0["t"], atol=1e-7)
    np.testing.assert_allclose(out["exp"][0, LIP], (s["exp"] + d["exp"] - d0["exp"])[0, LIP], atol=1e-7)
    np.testing.assert_array_equal(out["scale"], s["scale"])  # images take scale from the source
    np.testing.assert_array_equal(out["kp"], s["kp"])


def test_d0_handed_in_is_the_anchor() -> None:
    source = _source()
    s = source.frames[0].motion
    anchor, first = _driving(2)
    out = _stitcher(source, d0=anchor, drive_eyes=False, gaze_lock=False).motion(0, first)
    np.testing.assert_allclose(out["yaw"], s["yaw"] + first["yaw"] - anchor["yaw"], atol=1e-6)
    late = _stitcher(source, drive_eyes=False, gaze_lock=False)
    late.set_d0(anchor)
    np.testing.assert_allclose(late.motion(0, first)["yaw"], out["yaw"])


def test_weights_scale_the_driving_delta_of_their_key() -> None:
    source = _source()
    s = source.frames[0].motion
    d0, d = _driving(2)
    stitcher = _stitcher(source, driving_keys={"exp": 1.0, "yaw": 0.5}, drive_eyes=False, gaze_lock=False)
    out = _run(stitcher, [d0, d])[1]
    np.testing.assert_allclose(out["yaw"], s["yaw"] + 0.5 * (d["yaw"] - d0["yaw"]), atol=1e-6)
    for key in ("pitch", "roll", "t", "scale"):  # not listed: from the source
        np.testing.assert_array_equal(out[key], s[key])


def test_reference_scale_multiplies_exp_and_pose_weights() -> None:
    source = _source()
    s = source.frames[0].motion
    ratio = 1.5 / float(s["scale"][0, 0])
    d0, d = _driving(2)
    out = _run(_stitcher(source, reference_scale=1.5, drive_eyes=False, gaze_lock=False), [d0, d])[1]
    np.testing.assert_allclose(out["pitch"], s["pitch"] + ratio * (d["pitch"] - d0["pitch"]), atol=1e-5)
    np.testing.assert_allclose(out["t"], s["t"] + d["t"] - d0["t"], atol=1e-7)  # t keeps weight 1


def test_absolute_mode_uses_generated_values() -> None:
    source = _source()
    d = _driving(1)[0]
    out = _stitcher(source, relative=False, drive_eyes=False, gaze_lock=False).motion(0, d)
    np.testing.assert_array_equal(out["yaw"], d["yaw"])
    np.testing.assert_array_equal(out["exp"][0, LIP], d["exp"][0, LIP])
    weighted = _stitcher(source, relative=False, driving_keys={"yaw": 0.5}, gaze_lock=False).motion(0, d)
    np.testing.assert_allclose(weighted["yaw"], d["yaw"] * 0.5)


# -- step 3: default key selection ----------------------------------------------------------------------------------
def test_default_keys_image_vs_video() -> None:
    d0, d = _driving(2)
    image = _stitcher(_source(True))
    assert set(image.driving_weights) == {"exp", "pitch", "yaw", "roll", "t"}
    assert image.drive_eyes is True
    video_source = _source(False, n_frames=3)
    video = _stitcher(video_source)
    assert set(video.driving_weights) == {"exp"}
    assert video.drive_eyes is False
    outs = _run(video, [d0, d, d, d])
    # Pose, translation and scale follow the (ping-pong indexed) source frame; only exp is driven.
    for index, out in enumerate(outs):
        frame = video_source.frame(index).motion
        for key in ("scale", "pitch", "yaw", "roll", "t", "kp"):
            np.testing.assert_array_equal(out[key], frame[key])
    assert video_source.frame(3) is video_source.frames[2]  # 0, 1, 2, 2 — the mirror index was exercised


# -- steps 4 and 5: expression masks and the blink template ---------------------------------------------------------
def test_mask_sets() -> None:
    assert LIP.size == 18
    assert EYE.size == 15
    for drive, template in ((True, False), (True, True), (False, False)):
        a1, a2, a3 = expression_masks(drive, template)
        np.testing.assert_array_equal(a1 + a2, np.ones(63))
        assert set(np.unique(a3)) <= {0.0, 1.0}
    a1, _, a3 = expression_masks(True, False)
    assert set(np.flatnonzero(a1)) == set(LIP) | set(EYE)
    assert not a3.any()
    a1, _, a3 = expression_masks(True, True)
    assert set(np.flatnonzero(a1)) == set(LIP)
    assert set(np.flatnonzero(a3)) == set(EYE)
    a1, _, a3 = expression_masks(False, True)
    assert set(np.flatnonzero(a1)) == set(LIP)
    assert not a3.any()


@pytest.mark.parametrize("mode", ["lmdm_eyes", "template_eyes", "source_eyes"])
def test_which_exp_dims_come_from_where(mode: str) -> None:
    source = _source()
    s_exp = source.frames[0].motion["exp"]
    d0, d = _driving(2)
    template = np.random.default_rng(5).normal(0, 0.01, (4, 63)).astype(np.float32)
    options = {"gaze_lock": False, "drive_eyes": mode != "source_eyes"}
    if mode == "template_eyes":
        options.update(blink_template=template, blink_mode="gaps", blink_gaps=(0,))
    stitcher = _stitcher(source, n_frames=20, **options)
    out = _run(stitcher, [d0, d])[1]["exp"]
    driven = s_exp + d["exp"] - d0["exp"]
    np.testing.assert_allclose(out[0, LIP], driven[0, LIP], atol=1e-7)
    np.testing.assert_array_equal(out[0, OTHER], s_exp[0, OTHER])
    if mode == "lmdm_eyes":
        np.testing.assert_allclose(out[0, EYE], driven[0, EYE], atol=1e-7)
    elif mode == "template_eyes":
        row = stitcher.blink_rows[1]
        assert row == 1  # with gaps of 0 the first blink starts at frame 0, so frame 1 plays row 1
        np.testing.assert_allclose(out[0, EYE], (s_exp + template[row])[0, EYE], atol=1e-7)
    else:
        np.testing.assert_array_equal(out[0, EYE], s_exp[0, EYE])


def test_blink_template_follows_the_schedule() -> None:
    source = _source()
    s_exp = source.frames[0].motion["exp"]
    template = np.arange(3 * 63, dtype=np.float32).reshape(3, 63) * 1e-3
    frames = [_driving(1)[0]] * 30
    stitcher = _stitcher(
        source, n_frames=30, blink_template=template, blink_mode="every", blink_interval=5, gaze_lock=False
    )
    expected_rows = blink_schedule(30, 3, "every", interval=5)
    np.testing.assert_array_equal(stitcher.blink_rows, expected_rows)
    assert expected_rows[5:8].tolist() == [0, 1, 2]
    for i, out in enumerate(_run(stitcher, frames)):
        np.testing.assert_allclose(out["exp"][0, EYE], (s_exp + template[expected_rows[i]])[0, EYE], atol=1e-6)


def test_natural_blinks_are_seeded() -> None:
    template = np.zeros((15, 63), np.float32)
    a = _stitcher(_source(), n_frames=1000, blink_template=template, blink_seed=4).blink_rows
    b = _stitcher(_source(), n_frames=1000, blink_template=template, blink_seed=4).blink_rows
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, blink_schedule(1000, 15, "natural", random.Random(4)))
    # No schedule when the eyes are not driven (video default) or when streaming without a known length: 3000.
    assert _stitcher(_source(False), blink_template=template).blink_rows.size == 0
    assert _stitcher(_source(), n_frames=None, blink_template=template).blink_rows.size == 3000


# -- step 6: vad_alpha blends ALL exp dims (reference quirk kept) ---------------------------------------------------
def test_vad_alpha_blends_every_exp_dim_towards_the_source() -> None:
    source = _source()
    s_exp = source.frames[0].motion["exp"]
    frames = _driving(2)
    base = _run(_stitcher(source, gaze_lock=False), frames)[1]
    out = _run(_stitcher(source, gaze_lock=False, vad_alpha=0.25), frames)[1]
    np.testing.assert_allclose(out["exp"], 0.25 * base["exp"] + 0.75 * s_exp, atol=1e-7)
    for key in ("pitch", "yaw", "roll", "t", "scale"):
        np.testing.assert_array_equal(out[key], base[key])


# -- step 7: pose offsets, gains, exp offset ------------------------------------------------------------------------
def test_pose_offset_changes_that_angle_only() -> None:
    source = _source()
    frames = _driving(2)
    base = _run(_stitcher(source, gaze_lock=False), frames)[1]
    out = _run(_stitcher(source, gaze_lock=False, delta_yaw=10.0), frames)[1]
    assert out["yaw"].shape == (1, 1)
    assert out["yaw"][0, 0] == pytest.approx(_deg(base["yaw"]) + 10.0, abs=1e-4)
    for key in ("pitch", "roll", "t", "scale", "exp", "kp"):
        np.testing.assert_array_equal(out[key], base[key])


def test_pose_gain_scales_degrees_unless_asked_for_logits() -> None:
    source = _source()
    frames = _driving(2)
    base = _run(_stitcher(source, gaze_lock=False), frames)[1]
    degrees = _run(_stitcher(source, gaze_lock=False, alpha_pitch=0.5), frames)[1]
    assert degrees["pitch"][0, 0] == pytest.approx(0.5 * _deg(base["pitch"]), abs=1e-4)
    logits = _run(_stitcher(source, gaze_lock=False, alpha_pitch=0.5, alpha_in_logits=True), frames)[1]
    np.testing.assert_allclose(logits["pitch"], 0.5 * base["pitch"], atol=1e-6)
    # With an offset present both agree: (degrees + offset) · gain.
    for in_logits in (False, True):
        both = _run(
            _stitcher(source, gaze_lock=False, delta_pitch=4.0, alpha_pitch=0.5, alpha_in_logits=in_logits), frames
        )[1]
        assert both["pitch"][0, 0] == pytest.approx(0.5 * (_deg(base["pitch"]) + 4.0), abs=1e-4)
    for key in ("yaw", "roll", "exp"):
        np.testing.assert_array_equal(degrees[key], base[key])


def test_delta_exp_and_per_frame_arrays() -> None:
    source = _source()
    frames = _driving(4)
    base = _run(_stitcher(source, gaze_lock=False), frames)
    offset = np.linspace(-0.01, 0.01, 63).astype(np.float32)
    out = _run(_stitcher(source, gaze_lock=False, delta_exp=offset), frames)
    np.testing.assert_allclose(out[2]["exp"], base[2]["exp"] + offset, atol=1e-7)
    # Per-frame offsets: NaN and frames past the end mean "not set".
    per_frame = _run(_stitcher(source, gaze_lock=False, delta_roll=[1.0, float("nan"), 3.0]), frames)
    assert per_frame[0]["roll"][0, 0] == pytest.approx(_deg(base[0]["roll"]) + 1.0, abs=1e-4)
    np.testing.assert_array_equal(per_frame[1]["roll"], base[1]["roll"])
    assert per_frame[2]["roll"][0, 0] == pytest.approx(_deg(base[2]["roll"]) + 3.0, abs=1e-4)
    np.testing.assert_array_equal(per_frame[3]["roll"], base[3]["roll"])


# -- our amplitude controls -----------------------------------------------------------------------------------------
def test_lip_amplitude_changes_lip_dims_only() -> None:
    source = _source()
    s_exp = source.frames[0].motion["exp"]
    d0, d = frames = _driving(2)
    base = _run(_stitcher(source), frames)[1]
    out = _run(_stitcher(source, lip_amplitude=2.0), frames)[1]
    np.testing.assert_allclose(out["exp"][0, LIP], (s_exp + 2.0 * (d["exp"] - d0["exp"]))[0, LIP], atol=1e-7)
    others = np.setdiff1d(np.arange(63), LIP)
    np.testing.assert_array_equal(out["exp"][0, others], base["exp"][0, others])
    for key in ("pitch", "yaw", "roll", "t", "scale"):
        np.testing.assert_array_equal(out[key], base[key])


def test_expression_amplitude_scales_every_driven_dim() -> None:
    source = _source()
    s_exp = source.frames[0].motion["exp"]
    d0, d = frames = _driving(2)
    base = _run(_stitcher(source, gaze_lock=False), frames)[1]
    out = _run(_stitcher(source, gaze_lock=False, expression_amplitude=0.5), frames)[1]
    driven = np.concatenate([LIP, EYE])
    np.testing.assert_allclose(out["exp"][0, driven], (s_exp + 0.5 * (d["exp"] - d0["exp"]))[0, driven], atol=1e-7)
    np.testing.assert_array_equal(out["exp"][0, OTHER], base["exp"][0, OTHER])
    np.testing.assert_array_equal(out["yaw"], base["yaw"])
    # 1.0 is exactly the reference (bit for bit).
    same = _run(_stitcher(source, gaze_lock=False, expression_amplitude=1.0, lip_amplitude=1.0), frames)[1]
    np.testing.assert_array_equal(same["exp"], base["exp"])


# -- step 8: fade ---------------------------------------------------------------------------------------------------
def test_fade_weights() -> None:
    np.testing.assert_allclose(fade_alphas(10, 4, 0)[:4], [0, 0.25, 0.5, 0.75])
    assert np.isnan(fade_alphas(10, 4, 0)[4:]).all()
    out = fade_alphas(10, 0, 4)
    np.testing.assert_allclose(out[5:], [1, 0.75, 0.5, 0.25, 0])  # frames N−fade_out−1 … N−1
    assert np.isnan(out[:5]).all()


@pytest.mark.parametrize("fade_type", ["d0", "s"])
def test_fade_reaches_the_destination_at_both_ends(fade_type: str) -> None:
    source = _source()
    n = 12
    frames = _driving(n)
    base = _run(_stitcher(source, n_frames=n, gaze_lock=False), frames)
    out = _run(_stitcher(source, n_frames=n, gaze_lock=False, fade_type=fade_type, fade_in=3, fade_out=3), frames)
    destination = base[0]["exp"] if fade_type == "d0" else source.frames[0].motion["exp"]
    np.testing.assert_allclose(out[0]["exp"], destination, atol=1e-7)
    np.testing.assert_allclose(out[-1]["exp"], destination, atol=1e-7)
    np.testing.assert_allclose(out[1]["exp"], base[1]["exp"] / 3 + destination * 2 / 3, atol=1e-7)
    for i in range(3, n - 4):  # untouched middle
        np.testing.assert_array_equal(out[i]["exp"], base[i]["exp"])
    for i in (0, n - 1):  # only "exp" is faded by default
        np.testing.assert_array_equal(out[i]["yaw"], base[i]["yaw"])


def test_fade_setup_never_overwrites_per_frame_controls() -> None:
    """Quirk 3 fixed: a per-frame pose offset on a fading frame still applies."""
    source = _source()
    frames = _driving(6)
    base = _run(_stitcher(source, n_frames=6, gaze_lock=False), frames)
    out = _run(_stitcher(source, n_frames=6, gaze_lock=False, fade_type="s", fade_in=3, delta_yaw=[5.0] * 6), frames)
    for i in range(3):
        assert out[i]["yaw"][0, 0] == pytest.approx(_deg(base[i]["yaw"]) + 5.0, abs=1e-4)


def test_fading_a_pose_key_in_degrees() -> None:
    source = _source()
    frames = _driving(3)
    out = _run(
        _stitcher(source, n_frames=3, gaze_lock=False, fade_type="s", fade_in=2, fade_keys=("yaw",), delta_yaw=6.0),
        frames,
    )
    assert out[0]["yaw"][0, 0] == pytest.approx(_deg(source.frames[0].motion["yaw"]), abs=1e-4)


# -- step 9: gaze ---------------------------------------------------------------------------------------------------
def test_gaze_lock_changes_only_the_four_eye_dims_by_the_formula() -> None:
    source = _source()
    s = source.frames[0].motion
    frames = _driving(2)
    off = _run(_stitcher(source, gaze_lock=False, delta_yaw=12.0, delta_pitch=-7.0), frames)[1]
    on = _run(_stitcher(source, gaze_lock=True, delta_yaw=12.0, delta_pitch=-7.0), frames)[1]
    changed = np.flatnonzero(on["exp"][0] != off["exp"][0])
    assert set(changed) <= set(GAZE)
    assert set(changed) == set(GAZE)
    dx = 0.26 * (on["yaw"][0, 0] - _deg(s["yaw"]))
    dy = 0.28 * (on["pitch"][0, 0] - _deg(s["pitch"]))
    first, second = (0.0007, 0.001) if dx > 0 else (0.001, 0.0007)
    expected = off["exp"][0].astype(np.float64).copy()
    expected[33] += first * dx
    expected[45] += second * dx
    expected[34] -= 0.001 * dy
    expected[46] -= 0.001 * dy
    np.testing.assert_allclose(on["exp"][0], expected, atol=1e-6)
    for key in ("pitch", "yaw", "roll", "t"):
        np.testing.assert_array_equal(on[key], off[key])


def test_gaze_uses_the_first_source_frame_processed() -> None:
    source = _source(False, n_frames=3)
    frames = _driving(3)
    stitcher = _stitcher(source, drive_eyes=True, driving_keys=("exp", "yaw", "pitch"))
    stitcher.motion(0, frames[0])
    first = source.frames[0].motion
    assert stitcher._pose_s == pytest.approx((_deg(first["yaw"]), _deg(first["pitch"])), abs=1e-4)
    stitcher.motion(1, frames[1])  # frame 1 has another pose, the cached one stays
    assert stitcher._pose_s == pytest.approx((_deg(first["yaw"]), _deg(first["pitch"])), abs=1e-4)


# -- step 10: transform and stitching network ----------------------------------------------------------------------
class _FakeStitch:
    def __init__(self) -> None:
        self.calls: list[dict[str, np.ndarray]] = []

    def __call__(self, **inputs: np.ndarray) -> dict[str, np.ndarray]:
        self.calls.append(inputs)
        return {"out": inputs["kp_driving"] + 1.0}


def test_stitch_network_applied_only_when_asked() -> None:
    source = _source()
    frames = _driving(2)
    fake = _FakeStitch()
    on = MotionStitcher(source, StitchOptions(use_stitching=True), 2, fake)
    plain = MotionStitcher(source, StitchOptions(use_stitching=False), 2, fake)
    x_s_on, x_d_on = on(0, frames[0])
    assert len(fake.calls) == 1
    assert set(fake.calls[0]) == {"kp_source", "kp_driving"}
    assert fake.calls[0]["kp_source"].shape == (1, 21, 3)
    assert fake.calls[0]["kp_source"].dtype == np.float32
    x_s, x_d = plain(0, frames[0])
    assert len(fake.calls) == 1  # not called
    np.testing.assert_array_equal(x_d_on, x_d + 1.0)
    np.testing.assert_array_equal(x_s, transform_keypoints(source.frames[0].motion))
    np.testing.assert_array_equal(x_s_on, x_s)
    check = MotionStitcher(source, StitchOptions(use_stitching=False), 2, None)
    check.motion(0, frames[0])
    np.testing.assert_array_equal(x_d, transform_keypoints(check.motion(0, frames[0])))
    assert x_d.shape == (1, 21, 3)
    assert x_d.dtype == np.float32
    with pytest.raises(InputError):
        MotionStitcher(source, StitchOptions(), 2, None)


# -- the whole order of operations against an independent oracle -------------------------------------------------
def _oracle(source_motion: Mapping, d0: Mapping, d: Mapping, dest_exp: np.ndarray, alpha: float) -> MotionDict:
    """§5.4 written out for: image defaults, LMDM eyes, vad 0.8, delta_pitch 2, alpha_yaw 0.9 (degrees),
    delta_exp, fade "s" with weight ``alpha``, gaze fix."""
    s = {k: np.asarray(v, np.float64) for k, v in source_motion.items()}
    x = {k: v.copy() for k, v in s.items()}
    for key in ("exp", "pitch", "yaw", "roll", "t"):
        x[key] = s[key] + (np.asarray(d[key], np.float64) - np.asarray(d0[key], np.float64))
    mask = np.zeros(63)
    mask[LIP] = 1
    mask[EYE] = 1
    x["exp"] = x["exp"] * mask + s["exp"] * (1 - mask)
    x["exp"] = 0.8 * x["exp"] + 0.2 * s["exp"]
    x["pitch"] = np.array([[_deg(x["pitch"]) + 2.0]])
    x["yaw"] = np.array([[_deg(x["yaw"]) * 0.9]])
    x["exp"] = x["exp"] + np.full(63, 0.001)
    x["exp"] = alpha * x["exp"] + (1 - alpha) * dest_exp
    dx = 0.26 * (x["yaw"][0, 0] - _deg(s["yaw"]))
    dy = 0.28 * (x["pitch"][0, 0] - _deg(s["pitch"]))
    x["exp"][0, 33] += (0.0007 if dx > 0 else 0.001) * dx
    x["exp"][0, 45] += (0.001 if dx > 0 else 0.0007) * dx
    x["exp"][0, 34] -= 0.001 * dy
    x["exp"][0, 46] -= 0.001 * dy
    return x


def test_full_order_of_operations_matches_the_spec() -> None:
    source = _source(seed=3)
    frames = _driving(6, seed=4)
    options = {
        "vad_alpha": 0.8,
        "delta_pitch": 2.0,
        "alpha_yaw": 0.9,
        "delta_exp": np.full(63, 0.001, np.float32),
        "fade_type": "s",
        "fade_in": 2,
    }
    fake = _FakeStitch()
    stitcher = MotionStitcher(source, StitchOptions(**options), 6, fake)
    weights = fade_alphas(6, 2, 0)
    for i, frame in enumerate(frames):
        x_s, x_d = stitcher(i, frame)
        alpha = 1.0 if math.isnan(weights[i]) else weights[i]
        expected = _oracle(source.frames[0].motion, frames[0], frame, source.frames[0].motion["exp"], alpha)
        np.testing.assert_allclose(x_d, transform_keypoints(expected) + 1.0, atol=2e-5)
        np.testing.assert_allclose(x_s, transform_keypoints(source.frames[0].motion), atol=0)


# -- options --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "bad",
    [
        {"fade_type": "x"},
        {"driving_keys": ("exp", "kp")},
        {"driving_keys": "exp"},
        {"blink_template": np.zeros((3, 62))},
        {"blink_mode": "often"},
        {"vad_alpha": 1.5},
        {"delta_yaw": float("inf")},
        {"delta_exp": np.zeros(5)},
        {"fade_in": -1},
        {"fade_keys": ("exp", "nose")},
    ],
)
def test_bad_options_are_input_errors(bad: dict) -> None:
    with pytest.raises(InputError):
        StitchOptions(**bad)


def test_from_reference_kwargs() -> None:
    template = np.zeros((15, 63), np.float32)
    options = stitch_options_from_reference(
        {
            "use_d_keys": {"exp": 1.0, "yaw": 0.5},
            "drive_eye": True,
            "delta_eye_arr": template,
            "delta_eye_open_n": [70, 80],
            "fade_type": "d0",
            "fade_out_keys": ["exp"],
            "flag_stitching": False,
            "overall_ctrl_info": {"delta_pitch": 2, "vad_alpha": 0.9},
        },
        ctrl_info={1: {"delta_pitch": 5}, 3: {"alpha_yaw": 0.5}},
        n_frames=5,
        fade_in=2,
    )
    assert options.driving_keys == {"exp": 1.0, "yaw": 0.5}
    assert options.drive_eyes is True
    assert options.blink_mode == "gaps"
    assert options.blink_gaps == (70, 80)
    assert options.fade_type == "d0"
    assert options.fade_in == 2
    assert options.use_stitching is False
    assert options.alpha_in_logits is True
    np.testing.assert_array_equal(options.delta_pitch, [2, 5, 2, 2, 2])  # per-frame wins, overall elsewhere
    assert options.vad_alpha == 0.9
    alpha_yaw = np.asarray(options.alpha_yaw)
    assert np.isnan(alpha_yaw[[0, 1, 2, 4]]).all()
    assert alpha_yaw[3] == 0.5
    assert stitch_options_from_reference({"delta_eye_open_n": -1}).blink_mode == "off"
    with pytest.raises(InputError):
        stitch_options_from_reference({}, bogus=1)
