"""What the app needs from the pipeline, as plain values: paths, numbers, text and RGB images.

The Gradio layer (``ditto_demo/ui``) talks only to :class:`DemoService`. It never sees a network, a tensor or a
backend. The service owns the one :class:`Pipeline`, gives every request its own output folder, turns results
into a timing report, and knows the settings the server was started with (:class:`AppSettings`, from the
environment). When the checkpoints cannot be had, the service still starts and says exactly how to fix it.

Everything the pages need beyond a run goes through here too, so that no UI module does media or pipeline work:
seeds (:meth:`DemoService.new_seed`, the pipeline's one drawer), a speech file's length in frames
(:meth:`DemoService.describe_audio`), the crop preview, text to speech (:meth:`DemoService.speak`), live sessions
(:meth:`DemoService.open_live_session`) and a file streamed in playable chunks (:meth:`DemoService.stream_file_chunks`).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ditto_demo.engine.backends.torch_backend import COMPILE_ENV, COMPILE_MODES
from ditto_demo.engine.download import CheckpointDownload, DownloadProgress
from ditto_demo.engine.hub import local_checkpoints, missing_networks
from ditto_demo.errors import DittoError, InputError
from ditto_demo.live import CHUNK_SECONDS, LiveSession, LiveStats
from ditto_demo.live import stream_file_chunks as _stream_file_chunks
from ditto_demo.pipeline import Controls, Limits, Pipeline, Result, StreamFrame
from ditto_demo.pipeline.audio import audio_frame_count, load_audio
from ditto_demo.pipeline.controls import EMOTIONS
from ditto_demo.pipeline.crop import transform_points
from ditto_demo.pipeline.pipeline import ProgressFn
from ditto_demo.pipeline.plan import draw_seed
from ditto_demo.pipeline.registration import AVATAR_CROP_SIZE
from ditto_demo.pipeline.runner import CancelledError
from ditto_demo.pipeline.timebase import SAMPLE_RATE
from ditto_demo.pipeline.writer import EncoderSettings
from ditto_demo.results import ResultStore, RetentionPolicy
from ditto_demo.workers import PoolPipeline, PoolSettings, WorkerConfig, WorkerPool, open_pool, worker_of

# The UI reaches the pipeline's values and errors through this module only (see ditto_demo/ui/__init__.py).
__all__ = [
    "AppSettings",
    "AudioInfo",
    "CancelledError",
    "DemoService",
    "DownloadProgress",
    "LiveSession",
    "LiveStats",
    "Outcome",
    "ProgressFn",
    "ServiceUnavailableError",
    "crop_outline",
]

log = logging.getLogger(__name__)


def _env_float(env: Mapping[str, str], name: str, default: float) -> float:
    try:
        value = float(env.get(name, default))
    except ValueError:
        raise DittoError(f"{name} must be a number; got {env[name]!r}.") from None
    if not math.isfinite(value):
        raise DittoError(f"{name} must be a finite number; got {env[name]!r}.")
    return value


def _env_positive(env: Mapping[str, str], name: str, default: float) -> float:
    value = _env_float(env, name, default)
    if value <= 0:
        raise DittoError(f"{name} must be a number above 0; got {env[name]!r}.")
    return value


def _compile_mode(env: Mapping[str, str]) -> str:
    """``DITTO_TORCH_COMPILE`` as :func:`~ditto_demo.engine.backends.torch_backend.compile_mode_from_env` reads it
    (``off`` when unset), from ``env``; a bad value is a sentence naming the variable and the allowed modes."""
    value = env.get(COMPILE_ENV, "off").strip().lower() or "off"
    if value not in COMPILE_MODES:
        raise DittoError(f"{COMPILE_ENV}={env[COMPILE_ENV]!r} is not a compile mode; use one of "
                         f"{', '.join(COMPILE_MODES)}.")
    return value


@dataclass(frozen=True)
class AppSettings:
    """Server settings, from environment variables (all optional)."""

    checkpoints: str | None = None  # DITTO_CHECKPOINTS: a local checkpoint folder (else the Hub)
    backend: str = "auto"  # DITTO_BACKEND: auto, torch, onnx, tensorrt
    device: str = "auto"  # DITTO_DEVICE: auto, cpu, cuda
    concurrency: int = 1  # DITTO_CONCURRENCY: generations running at once (per pipeline)
    max_queue: int = 16  # DITTO_MAX_QUEUE: requests waiting beyond those running
    max_audio_seconds: float = 60.0  # DITTO_MAX_AUDIO_SECONDS: longer speech is refused, with the limit named
    max_file_size: str = "50mb"  # DITTO_MAX_FILE_SIZE: Gradio's upload limit
    max_source_seconds: float = 10.0  # DITTO_MAX_SOURCE_SECONDS: longest portrait video
    max_source_frames: int = 250  # DITTO_MAX_SOURCE_FRAMES: most portrait-video frames kept (~8 MB each)
    max_pixels: int = 40_000_000  # DITTO_MAX_PIXELS: largest image, checked before decoding
    tts_model: str | None = None  # DITTO_TTS_MODEL: a Hub text-to-speech model to prefer (else the built-in voice)
    output_dir: Path = field(default_factory=lambda: Path(tempfile.gettempdir()) / "ditto-demo-outputs")
    #: DITTO_WORKERS and friends (ditto_demo/workers/settings.py): where requests run; default in this process.
    workers: PoolSettings = field(default_factory=PoolSettings)
    compile_mode: str = "off"  # DITTO_TORCH_COMPILE: torch.compile mode of the PyTorch networks
    #: DITTO_VIDEO_CODEC, DITTO_X264_PRESET: how result videos are encoded.
    encoder: EncoderSettings = field(default_factory=EncoderSettings)
    result_hours: float = 6.0  # DITTO_RESULT_HOURS: results (and Gradio's copies, uploads) are removed after this
    result_max_gb: float = 5.0  # DITTO_RESULT_MAX_GB: the oldest results go while all of them take more than this

    def retention(self) -> RetentionPolicy:
        """How long results stay and how much room they may take."""
        return RetentionPolicy(max_age=self.result_hours * 3600.0, max_bytes=int(self.result_max_gb * 1024**3))

    def limits(self) -> Limits:
        """The pipeline limits these settings allow."""
        return Limits(
            max_audio_seconds=self.max_audio_seconds,
            max_source_seconds=self.max_source_seconds,
            max_source_frames=self.max_source_frames,
            max_pixels=self.max_pixels,
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> AppSettings:
        """The settings in ``env`` (default ``os.environ``). A bad value raises :class:`DittoError` with one
        sentence naming the variable, so the app stops at start-up rather than at the first request."""
        env = os.environ if env is None else env
        defaults = cls()
        try:
            encoder = EncoderSettings.from_env(env)
        except InputError as exc:  # already names the variable and the allowed values
            raise DittoError(str(exc)) from None
        return cls(
            checkpoints=env.get("DITTO_CHECKPOINTS") or None,
            backend=env.get("DITTO_BACKEND", defaults.backend),
            device=env.get("DITTO_DEVICE", defaults.device),
            concurrency=max(1, int(_env_float(env, "DITTO_CONCURRENCY", defaults.concurrency))),
            max_queue=max(1, int(_env_float(env, "DITTO_MAX_QUEUE", defaults.max_queue))),
            max_audio_seconds=_env_float(env, "DITTO_MAX_AUDIO_SECONDS", defaults.max_audio_seconds),
            max_file_size=env.get("DITTO_MAX_FILE_SIZE", defaults.max_file_size),
            max_source_seconds=_env_float(env, "DITTO_MAX_SOURCE_SECONDS", defaults.max_source_seconds),
            max_source_frames=int(_env_float(env, "DITTO_MAX_SOURCE_FRAMES", defaults.max_source_frames)),
            max_pixels=int(_env_float(env, "DITTO_MAX_PIXELS", defaults.max_pixels)),
            tts_model=env.get("DITTO_TTS_MODEL") or None,
            output_dir=Path(env["DITTO_OUTPUT_DIR"]) if env.get("DITTO_OUTPUT_DIR") else defaults.output_dir,
            workers=PoolSettings.from_env(env, app_device=env.get("DITTO_DEVICE", defaults.device)),
            compile_mode=_compile_mode(env),
            encoder=encoder,
            result_hours=_env_positive(env, "DITTO_RESULT_HOURS", defaults.result_hours),
            result_max_gb=_env_positive(env, "DITTO_RESULT_MAX_GB", defaults.result_max_gb),
        )


class _DownloadLog:
    """A download listener that logs each change of state and each finished file (not every block of bytes)."""

    def __init__(self) -> None:
        self._last: tuple[str, int] | None = None

    def __call__(self, progress: DownloadProgress) -> None:
        key = (progress.state, progress.files_done)
        if key != self._last:
            self._last = key
            log.info("%s", progress.summary())


#: The emotion grid's largest frame (width, height): 1080p, H.264 level 4.0 at 25 fps, played by any phone.
GRID_MAX_SIZE = (1920, 1080)


class ServiceUnavailableError(DittoError):
    """Generation is impossible until the checkpoints are available (the message says how)."""


@dataclass(frozen=True)
class Outcome:
    """A finished generation: the video, a JSON-ready report, and the settings file to download."""

    video: Path
    report: dict[str, Any]
    settings_file: Path


@dataclass(frozen=True)
class AudioInfo:
    """A speech file's length, and the frames the video made from it will have."""

    seconds: float
    frames: int


