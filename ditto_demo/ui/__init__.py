"""The Gradio interface. It talks to the rest of the package only through :class:`DemoService` (plain values)."""

from ditto_demo.ui.app import build_app, create_service, launch_kwargs

__all__ = ["build_app", "create_service", "launch_kwargs"]
