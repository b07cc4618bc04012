"""The whole Gradio app: header, the start-up banner, the Generate / Compare / Live tabs, the queue, launch options.

``build_app(service)`` returns queued ``gr.Blocks`` (not launched); ``launch_kwargs(settings)`` holds what
``launch()`` needs (upload limit, the folders Gradio may serve, theme and CSS, which Gradio 6 takes at launch).
``create_service()`` reads the settings from the environment (a bad value raises one sentence naming the variable)
and finds the checkpoints: a local folder at once, the Hub's in the background. The page is served meanwhile; its
banner shows the download (files, bytes, percent) and the run buttons wait, then come on without a reload. When the
checkpoints cannot be had the app still starts and says how to fix it at the top of the page.
"""

from __future__ import annotations

import dataclasses
import json
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

__all__ = ["API_SNIPPET", "CSS", "api_snippet", "app_settings", "build_app", "create_service", "delete_cache",
           "launch_kwargs", "run_buttons"]

log = logging.getLogger(__name__)

#: How often (seconds) Gradio looks for old temporary files (uploads, the copies of results it serves).
DELETE_CACHE_EVERY = 3600
#: How often (seconds) an open page asks how far the checkpoint download is.
DOWNLOAD_POLL_SECONDS = 1.0
#: The buttons that start pipeline work, by ``elem_id``: they wait while the checkpoints download.
RUN_BUTTONS = ("ditto-generate-button", "compare-button", "compare-grid-button", "ditto-live-start",
               "live-file-stream")


def delete_cache(settings: AppSettings) -> tuple[int, int]:
    """Gradio's ``delete_cache``: its copies of results and the uploads go when the results themselves do
    (``DITTO_RESULT_HOURS``), checked hourly (or more often when results are kept for less than an hour)."""
    age = max(60, round(settings.result_hours * 3600))
    return min(DELETE_CACHE_EVERY, age), age

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
    """The app's one service. A bad setting raises :class:`~ditto_demo.errors.DittoError` naming the variable;
    checkpoints from the Hub download in the background (logged as it goes) while the page is served."""
    settings = app_settings(env)
    log.info("starting: backend=%s device=%s concurrency=%d queue=%d audio limit=%gs compile=%s encoder=%s/%s "
             "results kept %gh, at most %g GB", settings.backend, settings.device, settings.concurrency,
             settings.max_queue, settings.max_audio_seconds, settings.compile_mode, settings.encoder.codec,
             settings.encoder.preset, settings.result_hours, settings.result_max_gb)
    service = DemoService(settings)
    if service.ready:
        log.info("checkpoints resolved; generation is available")
    elif service.downloading:
        log.info("the page is served while the checkpoints download; generation starts when they are ready")
    else:
        log.warning("generation is unavailable until the checkpoints are fixed (the page says how)")
    return service


def build_app(service: DemoService) -> gr.Blocks:
    """The app's Blocks, queued with the service's limits (launch it with :func:`launch_kwargs`)."""
    from ditto_demo.ui.compare_tab import build_compare_tab
    from ditto_demo.ui.live_tab import build_live_tab

    settings = service.settings
    redact = PathRedactor.for_service(service)
    with gr.Blocks(title="Ditto talking head", delete_cache=delete_cache(settings)) as demo:
        gr.Markdown(HEADER)
        banner_text = service.banner()
        banner = gr.Markdown(redact(banner_text or ""), visible=bool(banner_text), elem_id="ditto-banner")
        retry = gr.Button("Try the download again", size="sm", visible=_download_failed(service),
                          elem_id="ditto-retry-download")
        with gr.Tabs():
            with gr.Tab("Generate", id="generate"):
                build_generate_tab(service, redact)
            with gr.Tab("Compare", id="compare"):
                build_compare_tab(service)
            with gr.Tab("Live", id="live"):
                build_live_tab(service)
        with gr.Accordion("Use via API", open=False):
            snippet = gr.Markdown(api_snippet(), elem_id="ditto-api-snippet")
        with gr.Accordion("System", open=False):
            report = gr.Code(label="Engine status (same as `python -m ditto_demo doctor`)", language=None, lines=12,
                             max_lines=30, interactive=False, show_line_numbers=False, elem_id="ditto-system-report")
            show = gr.Button("Check this server", size="sm")
            show.click(lambda: redact(service.engine_report()), outputs=report,
                       api_name="system_report", api_visibility="private", concurrency_limit=1)

        # The snippet names the address this page was served from (a Space, a proxy, another port), not a guess.
        demo.load(None, js=_snippet_js(), outputs=snippet, api_name="api_snippet", api_visibility="private")
        _wire_checkpoint_status(demo, service, banner, retry, redact)

        def tab_closed(request: gr.Request) -> None:
            """A visitor who closes the tab stops their running generation (no orphaned work)."""
            service.cancel(request.session_hash)

        demo.unload(tab_closed)
    demo.queue(max_size=settings.max_queue, default_concurrency_limit=settings.concurrency)
    _serve_live(demo, service)
    return demo


