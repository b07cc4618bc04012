"""The pipeline: portrait + speech → talking-head video (``generate``) or frames as the audio arrives (``stream``).

Both paths share the registration cache, the networks and the per-frame renderer, and both run their per-frame
work through the one :class:`~ditto_demo.pipeline.runner.Runner`:

    offline:   audio → HuBERT (whole file) → LMDM clips → [stitch → warp → decode → compose] → H.264/AAC file
    streaming: audio chunks → [HuBERT windows → LMDM clips → stitch → warp → decode → compose] → frames

Everything here is backend-agnostic: networks are called through the engine's binding-name interface.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ditto_demo.engine import release_memory
from ditto_demo.errors import InputError
from ditto_demo.hub import resolve_checkpoints
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
from ditto_demo.pipeline.motion import LOW_LATENCY_OVERLAP, MotionOptions, StreamingMotion, generate_motion
from ditto_demo.pipeline.motion_space import MOTION_DIM, MotionDict, unpack_motion
from ditto_demo.pipeline.networks import Networks
from ditto_demo.pipeline.paste_tensor import TensorPasteBack, make_paste_back
from ditto_demo.pipeline.plan import (
    FPS,
    Limits,
    emotion_for,
    motion_options,
    registration_options,
    stitch_options,
)
from ditto_demo.pipeline.registration import SourceCache
from ditto_demo.pipeline.render import PasteBack, pasted_output
from ditto_demo.pipeline.runner import CancelledError, Runner, Stage
from ditto_demo.pipeline.stitching import MotionStitcher
from ditto_demo.pipeline.types import Source, SourceFrame
from ditto_demo.pipeline.writer import VideoWriter

__all__ = ["Pipeline", "ProgressFn", "Result", "StreamFrame", "tile_frames"]

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


class _Renderer:
    """The per-frame stages shared by both paths: stitch → warp → decode → compose.

    Warp and decode call the networks' tensor fast path (``run_tensors``), so between them nothing leaves the
    device: the source frame's appearance feature is uploaded once per source frame (a still portrait: once per
    request) instead of being copied in and out of host memory every frame. The paste-back comes from
    :func:`make_paste_back` for the decoder's device: on the CPU it is the host's cv2 paste-back (the decoder
    output is turned into a host image in the decode stage, as before, with bit-identical results); elsewhere the
    render stays on the device and only the pasted face box comes back. ``paste`` overrides the choice (tests).
    """

    #: Source frames whose appearance stays uploaded. Frames arrive in order (a still image: always frame 0; a video:
    #: ping-pong, each frame once or twice in a row), so one entry would do; the second is cheap slack. Bounded so a
    #: long video never holds more than two features on the device.
    FEATURE_CACHE_SIZE = 2

    def __init__(
        self,
        networks: Networks,
        source: Source,
        stitcher: MotionStitcher,
        framing: str,
        *,
        paste: PasteBack | TensorPasteBack | None = None,
    ) -> None:
        self.networks = networks
        self.source = source
        self.stitcher = stitcher
        self.framing = framing
        # Chosen by the decode stage's first frame (the decoder's device is known once it is loaded), then used by
        # the compose stage's single thread; the queue between the two orders the hand-over.
        self.paste = paste
        self._features: OrderedDict[tuple[int, torch.device], tuple[SourceFrame, torch.Tensor]] = OrderedDict()

    def stitch(self, item: tuple[int, np.ndarray]) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        index, row = item
        x_s, x_d = self.stitcher(index, unpack_motion(row))
        yield index, x_s, x_d

    def appearance(self, frame: SourceFrame, device: torch.device) -> torch.Tensor:
        """``frame``'s appearance feature on ``device``, uploaded on first use (warp stage thread only).

        Entries hold their ``SourceFrame``, so the ``id`` in the key cannot be reused by another frame meanwhile.
        """
        key = (id(frame), device)
        entry = self._features.get(key)
        if entry is None or entry[0] is not frame:
            entry = (frame, torch.tensor(frame.appearance, dtype=torch.float32, device=device))
            self._features[key] = entry
            while len(self._features) > self.FEATURE_CACHE_SIZE:
                self._features.popitem(last=False)
        else:
            self._features.move_to_end(key)
        return entry[1]

    def warp(self, item: tuple[int, np.ndarray, np.ndarray]) -> Iterator[tuple[int, torch.Tensor]]:
        index, x_s, x_d = item
        network = self.networks["warp_network"]
        device = network.torch_device
        feature = self.appearance(self.source.frame(index), device)
        out = network.run_tensors(
            feature_3d=feature, kp_source=_keypoints(x_s, device), kp_driving=_keypoints(x_d, device)
        )["out"]
        # Outputs may be views of buffers the network reuses, and the next frame's warp runs while this one is
        # decoded: hand over a copy.
        yield index, out.clone()

    def decode(self, item: tuple[int, torch.Tensor]) -> Iterator[tuple[int, np.ndarray | torch.Tensor]]:
        index, feature = item
        network = self.networks["decoder"]
        if self.paste is None:
            self.paste = make_paste_back(network.torch_device)
        yield index, self.paste.prepare(network.run_tensors(feature=feature)["output"])

    def compose(self, item: tuple[int, np.ndarray | torch.Tensor]) -> Iterator[tuple[int, np.ndarray]]:
        index, render = item
        frame = self.source.frame(index)
        paste: Any = self.paste  # PasteBack takes the host image, TensorPasteBack the device tensor decode made
        if self.framing == "crop":
            yield index, paste.crop(render)
            return
        pasted = paste(render, frame.image, frame.crop_to_image)
        yield index, pasted_output(self.framing, pasted, frame.image)

    def stages(self) -> list[Stage]:
        return [
            Stage("stitch", self.stitch),
            Stage("warp", self.warp),
            Stage("decode", self.decode),
            Stage("compose", self.compose),
        ]


def _keypoints(points: np.ndarray, device: torch.device) -> torch.Tensor:
    """Keypoints (1, 21, 3) as a float32 tensor on ``device`` (the binding dtype: run_tensors does not cast)."""
    return torch.tensor(np.asarray(points, dtype=np.float32), device=device)


class Pipeline:
    """Loads nothing until needed; one instance serves many requests (thread-safe where it shares state).

    ``checkpoints``: a checkpoint folder, or ``None`` to use ``DITTO_CHECKPOINTS`` / the Hub (see
    :func:`ditto_demo.hub.resolve_checkpoints`). ``backend`` / ``device`` as for ``load_network``.
    """

    def __init__(
        self,
        checkpoints: str | Path | None = None,
        *,
        backend: str = "auto",
        device: str = "auto",
        limits: Limits | None = None,
        source_cache_size: int = 4,
    ) -> None:
        self.root = resolve_checkpoints(backend, local=checkpoints)
        self.networks = Networks(self.root, backend, device)
        self.limits = limits or Limits()
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
        return self.compare(source, audio, [("", controls or Controls())], output=output, progress=progress,
                            cancel=cancel)

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
    ) -> Result:
        """Render the same portrait and speech once per ``(label, controls)`` and tile the results in one video.

        Each variant runs its own motion and renderer; frames are tiled in lockstep (labels drawn in a corner,
        ``columns`` per row, default all in one row), so nothing is encoded twice. One variant is :meth:`generate`.
        The result's seed and figures are those of the first variant.
        """
        if not variants:
            raise InputError("Nothing to render: give at least one set of controls.")
        report = progress or (lambda stage, fraction, message: None)
        cancel = cancel or threading.Event()
        started = time.perf_counter()
        timings: dict[str, float] = {}
        defaults = self.defaults("pytorch")
        target = _output_path(output)
        phase = time.perf_counter()

        def lap(name: str) -> None:
            nonlocal phase
            if cancel.is_set():
                raise CancelledError("The run was cancelled.")
            now = time.perf_counter()
            timings[name] = timings.get(name, 0.0) + now - phase
            phase = now

        try:
            report("audio", 0.0, "Reading the speech")
            samples = load_audio(Path(audio), max_seconds=self.limits.max_audio_seconds)
            n_frames = audio_frame_count(len(samples))
            with VideoWriter(target, fps=FPS, audio_path=Path(audio)) as writer:  # fails now if target is unwritable
                lap("audio_load")
                report("features", 0.0, "Audio features")
                features = hubert_features(self.networks["hubert"], samples)
                lap("audio")
                plans = []
                for number, (label, controls) in enumerate(variants):
                    report("face", number / len(variants), "Finding the face")
                    registered = self.register(source, controls)
                    lap("face")
                    report("motion", number / len(variants), "Generating motion")
                    plans.append(self._offline_plan(registered, features, n_frames, controls, defaults, label, cancel))
                    lap("motion")
                streams = [plan.frames() for plan in plans]
                first_frame = None
                try:
                    for written, frames in enumerate(zip(*streams, strict=True)):
                        tiles = [(plan.label, frame) for plan, frame in zip(plans, frames, strict=True)]
                        frame = tiles[0][1] if len(tiles) == 1 else tile_frames(tiles, columns)
                        if first_frame is None:
                            first_frame = time.perf_counter() - started
                        writer.write(frame)
                        if written % 5 == 0 or written == n_frames - 1:
                            report("render", (written + 1) / n_frames, f"Rendering frame {written + 1} of {n_frames}")
                finally:
                    for stream in streams:
                        stream.close()
                lap("render")
                report("encode", 1.0, "Finishing the video")
        except BaseException:
            release_memory()  # an aborted run's cached GPU blocks go back before the next request
            raise
        lap("encode")
        total = time.perf_counter() - started
        first = plans[0]
        result = Result(
            video=target,
            seed=first.seed,
            frames=n_frames,
            fps=FPS,
            audio_seconds=len(samples) / SAMPLE_RATE,
            timings=timings,
            per_frame_ms=first.runner.timings.per_item_ms(),
            first_frame_latency=first_frame if first_frame is not None else total,
            total_seconds=total,
            faces_found=first.source.faces_found,
            backends=self.networks.loaded(),
            seeds=tuple(plan.seed for plan in plans),
        )
        log.info("wrote %s: %d frames x %d variant(s) in %.1f s (RTF %.2f, seed %d)", target, n_frames,
                 len(plans), total, result.rtf, result.seed)
        return result

    def _offline_plan(
        self,
        registered: Source,
        features: np.ndarray,
        n_frames: int,
        controls: Controls,
        defaults: ReleasedDefaults,
        label: str,
        cancel: threading.Event,
    ) -> _OfflineRender:
        """Motion for one variant, and the renderer that turns it into frames."""
        options = motion_options(controls, defaults)
        conditioning = Conditioning.from_source(
            registered, emotion_for(controls, defaults, n_frames), eye_f0_mode=defaults.eye_from_first_frame
        )
        motion = generate_motion(conditioning.rows(features), conditioning.source_motion, self.networks["lmdm"],
                                 options)
        stitcher = MotionStitcher(
            registered,
            stitch_options(controls, defaults, registered, n_frames, options.seed),
            n_frames,
            self.networks["stitch_network"],
        )
        renderer = _Renderer(self.networks, registered, stitcher, controls.framing)
        return _OfflineRender(label, registered, options.seed, motion, Runner(renderer.stages(), cancel=cancel))

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
    ) -> Iterator[StreamFrame]:
        """Yield frames while ``audio_chunks`` (16 kHz mono float32 arrays of any size) are still arriving.

        ``low_latency`` (default on) is our deliberate deviation from the reference's streaming: motion rows are
        shown as soon as a clip has generated them (``emit_first_clip``) and, unless ``controls.overlap`` is set,
        the overlap is :data:`~ditto_demo.pipeline.motion.LOW_LATENCY_OVERLAP` (one clip per HuBERT block), so
        frame 0 needs audio up to 285 ms instead of 885 ms (stock online cfg as the reference runs it).
        ``low_latency=False`` gives the reference's timing and values. The seed used is appended to ``seed_out``
        if given. Closing the generator stops every stage.
        """
        controls = controls or Controls()
        cancel = cancel or threading.Event()
        registered = self.register(source, controls)
        features, motion, stitcher = self._stream_parts(registered, controls, low_latency)
        if seed_out is not None:
            seed_out.append(motion.seed)
        renderer = _Renderer(self.networks, registered, stitcher, controls.framing)
        counter = _RowCounter(motion, stitcher)

        stages = [
            Stage("features", lambda chunk: features.push(_as_samples(chunk)), features.finish),
            Stage("motion", lambda block: counter.number(motion.push(block)),
                  lambda: counter.number(motion.finish())),
            *renderer.stages(),
        ]
        # Small queues: buffered frames are latency when the stream runs behind real time.
        runner = Runner(stages, cancel=cancel, queue_size=2)
        try:
            for index, image in runner.run(audio_chunks):
                yield StreamFrame(index=index, timestamp=index / FPS, image=image, produced_at=time.perf_counter())
        except BaseException:  # a disconnected or failed stream (GeneratorExit included)
            release_memory()
            raise

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
        registered = self.register(source, controls or Controls())
        features, motion, _ = self._stream_parts(registered, controls or Controls(), low_latency)
        samples = _as_samples(samples)
        rows: list[np.ndarray] = []
        for start in range(0, samples.size, max(1, chunk_samples)):
            for block in features.push(samples[start:start + chunk_samples]):
                rows += motion.push(block)
        for block in features.finish():
            rows += motion.push(block)
        rows += motion.finish()
        return np.stack(rows) if rows else np.zeros((0, MOTION_DIM), np.float32)

    def _stream_parts(
        self, registered: Source, controls: Controls, low_latency: bool
    ) -> tuple[HubertStream, StreamingMotion, MotionStitcher]:
        """The streaming feature extractor, motion generator and stitcher of one stream (shared by both users)."""
        defaults = self.defaults("online")
        options = self.stream_options(controls, low_latency=low_latency)
        max_frames = int(self.limits.max_stream_seconds * FPS)
        hubert = self.networks["hubert"]
        conditioning = Conditioning.from_source(
            registered, emotion_for(controls, defaults, max_frames), eye_f0_mode=defaults.eye_from_first_frame
        )
        motion = StreamingMotion(self.networks["lmdm"], conditioning, options, self._silence,
                                 emit_first_clip=low_latency)
        stitcher = MotionStitcher(
            registered, stitch_options(controls, defaults, registered, max_frames, options.seed), None,
            self.networks["stitch_network"],
        )
        return HubertStream(hubert), motion, stitcher

    def stream_options(self, controls: Controls, *, low_latency: bool = True) -> MotionOptions:
        """The motion options a stream runs with: the checkpoint's online defaults, the low-latency overlap unless
        ``controls.overlap`` is set, and the seed resolved (drawn when the controls have none)."""
        default_overlap = LOW_LATENCY_OVERLAP if low_latency else None
        return motion_options(controls, self.defaults("online"), default_overlap=default_overlap)

    def _silence(self, rows: int) -> np.ndarray:
        """``rows`` of silence features for a stream's warm-up, from one all-zero HuBERT window computed once."""
        with self._defaults_lock:
            if self._silence_block is None:
                self._silence_block = silence_block(self.networks["hubert"])
            block = self._silence_block
        return tile_silence(block, rows)


