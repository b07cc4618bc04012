"""LMDM sampling, the offline clip schedule and the streaming generator of ditto_demo.pipeline.motion."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import pytest

from ditto_demo.diffusion import NoiseSchedule
from ditto_demo.errors import InputError
from ditto_demo.pipeline.audio import HubertStream, hubert_features, load_audio, online_feature_count
from ditto_demo.pipeline.conditioning import COND_SLICES, Conditioning
from ditto_demo.pipeline.motion import (
    MotionOptions,
    MotionSampler,
    StreamingMotion,
    clip_motion,
    fuse_weights,
    generate_motion,
    sample_clip,
    smooth_motion,
)
from ditto_demo.pipeline.networks import Networks
from ditto_demo.testing.reference import silence_features, streaming_frame_count

SPEECH = Path(__file__).resolve().parents[1] / "assets" / "speech_en.wav"
CLIP_CONST = 1000.0


class FrameIdLMDM:
    """Fake LMDM step: x̂₀ row f = (frame id in cond row f, column 0) + 1000 · clip number (if ``per_clip``).

    Independent of x, so any DDIM run returns exactly the last x̂₀; records every call for inspection.
    """

    def __init__(self, per_clip: bool = True) -> None:
        self.per_clip = per_clip
        self.calls: list[tuple[np.ndarray, np.ndarray, int]] = []
        self.clips = 0

    def __call__(self, *, x: np.ndarray, cond_frame: np.ndarray, cond: np.ndarray, time_cond: np.ndarray) -> dict:
        assert x.shape == (1, 80, 265)
        assert cond_frame.shape == (1, 265)
        assert cond.shape == (1, 80, 1103)
        assert time_cond.dtype == np.int64
        assert time_cond.shape == (1,)
        if int(time_cond[0]) == 999:
            self.clips += 1
        self.calls.append((cond_frame[0].copy(), cond[0].copy(), int(time_cond[0])))
        frame = cond[0, :, 0].astype(np.float32)
        x_start = np.repeat(frame[:, None], 265, axis=1) + (CLIP_CONST * self.clips if self.per_clip else 0.0)
        return {"x_start": x_start[None].astype(np.float32), "pred_noise": np.zeros_like(x)}

    def first_step_calls(self) -> list[tuple[np.ndarray, np.ndarray, int]]:
        return [c for c in self.calls if c[2] == 999]


class NoisyLMDM:
    """Fake LMDM step whose x̂₀ depends on x, kp_cond and cond (for seed tests)."""

    def __call__(self, *, x: np.ndarray, cond_frame: np.ndarray, cond: np.ndarray, time_cond: np.ndarray) -> dict:
        x_start = 0.5 * x + 0.1 * cond_frame[:, None, :] + cond[:, :, :265] * 0.01
        return {"x_start": x_start.astype(np.float32), "pred_noise": (0.3 * x).astype(np.float32)}


def _frame_cond(count: int, first: int = 0) -> np.ndarray:
    """Condition rows whose column 0 is the frame id."""
    cond = np.zeros((count, 1103), np.float32)
    cond[:, 0] = np.arange(first, first + count)
    return cond


def _source_vector() -> np.ndarray:
    return np.full(265, -7.0, np.float32)


# --------------------------------------------------------------------------------------------------- helpers


def test_fuse_weights_are_j_over_f() -> None:
    np.testing.assert_array_equal(fuse_weights(10), np.arange(10, dtype=np.float32) / 10)
    assert fuse_weights(0).shape == (0,)


def test_smoothing_touches_only_dims_0_202_and_truncates_at_the_ends() -> None:
    rng = np.random.default_rng(0)
    motion = rng.standard_normal((12, 265)).astype(np.float32)
    out = smooth_motion(motion, 3)
    np.testing.assert_array_equal(out[:, 202:], motion[:, 202:])
    np.testing.assert_allclose(out[0, :202], motion[0:2, :202].mean(0), rtol=1e-6)
    np.testing.assert_allclose(out[5, :202], motion[4:7, :202].mean(0), rtol=1e-6)
    np.testing.assert_allclose(out[11, :202], motion[10:12, :202].mean(0), rtol=1e-6)
    # every row is averaged from the unmodified input, not from already smoothed neighbours
    np.testing.assert_allclose(out[1, :202], motion[0:3, :202].mean(0), rtol=1e-6)
    wide = smooth_motion(motion, 5, start=3, stop=5)
    np.testing.assert_array_equal(wide[:3], motion[:3])
    np.testing.assert_array_equal(wide[5:], motion[5:])
    np.testing.assert_allclose(wide[3, :202], motion[1:6, :202].mean(0), rtol=1e-6)
    np.testing.assert_array_equal(smooth_motion(motion, 1), motion)


def test_clip_motion_uses_rows_0_and_1() -> None:
    motion = np.linspace(-5, 5, 2 * 265, dtype=np.float32).reshape(2, 265)
    bounds = np.stack([np.full(265, -1.0), np.full(265, 2.0), np.full(265, -100.0), np.full(265, 100.0)])
    clipped = clip_motion(motion, bounds)
    assert clipped.min() == -1.0
    assert clipped.max() == 2.0
    np.testing.assert_array_equal(clip_motion(motion, None), motion)


def test_options_validation_and_seed_resolution() -> None:
    assert MotionOptions(overlap=70).valid_length == 10
    assert MotionOptions(overlap=70).fuse_length(streaming=True) == 10
    assert MotionOptions(overlap=70).fuse_length(streaming=False) == 70
    assert MotionOptions(fix_kp_cond_dim=[0, 202]).fix_kp_cond_dim == (0, 202)  # type: ignore[arg-type]
    resolved = MotionOptions().resolved()
    assert isinstance(resolved.seed, int)
    assert resolved.resolved() is resolved
    for bad in (
        {"steps": 0},
        {"overlap": 80},
        {"overlap": -1},
        {"fix_kp_cond": -1},
        {"fix_kp_cond_dim": (10, 300)},
        {"clip_range": np.zeros((1, 265))},
    ):
        with pytest.raises(InputError):
            MotionOptions(**bad)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------- sampler


def test_sample_clip_runs_the_ddim_time_pairs() -> None:
    fake = FrameIdLMDM(per_clip=False)
    rng = np.random.default_rng(0)
    out = sample_clip(fake, _source_vector(), _frame_cond(80, 5), rng, steps=10)
    assert [c[2] for c in fake.calls] == [999, 899, 799, 699, 599, 499, 399, 299, 199, 99]
    np.testing.assert_array_equal(out, np.repeat(np.arange(5, 85, dtype=np.float32)[:, None], 265, 1))
    fake.calls.clear()
    sample_clip(fake, _source_vector(), _frame_cond(80), rng, steps=1)
    assert [c[2] for c in fake.calls] == [999]


@pytest.mark.parametrize("steps", [3, 5])
def test_step_counts_that_give_nan_in_the_reference_stay_finite(steps: int) -> None:
    rng = np.random.default_rng(0)
    out = sample_clip(NoisyLMDM(), _source_vector(), _frame_cond(80), rng, steps=steps)
    assert np.isfinite(out).all()


class RecordingLMDM:
    """x̂₀ = 0 and ε̂ = 0, so the x entering step 2 is σ₁·z₁: exposes which step noise was used."""

    def __init__(self) -> None:
        self.inputs: list[np.ndarray] = []

    def __call__(self, *, x: np.ndarray, cond_frame: np.ndarray, cond: np.ndarray, time_cond: np.ndarray) -> dict:
        self.inputs.append(x.copy())
        return {"x_start": np.zeros_like(x), "pred_noise": np.zeros_like(x)}


@pytest.mark.parametrize("reuse", [True, False])
def test_step_noise_reuse(reuse: bool) -> None:
    fake = RecordingLMDM()
    sampler = MotionSampler(fake, steps=3, seed=5, reuse_step_noise=reuse)
    cond = np.zeros((80, 1103), np.float32)
    sampler(_source_vector(), cond)
    sampler(_source_vector(), cond)
    first_x = [fake.inputs[0], fake.inputs[3]]
    second_x = [fake.inputs[1], fake.inputs[4]]
    assert not np.array_equal(*first_x)  # the initial noise is fresh per clip
    sigma = NoiseSchedule.cosine().coefficients(999, 666).sigma
    assert np.abs(second_x[0]).max() > 0.1 * sigma
    assert np.array_equal(*second_x) == reuse


def test_same_seed_same_motion_different_seed_different() -> None:
    cond = _frame_cond(150)
    opts = MotionOptions(steps=4, seed=123, overlap=10)
    a = generate_motion(cond, _source_vector(), NoisyLMDM(), opts)
    b = generate_motion(cond, _source_vector(), NoisyLMDM(), opts)
    c = generate_motion(cond, _source_vector(), NoisyLMDM(), MotionOptions(steps=4, seed=124, overlap=10))
    assert a.shape == (150, 265)
    assert np.isfinite(a).all()
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


# --------------------------------------------------------------------------------------------------- offline


def test_offline_windows_padding_and_cross_fade() -> None:
    n, overlap = 200, 10
    valid, fuse = 80 - overlap, overlap
    fake = FrameIdLMDM()
    out = generate_motion(
        _frame_cond(n), _source_vector(), fake, MotionOptions(steps=2, overlap=overlap, seed=0, smooth_kernel=1)
    )
    calls = fake.first_step_calls()
    starts = list(range(0, n, valid))
    assert len(calls) == len(starts) == 3
    for (_, cond, _), start in zip(calls, starts, strict=True):
        # each window holds frames start..start+79, the last one padded by repeating its last row
        np.testing.assert_array_equal(cond[:, 0], np.minimum(np.arange(start, start + 80), n - 1))
    # expected: frame k + 1000·(clip that produced it), with the j/F cross-fade where two clips meet
    expected = np.empty(n)
    for k in range(n):
        clip = min(k // valid, len(starts) - 1)  # 0-based: last clip covering k
        j = k - clip * valid
        if clip > 0 and j < fuse:
            expected[k] = k + CLIP_CONST * (clip + j / fuse)
        else:
            expected[k] = k + CLIP_CONST * (clip + 1)
    assert out.shape == (n, 265)
    np.testing.assert_allclose(out[:, 0], expected, rtol=1e-6)
    np.testing.assert_allclose(out[:, 264], expected, rtol=1e-6)


@pytest.mark.parametrize(("fix", "dims"), [(0, None), (2, (0, 202)), (1, None)])
def test_offline_kp_cond_chain_and_fix_kp_cond_reset(fix: int, dims: tuple[int, int] | None) -> None:
    n, overlap = 300, 10
    valid = 80 - overlap
    fake = FrameIdLMDM()
    opts = MotionOptions(steps=1, overlap=overlap, seed=0, smooth_kernel=1, fix_kp_cond=fix, fix_kp_cond_dim=dims)
    generate_motion(_frame_cond(n), _source_vector(), fake, opts)
    kp_conds = [c[0] for c in fake.first_step_calls()]
    np.testing.assert_array_equal(kp_conds[0], _source_vector())  # the first clip starts from the source
    for clip, kp in enumerate(kp_conds[1:], start=1):
        # the frame just before the next window (clip·V − 1), as generated by that clip (not in its fuse region)
        generated = np.full(265, clip * valid - 1 + CLIP_CONST * clip, np.float32)
        if fix > 0 and clip % fix == 0:
            expected = _source_vector().copy()
            if dims is not None:
                expected[dims[0] : dims[1]] = generated[dims[0] : dims[1]]
        else:
            expected = generated
        np.testing.assert_array_equal(kp, expected)


def test_offline_smooths_clip_seams_and_then_the_whole_sequence_again() -> None:
    rng = np.random.default_rng(3)
    pred = rng.standard_normal((80, 265)).astype(np.float32)

    def fixed(*, x: np.ndarray, cond_frame: np.ndarray, cond: np.ndarray, time_cond: np.ndarray) -> dict:
        return {"x_start": pred[None], "pred_noise": np.zeros_like(x)}

    out = generate_motion(_frame_cond(50), _source_vector(), fixed, MotionOptions(steps=1, seed=0))
    np.testing.assert_array_equal(out, smooth_motion(smooth_motion(pred, 3)[:50], 3))
    np.testing.assert_array_equal(out[:, 202:], pred[:50, 202:])  # expression never smoothed


def test_offline_seam_smoothing_covers_the_fused_rows_and_the_first_new_one() -> None:
    fake = FrameIdLMDM()  # all frame ids 0: clip 1 is 1000 everywhere, clip 2 is 2000
    out = generate_motion(np.zeros((140, 1103), np.float32), _source_vector(), fake, MotionOptions(steps=1, seed=0))
    assert fake.clips == 2  # windows at 0 and 70
    seq = np.full((150, 265), 2000.0, np.float32)
    seq[:70] = 1000.0
    seq[70:80] = 1000.0 + 1000.0 * fuse_weights(10)[:, None]
    seam = smooth_motion(seq, 3, 70, 81)  # rows L' − V − F .. L' − V, inclusive
    assert seam[80, 0] < 2000.0
    np.testing.assert_allclose(out, smooth_motion(seam[:140], 3), rtol=1e-6)


def test_offline_clipping_uses_rows_0_and_1() -> None:
    bounds = np.stack([np.full(265, 10.0), np.full(265, 60.0), np.zeros(265), np.zeros(265)]).astype(np.float32)
    out = generate_motion(
        _frame_cond(100),
        _source_vector(),
        FrameIdLMDM(per_clip=False),
        MotionOptions(steps=1, seed=0, clip_range=bounds),
    )
    assert out.min() == 10.0
    assert out.max() == 60.0
    np.testing.assert_allclose(out[30, 202:], 30.0)


def test_offline_rejects_empty_input() -> None:
    with pytest.raises(InputError):
        generate_motion(np.zeros((0, 1103)), _source_vector(), NoisyLMDM(), MotionOptions(seed=0))


# --------------------------------------------------------------------------------------------------- streaming


def _conditioning(emotion: np.ndarray | int = 4) -> Conditioning:
    return Conditioning.from_arrays(
        source_motion=_source_vector(),
        canonical_kp=np.zeros(63),
        eye_open=np.zeros((1, 2)),
        eye_ball=np.zeros((1, 6)),
        emotion=emotion,
    )


def _warmup(overlap: int) -> np.ndarray:
    return _frame_cond(overlap, -overlap)[:, :1024]


def _run_stream(
    stream: StreamingMotion, count: int, block: int = 5
) -> tuple[list[np.ndarray], list[int], list[np.ndarray]]:
    """Push frame-id features in blocks; returns rows before finish, rows per push, rows from finish."""
    rows: list[np.ndarray] = []
    per_push: list[int] = []
    feats = _frame_cond(count)[:, :1024]
    for start in range(0, count, block):
        new = stream.push(feats[start : start + block])
        per_push.append(len(new))
        rows += new
    return rows, per_push, stream.finish()


def _reference_online_count(features: int, overlap: int) -> int:
    """The reference's online emission bookkeeping (ditto_spec.md §3.4), counting rows only."""
    seq, valid = 80, 80 - overlap
    fuse = min(overlap, valid)
    buffered = overlap + features
    local, res_len, valid_start, emitted = 0, 0, None, 0
    while buffered - local > 0:
        real_valid = valid if buffered - local >= seq else buffered - local
        res_len = seq if res_len == 0 else res_len + valid
        if valid_start is None:
            valid_start = res_len - fuse
        else:
            emitted += max(0, min(valid_start + real_valid, res_len) - valid_start)
            valid_start += real_valid
        local += real_valid
    return emitted


