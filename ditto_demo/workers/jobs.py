"""What travels between the app and a worker, and what a worker does with it (the same for both back ends).

A request becomes a :class:`Job`: its kind, the portrait and speech as :class:`FilePayload` (a path when the worker
shares the app's disk, the file's bytes when it does not), the variants' controls and the output's name. On the
worker, :class:`WorkerRuntime` holds that worker's one :class:`Pipeline` and runs jobs on it one at a time, so a
pipeline's per-run state is never shared between requests. A live stream is a :class:`StreamRequest`; on the
worker its :class:`JobState` (kept in a :class:`JobBook`) receives what the app sends while it runs: the audio
(:class:`ChunkFeed`, in order whatever order the pieces arrived in), control changes (mirrored into a
:class:`~ditto_demo.pipeline.live_controls.LiveControls`) and the answers to "render this frame?" (:class:`RemoteSkip`,
when the app's consumer drops late frames).
"""

from __future__ import annotations

import logging
import pickle
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ditto_demo.errors import DittoError
from ditto_demo.pipeline.config import ReleasedDefaults
from ditto_demo.pipeline.controls import Controls
from ditto_demo.pipeline.live_controls import LIVE_CONTROL_NAMES, LiveControls
from ditto_demo.pipeline.pipeline import Pipeline, ProgressFn, Result, StreamFrame
from ditto_demo.pipeline.plan import Limits
from ditto_demo.pipeline.writer import EncoderSettings

