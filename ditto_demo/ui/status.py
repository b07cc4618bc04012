"""The app's status page: what the engine found on this host, with the fix when checkpoints are missing.

Generation (the pipeline and its controls) is built on top of this page once the pipeline exists; until then the
page is honest about what works: the host, the usable backends and the checkpoint files.
"""

from __future__ import annotations

import os
from pathlib import Path

import gradio as gr

from ditto_demo.engine.report import engine_report
from ditto_demo.hub import CHECKPOINTS_ENV

__all__ = ["build_app"]

_INTRO = """
# Ditto: real-time, controllable talking heads

[Ditto](https://arxiv.org/abs/2411.19509) animates a portrait from speech. This build runs the released
checkpoints on TensorRT, ONNX Runtime or PyTorch, whichever this machine supports.

**Status:** the engine layer is ready; portrait + speech → video (and live streaming) comes with the pipeline.
Below is what the engine found here.
"""


def _status_text() -> str:
    configured = os.environ.get(CHECKPOINTS_ENV)
    return engine_report(Path(configured) if configured else None)


def build_app() -> gr.Blocks:
    """The Blocks of the app (not launched)."""
    with gr.Blocks(title="Ditto talking head") as demo:
        gr.Markdown(_INTRO)
        report = gr.Textbox(
            value=_status_text,
            label="Engine status (same as `python -m ditto_demo doctor`)",
            lines=22,
            max_lines=40,
            interactive=False,
        )
        refresh = gr.Button("Refresh", variant="secondary")
        refresh.click(_status_text, outputs=report, api_visibility="private")
    return demo
