"""ZeroGPU support is a no-op off ZeroGPU, and asks for GPU time in proportion to the speech on it."""

from __future__ import annotations

import sys
import types
from collections.abc import Callable
from typing import Any

import pytest

from ditto_demo.errors import InputError
from ditto_demo.ui import zerogpu
from ditto_demo.ui.zerogpu import (
    BASE_SECONDS,
    MAX_SECONDS,
    SECONDS_PER_AUDIO_SECOND,
    audio_duration,
    gpu_seconds,
    on_gpu,
    zero_gpu_active,
)


def _handler(source: str, audio: str, emotion: str = "neutral") -> str:
    return f"{source}+{audio}+{emotion}"


@pytest.fixture
def fake_spaces(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """A stand-in ``spaces`` module (the real one only works on a Space) that records what GPU() was given."""
    calls: list[Any] = []

    def gpu(duration: int | Callable[..., int] = 60) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
            def wrapped(*args: Any, **kwargs: Any) -> Any:
                calls.append(duration(*args, **kwargs) if callable(duration) else duration)
                return fn(*args, **kwargs)

            wrapped.lent_gpu = True  # type: ignore[attr-defined]
            return wrapped

        return decorate

    module = types.ModuleType("spaces")
    module.GPU = gpu  # type: ignore[attr-defined]
    module.__spec__ = types.SimpleNamespace(name="spaces")  # type: ignore[assignment]
    monkeypatch.setitem(sys.modules, "spaces", module)
    monkeypatch.setattr(zerogpu.importlib.util, "find_spec", lambda name: object() if name == "spaces" else None)
    return calls


def test_inactive_without_the_env_flag(monkeypatch: pytest.MonkeyPatch, fake_spaces: list[Any]) -> None:
    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)
    assert not zero_gpu_active()
    assert on_gpu(_handler, 60) is _handler
    for value in ("", "0", "false", "False", "off"):
        assert not zero_gpu_active({"SPACES_ZERO_GPU": value})


def test_inactive_without_the_spaces_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    monkeypatch.setattr(zerogpu.importlib.util, "find_spec", lambda name: None)
    assert not zero_gpu_active()
    assert on_gpu(_handler, 60) is _handler


def test_the_real_environment_is_a_no_op() -> None:
    """This test machine is not a ZeroGPU Space: handlers stay exactly as written."""
    if zero_gpu_active():
        pytest.skip("running on ZeroGPU")
    assert on_gpu(_handler, audio_duration(lambda path: 1.0)) is _handler


def test_gpu_seconds_grow_with_the_audio_and_are_capped() -> None:
    assert gpu_seconds(0) == BASE_SECONDS
    assert gpu_seconds(10) == BASE_SECONDS + round(10 * SECONDS_PER_AUDIO_SECOND)
    lengths = [0, 1, 5, 10, 30, 60, 600]
    seconds = [gpu_seconds(s) for s in lengths]
    assert seconds == sorted(seconds)
    assert max(seconds) == MAX_SECONDS
    assert gpu_seconds(float("nan")) == BASE_SECONDS
    assert gpu_seconds(-3) == BASE_SECONDS
    assert all(isinstance(s, int) for s in seconds)


def test_duration_reads_the_audio_argument() -> None:
    measured: list[str] = []

    def measure(path: str) -> float:
        measured.append(path)
        if path == "too-long.wav":
            raise InputError("The audio file 'too-long.wav' is longer than the 60 s limit.")
        return 20.0

    duration = audio_duration(measure)
    assert duration("portrait.png", "speech.wav", "happy") == gpu_seconds(20.0)
    assert duration("portrait.png", audio="speech.wav") == gpu_seconds(20.0)
    assert measured == ["speech.wav", "speech.wav"]
    # refused speech: the handler fails within a second, so only the fixed part is asked for
    assert duration("portrait.png", "too-long.wav") == BASE_SECONDS
    assert duration("portrait.png", None) == BASE_SECONDS


def test_active_wraps_with_spaces_gpu(monkeypatch: pytest.MonkeyPatch, fake_spaces: list[Any]) -> None:
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    assert zero_gpu_active()
    wrapped = on_gpu(_handler, audio_duration(lambda path: 10.0))
    assert wrapped is not _handler
    assert getattr(wrapped, "lent_gpu", False)
    assert wrapped("p.png", "s.wav", emotion="sad") == "p.png+s.wav+sad"
    assert fake_spaces == [gpu_seconds(10.0)]
    fixed = on_gpu(_handler, 30)
    fixed("p.png", "s.wav")
    assert fake_spaces[-1] == 30


def test_app_settings_pick_torch_on_zerogpu(monkeypatch: pytest.MonkeyPatch, fake_spaces: list[Any]) -> None:
    from ditto_demo.ui.app import app_settings

    assert app_settings({"SPACES_ZERO_GPU": "true"}).backend == "torch"
    assert app_settings({"SPACES_ZERO_GPU": "true", "DITTO_BACKEND": "onnx"}).backend == "onnx"
    assert app_settings({}).backend == "auto"
