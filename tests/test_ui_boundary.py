"""The UI talks to the package only through its service: a module under ``ditto_demo/ui/`` may import Gradio, the
standard library, other UI modules, the service, ``Controls`` with its metadata and the error types — nothing else
(no numpy, no pipeline stage, no media code). Every import is checked, including those inside functions and
``TYPE_CHECKING`` blocks, and ``importlib.import_module("...")`` calls with a literal name."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

UI = Path(__file__).resolve().parents[1] / "ditto_demo" / "ui"

#: Top-level distributions the UI may use besides the standard library. ``spaces`` is Hugging Face's ZeroGPU
#: runtime, loaded by name in ``zerogpu.py`` on a ZeroGPU Space only.
ALLOWED_PACKAGES = frozenset({"gradio", "gradio_client", "spaces"})
#: Package modules the UI may use (the service, the controls and their metadata, the error types).
ALLOWED_MODULES = frozenset({"ditto_demo.ui.service", "ditto_demo.pipeline.controls", "ditto_demo.errors"})
#: The service is the gateway: it is the one UI module that reaches into the package.
GATEWAY = "service.py"


def _module_name(path: Path) -> str:
    relative = path.relative_to(UI.parent.parent).with_suffix("")
    parts = relative.parts[:-1] if relative.name == "__init__" else relative.parts
    return ".".join(parts)


def _imported(tree: ast.AST, module: str, is_package: bool) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in ``tree`` of ``module``."""
    package = module if is_package else module.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            if name == "ditto_demo" or (node.level and not node.module):  # `from pkg import sub`: each is a module
                found += [(node.lineno, f"{name}.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, name))
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str) and _is_dynamic_import(node.func)):
            found.append((node.lineno, node.args[0].value))
    return found


def _is_dynamic_import(func: ast.expr) -> bool:
    if isinstance(func, ast.Name):
        return func.id in ("__import__", "import_module")
    return isinstance(func, ast.Attribute) and func.attr == "import_module"


def _allowed(name: str) -> bool:
    top = name.partition(".")[0]
    if top == "__future__" or top in sys.stdlib_module_names or top in ALLOWED_PACKAGES:
        return True
    return name in ALLOWED_MODULES or name == "ditto_demo.ui" or name.startswith("ditto_demo.ui.")


def forbidden_imports(source: str, module: str, *, is_package: bool = False) -> list[str]:
    """``"line N: name"`` for each import of ``source`` (the text of ``module``) outside the allowed set."""
    tree = ast.parse(source)
    return [f"line {line}: {name}" for line, name in _imported(tree, module, is_package) if not _allowed(name)]


def _ui_modules() -> list[Path]:
    return sorted(p for p in UI.rglob("*.py") if p.name != GATEWAY)


def test_the_ui_is_scanned() -> None:
    names = {p.name for p in _ui_modules()}
    assert {"app.py", "generate_tab.py", "compare_tab.py", "live_tab.py", "transport.py", "widgets.py"} <= names


@pytest.mark.parametrize("path", _ui_modules(), ids=lambda p: p.name)
def test_ui_modules_import_only_the_service_controls_errors_and_gradio(path: Path) -> None:
    problems = forbidden_imports(path.read_text(encoding="utf-8"), _module_name(path),
                                 is_package=path.name == "__init__.py")
    assert not problems, (
        f"{path.name} reaches past the service; move the work into the package and call it through DemoService: "
        + "; ".join(problems)
    )


def test_the_check_catches_what_it_must() -> None:
    """The rule itself: each of these lines must be refused, and each of the allowed ones accepted."""
    refused = [
        "import numpy as np",
        "from ditto_demo.pipeline.audio import SAMPLE_RATE",
        "from ditto_demo.pipeline import Controls",
        "from ditto_demo import live",
        "from ..pipeline.pcm import write_wav",
        "import ditto_demo.live.session",
        "def f():\n    import cv2",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ditto_demo.pipeline.runner import Runner",
        "import importlib\nimportlib.import_module('ditto_demo.pipeline.pcm')",
    ]
    for source in refused:
        assert forbidden_imports(source, "ditto_demo.ui.example"), source
    accepted = [
        "from __future__ import annotations\nimport json, threading\nfrom collections.abc import Callable",
        "import gradio as gr\nfrom gradio.context import Context\nfrom gradio_client import Client",
        "from ditto_demo.ui.service import DemoService\nfrom ditto_demo.ui import common\nfrom . import widgets",
        "from ditto_demo.pipeline.controls import Controls, control_info\nfrom ditto_demo.errors import InputError",
    ]
    for source in accepted:
        assert forbidden_imports(source, "ditto_demo.ui.example") == [], source
