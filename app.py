"""Gradio entry point (also the Hugging Face Space's ``app_file``): build the app from ``ditto_demo.ui``, launch it.

``GRADIO_SERVER_NAME`` / ``GRADIO_SERVER_PORT`` are read by Gradio itself; the ``DITTO_*`` variables (checkpoints,
backend, device, concurrency, queue size, audio and upload limits, output folder and how long results stay, compile
mode, video encoder) by ``AppSettings.from_env``. A bad value stops the start with one sentence naming the variable;
checkpoints from the Hub download while the page is already served.
"""

from __future__ import annotations

import importlib.util

if importlib.util.find_spec("spaces") is not None:
    # ZeroGPU refuses to work once CUDA is initialised, so `spaces` comes before anything that imports torch.
    import spaces  # noqa: F401

import logging

from ditto_demo.errors import DittoError
from ditto_demo.ui import build_app, create_service, launch_kwargs


def main() -> None:
    """Read the settings, build the page, serve it (the checkpoints resolve meanwhile, logged)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        service = create_service()
    except DittoError as exc:  # a bad setting: its sentence, no traceback, a non-zero exit
        raise SystemExit(str(exc)) from None
    build_app(service).launch(**launch_kwargs(service.settings))


if __name__ == "__main__":
    main()
