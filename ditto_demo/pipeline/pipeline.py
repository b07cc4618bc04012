"""The pipeline: portrait + speech → talking-head video (``generate``) or frames as the audio arrives (``stream``).

:meth:`Pipeline.generate` reads top to bottom as the run goes: read the speech → audio features → register the
portrait → plan the run (:func:`~ditto_demo.pipeline.plan.plan_run`) → motion → render → encode. ``compare``
repeats the per-variant steps for each variant and tiles the frames. Both paths, and :meth:`Pipeline.stream`,
run their per-frame work through the one :class:`~ditto_demo.pipeline.runner.Runner` and the stages of
:class:`~ditto_demo.pipeline.frames.FrameRenderer`:

    offline:   audio → HuBERT (whole file) → LMDM clips → [stitch → warp → decode → compose] → H.264/AAC file
    streaming: audio chunks → [HuBERT windows → LMDM clips → stitch → warp → decode → compose] → frames

Everything here is backend-agnostic: networks are called through the engine's binding-name interface.
See docs/architecture.md for the diagrams.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ditto_demo.engine import release_memory
from ditto_demo.engine.hub import resolve_checkpoints
from ditto_demo.errors import InputError
from ditto_demo.pipeline.audio import (
    SAMPLE_RATE,
    HubertStream,
    audio_frame_count,
    hubert_features,
    load_audio,
    silence_block,
    tile_silence,
)
from ditto_demo.pipeline.conditioning import Conditioning
from ditto_demo.pipeline.config import ReleasedDefaults, load_defaults
from ditto_demo.pipeline.controls import Controls
from ditto_demo.pipeline.frames import FrameRenderer, MotionRow, RowNumberer, tile_frames
from ditto_demo.pipeline.live_controls import LiveControls
from ditto_demo.pipeline.motion import MotionOptions, StreamingMotion, generate_motion
from ditto_demo.pipeline.motion_space import MOTION_DIM
from ditto_demo.pipeline.networks import Networks
from ditto_demo.pipeline.plan import (
    FPS,
    Limits,
    RunPlan,
    emotion_for,
    motion_options,
    plan_run,
    registration_options,
    stitch_options,
    stream_overlap,
)
from ditto_demo.pipeline.registration import SourceCache
from ditto_demo.pipeline.runner import CancelledError, Runner, Stage
from ditto_demo.pipeline.stitching import MotionStitcher
from ditto_demo.pipeline.types import Source
from ditto_demo.pipeline.writer import EncoderSettings, VideoWriter

__all__ = ["Pipeline", "ProgressFn", "Result", "StreamFrame", "StreamStages", "VariantRender"]

log = logging.getLogger(__name__)

#: ``progress(stage, fraction, message)``; stages in order: audio, features, face, motion, render, encode.
ProgressFn = Callable[[str, float, str], None]


@dataclass(frozen=True)
class Result:
    """What a generation produced and how long each part took."""

    video: Path
    seed: int
    frames: int
    fps: int
    audio_seconds: float
    #: Wall time per phase (face, audio, motion, render), in seconds; render overlaps its stages.
    timings: dict[str, float]
    #: Time spent inside each per-frame stage, per frame, in milliseconds (stitch, warp, decode, compose).
    per_frame_ms: dict[str, float]
    #: From the call to the first frame handed to the encoder, in seconds.
    first_frame_latency: float
    total_seconds: float
    faces_found: int
    backends: dict[str, str] = field(default_factory=dict)
    #: The seed of every variant (one for a plain generation).
    seeds: tuple[int, ...] = ()

    @property
    def rtf(self) -> float:
        """Real-time factor: processing time / audio duration (below 1 is faster than real time)."""
        return self.total_seconds / max(self.audio_seconds, 1e-9)


@dataclass(frozen=True)
class StreamFrame:
    """One streamed frame: its index, its time in the audio, the RGB image, and when it was ready."""

    index: int
    timestamp: float
    image: np.ndarray
    produced_at: float


class Pipeline:
    """Loads nothing until needed; one instance serves many requests (thread-safe where it shares state).

    ``checkpoints``: a checkpoint folder, or ``None`` to use ``DITTO_CHECKPOINTS`` / the Hub (see
    :func:`ditto_demo.engine.hub.resolve_checkpoints`). ``backend`` / ``device`` as for ``load_network``.
    ``compile_mode`` (``torch.compile`` for the PyTorch networks) and ``encoder`` (how videos are encoded) are
    typed settings: the app, the CLI and the bench read them from the environment and pass them here.
    """

    def __init__(
        self,
        checkpoints: str | Path | None = None,
        *,
        backend: str = "auto",
        device: str = "auto",
        limits: Limits | None = None,
        source_cache_size: int = 4,
        compile_mode: str = "off",
        encoder: EncoderSettings | None = None,
    ) -> None:
        self.root = resolve_checkpoints(backend, local=checkpoints)
        self.networks = Networks(self.root, backend, device, compile_mode=compile_mode)
        self.limits = limits or Limits()
        self.encoder = encoder or EncoderSettings()
        self.sources = SourceCache(max_entries=source_cache_size)
        self._defaults: dict[str, ReleasedDefaults] = {}
        self._defaults_lock = threading.Lock()  # also guards the cached silence block
        self._silence_block: np.ndarray | None = None

    def defaults(self, variant: str = "pytorch") -> ReleasedDefaults:
        """The checkpoint's run-time defaults (``pytorch``: offline; ``online``: streaming)."""
        with self._defaults_lock:
            if variant not in self._defaults:
                self._defaults[variant] = load_defaults(self.root, variant)
            return self._defaults[variant]

    def register(self, source: str | Path, controls: Controls | None = None) -> Source:
        """Register a portrait (cached by file content and crop settings)."""
        options = registration_options(controls or Controls(), self.defaults(), self.limits)
        return self.sources.get(Path(source), self.networks, options)

    def plan(
        self, source: Source, controls: Controls, *, n_frames: int | None = None, low_latency: bool = True
    ) -> RunPlan:
        """The plan of one run over a registered ``source``: ``n_frames`` of a file, or a stream when ``None``."""
        defaults = self.defaults("pytorch" if n_frames is not None else "online")
        return plan_run(controls, defaults, source, n_frames=n_frames, limits=self.limits, low_latency=low_latency)

    # ---------------------------------------------------------------------------------------------- offline

    def generate(
        self,
        source: str | Path,
        audio: str | Path,
        controls: Controls | None = None,
        *,
        output: str | Path | None = None,
        progress: ProgressFn | None = None,
        cancel: threading.Event | None = None,
    ) -> Result:
        """Render ``source`` speaking ``audio`` into an mp4 (H.264 + the user's audio as AAC).

        Nothing is left at ``output`` unless the whole video was written. Raises :class:`DittoError` subclasses
        with a user-facing sentence for bad input, and :class:`CancelledError` when ``cancel`` is set.
        """
        controls = controls or Controls()
        clock = _RunClock(progress, cancel)
        target = _output_path(output)
        try:
            # 1. Read the speech (16 kHz mono); its length fixes the number of frames.
            clock.report("audio", 0.0, "Reading the speech")
            samples = load_audio(Path(audio), max_seconds=self.limits.max_audio_seconds)
            n_frames = audio_frame_count(len(samples))
            with VideoWriter(target, fps=FPS, audio_path=Path(audio), encoder=self.encoder) as writer:
                clock.lap("audio_load")
                # 2. Audio features: HuBERT over the whole file.
                clock.report("features", 0.0, "Audio features")
                features = hubert_features(self.networks["hubert"], samples)
                clock.lap("audio")
                # 3. Register the portrait: face crop, keypoints and appearance of every source frame (cached).
                clock.report("face", 0.0, "Finding the face")
                registered = self.register(source, controls)
                clock.lap("face")
                # 4. Plan the run: every stage's options and the seed, once.
                plan = self.plan(registered, controls, n_frames=n_frames)
                # 5. Motion: the diffusion model turns audio features into one motion row per frame.
                clock.report("motion", 0.0, "Generating motion")
                render = self._variant(registered, plan, features, clock.cancel)
                clock.lap("motion")
                # 6. Render each frame (stitch → warp → decode → compose) and 7. encode it as it comes.
                first_frame = _write_frames(writer, [render], n_frames, clock, None, None)
                clock.lap("render")
                clock.report("encode", 1.0, "Finishing the video")
        except BaseException:
            release_memory()  # an aborted run's cached GPU blocks go back before the next request
            raise
        clock.lap("encode")
        return self._result(target, [render], len(samples), n_frames, clock, first_frame)

    def compare(
        self,
        source: str | Path,
        audio: str | Path,
        variants: list[tuple[str, Controls]],
        *,
        output: str | Path | None = None,
        progress: ProgressFn | None = None,
        cancel: threading.Event | None = None,
        columns: int | None = None,
        max_size: tuple[int, int] | None = None,
    ) -> Result:
        """Render the same portrait and speech once per ``(label, controls)`` and tile the results in one video.

        The speech is read and its features computed once; then each variant is registered, planned and given its
        own motion and renderer (the same per-variant steps as :meth:`generate`), and their frames are tiled in
        lockstep (labels in a corner, ``columns`` per row, default all in one row), so nothing is encoded twice.
        ``max_size`` (width, height) shrinks the tiles so the video fits (e.g. 1920×1080 for phones). The result's
        seed and figures are those of the first variant.
        """
        if not variants:
            raise InputError("Nothing to render: give at least one set of controls.")
        clock = _RunClock(progress, cancel)
        target = _output_path(output)
        try:
            clock.report("audio", 0.0, "Reading the speech")
            samples = load_audio(Path(audio), max_seconds=self.limits.max_audio_seconds)
            n_frames = audio_frame_count(len(samples))
            with VideoWriter(target, fps=FPS, audio_path=Path(audio), encoder=self.encoder) as writer:
                clock.lap("audio_load")
                clock.report("features", 0.0, "Audio features")
                features = hubert_features(self.networks["hubert"], samples)
                clock.lap("audio")
                renders = []
                for number, (label, controls) in enumerate(variants):
                    clock.report("face", number / len(variants), "Finding the face")
                    registered = self.register(source, controls)
                    clock.lap("face")
                    plan = self.plan(registered, controls, n_frames=n_frames)
                    clock.report("motion", number / len(variants), "Generating motion")
                    renders.append(self._variant(registered, plan, features, clock.cancel, label))
                    clock.lap("motion")
                first_frame = _write_frames(writer, renders, n_frames, clock, columns, max_size)
                clock.lap("render")
                clock.report("encode", 1.0, "Finishing the video")
        except BaseException:
            release_memory()
            raise
        clock.lap("encode")
        return self._result(target, renders, len(samples), n_frames, clock, first_frame)

    def _variant(
        self, registered: Source, plan: RunPlan, features: np.ndarray, cancel: threading.Event, label: str = ""
    ) -> VariantRender:
        """Motion for one planned variant, and the runner of the per-frame stages that turns it into frames."""
        conditioning = Conditioning.from_source(registered, plan.emotion, eye_f0_mode=plan.eye_from_first_frame)
        motion = generate_motion(conditioning.rows(features), conditioning.source_motion, self.networks["lmdm"],
                                 plan.motion)
        stitcher = MotionStitcher(registered, plan.stitch, plan.n_frames, self.networks["stitch_network"])
        renderer = FrameRenderer(self.networks, registered, stitcher, plan.framing)
        return VariantRender(label, registered, plan, motion, Runner(renderer.stages(), cancel=cancel))

    def _result(
        self, target: Path, renders: list[VariantRender], n_samples: int, n_frames: int, clock: _RunClock,
        first_frame: float | None,
    ) -> Result:
        first = renders[0]
        total = clock.since_start()
        result = Result(
            video=target,
            seed=first.plan.seed,
            frames=n_frames,
            fps=FPS,
            audio_seconds=n_samples / SAMPLE_RATE,
            timings=clock.timings,
            per_frame_ms=first.runner.timings.per_item_ms(),
            first_frame_latency=first_frame if first_frame is not None else total,
            total_seconds=total,
            faces_found=first.source.faces_found,
            backends=self.networks.loaded(),
            seeds=tuple(render.plan.seed for render in renders),
        )
        log.info("wrote %s: %d frames x %d variant(s) in %.1f s (RTF %.2f, seed %d)", target, n_frames,
                 len(renders), total, result.rtf, result.seed)
        return result

    # -------------------------------------------------------------------------------------------- streaming

    def stream(
        self,
        source: str | Path,
        audio_chunks: Iterable[np.ndarray],
        controls: Controls | None = None,
        *,
        low_latency: bool = True,
        cancel: threading.Event | None = None,
        seed_out: list[int] | None = None,
        live: LiveControls | None = None,
        skip_frame: Callable[[int], bool] | None = None,
    ) -> Iterator[StreamFrame]:
        """Yield frames while ``audio_chunks`` (16 kHz mono float32 arrays of any size) are still arriving.

        ``low_latency`` (default on) is our deliberate deviation from the reference's streaming: motion rows are
        shown as soon as a clip has generated them (``emit_first_clip``) and, unless ``controls.overlap`` is set,
        the overlap is :data:`~ditto_demo.pipeline.motion.LOW_LATENCY_OVERLAP` (one clip per HuBERT block), so
        frame 0 needs audio up to 285 ms instead of 885 ms (stock online cfg as the reference runs it).
        ``low_latency=False`` gives the reference's timing and values. The seed used is appended to ``seed_out``
        if given. Closing the generator stops every stage.

        ``live``: controls that may change while the stream runs (its snapshot replaces ``controls``): emotion is
        taken up from the next motion clip, pose, gaze and amplitudes from the next frame. ``skip_frame(index)``
        is asked once per frame, on the stitch thread before any rendering work: frames it calls for are dropped
        (a live consumer that fell behind real time drops frames rather than building a backlog), every other
        frame is rendered to the end. Frame 0's motion row is stitched regardless (it carries the anchor).
        """
        cancel = cancel or threading.Event()
        # 1.-3. Register the portrait, plan the stream, build one stage per step (see stream_stages).
        built = self.stream_stages(source, controls, low_latency=low_latency, live=live, skip_frame=skip_frame)
        if seed_out is not None:
            seed_out.append(built.plan.seed)
        # 4. Each stage on its own thread. Small queues: buffered frames are latency when the stream runs behind.
        runner = Runner(built.stages, cancel=cancel, queue_size=2)
        try:
            for index, image in runner.run(audio_chunks):
                yield StreamFrame(index=index, timestamp=index / FPS, image=image, produced_at=time.perf_counter())
        except BaseException:  # a disconnected or failed stream (GeneratorExit included)
            release_memory()
            raise

    def stream_stages(
        self,
        source: str | Path,
        controls: Controls | None = None,
        *,
        low_latency: bool = True,
        live: LiveControls | None = None,
        skip_frame: Callable[[int], bool] | None = None,
    ) -> StreamStages:
        """The planned stages of one stream, in order: features → motion → stitch → warp → decode → compose.

        :meth:`stream` runs them on a :class:`Runner`; a test may drive them one by one on its own thread (each
        stage's ``process`` takes the previous stage's outputs). Arguments as for :meth:`stream`.
        """
        initial = live.snapshot() if live is not None else None
        controls = initial.controls if initial is not None else controls or Controls()
        # 1. Register the portrait.
        registered = self.register(source, controls)
        # 2. Plan the stream: options sized for the longest stream, the seed, the latency choice.
        plan = self.plan(registered, controls, low_latency=low_latency)
        # 3. One stage per step: features → motion → stitch → warp → decode → compose.
        features, motion = self._stream_motion(registered, plan)
        numbering = RowNumberer(lambda: motion.first_frame_motion)
        stitcher = MotionStitcher(registered, plan.stitch, None, self.networks["stitch_network"])
        renderer = FrameRenderer(self.networks, registered, stitcher, plan.framing)
        render = renderer.stages()
        push: Callable[[np.ndarray], list[np.ndarray]] = motion.push
        if live is not None and initial is not None:
            tuning = _LiveTuning(live, initial.version, self.defaults("online"), registered, plan, motion, stitcher)
            push = tuning.motion_push
            render[0] = Stage("stitch", tuning.stitching(renderer.stitch))
        if skip_frame is not None:  # asked once per frame, before any work on it; what is admitted is finished
            render = [_skipping(render[0], skip_frame), *render[1:]]
        stages = [
            Stage("features", lambda chunk: features.push(_as_samples(chunk)), features.finish),
            Stage("motion", lambda block: numbering.number(push(block)), lambda: numbering.number(motion.finish())),
            *render,
        ]
        return StreamStages(plan, stages)

    def stream_motion(
        self,
        source: str | Path,
        samples: np.ndarray,
        controls: Controls | None = None,
        *,
        low_latency: bool = True,
        chunk_samples: int = 1600,
    ) -> np.ndarray:
        """The (N, 265) motion rows :meth:`stream` would render for ``samples`` fed in ``chunk_samples`` chunks.

        No rendering: for analysing the streaming choices (the benchmark's smoothness figures, tests). With a
        fixed ``controls.seed`` the rows are exactly those of :meth:`stream`.
        """
        controls = controls or Controls()
        registered = self.register(source, controls)
        features, motion = self._stream_motion(registered, self.plan(registered, controls, low_latency=low_latency))
        samples = _as_samples(samples)
        rows: list[np.ndarray] = []
        for start in range(0, samples.size, max(1, chunk_samples)):
            for block in features.push(samples[start:start + chunk_samples]):
                rows += motion.push(block)
        for block in features.finish():
            rows += motion.push(block)
        rows += motion.finish()
        return np.stack(rows) if rows else np.zeros((0, MOTION_DIM), np.float32)

    def _stream_motion(self, registered: Source, plan: RunPlan) -> tuple[HubertStream, StreamingMotion]:
        """The streaming feature extractor and motion generator of one planned stream."""
        conditioning = Conditioning.from_source(registered, plan.emotion, eye_f0_mode=plan.eye_from_first_frame)
        motion = StreamingMotion(self.networks["lmdm"], conditioning, plan.motion, self._silence,
                                 emit_first_clip=plan.low_latency)
        return HubertStream(self.networks["hubert"]), motion

    #: The networks a stream calls once the portrait is registered.
    STREAM_NETWORKS: tuple[str, ...] = ("hubert", "lmdm", "stitch_network", "warp_network", "decoder")

    def prepare_stream(self, source: str | Path, controls: Controls | None = None) -> Source:
        """Do now what a stream's first frames would wait for: register the portrait (cached), load the stream's
        networks and compute the silence warm-up. A live avatar calls it before its clock starts, so it comes
        alive at once; raises the same errors as :meth:`stream` (a portrait without a face, say)."""
        registered = self.register(source, controls)
        for name in self.STREAM_NETWORKS:
            self.networks[name]  # loads it (once per pipeline)
        self._silence(1)
        return registered

    def stream_options(self, controls: Controls, *, low_latency: bool = True) -> MotionOptions:
        """The motion options a stream with these controls runs with (as :meth:`plan` settles them)."""
        return motion_options(controls, self.defaults("online"), default_overlap=stream_overlap(low_latency))

    def _silence(self, rows: int) -> np.ndarray:
        """``rows`` of silence features for a stream's warm-up, from one all-zero HuBERT window computed once."""
        with self._defaults_lock:
            if self._silence_block is None:
                self._silence_block = silence_block(self.networks["hubert"])
            block = self._silence_block
        return tile_silence(block, rows)


