"""What travels between the app and a worker, and what a worker does with it (the same for both back ends).

A request becomes a :class:`Job`: its kind, the portrait and speech as :class:`FilePayload` (a path when the worker
shares the app's disk, the file's bytes when it does not), the variants' controls and the output's name. On the
worker, :class:`WorkerRuntime` holds that worker's one :class:`Pipeline` and runs jobs on it one at a time, so a
pipeline's per-run state is never shared between requests. :class:`ChunkFeed` carries a live stream's audio to the
pipeline in order, whatever order the pieces arrived in.
"""

from __future__ import annotations

import logging
import pickle
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ditto_demo.errors import DittoError
from ditto_demo.pipeline.config import ReleasedDefaults
from ditto_demo.pipeline.controls import Controls
from ditto_demo.pipeline.pipeline import Pipeline, ProgressFn, Result, StreamFrame
from ditto_demo.pipeline.plan import Limits
from ditto_demo.pipeline.writer import EncoderSettings

__all__ = [
    "ChunkFeed",
    "FilePayload",
    "Job",
    "PreviewData",
    "PreviewFrame",
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

    def stream(self, source: FilePayload, inputs: Path, feed: ChunkFeed, controls: Controls,
               cancel: threading.Event) -> Iterator[StreamFrame]:
        return self._require().stream(source.materialize(inputs), feed, controls, cancel=cancel)

    def preview(self, source: FilePayload, inputs: Path, controls: Controls) -> PreviewData:
        registered = self._require().register(source.materialize(inputs), controls)
        frame = registered.frames[0]
        return PreviewData((PreviewFrame(frame.image, frame.crop_to_image),), registered.face_box)


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
