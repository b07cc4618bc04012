"""Gradio entry point (also the Hugging Face Space's ``app_file``). Builds the UI and launches it.

``GRADIO_SERVER_NAME`` / ``GRADIO_SERVER_PORT`` are read by Gradio itself; ``DITTO_CHECKPOINTS`` points at a local
checkpoint folder.
"""

from __future__ import annotations

import logging

from ditto_demo.ui import build_app

demo = build_app()

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    demo.queue().launch()
