"""Audio conditions → 265-d motion: LMDM diffusion sampling over overlapping 80-frame clips, offline and streaming.

LMDM denoises one 80-frame clip (3.2 s) at a time, conditioned on the motion of the frame just before the clip
(``kp_cond``) and on 80 condition rows (:mod:`ditto_demo.pipeline.conditioning`). A longer sequence is made of clips
that overlap by O frames; each new clip contributes V = 80 − O new frames, and the seam is cross-faded over F frames
with weights j/F. Scale, pose and translation (dims 0:202) are smoothed with a short centred mean; the expression
never is. All of this follows the reference's ``audio2motion.py`` and the two pipeline workers (ditto_spec.md §2.6.4,
§3.3, §3.4); the deliberate deviations are listed here and in the docstrings where they happen:

* Randomness comes from one seeded ``numpy.random.Generator`` per request, so a seed reproduces a motion sequence
  exactly (the reference uses the unseeded global RNG). As in the reference, per-step DDIM noises are drawn once
  and reused for every clip (``reuse_step_noise``); the initial noise is fresh per clip.
* The DDIM coefficient that comes out NaN in the reference at some step counts is clamped (see
  :mod:`ditto_demo.diffusion`).
* Streaming, which rows are emitted: the reference starts at clip row 80 − F and emits as many rows per clip as the
  window advanced. That is exactly "every row no later clip will change" when O ≥ 40 (F = V), but for O < 40 it
  skips the first 80 − 2·O frames of speech (the video then runs ahead of the audio) and ends early. We emit every
  row that is final — identical for O ≥ 40, including the stock O = 70 and the extra tail frames.
* Streaming, very short input: when the whole stream fits in the first window the reference emits no frame at all;
  we emit that clip's real frames.
* Streaming, ``emit_first_clip=True`` (off by default here; on in :meth:`Pipeline.stream`): rows are emitted as soon
  as they are generated instead of one clip later, after their cross-fade — see :class:`StreamingMotion`.
* Streaming, :data:`LOW_LATENCY_OVERLAP` (O = 75 instead of the stock online cfg's 70) is what
  :meth:`Pipeline.stream` uses unless the caller sets an overlap: every 5-row HuBERT block then completes a window,
  so with ``emit_first_clip`` the first frames follow the first block of speech (see that constant).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from ditto_demo.diffusion import NoiseSchedule
from ditto_demo.errors import InputError
from ditto_demo.pipeline.conditioning import COND_DIM, Conditioning
from ditto_demo.pipeline.motion_space import MOTION_DIM, SMOOTHED_DIMS
from ditto_demo.pipeline.seeds import draw_seed
from ditto_demo.pipeline.timebase import HUBERT_DIM

__all__ = [
    "LOW_LATENCY_OVERLAP",
    "SEQ_FRAMES",
    "LMDMFn",
    "MotionOptions",
    "MotionSampler",
    "StreamingMotion",
    "clip_motion",
    "fuse_weights",
    "generate_motion",
    "sample_clip",
    "smooth_motion",
]

log = logging.getLogger(__name__)

#: Frames per LMDM clip (3.2 s at 25 fps): fixed by the released network.
SEQ_FRAMES = 80

#: Streaming overlap chosen for latency: V = 80 − 75 = 5 new frames per clip, exactly one HuBERT block (5 frames,
#: one 3200-sample hop). With O = 70 (stock online cfg) a window needs two blocks, so the first frame waits for
#: audio up to 485 ms even when the first clip is emitted; with O = 75 it follows the first block, i.e. audio up to
#: 285 ms (200 ms of frames + the window's 85 ms look-ahead), the least the released HuBERT windows allow. The price
#: is one LMDM clip per 200 ms instead of per 400 ms, and a seam (cross-faded over F = 5 frames) every 5 frames; the
#: maintainers quote "70~75" for their own streaming deployments. The benchmark reports the effect on smoothness.
LOW_LATENCY_OVERLAP = 75

#: One guided denoising step as the engine exposes it:
#: ``lmdm(x=(1,80,265), cond_frame=(1,265), cond=(1,80,1103), time_cond=(1,) int64) -> {"pred_noise", "x_start"}``.
LMDMFn = Callable[..., Mapping[str, np.ndarray]]


@dataclass(frozen=True, eq=False)
class MotionOptions:
    """How motion is sampled and stitched together (reference option names in brackets).

    * ``steps`` [sampling_timesteps]: DDIM steps per clip (reference default 50, stock online cfg 10).
    * ``seed``: RNG seed; ``None`` draws one (see :meth:`resolved`) — the drawn value must be reported.
    * ``overlap`` [overlap_v2]: O, frames shared by consecutive 80-frame windows; V = 80 − O new frames per clip.
    * ``fix_kp_cond`` / ``fix_kp_cond_dim``: every k-th clip, restart ``kp_cond`` from the source motion, keeping
      dims [start, stop) from the generated frame (stock online: k = 1, dims (0, 202) — pose carries on, the
      expression restarts). k = 0 always continues from the generated frame.
    * ``smooth_kernel`` [smo_k_d]: width of the centred mean on dims 0:202 (≤ 1 disables it).
    * ``clip_range`` [v_min_max_for_clip]: array whose rows 0 and 1 are per-dimension min and max, or ``None``.
    * ``reuse_step_noise``: draw the per-step DDIM noises once and reuse them for every clip, as the reference does.
    """

    steps: int = 50
    seed: int | None = None
    overlap: int = 10
    fix_kp_cond: int = 0
    fix_kp_cond_dim: tuple[int, int] | None = None
    smooth_kernel: int = 3
    clip_range: np.ndarray | None = None
    reuse_step_noise: bool = True

    def __post_init__(self) -> None:
        if int(self.steps) < 1:
            raise InputError(f"The number of diffusion steps must be at least 1, got {self.steps}.")
        if not 0 <= int(self.overlap) < SEQ_FRAMES:
            raise InputError(f"The clip overlap must be between 0 and {SEQ_FRAMES - 1} frames, got {self.overlap}.")
        if int(self.fix_kp_cond) < 0:
            raise InputError(f"fix_kp_cond must be 0 (off) or a positive clip interval, got {self.fix_kp_cond}.")
        if self.seed is not None and int(self.seed) < 0:
            raise InputError(f"The seed must be a non-negative integer, got {self.seed}.")
        dims = None
        if self.fix_kp_cond_dim is not None:
            start, stop = (int(v) for v in self.fix_kp_cond_dim)
            if not 0 <= start <= stop <= MOTION_DIM:
                raise InputError(f"fix_kp_cond_dim must be a range within 0..{MOTION_DIM}, got {self.fix_kp_cond_dim}.")
            dims = (start, stop)
        clip = None
        if self.clip_range is not None:
            clip = np.array(self.clip_range, dtype=np.float32, copy=True)
            if clip.ndim != 2 or clip.shape[0] < 2 or clip.shape[1] != MOTION_DIM:
                raise InputError(
                    f"The motion clip range must have shape (2, {MOTION_DIM}) or more rows, got {clip.shape}."
                )
            clip.setflags(write=False)
        # frozen dataclass: normalised values are stored once, here
        object.__setattr__(self, "steps", int(self.steps))
        object.__setattr__(self, "overlap", int(self.overlap))
        object.__setattr__(self, "fix_kp_cond", int(self.fix_kp_cond))
        object.__setattr__(self, "smooth_kernel", int(self.smooth_kernel))
        object.__setattr__(self, "seed", None if self.seed is None else int(self.seed))
        object.__setattr__(self, "fix_kp_cond_dim", dims)
        object.__setattr__(self, "clip_range", clip)

    @property
    def valid_length(self) -> int:
        """V: new frames each clip adds."""
        return SEQ_FRAMES - self.overlap

    def fuse_length(self, streaming: bool) -> int:
        """F: frames cross-faded at each seam — O offline, min(O, V) streaming (as the reference)."""
        return min(self.overlap, self.valid_length) if streaming else self.overlap

    def resolved(self) -> MotionOptions:
        """These options with a concrete seed (a fresh one drawn when ``seed`` is ``None``).

        For callers of the stage API alone: a pipeline run gets its seed from its plan
        (:func:`~ditto_demo.pipeline.plan.plan_run`), so the stages never draw one there.
        """
        return self if self.seed is not None else replace(self, seed=draw_seed())


# ---------------------------------------------------------------------------------------------------------------
# Sequence helpers
# ---------------------------------------------------------------------------------------------------------------


def fuse_weights(length: int) -> np.ndarray:
    """Cross-fade weights of the new clip at a seam: α_j = j / F, j = 0..F−1 (float32, so α_0 = 0)."""
    return np.arange(length, dtype=np.float32) / np.float32(max(length, 1))


def smooth_motion(motion: np.ndarray, kernel: int, start: int = 0, stop: int | None = None) -> np.ndarray:
    """A copy of ``motion`` (L, 265) with rows [start, stop) of dims 0:202 replaced by a centred mean.

    Each mean covers rows i − k//2 .. i + k//2, truncated at the sequence ends, and reads the *unmodified* input, so
    the result does not depend on the order rows are visited. The expression dims are never touched: smoothing
    them would blur the lip shapes. Rows are averaged one at a time with NumPy's float32 mean, as the reference does,
    so the values match it bit for bit.
    """
    out = np.array(motion, dtype=np.float32, copy=True)
    if kernel <= 1:
        return out
    length = out.shape[0]
    stop = length if stop is None else min(stop, length)
    half = kernel // 2
    source = out[:, SMOOTHED_DIMS].copy()
    for i in range(max(start, 0), stop):
        out[i, SMOOTHED_DIMS] = source[max(0, i - half) : min(length, i + half + 1)].mean(axis=0)
    return out


def clip_motion(motion: np.ndarray, clip_range: np.ndarray | None) -> np.ndarray:
    """``motion`` clipped per dimension to [clip_range[0], clip_range[1]] (a copy; unchanged when ``None``)."""
    motion = np.asarray(motion, dtype=np.float32)
    if clip_range is None:
        return motion.copy()
    return np.clip(motion, clip_range[0], clip_range[1]).astype(np.float32)


# ---------------------------------------------------------------------------------------------------------------
# Sampling
# ---------------------------------------------------------------------------------------------------------------


def _draw(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return rng.standard_normal(shape, dtype=np.float32)


def sample_clip(
    lmdm_network: LMDMFn,
    kp_cond: np.ndarray,
    cond: np.ndarray,
    rng: np.random.Generator,
    *,
    steps: int = 50,
    step_noises: Sequence[np.ndarray] | None = None,
    schedule: NoiseSchedule | None = None,
) -> np.ndarray:
    """One 80-frame clip (80, 265) by S-step DDIM (η = 1) with the guided LMDM step network.

    The initial x ~ N(0, I) is drawn from ``rng``; ``step_noises`` (S − 1 arrays of shape (1, 80, 265)) are the z of
    the steps that are not the last — drawn from ``rng`` here when not given. The last step returns x̂₀ itself.
    """
    schedule = schedule or NoiseSchedule.cosine()
    cond = np.asarray(cond, dtype=np.float32)
    if cond.shape != (SEQ_FRAMES, COND_DIM):
        raise ValueError(f"cond must have shape ({SEQ_FRAMES}, {COND_DIM}), got {cond.shape}")
    kp = np.asarray(kp_cond, dtype=np.float32).reshape(1, MOTION_DIM)
    pairs = schedule.time_pairs(steps)
    shape = (1, SEQ_FRAMES, MOTION_DIM)
    x = _draw(rng, shape)
    if step_noises is None:
        step_noises = [_draw(rng, shape) for _ in range(len(pairs) - 1)]
    if len(step_noises) < len(pairs) - 1:
        raise ValueError(f"{steps} steps need {len(pairs) - 1} step noises, got {len(step_noises)}")
    cond_batch = cond.reshape(1, SEQ_FRAMES, COND_DIM)
    for i, (t, t_next) in enumerate(pairs):
        out = lmdm_network(x=x, cond_frame=kp, cond=cond_batch, time_cond=np.full((1,), t, dtype=np.int64))
        x_start = np.asarray(out["x_start"], dtype=np.float32).reshape(shape)
        pred_noise = np.asarray(out["pred_noise"], dtype=np.float32).reshape(shape)
        x = schedule.step(x, x_start, pred_noise, t, t_next, None if t_next < 0 else step_noises[i])
    return np.asarray(x, dtype=np.float32).reshape(SEQ_FRAMES, MOTION_DIM)


class MotionSampler:
    """Samples clips for one request: owns the seeded RNG and, by default, the per-step noises reused every clip.

    The draw order is fixed — the S − 1 step noises first (when reused), then one initial x per clip — so the same
    seed, options and inputs give exactly the same motion.
    """

    def __init__(
        self,
        lmdm_network: LMDMFn,
        *,
        steps: int,
        seed: int,
        reuse_step_noise: bool = True,
        schedule: NoiseSchedule | None = None,
    ) -> None:
        self.lmdm = lmdm_network
        self.steps = int(steps)
        self.seed = int(seed)
        self.schedule = schedule or NoiseSchedule.cosine()
        self._rng = np.random.default_rng(self.seed)
        self._step_noises: list[np.ndarray] | None = None
        if reuse_step_noise:
            count = len(self.schedule.time_pairs(self.steps)) - 1
            self._step_noises = [_draw(self._rng, (1, SEQ_FRAMES, MOTION_DIM)) for _ in range(count)]
        self.clips_sampled = 0

    def __call__(self, kp_cond: np.ndarray, cond: np.ndarray) -> np.ndarray:
        """One clip (80, 265) for ``kp_cond`` (265,) and ``cond`` (80, 1103)."""
        self.clips_sampled += 1
        return sample_clip(
            self.lmdm,
            kp_cond,
            cond,
            self._rng,
            steps=self.steps,
            step_noises=self._step_noises,
            schedule=self.schedule,
        )


class _ClipChain:
    """The growing motion sequence and the ``kp_cond`` it feeds back: the part offline and streaming share."""

    def __init__(
        self, sampler: MotionSampler, source_motion: np.ndarray, options: MotionOptions, fuse_length: int
    ) -> None:
        self.sampler = sampler
        self.options = options
        self.fuse = fuse_length
        self.alpha = fuse_weights(fuse_length).reshape(-1, 1)
        self.source_motion = np.asarray(source_motion, dtype=np.float32).reshape(MOTION_DIM).copy()
        self.kp_cond = self.source_motion.copy()
        self.motion: np.ndarray | None = None  # (L, 265), rows [offset, offset + L) of the whole sequence
        self.offset = 0
        self.clips = 0

    @property
    def end(self) -> int:
        """Absolute row index one past the last generated row."""
        return self.offset + (0 if self.motion is None else len(self.motion))

    def row(self, absolute: int) -> np.ndarray:
        assert self.motion is not None
        return self.motion[absolute - self.offset]

    def add_clip(self, cond: np.ndarray) -> None:
        """Sample the next clip for an 80-row condition window, fuse it in, smooth the seam, update ``kp_cond``."""
        opts = self.options
        valid, overlap, kernel = opts.valid_length, opts.overlap, opts.smooth_kernel
        pred = self.sampler(self.kp_cond, cond)
        if self.motion is None:
            seq = smooth_motion(pred, kernel)
        else:
            seq = self.motion.copy()
            length, fuse = len(seq), self.fuse
            # the last F generated rows meet the new clip's rows for the same frames (which end where V new begin)
            new_part = pred[SEQ_FRAMES - valid - fuse : SEQ_FRAMES - valid]
            seq[length - fuse :] = seq[length - fuse :] * (1 - self.alpha) + new_part * self.alpha
            seq = np.concatenate([seq, pred[SEQ_FRAMES - valid :]], axis=0)
            end = len(seq)
            seq = smooth_motion(seq, kernel, end - valid - fuse, end - valid + 1)
        self.motion = seq
        self.clips += 1
        # the frame just before the next window's first frame conditions the next clip
        anchor = seq[len(seq) - overlap - 1]
        k = opts.fix_kp_cond
        if k > 0 and self.clips % k == 0:
            kp = self.source_motion.copy()
            if opts.fix_kp_cond_dim is not None:
                start, stop = opts.fix_kp_cond_dim
                kp[start:stop] = anchor[start:stop]
            self.kp_cond = kp
        else:
            self.kp_cond = anchor.copy()

    def keep_last(self, rows: int) -> None:
        """Forget all but the last ``rows`` rows (the streaming history cap)."""
        if self.motion is not None and len(self.motion) > rows:
            cut = len(self.motion) - rows
            self.motion = self.motion[cut:].copy()
            self.offset += cut


def _pad_window(rows: np.ndarray) -> np.ndarray:
    """An 80-row window, repeating the last row when fewer are left (the end of the audio)."""
    if len(rows) >= SEQ_FRAMES:
        return rows[:SEQ_FRAMES]
    return np.concatenate([rows, np.repeat(rows[-1:], SEQ_FRAMES - len(rows), axis=0)], axis=0)


# ---------------------------------------------------------------------------------------------------------------
# Offline
# ---------------------------------------------------------------------------------------------------------------


def generate_motion(
    cond_all: np.ndarray,
    source_motion_vector: np.ndarray,
    lmdm: LMDMFn,
    options: MotionOptions,
    *,
    schedule: NoiseSchedule | None = None,
) -> np.ndarray:
    """Motion (N, 265) for N condition rows (N, 1103), the whole sequence at once (reference offline path).

    Windows start every V frames; the last one is padded with its final row. After truncation to N the whole
    sequence is smoothed a second time (a reference quirk kept for fidelity), then clipped if ``clip_range`` is set.
    Row 0 is the ``d0`` anchor of relative motion. When ``options.seed`` is ``None`` a seed is drawn and logged;
    call ``options.resolved()`` first to know it.
    """
    cond_all = np.asarray(cond_all, dtype=np.float32)
    if cond_all.ndim != 2 or cond_all.shape[1] != COND_DIM:
        raise ValueError(f"cond_all must have shape (N, {COND_DIM}), got {cond_all.shape}")
    count = len(cond_all)
    if count == 0:
        raise InputError("There is no audio to animate: the speech produced no frames.")
    if options.seed is None:
        options = options.resolved()
        log.info("motion seed %d (drawn)", options.seed)
    assert options.seed is not None
    sampler = MotionSampler(
        lmdm, steps=options.steps, seed=options.seed, reuse_step_noise=options.reuse_step_noise, schedule=schedule
    )
    chain = _ClipChain(sampler, source_motion_vector, options, options.fuse_length(streaming=False))
    for start in range(0, count, options.valid_length):
        chain.add_clip(_pad_window(cond_all[start : start + SEQ_FRAMES]))
    assert chain.motion is not None
    motion = smooth_motion(chain.motion[:count], options.smooth_kernel)
    log.debug("generated %d motion frames in %d clips (seed %d)", count, chain.clips, options.seed)
    return clip_motion(motion, options.clip_range)


# ---------------------------------------------------------------------------------------------------------------
# Streaming
# ---------------------------------------------------------------------------------------------------------------


class StreamingMotion:
    """Motion rows while the speech is still arriving (reference online path, ditto_spec.md §3.4).

    Feed HuBERT features with :meth:`push` (any number of rows, e.g. the 5-row blocks of
    :class:`~ditto_demo.pipeline.audio.HubertStream`) and call :meth:`finish` at the end of the speech. Each
    returned row is one 25 fps output frame (265,), in order, already clipped; row k belongs to real feature k.

    Warm-up: the feature buffer starts with O rows of "silence" features (the offline HuBERT path over O·640 zero
    samples: pass them, or a callable ``warmup(O)`` returning them), so the first window holds O silent frames and
    V real ones. Windows start every V frames at global frame index −O, −O + V, …; their emotion / eye conditioning
    uses those indices (negative ones clamp to frame 0).

    Emission (reference, ``emit_first_clip=False``): a row is emitted once no later clip can change it, i.e. after
    the next clip has cross-faded it. For O ≥ 40 the first clip emits nothing and every later clip emits V rows:
    frame k comes out when real features up to V·(k // V + 2) − 1 have arrived (20 features = 0.8 s for O = 70).
    :attr:`first_frame_motion` (the ``d0`` anchor of relative motion) is row 0 of the first clip, i.e. motion
    generated for the silence warm-up, not for real frame 0.

    ``emit_first_clip=True`` (our low-latency deviation): rows are emitted as soon as a clip has generated them, so
    the first V frames come out after the first clip and frame k once features up to V·(k // V + 1) − 1 have
    arrived — one window (V features) earlier. Because those rows can no longer be cross-faded with the next clip,
    the next clip's rows are offset so they start where the shown ones ended, the offset fading out linearly over F
    frames. The clips, their ``kp_cond`` chain and the total number of rows are exactly the reference's; only the
    shown values near each seam differ.
    """

    def __init__(
        self,
        lmdm: LMDMFn,
        conditioning: Conditioning,
        options: MotionOptions,
        warmup: np.ndarray | Callable[[int], np.ndarray],
        *,
        emit_first_clip: bool = False,
        schedule: NoiseSchedule | None = None,
    ) -> None:
        self.options = options.resolved()
        assert self.options.seed is not None
        #: The seed in use (drawn when the options had none): report it so the stream can be reproduced.
        self.seed: int = self.options.seed
        if options.seed is None:
            log.info("motion seed %d (drawn)", self.seed)
        self.conditioning = conditioning
        self.emit_first_clip = emit_first_clip
        overlap, self.valid, self.fuse = self.options.overlap, self.options.valid_length, self.options.fuse_length(True)
        warm = warmup(overlap) if callable(warmup) else warmup
        warm = np.asarray(warm, dtype=np.float32).reshape(-1, HUBERT_DIM)
        if len(warm) != overlap:
            raise ValueError(f"the warm-up must have exactly overlap = {overlap} feature rows, got {len(warm)}")
        sampler = MotionSampler(
            lmdm,
            steps=self.options.steps,
            seed=self.seed,
            reuse_step_noise=self.options.reuse_step_noise,
            schedule=schedule,
        )
        self._chain = _ClipChain(sampler, conditioning.source_motion, self.options, self.fuse)
        # features from the next window's first frame on; global frame index of its row 0
        self._features = warm
        self._window_start = -overlap
        # clip rows are numbered from the first clip's row 0 (global frame −O); real frame k is row O + k
        self._frontier = overlap  # rows before it are final (see _run_window)
        self._shown_end = overlap  # one past the last row emitted
        self._last_shown: np.ndarray | None = None  # that row before clipping, for the seam offset
        self._finished = False
        #: Row 0 of the first clip (clipped): the ``d0`` anchor motion stitching needs; ``None`` before that clip.
        self.first_frame_motion: np.ndarray | None = None
        self.frames_emitted = 0
        self.features_received = 0

    @property
    def clips(self) -> int:
        """LMDM clips sampled so far."""
        return self._chain.clips

    def set_conditioning(self, conditioning: Conditioning) -> None:
        """Condition the clips sampled from now on with ``conditioning`` (a live emotion change; the thread that
        pushes only). Clips already sampled keep theirs, so the change shows from the next clip on."""
        self.conditioning = conditioning

    def push(self, features: np.ndarray) -> list[np.ndarray]:
        """Add real feature rows (n, 1024); returns the motion rows (265,) that became final (maybe none)."""
        if self._finished:
            raise RuntimeError("this StreamingMotion is finished; start a new one")
        rows = np.asarray(features, dtype=np.float32).reshape(-1, HUBERT_DIM)
        self.features_received += len(rows)
        self._features = np.concatenate([self._features, rows], axis=0)
        out: list[np.ndarray] = []
        while len(self._features) >= SEQ_FRAMES:
            out += self._run_window(final=False)
        return out

    def finish(self) -> list[np.ndarray]:
        """End of speech: run the last, padded window and return every remaining row."""
        if self._finished:
            return []
        self._finished = True
        out: list[np.ndarray] = []
        while len(self._features) > 0:
            out += self._run_window(final=True)
        return out

    def _run_window(self, *, final: bool) -> list[np.ndarray]:
        window = self._features[:SEQ_FRAMES]
        advance = self.valid if len(window) == SEQ_FRAMES else len(window)
        cond = self.conditioning.rows(_pad_window(window), start_index=self._window_start)
        chain = self._chain
        chain.add_clip(cond)
        first = chain.clips == 1
        if first:
            assert chain.motion is not None
            self.first_frame_motion = clip_motion(chain.motion[0], self.options.clip_range)
            if final:
                log.info("speech shorter than one window: emitting the first clip's frames (the reference emits none)")
        # The reference's emission frontier: rows before it will not change any more (the next clip cross-fades
        # only the last F rows). The final clip releases everything its window advanced over, up to the last row.
        if final:
            self._frontier = min(self._frontier + advance, chain.end)
        else:
            self._frontier = max(self._frontier, chain.end - self.fuse)
        rows = self._emit(chain.end if self.emit_first_clip and not final else self._frontier)
        self._window_start += advance
        self._features = self._features[advance:]
        chain.keep_last(2 * SEQ_FRAMES)
        return rows

    def _emit(self, stop: int) -> list[np.ndarray]:
        """Rows [shown_end, stop), with the early-emission seam offset when earlier shown rows were re-fused."""
        start = self._shown_end
        if stop <= start:
            return []
        chain = self._chain
        block = np.stack([chain.row(i) for i in range(start, stop)])
        if self.emit_first_clip and self._last_shown is not None and self.fuse > 0:
            # the clip just added re-fused rows already shown; continue from what was shown, fading to the new clip
            offset = self._last_shown - chain.row(start - 1)
            steps = np.arange(1, len(block) + 1, dtype=np.float32)
            weight = np.clip(1.0 - steps / self.fuse, 0.0, 1.0).reshape(-1, 1)
            block = block + weight * offset
        self._last_shown = block[-1].copy()
        self._shown_end = stop
        shown = clip_motion(block, self.options.clip_range)
        self.frames_emitted += len(shown)
        return list(shown)
