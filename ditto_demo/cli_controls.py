"""Command-line flags for every :class:`~ditto_demo.pipeline.controls.Controls` field, built from its metadata.

Each control becomes ``--name-with-dashes``; switches get ``--x/--no-x``; structured values (an emotion mix, a
timeline, pose keyframes) take compact text or JSON. ``--settings FILE`` loads a saved settings JSON first and
flags override it, so a setting saved by the app can be replayed from the CLI.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ditto_demo.errors import InputError
from ditto_demo.pipeline.controls import Controls, control_info, parse_emotion, parse_keyframes, parse_timeline

__all__ = ["add_control_flags", "controls_from_args"]

_STRUCTURED = {
    "emotion": "a class (happy) or a mix (happy:0.7,surprise:0.3)",
    "emotion_timeline": 'changes over time: 0:neutral,2.5:happy (seconds:emotion) or JSON [[0,"neutral"],...]',
    "pose_keyframes": "per-frame pose offsets: 0:0:0:0;1.5:5:-10:2 (seconds:pitch:yaw:roll) or JSON",
}


def add_control_flags(parser: argparse.ArgumentParser) -> None:
    """Add ``--settings`` and one flag per control (all default to "not given")."""
    group = parser.add_argument_group("controls (see the README for each one's effect)")
    group.add_argument("--settings", help="a settings JSON saved by the app or `--save-settings`")
    for name, (info, default) in control_info().items():
        flag = "--" + name.replace("_", "-")
        shown = "checkpoint default" if default is None else default
        text = f"{info.help} [{shown}]"
        if name in _STRUCTURED:
            group.add_argument(flag, dest=name, default=None, metavar="VALUE", help=f"{_STRUCTURED[name]}. {text}")
        elif info.choices:
            group.add_argument(flag, dest=name, default=None, choices=info.choices, help=text)
        elif info.low is None:
            group.add_argument(flag, dest=name, default=None, action=argparse.BooleanOptionalAction, help=text)
        else:
            kind = int if info.step == 1 else float
            metavar = "N" if kind is int else "X"
            group.add_argument(flag, dest=name, default=None, type=kind, metavar=metavar,
                               help=f"{text} range {info.low:g}..{info.high:g}{info.unit}")


_PARSERS = {"emotion": parse_emotion, "emotion_timeline": parse_timeline, "pose_keyframes": parse_keyframes}


def controls_from_args(args: argparse.Namespace) -> Controls:
    """The :class:`Controls` of the parsed flags (settings file first, then flags); bad values → InputError."""
    values: dict[str, Any] = {}
    if args.settings:
        path = Path(args.settings)
        try:
            values.update(Controls.from_json(path.read_text()).to_dict())
        except OSError as exc:
            raise InputError(f"Cannot read the settings file {path} ({exc.strerror}).") from exc
    for name in control_info():
        raw = getattr(args, name, None)
        if raw is None:
            continue
        if name in _PARSERS:
            try:
                raw = _PARSERS[name](raw)
            except (ValueError, json.JSONDecodeError) as exc:
                raise InputError(f"--{name.replace('_', '-')}: cannot read {raw!r} ({exc}).") from exc
        values[name] = raw
    return Controls.from_dict(values)
