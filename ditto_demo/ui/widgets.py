"""Gradio widgets for every control, built from the :class:`Controls` metadata (labels, ranges, help texts).

A :class:`ControlPanel` creates one component per control, grouped in accordions, in the order of the
``Controls`` fields. ``to_controls(*values)`` turns the components' values back into a validated ``Controls``
(errors are ``InputError`` sentences), and ``values_for(controls)`` gives the values that show a ``Controls`` —
used by "load settings" and "reset to defaults". Controls whose default is "the checkpoint's" are shown with the
checkpoint's concrete value, so every widget always holds a real setting.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import gradio as gr

from ditto_demo.errors import InputError
from ditto_demo.pipeline.controls import (
    EMOTIONS,
    ControlInfo,
    Controls,
    control_info,
    parse_emotion,
    parse_keyframes,
    parse_timeline,
)

__all__ = ["GROUP_TITLES", "QUALITY_PRESETS", "ControlPanel"]

GROUP_TITLES = {
    "quality": "Quality and seed",
    "emotion": "Emotion",
    "eyes": "Eyes: gaze and blinks",
    "pose": "Head pose",
    "expression": "Expression",
    "motion": "Motion and fades",
    "crop": "Portrait crop",
    "output": "Output framing",
}
#: The quality presets offered for ``steps`` (diffusion steps per motion clip).
QUALITY_PRESETS = {"Fast (10 steps)": 10, "Balanced (25 steps)": 25, "Best (50 steps)": 50}
_DEFAULT_EMOTION = "Checkpoint default (follows the voice)"
_TRISTATE = {"auto": None, "on": True, "off": False}
#: Tips for the controls typed as text: they show the text the box reads (the controls' own help shows the JSON
#: that settings files and the API use).
_TEXT_TIPS = {
    "emotion": "An emotion, or a mix such as happy:0.7, surprise:0.3. The model also infers emotion from the voice, "
               "so the effect is subtle. The checkpoint default follows the voice.",
    "emotion_timeline": "Emotion changes at given seconds, such as 0:neutral, 2.5:happy. Overrides Emotion from "
                        "the first entry on.",
    "pose_keyframes": "Extra head offsets at given seconds, as seconds:pitch:yaw:roll separated by semicolons, such "
                      "as 0:0:0:0; 2:5:-10:0; interpolated between keyframes and held after the last.",
}


def _describe(name: str, info: ControlInfo) -> str:
    return _TEXT_TIPS.get(name, info.help)


class ControlPanel:
    """One widget per control. Must be created inside a ``gr.Blocks`` context."""

    def __init__(
        self,
        checkpoint_defaults: Mapping[str, Any],
        *,
        open_groups: tuple[str, ...] = ("emotion", "pose"),
        exclude: tuple[str, ...] = (),
        hidden: tuple[str, ...] = (),
    ) -> None:
        """``exclude``: controls without a widget; ``hidden``: widgets created hidden (the page shows them when
        they matter, like the seed box while random seeds are off)."""
        self.checkpoint_defaults = dict(checkpoint_defaults)
        self.names: list[str] = []
        self.components: list[gr.Component] = []
        infos = control_info()
        groups: dict[str, list[str]] = {}
        for name, (info, _default) in infos.items():
            if name not in exclude:
                groups.setdefault(info.group, []).append(name)
        for group, names in groups.items():
            with gr.Accordion(GROUP_TITLES.get(group, group.title()), open=group in open_groups):
                for name in names:
                    info, default = infos[name]
                    self.names.append(name)
                    self.components.append(self._widget(name, info, default, visible=name not in hidden))

    # ------------------------------------------------------------------------------------------- widgets

    def _initial(self, name: str, default: Any) -> Any:
        return self.checkpoint_defaults.get(name, default) if default is None else default

    def _widget(self, name: str, info: ControlInfo, default: Any, *, visible: bool = True) -> gr.Component:
        value = self._display(name, self._initial(name, default))
        common: dict[str, Any] = {"label": info.label, "info": _describe(name, info), "value": value,
                                  "visible": visible}
        if name == "steps":
            choices = dict(QUALITY_PRESETS)
            checkpoint = self.checkpoint_defaults.get("steps")
            if checkpoint is not None and checkpoint not in choices.values():
                choices[f"Checkpoint default ({checkpoint} steps)"] = checkpoint
            # String values: Gradio's API documents a Dropdown's values as strings and clients send them so;
            # ``_parse`` turns them back into the step count. Custom values let API callers who pass the number
            # (``steps=25``) through, and let a visitor type a step count; the Controls check bounds either.
            return gr.Dropdown(choices=[(k, str(v)) for k, v in choices.items()], allow_custom_value=True,
                               **{**common, "label": "Quality"})
        if name == "seed":
            return gr.Number(precision=0, minimum=0, maximum=info.high, **{**common, "label": "Seed"})
        if name == "emotion":
            return gr.Dropdown(choices=[_DEFAULT_EMOTION, *EMOTIONS], allow_custom_value=True, **common)
        if name in ("emotion_timeline", "pose_keyframes"):
            example = "0:neutral, 2.5:happy" if name == "emotion_timeline" else "0:0:0:0; 2:5:-10:0"
            return gr.Textbox(placeholder=example, lines=1, **common)
        if name == "drive_eyes":
            return gr.Radio(choices=list(_TRISTATE), **common)
        if info.choices:
            return gr.Radio(choices=list(info.choices), **common)
        if info.low is None:
            return gr.Checkbox(**common)
        return gr.Slider(minimum=info.low, maximum=info.high, step=info.step or 0.01, **common)

    # -------------------------------------------------------------------------------------------- values

    @staticmethod
    def _display(name: str, value: Any) -> Any:
        """A control's value as its widget shows it."""
        if name == "emotion":
            if value is None:
                return _DEFAULT_EMOTION
            if isinstance(value, Mapping):
                return ", ".join(f"{k}:{v:g}" for k, v in value.items())
            return value
        if name == "emotion_timeline":
            if any(not isinstance(e, str) for _, e in value or ()):  # mixes need the JSON form
                return json.dumps([[t, e] for t, e in value])
            return ", ".join(f"{t:g}:{e}" for t, e in value or ())
        if name == "pose_keyframes":
            return "; ".join(":".join(f"{v:g}" for v in frame) for frame in value or ())
        if name == "drive_eyes":
            return {None: "auto", True: "on", False: "off"}[value]
        if name == "steps":
            return None if value is None else str(value)
        return value

    def values_for(self, controls: Controls) -> list[Any]:
        """Widget values showing ``controls`` (checkpoint-default fields show the checkpoint's value)."""
        return [self._display(name, self._initial(name, getattr(controls, name))) for name in self.names]

    def to_controls(self, *values: Any) -> Controls:
        """Validated :class:`Controls` from the widgets' values (in ``names`` order)."""
        if len(values) != len(self.names):
            raise ValueError(f"expected {len(self.names)} values, got {len(values)}")
        data: dict[str, Any] = {}
        for name, value in zip(self.names, values, strict=True):
            data[name] = self._parse(name, value)
        return Controls.from_dict(data)

    @staticmethod
    def _parse(name: str, value: Any) -> Any:
        try:
            if name == "emotion":
                return None if value in (None, "", _DEFAULT_EMOTION) else parse_emotion(str(value))
            if name == "emotion_timeline":
                return parse_timeline(value or "")
            if name == "pose_keyframes":
                return parse_keyframes(value or "")
        except ValueError as exc:
            raise InputError(f"Cannot read the {name.replace('_', ' ')} {value!r}: {exc}.") from None
        if name == "drive_eyes":
            return _TRISTATE.get(value or "auto")
        if name == "seed":
            return None if value in (None, "") else int(value)
        if name == "steps" and isinstance(value, str | int | float) and not isinstance(value, bool):
            if str(value).strip() == "":
                return None  # the checkpoint's own default
            try:
                number = float(value)
            except ValueError:
                raise InputError(f"Cannot read the quality {value!r}: give a number of steps, for instance "
                                 f"{', '.join(str(v) for v in QUALITY_PRESETS.values())}.") from None
            return int(number) if number.is_integer() else number  # Controls refuses a fraction in words
        if isinstance(value, float) and value.is_integer() and control_info()[name][0].step == 1:
            return int(value)
        return value