@pytest.mark.parametrize("overlap", [40, 60, 70, 75])
def test_streaming_total_matches_the_reference(overlap: int) -> None:
    for features in range(80 - overlap, 300):  # shorter streams: the reference emits nothing (see below)
        assert streaming_frame_count(features, overlap) == _reference_online_count(features, overlap)
    assert streaming_frame_count(175, 70) == 180
    assert streaming_frame_count(450, 70) == 460
    stream = StreamingMotion(
        FrameIdLMDM(per_clip=False),
        _conditioning(),
        MotionOptions(steps=1, overlap=overlap, seed=0, smooth_kernel=1),
        _warmup,
    )
    before, _, after = _run_stream(stream, 175)
    rows = before + after
    assert len(rows) == _reference_online_count(175, overlap) == stream.frames_emitted
    assert len(before) > 0  # rows come out while features are still arriving
    # row k is real frame k; rows past the audio were driven by the repeated last feature
    np.testing.assert_allclose(np.array(rows)[:, 0], np.minimum(np.arange(len(rows)), 174), atol=1e-4)


def test_streaming_reference_timing_and_d0() -> None:
    fake = FrameIdLMDM()
    stream = StreamingMotion(
        fake, _conditioning(), MotionOptions(steps=1, overlap=70, seed=0, smooth_kernel=1), _warmup
    )
    _, per_push, _ = _run_stream(stream, 100)
    # the first clip (70 silence + 10 real rows) emits nothing; its frames come out, fused, with the second clip
    assert per_push[:4] == [0, 0, 0, 10]
    assert all(n in (0, 10) for n in per_push)
    assert stream.first_frame_motion is not None
    # d0 is the first clip's row 0: motion generated for the first silence frame (id −70), clip 1
    np.testing.assert_array_equal(stream.first_frame_motion, np.full(265, -70 + CLIP_CONST))
    # window starts −70, −60, …; their conditioning is indexed from there (negative → frame 0)
    starts = [int(c[1][0, 0]) for c in fake.first_step_calls()]
    assert starts[:3] == [-70, -60, -50]