def crop_outline(crop_to_image: np.ndarray) -> np.ndarray:
    """The corners of the crop the model sees, in portrait pixels (4×2 int32, clockwise from top left).

    ``crop_to_image`` is a registered frame's map from the registration crop (``AVATAR_CROP_SIZE`` square) back
    into the portrait.
    """
    size = AVATAR_CROP_SIZE
    corners = np.array([[0, 0], [size, 0], [size, size], [0, size]], np.float64)
    return transform_points(corners, crop_to_image).round().astype(np.int32)


def timing_report(result: Result, controls: Controls) -> dict[str, Any]:
    """The figures a user cares about, rounded for display."""
    return {
        "frames": result.frames,
        "fps": result.fps,
        "audio_seconds": round(result.audio_seconds, 3),
        "total_seconds": round(result.total_seconds, 3),
        "rtf": round(result.rtf, 3),
        "render_fps": round(result.frames / max(result.timings.get("render", 1e-9), 1e-9), 2),
        "first_frame_latency_seconds": round(result.first_frame_latency, 3),
        "per_frame_ms": {k: round(v, 2) for k, v in result.per_frame_ms.items()},
        "phase_seconds": {k: round(v, 3) for k, v in result.timings.items()},
        "seed": result.seed,
        "seeds": list(result.seeds),
        "faces_found": result.faces_found,
        "backends": result.backends,
        "controls": controls.to_dict(),
    }