@dataclass
class _OfflineRender:
    """One variant of an offline run: its motion, ready to be rendered frame by frame."""

    label: str
    source: Source
    seed: int
    motion: np.ndarray
    runner: Runner

    def frames(self) -> Iterator[np.ndarray]:
        for _, frame in self.runner.run(enumerate(self.motion)):
            yield frame


def _output_path(output: str | Path | None) -> Path:
    target = Path(output) if output is not None else Path(tempfile.mkdtemp(prefix="ditto-")) / "result.mp4"
    if target.suffix.lower() != ".mp4":
        raise InputError(f"The output must be an .mp4 file (H.264 video with AAC audio); got {target.name}.")
    if target.is_dir():
        raise InputError(f"The output {target} is a folder; give a file name ending in .mp4.")
    return target


def tile_frames(tiles: list[tuple[str, np.ndarray]], columns: int | None = None) -> np.ndarray:
    """Frames side by side (``columns`` per row), each labelled in its top-left corner; even output sides."""
    import cv2

    columns = max(1, min(columns or len(tiles), len(tiles)))
    rows = -(-len(tiles) // columns)
    height = max(t.shape[0] for _, t in tiles)
    width = max(t.shape[1] for _, t in tiles)
    canvas = np.zeros((rows * height + rows * height % 2, columns * width + columns * width % 2, 3), np.uint8)
    for index, (label, image) in enumerate(tiles):
        top, left = (index // columns) * height, (index % columns) * width
        canvas[top:top + image.shape[0], left:left + image.shape[1]] = image
        if label:
            scale = max(0.5, width / 640)
            origin = (left + int(12 * scale), top + int(34 * scale))
            cv2.putText(canvas, label, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), int(4 * scale), cv2.LINE_AA)
            cv2.putText(canvas, label, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), int(2 * scale),
                        cv2.LINE_AA)
    return canvas


class _RowCounter:
    """Numbers streamed motion rows as output frames, and hands the stitcher its anchor before frame 0."""

    def __init__(self, motion: StreamingMotion, stitcher: MotionStitcher) -> None:
        self.motion = motion
        self.stitcher = stitcher
        self.next_index = 0

    def number(self, rows: list[np.ndarray]) -> list[tuple[int, np.ndarray]]:
        if rows and self.next_index == 0:
            anchor: MotionDict = unpack_motion(self.motion.first_frame_motion)
            self.stitcher.set_d0(anchor)
        numbered = [(self.next_index + i, row) for i, row in enumerate(rows)]
        self.next_index += len(rows)
        return numbered


def _as_samples(chunk: Any) -> np.ndarray:
    samples = np.asarray(chunk, dtype=np.float32)
    if samples.ndim != 1:
        samples = samples.reshape(-1)
    if not np.all(np.isfinite(samples)):
        raise ValueError("audio chunk contains NaN or infinite samples")
    return samples