def test_streaming_conditioning_start_index() -> None:
    table = np.zeros((1000, 8), np.float32)
    table[:, 0] = np.arange(1000)
    fake = FrameIdLMDM()
    stream = StreamingMotion(fake, _conditioning(table), MotionOptions(steps=1, overlap=70, seed=0), _warmup)
    _run_stream(stream, 60)
    emo = COND_SLICES["emotion"].start
    for window, (_, cond, _) in enumerate(fake.first_step_calls()):
        first = -70 + 10 * window
        np.testing.assert_array_equal(cond[:, emo], np.maximum(np.arange(first, first + 80), 0))


def test_emit_first_clip_comes_one_window_earlier_with_the_same_count() -> None:
    opts = MotionOptions(steps=1, overlap=70, seed=0, smooth_kernel=3)
    ref = StreamingMotion(FrameIdLMDM(), _conditioning(), opts, _warmup)
    early = StreamingMotion(FrameIdLMDM(), _conditioning(), opts, _warmup, emit_first_clip=True)
    ref_before, ref_pushes, ref_after = _run_stream(ref, 137)
    early_before, early_pushes, early_after = _run_stream(early, 137)
    assert ref_pushes.index(10) == 3
    assert early_pushes.index(10) == 1
    # every frame the reference emits before the end comes out one window (two 5-feature pushes) earlier
    ref_arrival = np.repeat(np.arange(len(ref_pushes)), ref_pushes)
    early_arrival = np.repeat(np.arange(len(early_pushes)), early_pushes)
    np.testing.assert_array_equal(early_arrival[: len(ref_arrival)], ref_arrival - 2)
    assert len(early_before + early_after) == len(ref_before + ref_after)
    np.testing.assert_array_equal(early.first_frame_motion, ref.first_frame_motion)
    early_rows = np.array(early_before + early_after)
    ref_rows = np.array(ref_before + ref_after)
    # the first frames are the first clip's own (not cross-faded with clip 2)
    np.testing.assert_allclose(early_rows[:9, 202], np.arange(9) + CLIP_CONST)
    assert ref_rows[5, 202] > early_rows[5, 202]
    # later rows start where the shown ones ended (no jump of a whole clip offset) and converge to the reference
    assert np.abs(np.diff(early_rows[:, 202])).max() < 0.5 * CLIP_CONST
    np.testing.assert_allclose(early_rows[-1], ref_rows[-1])