def _download_failed(service: DemoService) -> bool:
    progress = service.checkpoint_progress()
    return progress is not None and progress.state == "failed"


def run_buttons(demo: gr.Blocks) -> list[gr.Button]:
    """The buttons of :data:`RUN_BUTTONS` in ``demo`` (those the tabs made)."""
    found = {block.elem_id: block for block in demo.blocks.values() if isinstance(block, gr.Button)}
    missing = [name for name in RUN_BUTTONS if name not in found]
    if missing:
        log.warning("run buttons not found (they will not wait for the checkpoints): %s", ", ".join(missing))
    return [found[name] for name in RUN_BUTTONS if name in found]


def _wire_checkpoint_status(demo: gr.Blocks, service: DemoService, banner: gr.Markdown, retry: gr.Button,
                            redact: PathRedactor) -> None:
    """While the checkpoints download, each open page polls the service once a second: the banner shows the
    progress, the run buttons wait, and when the pipeline is ready the banner goes, the buttons come on and the
    polling stops (no reload). A failed download shows its fix and a retry button. Nothing is wired when the
    service needed no download (a local folder, workers)."""
    if service.checkpoint_progress() is None:
        return
    buttons = run_buttons(demo)
    timer = gr.Timer(DOWNLOAD_POLL_SECONDS, active=not service.ready)

    def status() -> tuple[Any, ...]:
        ready = service.ready
        text = service.banner()
        failed = _download_failed(service)
        return (gr.Markdown(redact(text or ""), visible=bool(text)), gr.Button(visible=failed),
                gr.Timer(active=not ready and not failed), *(gr.Button(interactive=ready) for _ in buttons))

    def retry_download() -> tuple[Any, ...]:
        service.retry_download()
        return status()

    outputs = [banner, retry, timer, *buttons]
    private: dict[str, Any] = {"api_visibility": "private", "queue": False, "show_progress": "hidden"}
    demo.load(status, outputs=outputs, api_name="checkpoint_status", **private)
    timer.tick(status, outputs=outputs, api_name="checkpoint_status_tick", **private)
    retry.click(retry_download, outputs=outputs, api_name="retry_download", **private)


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


#: Stands for this page's own address in :data:`API_SNIPPET`; the page fills it in (``_snippet_js``).
PAGE_ADDRESS = "{page_address}"

API_SNIPPET = """Every control of the page is an optional named parameter of `/generate` (defaults as shown on the page;
`client.view_api()` lists them with their types). `/compare` and `/emotion_grid` take the settings as JSON text.

```python
from gradio_client import Client, handle_file

client = Client("{page_address}")  # this page's address (or the Space's name, e.g. "user/ditto-talkinghead")
video, report, settings = client.predict(
    source=handle_file("portrait.png"),    # a photo, illustration or short video
    audio=handle_file("speech.wav"),       # any format ffmpeg reads
    emotion="happy", yaw_offset=5, seed=7,
    api_name="/generate",
)
print(video, report["rtf"], report["seed"])  # the mp4 downloaded here, the timing report
```"""


def api_snippet(address: str = "http://127.0.0.1:7860/") -> str:
    """The "Use via API" text with ``address`` as the server (the page puts its own address in at load)."""
    return API_SNIPPET.replace(PAGE_ADDRESS, address)


def _snippet_js() -> str:
    """A page-load function that returns the snippet with the page's own address (its folder, without query)."""
    return ("() => " + json.dumps(API_SNIPPET) + ".split(" + json.dumps(PAGE_ADDRESS) + ")"
            ".join(new URL('.', window.location.href).href)")


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
