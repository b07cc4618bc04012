"""The Gradio interface. It talks to the rest of the package through plain values (paths, text, numbers)."""

from ditto_demo.ui.status import build_app

__all__ = ["build_app"]