__all__ = [
    "ChunkFeed",
    "FilePayload",
    "Job",
    "JobBook",
    "JobState",
    "PreviewData",
    "PreviewFrame",
    "RemoteSkip",
    "StreamRequest",
    "WorkerConfig",
    "WorkerRuntime",
    "portable_error",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FilePayload:
    """A file on its way to a worker: a ``path`` the worker can read, or its ``data``; ``name`` keeps the suffix
    (formats are recognised by it)."""

    name: str
    path: str | None = None
    data: bytes | None = None

    @classmethod
    def by_path(cls, path: str | Path) -> FilePayload:
        resolved = Path(path).resolve()
        return cls(name=resolved.name, path=str(resolved))

    @classmethod
    def by_value(cls, path: str | Path) -> FilePayload:
        return cls(name=Path(path).name, data=Path(path).read_bytes())

    def materialize(self, folder: Path) -> Path:
        """A path to the file on this machine (written into ``folder`` when it came as bytes)."""
        if self.path is not None:
            return Path(self.path)
        if self.data is None:
            raise DittoError("A request reached the worker without its file; please try again.")
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / (Path(self.name).name or "input")
        target.write_bytes(self.data)
        return target


@dataclass(frozen=True)
class Job:
    """One request for a worker: ``generate`` (one variant) or ``compare`` (several, tiled)."""

    kind: str
    source: FilePayload
    audio: FilePayload
    variants: tuple[tuple[str, Controls], ...]
    output_name: str
    id: str
    columns: int | None = None


@dataclass(frozen=True)
class StreamRequest:
    """A live stream for a worker: the portrait, the starting controls, and whether the app will send control
    changes (``live``) and answer per-frame admission questions (``skip``)."""

    id: str
    source: FilePayload
    controls: Controls
    live: bool = False
    skip: bool = False
    low_latency: bool = True


@dataclass(frozen=True)
class PreviewFrame:
    image: np.ndarray
    crop_to_image: np.ndarray


@dataclass(frozen=True)
class PreviewData:
    """What the crop preview needs of a registered portrait (shaped like the pipeline's ``Source`` for it)."""

    frames: tuple[PreviewFrame, ...]
    face_box: tuple[float, float, float, float]


@dataclass(frozen=True)
class WorkerConfig:
    """How a worker builds its pipeline (the app's settings, passed down typed). ``device`` is ``cpu`` or ``cuda``:
    the worker sees only its own GPU."""

    checkpoints: str | None = None
    backend: str = "auto"
    device: str = "auto"
    limits: Limits | None = None
    compile_mode: str = "off"
    encoder: EncoderSettings | None = None
    #: torch intra-op threads (``None``: torch's own choice). Several CPU workers on few cores need 1 each.
    threads: int | None = None


def portable_error(exc: BaseException) -> BaseException:
    """``exc`` if it survives pickling (so the app can raise the very error), else a :class:`DittoError` with its
    text: a worker must never fail to report a failure."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:  # any unpicklable error is reported by its text
        return DittoError(f"{type(exc).__name__}: {exc}")
    return exc


class WorkerRuntime:
    """A worker's own pipeline, loaded eagerly so that a worker without usable checkpoints says so at once."""

    #: Loaded at start: every network a run uses (face detection loads with the first portrait).
    NETWORKS = ("appearance_extractor", "motion_extractor", "warp_network", "decoder", "stitch_network", "lmdm",
                "hubert")

    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        self.pipeline: Pipeline | None = None

    def load(self) -> ReleasedDefaults:
        """Build the pipeline and load its networks; raises (with a sentence) when the checkpoints are unusable."""
        import torch

        from ditto_demo.engine.hub import missing_networks

        if self.config.threads is not None:
            torch.set_num_threads(self.config.threads)
        pipeline = Pipeline(self.config.checkpoints, backend=self.config.backend, device=self.config.device,
                            limits=self.config.limits, compile_mode=self.config.compile_mode,
                            encoder=self.config.encoder)
        missing = missing_networks(pipeline.root)
        if missing:
            raise DittoError(f"The checkpoint folder {pipeline.root} has no files for {', '.join(missing)}.")
        for name in self.NETWORKS:
            pipeline.networks[name]
        defaults = pipeline.defaults("pytorch")
        pipeline.defaults("online")
        self.pipeline = pipeline
        return defaults

    def _require(self) -> Pipeline:
        if self.pipeline is None:
            raise DittoError("This worker has no pipeline loaded.")
        return self.pipeline

    def run(self, job: Job, folder: Path, inputs: Path, progress: ProgressFn | None,
            cancel: threading.Event) -> Result:
        """Run ``job``: the video is written to ``folder / job.output_name``; byte inputs go to ``inputs``."""
        pipeline = self._require()
        source = job.source.materialize(inputs)
        audio = job.audio.materialize(inputs)
        output = folder / job.output_name
        if job.kind == "generate":
            return pipeline.generate(source, audio, job.variants[0][1], output=output, progress=progress,
                                     cancel=cancel)
        if job.kind == "compare":
            return pipeline.compare(source, audio, list(job.variants), output=output, progress=progress,
                                    cancel=cancel, columns=job.columns)
        raise DittoError(f"Unknown request kind {job.kind!r}.")

    def stream(self, request: StreamRequest, inputs: Path, state: JobState) -> Iterator[StreamFrame]:
        """The frames of ``request``, fed by ``state`` (audio, control changes, admission answers)."""
        live = state.start_live(request.controls) if request.live else None
        return self._require().stream(request.source.materialize(inputs), state.feed, request.controls,
                                      cancel=state.cancel, live=live, skip_frame=state.skip if request.skip else None,
                                      low_latency=request.low_latency)

    def call(self, name: str, source: FilePayload, inputs: Path, controls: Controls) -> PreviewData | None:
        """A short request: ``preview`` (the crop preview's data) or ``prepare`` (register the portrait and load
        what a stream needs, so a live stream starts at once)."""
        pipeline = self._require()
        path = source.materialize(inputs)
        if name == "preview":
            registered = pipeline.register(path, controls)
            frame = registered.frames[0]
            return PreviewData((PreviewFrame(frame.image, frame.crop_to_image),), registered.face_box)
        if name == "prepare":
            prepare = getattr(pipeline, "prepare_stream", None)
            if prepare is not None:
                prepare(path, controls)
            else:
                pipeline.register(path, controls)
            return None
        raise DittoError(f"Unknown worker call {name!r}.")


class ChunkFeed:
    """A live stream's audio on the worker: pieces numbered by the sender, handed on in order; iteration ends at
    the end marker or when ``cancel`` is set (the pipeline's runner stops on the same event)."""

    def __init__(self, cancel: threading.Event) -> None:
        self._cancel = cancel
        self._cond = threading.Condition()
        self._pending: dict[int, np.ndarray] = {}
        self._next = 0
        self._end: int | None = None

    def put(self, seq: int, chunk: np.ndarray) -> None:
        with self._cond:
            self._pending[seq] = chunk
            self._cond.notify_all()

    def end(self, count: int) -> None:
        """No pieces beyond ``count`` (numbered ``0 .. count - 1``) will come."""
        with self._cond:
            self._end = count
            self._cond.notify_all()

    def __iter__(self) -> Iterator[np.ndarray]:
        while True:
            with self._cond:
                while self._next not in self._pending and self._end != self._next and not self._cancel.is_set():
                    self._cond.wait(0.1)
                if self._cancel.is_set() or self._end == self._next:
                    return
                chunk = self._pending.pop(self._next)
                self._next += 1
            yield chunk


class RemoteSkip:
    """``skip_frame`` on the worker, answered by the app: each question goes out through ``ask(index)`` and the
    stitch thread waits for :meth:`answer` (rendering the frame if no answer comes within ``timeout``)."""

    def __init__(self, ask: Callable[[int], None], cancel: threading.Event, timeout: float = 5.0) -> None:
        self._ask = ask
        self._cancel = cancel
        self._timeout = timeout
        self._cond = threading.Condition()
        self._answers: dict[int, bool] = {}

    def __call__(self, index: int) -> bool:
        self._ask(index)
        with self._cond:
            self._cond.wait_for(lambda: index in self._answers or self._cancel.is_set(), self._timeout)
            return self._answers.pop(index, False)

    def answer(self, index: int, skip: bool) -> None:
        with self._cond:
            self._answers[index] = skip
            self._cond.notify_all()


@dataclass
class JobState:
    """What a running job receives while it runs; messages may arrive before the job starts (Ray runs an actor's
    calls on several threads), so everything is created on first use."""

    cancel: threading.Event = field(default_factory=threading.Event)
    feed: ChunkFeed = field(init=False)
    skip: RemoteSkip | None = None
    live: LiveControls | None = None
    #: Control changes are numbered by the app; an older one arriving late is ignored.
    controls_version: int = 0
    pending_controls: Controls | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.feed = ChunkFeed(self.cancel)

    def start_live(self, controls: Controls) -> LiveControls:
        with self.lock:
            self.live = LiveControls(self.pending_controls or controls)
            return self.live

    def apply_controls(self, version: int, controls: Controls) -> None:
        """The viewer changed a live control (snapshot ``version`` of the app's channel)."""
        with self.lock:
            if version <= self.controls_version:
                return
            self.controls_version = version
            if self.live is None:
                self.pending_controls = controls
                return
            live = self.live
        live.update(**{name: getattr(controls, name) for name in LIVE_CONTROL_NAMES})


class JobBook:
    """The worker's running jobs by id; a job's late messages after it ended are dropped."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[str, JobState] = {}
        self._finished: deque[str] = deque(maxlen=1024)

    def get(self, job_id: str) -> JobState | None:
        """The job's state (created on first use); ``None`` once it has ended."""
        with self._lock:
            if job_id in self._finished:
                return None
            return self._jobs.setdefault(job_id, JobState())

    def close(self, job_id: str) -> None:
        with self._lock:
            self._jobs.pop(job_id, None)
            self._finished.append(job_id)
