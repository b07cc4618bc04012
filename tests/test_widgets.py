"""The control panel shows any Controls and reads it back unchanged; bad text is a user error."""

from __future__ import annotations

import gradio as gr
import pytest

from ditto_demo.errors import InputError
from ditto_demo.pipeline.config import ReleasedDefaults
from ditto_demo.pipeline.controls import Controls, control_info
from ditto_demo.pipeline.plan import control_defaults
from ditto_demo.ui.widgets import ControlPanel

CHECKPOINT = control_defaults(ReleasedDefaults(steps=10, overall_ctrl={"delta_pitch": 2}))


@pytest.fixture(scope="module")
def panel() -> ControlPanel:
    with gr.Blocks():
        return ControlPanel(CHECKPOINT)


def test_one_widget_per_control_in_order(panel: ControlPanel) -> None:
    assert panel.names == list(control_info())
    assert len(panel.components) == len(panel.names)


def test_initial_values_are_the_defaults_made_concrete(panel: ControlPanel) -> None:
    controls = panel.to_controls(*[c.value for c in panel.components])
    assert controls == Controls(**CHECKPOINT)
    assert controls.steps == 10


@pytest.mark.parametrize(
    "controls",
    [
        Controls(**CHECKPOINT),
        Controls(steps=25, seed=5, emotion="sad", drive_eyes=True, blinks="every", blink_every=40, yaw_offset=-3.5,
                 framing="crop", crop_scale=2.6, crop_rotate=False, fade_in=0.4),
        Controls(emotion={"happy": 0.7, "surprise": 0.3}, emotion_timeline=((0, "neutral"), (2.5, {"happy": 1})),
                 pose_keyframes=((0, 0, 0, 0), (1.5, 5, -10, 2)), drive_eyes=False),
    ],
)
def test_round_trip(panel: ControlPanel, controls: Controls) -> None:
    shown = panel.values_for(controls)
    again = panel.to_controls(*shown)
    for name in control_info():
        expected = getattr(controls, name)
        if expected is None and name in CHECKPOINT:
            expected = CHECKPOINT[name]
        assert getattr(again, name) == expected, name


def test_bad_text_is_a_user_error(panel: ControlPanel) -> None:
    values = panel.values_for(Controls())
    values[panel.names.index("pose_keyframes")] = "0:a:b:c"
    with pytest.raises(InputError, match="Cannot read the pose keyframes"):
        panel.to_controls(*values)
    values = panel.values_for(Controls())
    values[panel.names.index("emotion")] = "joy"
    with pytest.raises(InputError, match="Unknown emotion 'joy'"):
        panel.to_controls(*values)


def test_quality_values_are_the_strings_gradio_documents(panel: ControlPanel) -> None:
    """Gradio documents a Dropdown's values as strings; the step count is read back from text or a number."""
    quality = panel.components[panel.names.index("steps")]
    assert all(isinstance(value, str) for _, value in quality.choices)
    assert quality.api_info()["enum"] == ["10", "25", "50"]
    values = panel.values_for(Controls())
    assert values[panel.names.index("steps")] == "10"  # the checkpoint's default, shown as its choice
    for given, steps in (("50", 50), (25, 25), (" 12 ", 12), (30.0, 30), ("", None)):
        values[panel.names.index("steps")] = given
        assert panel.to_controls(*values).steps == steps, given
    for bad, message in (("lots", "Cannot read the quality 'lots'"), ("10.5", "must be a whole number"),
                         ("1", "must be between 2 steps and 100 steps")):
        values[panel.names.index("steps")] = bad
        with pytest.raises(InputError, match=message):
            panel.to_controls(*values)
