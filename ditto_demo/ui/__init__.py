"""The Gradio interface. It talks to the rest of the package only through :class:`DemoService` (plain values),
plus ``Controls`` with its metadata and the error types; ``tests/test_ui_boundary.py`` holds it to that."""

from ditto_demo.ui.app import build_app, create_service, launch_kwargs

__all__ = ["build_app", "create_service", "launch_kwargs"]