def test_streaming_without_cross_fade_differences_is_emission_policy_only() -> None:
    """When consecutive clips agree (and no smoothing trims a clip's end), early emission changes only the timing."""
    opts = MotionOptions(steps=1, overlap=70, seed=0, smooth_kernel=1)
    ref = StreamingMotion(FrameIdLMDM(per_clip=False), _conditioning(), opts, _warmup)
    early = StreamingMotion(FrameIdLMDM(per_clip=False), _conditioning(), opts, _warmup, emit_first_clip=True)
    a, _, a_end = _run_stream(ref, 93)
    b, _, b_end = _run_stream(early, 93, block=7)
    np.testing.assert_allclose(np.array(a + a_end), np.array(b + b_end), atol=1e-4)


def test_streaming_small_overlap_starts_at_real_frame_zero() -> None:
    """The reference would skip 80 − 2·O frames for O < 40; we emit every real frame from 0."""
    stream = StreamingMotion(
        FrameIdLMDM(per_clip=False),
        _conditioning(),
        MotionOptions(steps=1, overlap=10, seed=0, smooth_kernel=1),
        _warmup,
    )
    before, _, after = _run_stream(stream, 200)
    rows = np.array(before + after)
    assert len(rows) == 200 == streaming_frame_count(200, 10)
    np.testing.assert_allclose(rows[:, 0], np.arange(200), atol=1e-4)