class DemoService:
    """The app's single entry point into the pipeline; safe to share between concurrent requests."""

    def __init__(self, settings: AppSettings | None = None, *, pipeline: Pipeline | None = None,
                 pool: WorkerPool | None = None, download: CheckpointDownload | None = None) -> None:
        """``pipeline``: use this one; ``pool``: run on these workers; else the service makes its own pipeline.

        A local checkpoint folder (``DITTO_CHECKPOINTS``) is used at once. Checkpoints from the Hub are fetched in
        the background (``download``, else a :class:`CheckpointDownload` of the settings' backend) so that the
        page is served meanwhile: :meth:`checkpoint_progress` says how far it is, and the pipeline is made the
        first time :attr:`ready` (or any run) finds the download finished.
        """
        self.settings = settings or AppSettings.from_env()
        self.problem: str | None = None
        self.results = ResultStore(self.settings.output_dir, self.settings.retention())
        self._lock = threading.Lock()
        self._pipeline_lock = threading.Lock()  # making the pipeline once a download is ready
        self._cancels: dict[str, threading.Event] = {}
        self._download: CheckpointDownload | None = None
        self._download_taken = False  # the finished download has been turned into a pipeline (or a problem)
        # Workers (issue 13): with a pool, every run goes to a free worker through a pipeline-shaped stand-in, and
        # the queue runs as many requests at once as there are workers.
        self.pool: WorkerPool | None = pool
        if pool is None and pipeline is None and self.settings.workers.kind != "inprocess":
            try:
                self.pool = open_pool(self.settings.workers, WorkerConfig(
                    checkpoints=self.settings.checkpoints, backend=self.settings.backend,
                    limits=self.settings.limits(), compile_mode=self.settings.compile_mode,
                    encoder=self.settings.encoder))
            except DittoError as exc:
                self.problem = str(exc)
                log.error("starting without workers: %s", exc)
        if self.pool is not None:
            self.settings = dataclasses.replace(self.settings, concurrency=self.pool.capacity)
            pipeline = PoolPipeline(self.pool)  # type: ignore[assignment]
        self.pipeline: Pipeline | None = pipeline
        if pipeline is None:  # also when workers could not start: the app's own pipeline serves, as before
            self._find_checkpoints(download)

    def _find_checkpoints(self, download: CheckpointDownload | None) -> None:
        """A local folder: the pipeline now. The Hub: a background download (the pipeline when it is ready)."""
        if download is None:
            try:
                local = local_checkpoints(self.settings.checkpoints)
            except DittoError as exc:  # a folder named that does not exist: never a download instead
                self.problem = str(exc)
                log.error("starting without checkpoints: %s", exc)
                return
            if local is not None:
                self._make_pipeline(local)
                return
            download = CheckpointDownload(self.settings.backend, local=self.settings.checkpoints,
                                          listener=_DownloadLog())
        log.info("resolving the checkpoints in the background; the page is served meanwhile")
        self._download = download.start()

    def _make_pipeline(self, root: Path) -> None:
        """The in-process pipeline on ``root``, or :attr:`problem` saying why not."""
        try:
            pipeline = Pipeline(
                root,
                backend=self.settings.backend,
                device=self.settings.device,
                limits=self.settings.limits(),
                compile_mode=self.settings.compile_mode,
                encoder=self.settings.encoder,
            )
        except DittoError as exc:
            self.problem = str(exc)
            log.error("starting without checkpoints: %s", exc)
            return
        missing = missing_networks(pipeline.root)
        if missing:  # a folder that exists but lacks files would fail at the first request: say it now
            self.problem = (
                f"The checkpoint folder has no files for {', '.join(missing)}; run "
                "`python -m ditto_demo download` (or point DITTO_CHECKPOINTS at a complete copy)."
            )
            log.error("starting without a complete checkpoint folder: %s", self.problem)
            return
        self.pipeline = pipeline

    def _take_download(self) -> None:
        """Once the background download is ready, make the pipeline from it (once, whoever asks first)."""
        download = self._download
        if self.pipeline is not None or download is None or self._download_taken:
            return
        if download.progress().state != "ready":
            return
        with self._pipeline_lock:
            if self._download_taken:
                return
            root = download.root
            if root is not None:
                self._make_pipeline(root)
            self._download_taken = True
            if self.pipeline is not None:
                log.info("checkpoints ready; generation is available")

    def checkpoint_progress(self) -> DownloadProgress | None:
        """How far the background checkpoint download is (files, bytes, percent, or its failure); ``None`` when
        the service did not need one (a local folder, a given pipeline, workers)."""
        if self._download is None:
            return None
        self._take_download()
        return self._download.progress()

    def retry_download(self) -> bool:
        """Start a failed checkpoint download again (the page's retry button); ``True`` if it was started."""
        download = self._download
        if download is None:
            return False
        with self._pipeline_lock:  # two visitors pressing retry start one download
            if download.progress().state != "failed":
                return False
            log.info("starting the checkpoint download again")
            download.start()
            # The new run's first act is a fresh snapshot; wait for it so that a second press sees it running.
            deadline = time.monotonic() + 2.0
            while download.progress().state == "failed" and time.monotonic() < deadline:
                time.sleep(0.01)
        return True

    # ------------------------------------------------------------------------------------------ cancelling

    def cancel_token(self, session: str) -> threading.Event:
        """A fresh cancel event for the run a browser session is starting (replacing any finished one)."""
        with self._lock:
            event = self._cancels[session] = threading.Event()
            return event

    def cancel(self, session: str) -> bool:
        """Stop the run of ``session`` (Stop pressed, tab closed); ``True`` if one was running."""
        with self._lock:
            event = self._cancels.pop(session, None)
        if event is None:
            return False
        event.set()
        return True

    def release(self, session: str, token: threading.Event) -> None:
        """Forget a finished run's token (only if it is still that session's current one)."""
        with self._lock:
            if self._cancels.get(session) is token:
                del self._cancels[session]

    # ------------------------------------------------------------------------------------------- seeds

    @staticmethod
    def new_seed() -> int:
        """A fresh random seed, for a page that shows the seed before the run (the pipeline's one drawer)."""
        return draw_seed()

    # -------------------------------------------------------------------------------------------- status

    @property
    def ready(self) -> bool:
        """Generation can run now (checkpoints found, or downloaded and made into the pipeline; workers usable)."""
        self._take_download()
        return self.pipeline is not None and (self.pool is None or self.pool.usable())

    @property
    def downloading(self) -> bool:
        """The checkpoints are still being fetched in the background (the page says how far and waits)."""
        progress = self.checkpoint_progress()
        return progress is not None and not progress.finished

    def banner(self) -> str | None:
        """Markdown for a banner while generation is unavailable: the download's progress, or the exact fix;
        ``None`` when ready."""
        if self.ready:
            return None
        progress = self.checkpoint_progress()
        if progress is not None and not progress.finished:
            return (
                "**Generation starts when the Ditto checkpoints are downloaded.** "
                f"{progress.summary().rstrip('.…')}. This page enables Generate by itself: no need to reload."
            )
        problem = self.problem
        if progress is not None and progress.state == "failed" and self.pipeline is None and problem is None:
            problem = progress.error
        if problem is None and self.pool is not None:
            problem = self.pool.problem()
        retry = " Then restart the app (or try the download again below)." if progress is not None else (
            " Then restart the app.")
        return f"**Generation is unavailable: the Ditto checkpoints could not be loaded.** {problem or ''}{retry}"

    def control_defaults(self) -> dict[str, Any]:
        """Values for the controls that default to the checkpoint's setting (released fallbacks when offline)."""
        from ditto_demo.pipeline.config import ReleasedDefaults
        from ditto_demo.pipeline.plan import control_defaults

        return control_defaults(self.pipeline.defaults() if self.pipeline else ReleasedDefaults())

    def engine_report(self) -> str:
        """What the engine finds on this host (as ``python -m ditto_demo doctor`` prints it); may name folders."""
        from ditto_demo.engine.report import engine_report

        checkpoints = self.settings.checkpoints
        workers = self.pool.describe() if self.pool is not None else "in the app's process (DITTO_WORKERS unset)"
        return engine_report(Path(checkpoints) if checkpoints else None, workers=workers)

    def require(self) -> Pipeline:
        """The pipeline, or :class:`ServiceUnavailableError` with the banner's sentence (download progress or fix)."""
        self._take_download()
        if self.pipeline is None:
            raise ServiceUnavailableError(self.banner() or "The pipeline is not available.")
        return self.pipeline

    # ------------------------------------------------------------------------------------------- actions

    @contextmanager
    def _request(self) -> Iterator[Path]:
        """A fresh output folder for one request from the result store: held (never swept) while the request
        runs, removed again if it fails; afterwards it ages like any result (``DITTO_RESULT_HOURS``)."""
        with self.results.folder() as folder:
            yield folder

    def _finish(self, folder: Path, result: Result, controls: Controls) -> Outcome:
        settings_file = folder / "ditto-settings.json"
        settings_file.write_text(controls.to_json() + "\n")
        report = timing_report(result, controls)
        report["worker"] = worker_of(result).as_dict()  # host, device and index of who ran it
        return Outcome(result.video, report, settings_file)

    def generate(
        self,
        source: str | Path,
        audio: str | Path,
        controls: Controls,
        *,
        progress: ProgressFn | None = None,
        cancel: threading.Event | None = None,
    ) -> Outcome:
        """One talking-head video in its own folder."""
        pipeline = self.require()
        with self._request() as folder:
            result = pipeline.generate(source, audio, controls, output=folder / "ditto.mp4", progress=progress,
                                       cancel=cancel)
            return self._finish(folder, result, controls)

    def compare(
        self,
        source: str | Path,
        audio: str | Path,
        controls_a: Controls,
        controls_b: Controls,
        *,
        progress: ProgressFn | None = None,
        cancel: threading.Event | None = None,
    ) -> Outcome:
        """Settings A and B side by side in one video (same portrait and speech)."""
        pipeline = self.require()
        with self._request() as folder:
            result = pipeline.compare(source, audio, [("A", controls_a), ("B", controls_b)],
                                      output=folder / "ditto-compare.mp4", progress=progress, cancel=cancel)
            return self._finish(folder, result, controls_a)

    def emotion_grid(
        self,
        source: str | Path,
        audio: str | Path,
        controls: Controls,
        *,
        progress: ProgressFn | None = None,
        cancel: threading.Event | None = None,
    ) -> Outcome:
        """All eight emotions tiled 4×2, with one seed so only the emotion differs; at most 1920×1080 (tiles shrunk
        to fit), so H.264 stays within level 4.1, which phones play."""
        pipeline = self.require()
        seed = controls.seed if controls.seed is not None else self.new_seed()
        base = controls.with_changes(seed=seed, emotion_timeline=())
        variants = [(name, base.with_changes(emotion=name)) for name in EMOTIONS]
        with self._request() as folder:
            result = pipeline.compare(source, audio, variants, output=folder / "ditto-emotions.mp4",
                                      progress=progress, cancel=cancel, columns=4, max_size=GRID_MAX_SIZE)
            return self._finish(folder, result, base)

    def preview(self, source: str | Path, controls: Controls) -> np.ndarray:
        """The portrait with the detected face box (green) and the crop the model sees (orange), RGB uint8."""
        import cv2

        registered = self.require().register(source, controls)
        frame = registered.frames[0]
        image = np.ascontiguousarray(frame.image.copy())
        thickness = max(2, round(max(image.shape[:2]) / 300))
        x1, y1, x2, y2 = (round(v) for v in registered.face_box)
        cv2.rectangle(image, (x1, y1), (x2, y2), (60, 200, 90), thickness, cv2.LINE_AA)
        cv2.polylines(image, [crop_outline(frame.crop_to_image)], True, (255, 150, 40), thickness, cv2.LINE_AA)
        return image

    def describe_audio(self, audio: str | Path) -> AudioInfo:
        """A speech file's duration and the frames its video will have (decoded, so any format works); refuses
        files past the limit."""
        samples = len(load_audio(Path(audio), max_seconds=self.settings.max_audio_seconds))
        return AudioInfo(seconds=samples / SAMPLE_RATE, frames=audio_frame_count(samples))

    def audio_seconds(self, audio: str | Path) -> float:
        """Duration of a speech file (decoded, so any format works); refuses files past the limit."""
        return self.describe_audio(audio).seconds

    def stream(
        self,
        source: str | Path,
        chunks: Iterable[np.ndarray],
        controls: Controls,
        *,
        cancel: threading.Event | None = None,
    ) -> Iterator[StreamFrame]:
        """Frames while 16 kHz mono chunks arrive (see :meth:`Pipeline.stream`)."""
        return self.require().stream(source, chunks, controls, cancel=cancel)

    def open_live_session(self, source: str | Path, controls: Controls | None = None,
                          **options: Any) -> LiveSession:
        """A started :class:`LiveSession` animating ``source`` with the audio pushed to it; close it when done.

        ``options`` are the session's (``idle_timeout``, ``max_buffer_seconds``, ``keep_frames``, ``name``, ...).
        A portrait without a face, or a server without checkpoints, ends the session with its ``error`` set.
        """
        return LiveSession(self, source, controls, **options).start()

    def stream_file_chunks(
        self,
        source: str | Path,
        audio: str | Path,
        controls: Controls,
        folder: Path | None = None,
        *,
        chunk_seconds: float = CHUNK_SECONDS,
        cancel: threading.Event | None = None,
    ) -> Iterator[tuple[Path, dict[str, Any]]]:
        """A speech file animated as it is generated: ``(mp4 chunk, statistics)`` pairs, in a new request folder
        unless ``folder`` is given (see :func:`ditto_demo.live.stream_file_chunks`)."""
        self.require()
        if folder is not None:
            return _stream_file_chunks(self, source, audio, controls, folder,
                                       max_audio_seconds=self.settings.max_audio_seconds,
                                       chunk_seconds=chunk_seconds, cancel=cancel)
        return self._held_chunks(source, audio, controls, chunk_seconds=chunk_seconds, cancel=cancel)

    def _held_chunks(self, source: str | Path, audio: str | Path, controls: Controls, *, chunk_seconds: float,
                     cancel: threading.Event | None) -> Iterator[tuple[Path, dict[str, Any]]]:
        """The chunks in a result-store folder held until the stream ends (however it ends)."""
        folder = self.results.new_folder()
        try:
            yield from _stream_file_chunks(self, source, audio, controls, folder,
                                           max_audio_seconds=self.settings.max_audio_seconds,
                                           chunk_seconds=chunk_seconds, cancel=cancel)
        finally:
            self.results.release(folder)

    # ----------------------------------------------------------------------------------------- speech

    @property
    def can_speak(self) -> bool:
        """A voice can be had on this server (checked without loading one): the built-in voice, or a Hub model."""
        from ditto_demo.speech import voice_available

        return bool(self.settings.tts_model) or voice_available()

    def speak(self, text: str | None) -> Path:
        """``text`` spoken into a 16 kHz 16-bit wav in a new request folder (``ditto_demo.speech``'s voice, or the
        Hub model ``DITTO_TTS_MODEL`` names). No voice at all raises ``SpeechUnavailableError``, a sentence."""
        from ditto_demo.speech import load_voice, write_speech

        if not (text or "").strip():
            raise InputError("Type the text to speak first.")
        voice = load_voice(self.settings.tts_model)  # loaded once per process, then shared
        with self._request() as folder:
            return write_speech(voice, text or "", folder / f"speech-{uuid.uuid4().hex[:8]}.wav")

    @staticmethod
    def check_file(path: str | Path | None, what: str) -> Path:
        """An uploaded path, or an InputError naming what is missing."""
        if not path:
            raise InputError(f"Add {what} first.")
        return Path(path)

    # ------------------------------------------------------------------ live avatar (docs/live_protocol.md)

    @property
    def live_hub(self) -> Any:
        """The :class:`ditto_demo.live.server.LiveHub` of this app (created on first use)."""
        from ditto_demo.live.server import LiveHub

        with self._lock:
            hub = getattr(self, "_live_hub", None)
            if hub is None:
                voice = None
                if self.can_speak:
                    from ditto_demo.speech import load_voice

                    def voice() -> Any:
                        return load_voice(self.settings.tts_model)

                def read_speech(path: Path) -> np.ndarray:
                    return load_audio(path, max_seconds=self.settings.max_audio_seconds)

                hub = self._live_hub = LiveHub(self.live_pipeline, voice=voice, read_speech=read_speech)
            return hub

    def live_start(
        self,
        request: str | Mapping[str, Any] | None,
        session: str | None,
        source: str | Path | None,
        speech: str | Path | None,
        controls: Controls,
    ) -> Iterator[dict[str, Any]]:
        """The ``live_start`` event: readies the portrait, yields the ticket, then holds until the session ends.

        ``request`` is the page's start request (JSON text or a mapping: ``mode``, optional ``text``); ``session``
        the Gradio session hash. Yields ``{"state": "ready", "ticket", "path", "mode", "expires_s"}``, then
        ``{"state": "ended", "reason"}`` when the session is over; or ``{"state": "error", "message"}`` when it
        cannot start. Run it in the pipeline's concurrency group: it holds the slot while the session lives.
        """
        import json

        from ditto_demo.live.server import LIVE_WS_PATH

        try:
            wanted = json.loads(request) if isinstance(request, str) and request.strip() else dict(request or {})
            if not isinstance(wanted, Mapping):
                raise InputError("The start request must be a JSON object with a mode.")
            mode = str(wanted.get("mode") or "microphone")
            text = wanted.get("text") or None
            pipeline = self.require()
            portrait = self.check_file(source, "a portrait")
            speech_file = Path(speech) if speech else None
            if mode == "file" and speech_file is None:
                raise InputError("Choose a speech file first.")
            if mode == "text" and not self.can_speak:
                raise InputError("Speech from text is not available on this server.")
            hub = self.live_hub
            pipeline.prepare_stream(portrait, controls)  # a portrait without a face is refused here, in words
            if mode == "text" and hub.voice is not None:
                hub.voice()  # loaded once per process (seconds): before the clock starts, not after Speak
            entry = hub.open(session, portrait, mode=mode, controls=controls, speech=speech_file,
                             text=str(text) if text else None)
        except json.JSONDecodeError:
            yield {"state": "error", "message": "The start request is not valid JSON."}
            return
        except DittoError as exc:
            yield {"state": "error", "message": str(exc)}
            return
        try:
            path = f"{LIVE_WS_PATH.lstrip('/')}?ticket={entry.ticket}"
            yield {"state": "ready", "ticket": entry.ticket, "path": path, "mode": mode, "expires_s": hub.ticket_ttl_s}
            while not hub.wait(entry, 1.0):
                pass
            yield {"state": "ended", "reason": entry.reason or "The live session ended."}
        finally:  # also when Gradio closes the generator (the visitor left): the session ends with it
            hub.end(entry, "The page stopped waiting for the live session.")

    def live_stop(self, session: str | None) -> bool:
        """End the live session of a Gradio session (the tab closed); True if there was one."""
        hub = getattr(self, "_live_hub", None)
        return bool(hub is not None and hub.stop_session(session))

    def live_routes(self) -> list[Any]:
        """The live WebSocket's routes, for the FastAPI app Gradio creates at launch (``app_kwargs["routes"]``)."""
        from ditto_demo.live.server import live_routes

        return live_routes(lambda: self.live_hub)

    def mount_live_routes(self, app: Any) -> None:
        """Add the live WebSocket to an existing FastAPI app (e.g. one ``gr.mount_gradio_app`` mounts on)."""
        from ditto_demo.live.server import mount_live_routes

        mount_live_routes(app, lambda: self.live_hub)

    # ----------------------------------------------------------------------------------------- workers

    def live_pipeline(self) -> Any:
        """What one live avatar animates with: with workers, a worker pinned to it for its whole session (taken at
        its first call, handed back when its stream ends); otherwise the app's pipeline."""
        if self.pool is not None:
            return self.pool.pin()
        return self.require()

    def close(self) -> None:
        """Stop the workers, if any (the app's pipeline needs nothing)."""
        if self.pool is not None:
            self.pool.close()

    # ------------------------------------------------------------------ upload checks (helper G1, issue 11)

    def check_portrait(self, path: str | Path) -> None:
        """Refuse, with an ``InputError`` sentence, a portrait that is not an image or video we can read or that is
        past this server's limits; nothing is registered. The pages call it as soon as a file is uploaded, so a
        text file renamed ``.jpg`` is refused on upload rather than at Generate."""
        from ditto_demo.pipeline.media import load_media

        limits = self.settings.limits()
        load_media(Path(path), max_pixels=limits.max_pixels, max_frames=limits.max_source_frames,
                   max_seconds=limits.max_source_seconds)
