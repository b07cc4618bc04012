"""The whole Gradio app: header, the start-up banner, the Generate / Compare / Live tabs, the queue, launch options.

``build_app(service)`` returns queued ``gr.Blocks`` (not launched); ``launch_kwargs(settings)`` holds what
``launch()`` needs (upload limit, the folders Gradio may serve, theme and CSS, which Gradio 6 takes at launch).
``create_service()`` reads the settings from the environment and resolves the checkpoints, logging progress: when
they cannot be had the app still starts and says how to fix it at the top of the page.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import gradio as gr

from ditto_demo.ui.common import PathRedactor
from ditto_demo.ui.generate_tab import ASSETS, build_generate_tab
from ditto_demo.ui.service import AppSettings, DemoService
from ditto_demo.ui.transport import live_head
from ditto_demo.ui.zerogpu import zero_gpu_active

__all__ = ["CSS", "app_settings", "build_app", "create_service", "launch_kwargs"]

log = logging.getLogger(__name__)

#: Gradio's temporary files (uploads, served copies of results) older than two hours go, checked every hour.
DELETE_CACHE = (3600, 7200)

HEADER = """
# Ditto: talking heads from a portrait and speech

Drop in a portrait (photo, illustration or short video) and speech; get a talking-head video. Set emotion, gaze,
blinks and head pose if you like. [Paper](https://arxiv.org/abs/2411.19509) ·
[Model](https://huggingface.co/digital-avatar/ditto-talkinghead) ·
[Original code](https://github.com/antgroup/ditto-talkinghead)
"""

CSS = """
#ditto-banner { border: 1px solid #f59e0b; background: rgba(245, 158, 11, 0.12); border-radius: 8px;
                padding: 4px 16px; }
.ditto-note { font-size: 0.92em; opacity: 0.85; }
.ditto-step h3 { margin-top: 0; }
"""


def app_settings(env: Mapping[str, str] | None = None) -> AppSettings:
    """:meth:`AppSettings.from_env`, with the PyTorch backend on ZeroGPU (the only one it can lend a GPU to)."""
    settings = AppSettings.from_env(env)
    if zero_gpu_active(env) and settings.backend == "auto":
        log.info("ZeroGPU: using the PyTorch backend")
        settings = dataclasses.replace(settings, backend="torch")
    return settings


def create_service(env: Mapping[str, str] | None = None) -> DemoService:
    """The app's one service; resolving (and, from the Hub, downloading) the checkpoints is logged as it goes."""
    settings = app_settings(env)
    log.info("starting: backend=%s device=%s concurrency=%d queue=%d audio limit=%gs", settings.backend,
             settings.device, settings.concurrency, settings.max_queue, settings.max_audio_seconds)
    service = DemoService(settings)
    if service.ready:
        log.info("checkpoints resolved; generation is available")
    else:
        log.warning("generation is unavailable until the checkpoints are fixed (the page says how)")
    return service




def build_app(service: DemoService) -> gr.Blocks:
    """The app's Blocks, queued with the service's limits (launch it with :func:`launch_kwargs`)."""
    from ditto_demo.ui.compare_tab import build_compare_tab
    from ditto_demo.ui.live_tab import build_live_tab

    settings = service.settings
    redact = PathRedactor.for_service(service)
    with gr.Blocks(title="Ditto talking head", delete_cache=DELETE_CACHE) as demo:
        gr.Markdown(HEADER)
        banner = service.banner()
        if banner:
            gr.Markdown(redact(banner), elem_id="ditto-banner")
        with gr.Tabs():
            with gr.Tab("Generate", id="generate"):
                build_generate_tab(service, redact)
            with gr.Tab("Compare", id="compare"):
                build_compare_tab(service)
            with gr.Tab("Live", id="live"):
                build_live_tab(service)
        with gr.Accordion("Use via API", open=False):
            gr.Markdown(_api_snippet())
        with gr.Accordion("System", open=False):
            report = gr.Textbox(label="Engine status (same as `python -m ditto_demo doctor`)", lines=12,
                                max_lines=30, interactive=False)
            show = gr.Button("Check this server", size="sm")
            show.click(lambda: redact(service.engine_report()), outputs=report,
                       api_name="system_report", api_visibility="private", concurrency_limit=1)

        def tab_closed(request: gr.Request) -> None:
            """A visitor who closes the tab stops their running generation (no orphaned work)."""
            service.cancel(request.session_hash)

        demo.unload(tab_closed)
    demo.queue(max_size=settings.max_queue, default_concurrency_limit=settings.concurrency)
    _serve_live(demo, service)
    return demo


def _serve_live(demo: gr.Blocks, service: DemoService) -> None:
    """Every launch of ``demo`` also serves the live WebSocket (docs/live_protocol.md) on the app's own port.

    Gradio builds a new FastAPI app at each ``launch``; the routes go in through its ``app_kwargs`` (FastAPI's
    ``routes``), whoever launches: ``app.py``, a test with ``prevent_thread_lock=True``, or a notebook.
    """
    launch = demo.launch

    def launch_with_live(*args: Any, **kwargs: Any) -> Any:
        app_kwargs = dict(kwargs.pop("app_kwargs", None) or {})
        app_kwargs["routes"] = [*service.live_routes(), *app_kwargs.get("routes", ())]
        return launch(*args, app_kwargs=app_kwargs, **kwargs)

    demo.launch = launch_with_live  # type: ignore[method-assign]


def _api_snippet() -> str:
    return """Every control of the page is an optional named parameter of `/generate` (defaults as shown on the page).

```python
from gradio_client import Client, handle_file

client = Client("http://127.0.0.1:7860/")  # or the Space's name, e.g. "user/ditto-talkinghead"
video, report, settings = client.predict(
    source=handle_file("portrait.png"),    # a photo, illustration or short video
    audio=handle_file("speech.wav"),       # any format ffmpeg reads
    emotion="happy", yaw_offset=5, seed=7, steps=25,
    api_name="/generate",
)
print(video, report["rtf"], report["seed"])  # the mp4 downloaded here, the timing report
```"""


def _theme() -> gr.themes.Base:
    return gr.themes.Soft(primary_hue="indigo", secondary_hue="pink")


def launch_kwargs(settings: AppSettings) -> dict[str, Any]:
    """Arguments for ``demo.launch``: the upload limit, the folders results are served from, the look.

    ``GRADIO_SERVER_NAME`` / ``GRADIO_SERVER_PORT`` are left to Gradio, which reads them itself.
    """
    output_dir = Path(settings.output_dir)
    served = list(dict.fromkeys([os.fspath(output_dir.absolute()), os.fspath(output_dir.resolve()), os.fspath(ASSETS)]))
    return {
        "max_file_size": settings.max_file_size,
        "allowed_paths": served,
        "theme": _theme(),
        "css": CSS,
        "head": live_head(),  # the Live tab's player (window.dittoLive), present before the tab is opened
        "footer_links": ["api", "gradio", "settings"],
    }


# ------------------------------------------------- the Generate/Compare pages' styles (helper G1, issue 11)
# The sticky Generate bar and the status lines belong with those tabs (ditto_demo/ui/common.py); launch_kwargs reads
# CSS when it is called, so the pages' rules join the app's here.
from ditto_demo.ui.common import PAGE_CSS  # noqa: E402 - kept next to the one line that uses it

CSS += PAGE_CSS