@dataclass
class VariantRender:
    """One planned variant of a file run: its motion, and the runner that renders it frame by frame."""

    label: str
    source: Source
    plan: RunPlan
    motion: np.ndarray
    runner: Runner

    def frames(self) -> Iterator[np.ndarray]:
        for _, frame in self.runner.run(enumerate(self.motion)):
            yield frame


@dataclass(frozen=True)
class StreamStages:
    """A planned stream: its plan, and its stages in order (features, motion, stitch, warp, decode, compose)."""

    plan: RunPlan
    stages: list[Stage]


class _LiveTuning:
    """A live stream's control changes, taken up on the threads of the stages that use them.

    The motion stage reads the snapshot before each push (one clip per push in a low-latency stream) and, when it
    moved, conditions the next clips with the new emotion table; the stitch stage reads it before each frame and
    retunes its own stitcher. Both derive their options with the plan's functions, so the plan stays the one place
    controls become stage options; neither touches the other's objects.
    """

    def __init__(
        self,
        live: LiveControls,
        version: int,
        defaults: ReleasedDefaults,
        source: Source,
        plan: RunPlan,
        motion: StreamingMotion,
        stitcher: MotionStitcher,
    ) -> None:
        self.live = live
        self.defaults = defaults
        self.source = source
        self.plan = plan
        self.motion = motion
        self.stitcher = stitcher
        self._motion_version = version  # read and written by the motion thread only
        self._stitch_version = version  # read and written by the stitch thread only

    def motion_push(self, block: np.ndarray) -> list[np.ndarray]:
        snapshot = self.live.snapshot()
        if snapshot.version != self._motion_version:
            self._motion_version = snapshot.version
            table = emotion_for(snapshot.controls, self.defaults, self.plan.n_frames)
            conditioning = self.motion.conditioning
            if not np.array_equal(table, conditioning.emotion):
                self.motion.set_conditioning(replace(conditioning, emotion=table))
        return self.motion.push(block)

    def stitching(self, stitch: Callable[[Any], Iterator[Any]]) -> Callable[[Any], Iterator[Any]]:
        def process(item: Any) -> Iterator[Any]:
            snapshot = self.live.snapshot()
            if snapshot.version != self._stitch_version:
                self._stitch_version = snapshot.version
                plan = self.plan
                self.stitcher.retune(stitch_options(snapshot.controls, self.defaults, self.source, plan.n_frames,
                                                    plan.seed))
            return stitch(item)

        return process