def test_streaming_shorter_than_one_window_still_emits() -> None:
    stream = StreamingMotion(
        FrameIdLMDM(per_clip=False),
        _conditioning(),
        MotionOptions(steps=1, overlap=70, seed=0, smooth_kernel=1),
        _warmup,
    )
    assert stream.push(_frame_cond(5)[:, :1024]) == []
    rows = stream.finish()
    assert _reference_online_count(5, 70) == 0  # the reference shows nothing at all
    assert len(rows) == streaming_frame_count(5, 70) == 10
    np.testing.assert_array_equal(np.array(rows)[:, 0], [0, 1, 2, 3, 4, 4, 4, 4, 4, 4])
    with pytest.raises(RuntimeError):
        stream.push(_frame_cond(5)[:, :1024])


def test_streaming_history_is_capped_and_seeded() -> None:
    opts = MotionOptions(steps=2, overlap=70, seed=9)
    a = StreamingMotion(NoisyLMDM(), _conditioning(), opts, np.zeros((70, 1024), np.float32))
    b = StreamingMotion(NoisyLMDM(), _conditioning(), opts, np.zeros((70, 1024), np.float32))
    rows_a = a.push(np.ones((400, 1024), np.float32)) + a.finish()
    rows_b = b.push(np.ones((400, 1024), np.float32)) + b.finish()
    np.testing.assert_array_equal(np.array(rows_a), np.array(rows_b))
    assert a.seed == 9
    assert a._chain.motion is not None
    assert len(a._chain.motion) <= 160
    drawn = StreamingMotion(NoisyLMDM(), _conditioning(), MotionOptions(steps=2, overlap=70), _warmup)
    assert isinstance(drawn.seed, int)
    with pytest.raises(ValueError, match="warm-up"):
        StreamingMotion(NoisyLMDM(), _conditioning(), opts, np.zeros((10, 1024)))


