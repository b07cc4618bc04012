"""The time base, the HuBERT width and the emotion classes are written once; these tests fail if a copy comes back.

They read the package's source with :mod:`ast` (nothing is imported, so every module is seen, the app's too):

* ``EMOTIONS`` is assigned only in :mod:`ditto_demo.pipeline.conditioning`, and no other module spells the classes
  out as a literal tuple, list or set (under any name, in any case);
* no module but :mod:`ditto_demo.pipeline.timebase` binds a frame rate, sample rate, samples-per-frame or feature
  width to a number at module level (``FPS = 25``, ``_SAMPLE_RATE = 16000``, ``_AUDIO_DIM = 1024``, …), nor (outside
  ``ditto_demo.testing``) gives a ``fps`` / ``sample_rate`` parameter a numeric default (``fps: float = 25``).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ditto_demo.pipeline import conditioning, controls, timebase

PACKAGE = Path(conditioning.__file__).resolve().parents[1]
TIMEBASE = Path(timebase.__file__).resolve()
CONDITIONING = Path(conditioning.__file__).resolve()

#: Module-level names that hold the time base or a feature width (any case, with or without a leading underscore).
TIME_BASE_NAME = re.compile(r"(^|_)(FPS|FRAME_RATE|SAMPLE_RATE|SAMPLES_PER_FRAME)$|(HUBERT|AUDIO|FEATURE)_DIM$", re.I)
#: Parameters that take a frame rate or a sample rate.
RATE_PARAMETER = re.compile(r"^(fps|frame_rate|sample_rate|sampling_rate|sr)$")
EMOTION_WORDS = {"angry", "disgust", "fear", "happy", "neutral", "sad", "surprise", "contempt"}


def _modules(root: Path) -> Iterator[tuple[Path, ast.Module]]:
    for path in sorted(root.rglob("*.py")):
        yield path.resolve(), ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _bindings(node: ast.AST) -> Iterator[tuple[str, ast.expr | None]]:
    """(name, value) of each plain name an assignment binds; tuple targets are paired with tuple values."""

    def pair(target: ast.expr, value: ast.expr | None) -> Iterator[tuple[str, ast.expr | None]]:
        if isinstance(target, ast.Name):
            yield target.id, value
        elif isinstance(target, (ast.Tuple, ast.List)):
            values = value.elts if isinstance(value, (ast.Tuple, ast.List)) else [None] * len(target.elts)
            for item, item_value in zip(target.elts, values, strict=False):
                yield from pair(item, item_value)

    if isinstance(node, ast.Assign):
        for target in node.targets:
            yield from pair(target, node.value)
    elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
        yield from pair(node.target, node.value)


def _is_number(node: ast.expr | None) -> bool:
    if isinstance(node, ast.UnaryOp):
        node = node.operand
    return isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool)


def _where(path: Path, node: ast.AST) -> str:
    return f"{path.name}:{getattr(node, 'lineno', '?')}"


def emotions_assignments(root: Path) -> list[str]:
    """Every statement, anywhere, that assigns the name ``EMOTIONS``."""
    return [
        _where(path, node)
        for path, tree in _modules(root)
        for node in ast.walk(tree)
        if any(name == "EMOTIONS" for name, _ in _bindings(node))
    ]


def emotion_literals(root: Path) -> list[str]:
    """Literal tuples / lists / sets holding at least half the emotion classes by name."""
    found = []
    for path, tree in _modules(root):
        for node in ast.walk(tree):
            if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
                words = {e.value.lower() for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)}
                if len(words & EMOTION_WORDS) >= len(EMOTION_WORDS) // 2:
                    found.append(_where(path, node))
    return found


def time_base_numbers(root: Path) -> list[str]:
    """Module-level time-base / feature-width names bound to a number, outside timebase.py."""
    return [
        f"{_where(path, node)} {name}"
        for path, tree in _modules(root)
        if path != TIMEBASE
        for node in tree.body
        for name, value in _bindings(node)
        if TIME_BASE_NAME.search(name) and _is_number(value)
    ]


def rate_defaults(root: Path) -> list[str]:
    """``fps`` / ``sample_rate`` parameters whose default is a number, outside ``testing/``.

    ``ditto_demo.testing`` is left out: its synthetic media (portrait clips, speech) may be made at any rate, since
    the pipeline reads sources of any rate; the rule is for the stages, whose rate is the time base.
    """
    found = []
    for path, tree in _modules(root):
        if "testing" in path.relative_to(root).parts[:-1]:
            continue
        for node in ast.walk(tree):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue
            arguments = node.args
            positional = [*arguments.posonlyargs, *arguments.args]
            pairs = list(zip(positional[len(positional) - len(arguments.defaults) :], arguments.defaults, strict=True))
            pairs += [(a, d) for a, d in zip(arguments.kwonlyargs, arguments.kw_defaults, strict=True) if d is not None]
            found += [f"{_where(path, a)} {a.arg}" for a, d in pairs if RATE_PARAMETER.match(a.arg) and _is_number(d)]
    return found


def _the_one_emotions_definition() -> str:
    tree = ast.parse(CONDITIONING.read_text(encoding="utf-8"))
    node = next(node for node in tree.body if any(name == "EMOTIONS" for name, _ in _bindings(node)))
    return _where(CONDITIONING, node)


def test_the_package_source_is_read() -> None:
    # guards the checks below against passing on an empty file list
    paths = [path for path, _ in _modules(PACKAGE)]
    assert TIMEBASE in paths
    assert CONDITIONING in paths
    assert len(paths) > 20


def test_emotions_are_assigned_in_conditioning_only() -> None:
    assert emotions_assignments(PACKAGE) == [_the_one_emotions_definition()]


def test_no_module_spells_the_emotion_classes_out_again() -> None:
    assert emotion_literals(PACKAGE) == [_the_one_emotions_definition()]


def test_controls_spell_the_conditioning_classes_in_lower_case() -> None:
    lower_case = tuple(label.lower() for label in conditioning.EMOTIONS)
    assert lower_case == controls.EMOTIONS


def test_time_base_and_feature_width_are_numbers_in_timebase_only() -> None:
    found = time_base_numbers(PACKAGE)
    assert not found, f"time base / feature width written again; import it from ditto_demo.pipeline.timebase: {found}"


def test_no_rate_parameter_has_a_numeric_default() -> None:
    found = rate_defaults(PACKAGE)
    assert not found, f"a frame or sample rate default written as a number; use ditto_demo.pipeline.timebase: {found}"


def test_timebase_values() -> None:
    values = (timebase.FPS, timebase.SAMPLE_RATE, timebase.SAMPLES_PER_FRAME, timebase.HUBERT_DIM)
    assert values == (25, 16000, 640, 1024)
    assert timebase.SAMPLES_PER_FRAME == timebase.SAMPLE_RATE // timebase.FPS


@pytest.mark.parametrize(
    ("source", "check"),
    [
        ("FPS = 25", time_base_numbers),
        ("_AUDIO_DIM: int = 1024", time_base_numbers),
        ("_SAMPLE_RATE, _FPS = 16000, 25", time_base_numbers),
        ("class Writer:\n    def __init__(self, fps: float = 25) -> None: ...", rate_defaults),
        ("def load(*, sample_rate=16000): ...", rate_defaults),
        ("EMOTIONS = ('a',)", emotions_assignments),
        ("NAMES = ['Happy', 'sad', 'neutral', 'fear']", emotion_literals),
    ],
)
def test_each_check_catches_a_copy(source: str, check: Callable[[Path], list[str]], tmp_path: Path) -> None:
    (tmp_path / "copy.py").write_text(source + "\n", encoding="utf-8")
    found = check(tmp_path)
    assert found
    assert all(entry.startswith("copy.py:") for entry in found)


def test_imports_and_derived_values_are_not_copies(tmp_path: Path) -> None:
    (tmp_path / "uses.py").write_text(
        "from ditto_demo.pipeline.timebase import FPS, HUBERT_DIM\n"
        "from ditto_demo.pipeline.conditioning import EMOTION_NAMES as EMOTIONS\n"
        "_FPS = FPS\n"
        "def write(fps: float = FPS, keep_frames: int = 25): ...\n",
        encoding="utf-8",
    )
    checks = (emotions_assignments, emotion_literals, time_base_numbers, rate_defaults)
    assert [check(tmp_path) for check in checks] == [[], [], [], []]


def test_synthetic_media_in_testing_may_choose_its_rate(tmp_path: Path) -> None:
    (tmp_path / "testing").mkdir()
    (tmp_path / "testing" / "clips.py").write_text("def write_clip(fps: int = 30): ...\n", encoding="utf-8")
    (tmp_path / "stage.py").write_text("def write(fps: int = 30): ...\n", encoding="utf-8")
    assert rate_defaults(tmp_path) == ["stage.py:1 fps"]