def _skipping(stitch: Stage, skip: Callable[[int], bool]) -> Stage:
    """The stitch stage dropping the frames ``skip`` calls for (frame 0's row is stitched: it carries the anchor)."""

    def process(item: MotionRow) -> Iterable[Any]:
        if skip(item.index) and item.anchor is None:
            return ()
        return stitch.process(item)

    return Stage(stitch.name, process, stitch.finish)


class _RunClock:
    """Progress reports, per-phase wall times and the cancel check of one file run."""

    def __init__(self, progress: ProgressFn | None, cancel: threading.Event | None) -> None:
        self.report: ProgressFn = progress or (lambda stage, fraction, message: None)
        self.cancel = cancel or threading.Event()
        self.timings: dict[str, float] = {}
        self.started = self._phase = time.perf_counter()

    def lap(self, name: str) -> None:
        """Add the time since the last lap to ``name``; stop here if the run was cancelled."""
        if self.cancel.is_set():
            raise CancelledError("The run was cancelled.")
        now = time.perf_counter()
        self.timings[name] = self.timings.get(name, 0.0) + now - self._phase
        self._phase = now

    def since_start(self) -> float:
        """Seconds since the run began."""
        return time.perf_counter() - self.started


def _write_frames(
    writer: VideoWriter,
    renders: list[VariantRender],
    n_frames: int,
    clock: _RunClock,
    columns: int | None,
    max_size: tuple[int, int] | None,
) -> float | None:
    """Render every variant in lockstep, tile them when there are several, and encode; returns the first frame's
    delay from the start of the run (``None`` when there was no frame)."""
    streams = [render.frames() for render in renders]
    first_frame = None
    try:
        for written, frames in enumerate(zip(*streams, strict=True)):
            if len(frames) == 1:
                frame = frames[0]
            else:
                tiles = [(r.label, f) for r, f in zip(renders, frames, strict=True)]
                frame = tile_frames(tiles, columns, max_size=max_size)
            if first_frame is None:
                first_frame = clock.since_start()
            writer.write(frame)
            if written % 5 == 0 or written == n_frames - 1:
                clock.report("render", (written + 1) / n_frames, f"Rendering frame {written + 1} of {n_frames}")
    finally:
        for stream in streams:
            stream.close()
    return first_frame


def _output_path(output: str | Path | None) -> Path:
    target = Path(output) if output is not None else Path(tempfile.mkdtemp(prefix="ditto-")) / "result.mp4"
    if target.suffix.lower() != ".mp4":
        raise InputError(f"The output must be an .mp4 file (H.264 video with AAC audio); got {target.name}.")
    if target.is_dir():
        raise InputError(f"The output {target} is a folder; give a file name ending in .mp4.")
    return target


def _as_samples(chunk: Any) -> np.ndarray:
    samples = np.asarray(chunk, dtype=np.float32)
    if samples.ndim != 1:
        samples = samples.reshape(-1)
    if not np.all(np.isfinite(samples)):
        raise ValueError("audio chunk contains NaN or infinite samples")
    return samples
