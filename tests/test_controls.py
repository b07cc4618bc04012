"""Controls: one validation point, JSON round trip, metadata for every field."""

from __future__ import annotations

import json
from dataclasses import fields

import pytest

from ditto_demo.errors import InputError
from ditto_demo.pipeline.controls import EMOTIONS, Controls, control_info


def test_defaults_are_valid_and_round_trip() -> None:
    controls = Controls()
    assert Controls.from_json(controls.to_json()) == controls
    assert controls.to_dict()["framing"] == "full"


def test_round_trip_with_every_kind_of_value() -> None:
    controls = Controls(
        steps=10, seed=42, emotion={"Happy": 0.7, "surprise": 0.3},
        emotion_timeline=((0, "neutral"), (2.5, {"happy": 1})), drive_eyes=False, gaze_lock=False,
        blinks="every", blink_every=60, pitch_offset=-3.5, yaw_offset=10, roll_offset=1,
        pose_keyframes=((0, 0, 0, 0), (1.5, 5, -10, 2)), pitch_amplitude=0.5, expression_amplitude=1.2,
        lip_amplitude=0.8, relative_motion=False, stitching=False, overlap=20, motion_smoothing=5,
        fade_in=0.5, fade_out=1, crop_scale=2.5, crop_x=0.1, crop_y=-0.2, crop_rotate=False, source_smoothing=7,
        framing="side_by_side",
    )
    assert controls.emotion == {"happy": 0.7, "surprise": 0.3}  # names normalised
    text = controls.to_json()
    again = Controls.from_json(text)
    assert again == controls
    assert json.loads(text)["pose_keyframes"] == [[0, 0, 0, 0], [1.5, 5, -10, 2]]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"steps": 1}, "'steps' must be between 2 steps and 100 steps"),
        ({"steps": 10.5}, "'steps' must be a whole number"),
        ({"yaw_offset": 90}, "'yaw_offset' must be between -45° and 45°"),
        ({"lip_amplitude": -0.1}, "'lip_amplitude' must be between 0× and 2×"),
        ({"blinks": "sometimes"}, "'blinks' must be one of natural, off, every"),
        ({"framing": "wide"}, "'framing' must be one of full, crop, side_by_side"),
        ({"gaze_lock": "yes"}, "'gaze_lock' must be true or false"),
        ({"emotion": "joy"}, "Unknown emotion 'joy'"),
        ({"emotion": {"happy": 0}}, "at least one positive weight"),
        ({"emotion": {"happy": -1, "sad": 2}}, "must not be negative"),
        ({"emotion_timeline": ((2, "happy"), (1, "sad"))}, "increasing order"),
        ({"pose_keyframes": ((0, 0, 0),)}, r"\[seconds, pitch, yaw, roll\]"),
        ({"fade_in": float("nan")}, "must be a finite number"),
        ({"seed": -1}, "'seed' must be between 0"),
    ],
)
def test_invalid_values_name_the_control_and_range(changes: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        Controls(**changes)
    with pytest.raises(InputError, match=message):
        Controls().with_changes(**changes)


def test_unknown_names_and_bad_json() -> None:
    with pytest.raises(InputError, match="Unknown control\\(s\\) volume"):
        Controls.from_dict({"volume": 3})
    with pytest.raises(InputError, match="not valid JSON"):
        Controls.from_json("{steps: 3")
    with pytest.raises(InputError, match="JSON object"):
        Controls.from_json("[1, 2]")


def test_every_field_is_described() -> None:
    info = control_info()
    assert list(info) == [f.name for f in fields(Controls)]
    for name, (meta, _default) in info.items():
        assert meta.label
        assert len(meta.help) > 20, name
    assert info["emotion"][0].choices == EMOTIONS


def test_readme_documents_every_control() -> None:
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for name, (meta, _default) in control_info().items():
        assert f"| `{name}` / `--{name.replace('_', '-')}" in readme, f"README lacks the control {name}"
        assert meta.help in readme, f"README's description of {name} is out of date"