# --------------------------------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def tiny_networks(tiny_root: Path) -> Networks:
    return Networks(tiny_root, "torch", "cpu")


def test_end_to_end_offline_with_tiny_networks(tiny_networks: Networks) -> None:
    audio = load_audio(SPEECH)
    feats = hubert_features(tiny_networks["hubert"], audio)
    n = -(-audio.size // 640)
    assert feats.shape == (n, 1024)
    cond = _conditioning().rows(feats)
    opts = MotionOptions(steps=10, seed=0)
    motion = generate_motion(cond, _source_vector(), tiny_networks["lmdm"], opts)
    assert motion.shape == (n, 265)
    assert motion.dtype == np.float32
    assert np.isfinite(motion).all()
    np.testing.assert_array_equal(motion, generate_motion(cond, _source_vector(), tiny_networks["lmdm"], opts))


def test_end_to_end_streaming_with_tiny_networks(tiny_networks: Networks) -> None:
    audio = load_audio(SPEECH)
    hubert = tiny_networks["hubert"]
    motion = StreamingMotion(
        tiny_networks["lmdm"],
        _conditioning(),
        MotionOptions(steps=10, overlap=70, seed=0, fix_kp_cond=1, fix_kp_cond_dim=(0, 202)),
        partial(silence_features, hubert),
    )
    feats = HubertStream(hubert)
    rows: list[np.ndarray] = []
    for start in range(0, audio.size, 1600):  # 100 ms microphone chunks
        for block in feats.push(audio[start : start + 1600]):
            rows += motion.push(block)
    for block in feats.finish():
        rows += motion.push(block)
    rows += motion.finish()
    assert len(rows) == streaming_frame_count(online_feature_count(audio.size), 70) == 180
    assert np.isfinite(np.array(rows)).all()
    assert motion.first_frame_motion is not None


def _zero_hubert(*, input_values: np.ndarray) -> dict[str, np.ndarray]:
    return {"encoding_out": np.zeros((20, 1024), np.float32)}


def _samples_before_first_frame(overlap: int, emit_first_clip: bool) -> tuple[int, int]:
    """Push audio one 40 ms frame at a time through HubertStream → StreamingMotion; (samples, rows) at first rows."""
    features = HubertStream(_zero_hubert)
    stream = StreamingMotion(FrameIdLMDM(per_clip=False), _conditioning(),
                             MotionOptions(steps=1, overlap=overlap, seed=0), _warmup,
                             emit_first_clip=emit_first_clip)
    pushed = 0
    while pushed < 16000 * 3:
        step = 80  # 5 ms: fine enough to find the exact sample to within the HuBERT window arithmetic
        pushed += step
        rows = [r for block in features.push(np.zeros(step, np.float32)) for r in stream.push(block)]
        if rows:
            return pushed, len(rows)
    raise AssertionError("no frame in 3 s of audio")


def test_low_latency_overlap_is_one_hubert_block() -> None:
    from ditto_demo.pipeline.audio import BLOCK_FRAMES
    from ditto_demo.pipeline.motion import LOW_LATENCY_OVERLAP, SEQ_FRAMES

    assert SEQ_FRAMES - LOW_LATENCY_OVERLAP == BLOCK_FRAMES


@pytest.mark.parametrize(
    ("overlap", "early", "samples", "rows"),
    [
        (75, True, 4560, 5),  # the first HuBERT window: 200 ms of frames + 85 ms look-ahead = 285 ms
        (70, True, 4560 + 3200, 10),  # two windows: 485 ms
        (75, False, 4560 + 3200, 5),  # the reference discards the first clip: 485 ms
        (70, False, 4560 + 3 * 3200, 10),  # stock online cfg as the reference runs it: 885 ms
    ],
)
def test_audio_needed_before_the_first_frame(overlap: int, early: bool, samples: int, rows: int) -> None:
    assert _samples_before_first_frame(overlap, early) == (samples, rows)


def test_motion_smoothness_sees_seam_jumps() -> None:
    from ditto_demo.bench.smoothness import motion_smoothness

    t = np.arange(60, dtype=np.float64)
    smooth = np.repeat(np.sin(t / 7.0)[:, None], 265, axis=1)
    plain = motion_smoothness(smooth, 5)
    assert 0.8 < plain["seam_ratio"] < 1.25
    jumpy = smooth + np.repeat((t // 5)[:, None] * 0.5, 265, axis=1)  # a 0.5 jump at every multiple of 5
    rough = motion_smoothness(jumpy, 5)
    assert rough["seam_ratio"] > 3
    assert rough["accel_rms"] > 3 * plain["accel_rms"]
    with pytest.raises(ValueError, match="L ≥ 3"):
        motion_smoothness(smooth[:2], 5)


def test_early_emission_spreads_a_clip_disagreement_over_the_next_block() -> None:
    """O = 75, early emission, clips that disagree by a whole offset (FrameIdLMDM adds 1000 per clip).

    The reference cross-fades the disagreement over rows it has not shown yet: 200 per frame, perfectly even. Shown
    rows cannot be revised, so early emission absorbs it over the next block: the step into a seam frame is larger
    than the others (measured 361 vs 159 here, ratio 2.3) but never a whole-offset jump, and the mean slope is the
    reference's. When consecutive clips agree, early emission changes nothing but the timing (test above).
    """
    from ditto_demo.bench.smoothness import motion_smoothness

    opts = MotionOptions(steps=1, overlap=75, seed=0, smooth_kernel=1)
    ref = StreamingMotion(FrameIdLMDM(), _conditioning(), opts, _warmup)
    early = StreamingMotion(FrameIdLMDM(), _conditioning(), opts, _warmup, emit_first_clip=True)
    ref_before, _, ref_after = _run_stream(ref, 200)
    early_before, _, early_after = _run_stream(early, 200)
    ref_rows, early_rows = np.array(ref_before + ref_after), np.array(early_before + early_after)
    assert len(ref_rows) == len(early_rows)
    a = motion_smoothness(ref_rows[:-10], 5, slice(202, 265))
    b = motion_smoothness(early_rows[:-10], 5, slice(202, 265))
    assert a["seam_ratio"] == pytest.approx(1.0, abs=1e-6)
    assert 1.5 < b["seam_ratio"] < 2.5
    assert np.abs(np.diff(early_rows[5:-10, 202])).max() < 0.4 * CLIP_CONST
    slope = np.polyfit(np.arange(5, 180), early_rows[5:180, 202], 1)[0]
    assert slope == pytest.approx(np.polyfit(np.arange(5, 180), ref_rows[5:180, 202], 1)[0], rel=0.02)
