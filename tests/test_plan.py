"""Controls → stage options: defaults come from the cfg, every control lands in the right stage option."""

from __future__ import annotations

import numpy as np
import pytest

from ditto_demo.pipeline.conditioning import emotion_probabilities
from ditto_demo.pipeline.config import ReleasedDefaults
from ditto_demo.pipeline.controls import Controls
from ditto_demo.pipeline.plan import Limits, emotion_for, motion_options, registration_options, stitch_options
from ditto_demo.pipeline.types import Source


def _source(is_image: bool) -> Source:
    return Source(frames=(), is_image=is_image, canonical_kp=np.zeros(63), face_box=(0, 0, 1, 1), faces_found=1)


DEFAULTS = ReleasedDefaults(steps=50, overlap=10, motion_smoothing=3, crop_scale=2.3, emotion=4,
                            overall_ctrl={"delta_pitch": 2}, fade_type="", blink_template=np.zeros((15, 63)))


def test_none_means_the_checkpoint_default() -> None:
    motion = motion_options(Controls(seed=3), DEFAULTS)
    assert (motion.steps, motion.overlap, motion.smooth_kernel, motion.seed) == (50, 10, 3, 3)
    assert motion_options(Controls(), DEFAULTS).seed is not None  # drawn, reportable
    reg = registration_options(Controls(), DEFAULTS, Limits())
    assert (reg.crop_scale, reg.crop_vx_ratio, reg.crop_vy_ratio, reg.crop_rotate) == (2.3, 0.0, -0.125, True)
    stitch = stitch_options(Controls(), DEFAULTS, _source(True), 10, seed=1)
    assert stitch.delta_pitch == 2.0  # the released +2° pitch compensation
    assert stitch.driving_keys is None
    assert (stitch.gaze_lock, stitch.use_stitching, stitch.relative) == (True, True, True)


def test_explicit_controls_override() -> None:
    controls = Controls(steps=8, overlap=20, motion_smoothing=1, crop_scale=3.0, crop_x=0.1, pitch_offset=-1.0,
                        yaw_offset=4.0, blinks="every", blink_every=40, stitching=False, relative_motion=False,
                        expression_amplitude=1.5, lip_amplitude=0.5)
    motion = motion_options(controls, DEFAULTS)
    assert (motion.steps, motion.overlap, motion.smooth_kernel) == (8, 20, 1)
    reg = registration_options(controls, DEFAULTS, Limits(max_source_frames=7))
    assert (reg.crop_scale, reg.crop_vx_ratio, reg.max_frames) == (3.0, 0.1, 7)
    stitch = stitch_options(controls, DEFAULTS, _source(True), 10, seed=1)
    assert (stitch.delta_pitch, stitch.delta_yaw) == (-1.0, 4.0)
    assert (stitch.blink_mode, stitch.blink_interval) == ("every", 40)
    assert not stitch.use_stitching
    assert not stitch.relative
    assert (stitch.expression_amplitude, stitch.lip_amplitude) == (1.5, 0.5)


def test_pose_amplitude_weights_drive_keys_on_images_only() -> None:
    controls = Controls(yaw_amplitude=0.5, roll_amplitude=0.0)
    image = stitch_options(controls, DEFAULTS, _source(True), 10, seed=1)
    assert image.driving_keys == {"exp": 1.0, "pitch": 1.0, "yaw": 0.5, "roll": 0.0, "t": 1.0}
    assert stitch_options(controls, DEFAULTS, _source(False), 10, seed=1).driving_keys is None


def test_pose_keyframes_become_per_frame_offsets() -> None:
    controls = Controls(yaw_offset=1.0, pose_keyframes=((0.0, 0.0, 0.0, 0.0), (1.0, 4.0, 10.0, -2.0)))
    stitch = stitch_options(controls, DEFAULTS, _source(True), 50, seed=1)
    yaw = np.asarray(stitch.delta_yaw)
    assert yaw.shape == (50,)
    assert yaw[0] == pytest.approx(1.0)
    assert yaw[12] == pytest.approx(1.0 + 10.0 * 12 / 25)  # interpolated
    assert yaw[40] == pytest.approx(11.0)  # held after the last keyframe
    assert np.asarray(stitch.delta_pitch)[25] == pytest.approx(2.0 + 4.0)  # on top of the cfg's +2°


def test_fades_in_frames_and_type() -> None:
    stitch = stitch_options(Controls(fade_in=0.5, fade_out=1.0), DEFAULTS, _source(True), 100, seed=1)
    assert (stitch.fade_in, stitch.fade_out, stitch.fade_type) == (13, 25, "d0")  # 12.5 rounds half up


def test_emotion_tables() -> None:
    default = emotion_for(Controls(), DEFAULTS, 10)
    np.testing.assert_allclose(default[0], emotion_probabilities(4))
    happy = emotion_for(Controls(emotion="happy"), DEFAULTS, 10)
    assert happy.shape == (1, 8)
    assert happy[0].argmax() == 3
    mix = emotion_for(Controls(emotion={"happy": 3, "sad": 1}), DEFAULTS, 10)
    assert mix[0, 3] > mix[0, 5] > mix[0, 0]
    timeline = emotion_for(Controls(emotion="neutral", emotion_timeline=((1.0, "angry"), (2.0, "happy"))),
                           DEFAULTS, 75)
    assert timeline.shape == (75, 8)
    assert [int(timeline[i].argmax()) for i in (0, 24, 25, 49, 50, 74)] == [4, 4, 0, 0, 3, 3]
