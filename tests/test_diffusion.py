"""Noise schedule, DDIM time pairs and DDIM update of ``ditto_demo.diffusion`` (pure NumPy math)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from ditto_demo import diffusion as dd


@pytest.fixture(scope="module")
def schedule() -> dd.NoiseSchedule:
    return dd.NoiseSchedule.cosine()


def _torch_alphas_cumprod() -> np.ndarray:
    """The original's recipe evaluated with torch: float64 cosine β, clipped, float32 tensor, CPU cumprod."""
    t = torch.arange(1001, dtype=torch.float64) / 1000 + 0.008
    f = torch.cos(t / 1.008 * math.pi / 2).pow(2)
    f = f / f[0]
    betas = torch.clamp(1 - f[1:] / f[:-1], 0.0, 0.999)
    return torch.cumprod(1.0 - betas.to(torch.float32), dim=0).numpy()


# --------------------------------------------------------------------------------------------- schedule


def test_schedule_shape_dtype_and_monotone(schedule: dd.NoiseSchedule) -> None:
    ac = schedule.alphas_cumprod
    assert ac.shape == (1000,)
    assert ac.dtype == np.float32
    assert np.all(np.diff(ac) < 0)
    assert 0.9999 < ac[0] < 1.0
    assert 0.0 < ac[-1] < 1e-8


def test_betas_are_clipped_at_0_999() -> None:
    betas = dd.cosine_betas()
    assert betas.dtype == np.float64
    assert betas.shape == (1000,)
    assert np.all(betas >= 0)
    assert betas.max() == 0.999  # the clip is active at the end of the chain


def test_schedule_matches_torch_recipe_bit_for_bit(schedule: dd.NoiseSchedule) -> None:
    assert np.array_equal(schedule.alphas_cumprod, _torch_alphas_cumprod())


def test_float32_running_product_would_differ(schedule: dd.NoiseSchedule) -> None:
    """Why we accumulate in float64: torch's CPU cumprod does, and a float32 product differs almost everywhere."""
    one_minus_beta = np.float32(1) - dd.cosine_betas().astype(np.float32)
    assert (np.cumprod(one_minus_beta) != schedule.alphas_cumprod).sum() > 500


def test_tables_match_formulas(schedule: dd.NoiseSchedule) -> None:
    ac = schedule.alphas_cumprod.astype(np.float64)
    np.testing.assert_allclose(schedule.sqrt_recip_alphas_cumprod, np.sqrt(1 / ac), rtol=1e-6)
    np.testing.assert_allclose(schedule.sqrt_recip_one_minus_alphas_cumprod, np.sqrt(1 / (1 - ac)), rtol=1e-6)
    # 1/ᾱ − 1 loses relative precision in float32 where ᾱ is close to 1
    np.testing.assert_allclose(schedule.sqrt_recipm1_alphas_cumprod, np.sqrt(1 / ac - 1), rtol=2e-3)
    for table in (schedule.sqrt_recip_alphas_cumprod, schedule.sqrt_recipm1_alphas_cumprod):
        assert table.dtype == np.float32
        assert table.shape == (1000,)


def test_noise_prediction_forms_agree(schedule: dd.NoiseSchedule) -> None:
    """The spec writes ε̂ two ways; the original's table form must agree with both."""
    rng = np.random.default_rng(0)
    x_t = rng.standard_normal((80, 265)).astype(np.float32)
    x0 = rng.standard_normal((80, 265)).astype(np.float32)
    for t in (20, 100, 500, 900, 999):
        a = float(schedule.alphas_cumprod[t])
        table_form = dd.predict_noise_from_start(x_t, x0, t, schedule.alphas_cumprod)
        x_t64, x064 = x_t.astype(np.float64), x0.astype(np.float64)
        direct = (x_t64 - math.sqrt(a) * x064) / math.sqrt(1 - a)
        recip = (x_t64 * math.sqrt(1 / a) - x064) / math.sqrt(1 / a - 1)
        np.testing.assert_allclose(direct, recip, rtol=1e-9, atol=1e-9)
        assert table_form.dtype == np.float32
        np.testing.assert_allclose(table_form, direct, rtol=1e-4, atol=1e-4 * np.abs(direct).max())


def test_schedule_is_immutable(schedule: dd.NoiseSchedule) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        schedule.alphas_cumprod = np.zeros(3)  # type: ignore[misc]
    with pytest.raises(ValueError, match="read-only"):
        schedule.alphas_cumprod[0] = 0.5


# ------------------------------------------------------------------------------------------- time pairs


@pytest.mark.parametrize("num_steps", range(1, 201))
def test_timesteps_equal_truncated_torch_linspace(num_steps: int) -> None:
    expected = list(reversed(torch.linspace(-1, 999, num_steps + 1).int().tolist()))
    assert dd.ddim_timesteps(num_steps).tolist() == expected


def test_literal_time_sequences() -> None:
    assert dd.ddim_timesteps(50).tolist() == [*range(999, 18, -20), -1]
    assert dd.ddim_timesteps(10).tolist() == [999, 899, 799, 699, 599, 499, 399, 299, 199, 99, -1]
    assert dd.ddim_time_pairs(10)[0] == (999, 899)
    assert dd.ddim_time_pairs(10)[-1] == (99, -1)
    assert dd.ddim_time_pairs(1) == [(999, -1)]
    with pytest.raises(ValueError, match="num_steps"):
        dd.ddim_timesteps(0)


# ------------------------------------------------------------------------------------------ DDIM update


def test_ddim_step_hand_made_numbers() -> None:
    ac = np.array([0.9, 0.5, 0.1], dtype=np.float32)
    sigma = math.sqrt((1 - 0.1 / 0.5) * (1 - 0.5) / (1 - 0.1))  # = 2/3
    c = math.sqrt(1 - 0.5 - sigma**2)
    coef = dd.ddim_coefficients(ac, 2, 1)
    assert coef.sigma == pytest.approx(sigma, rel=1e-6)
    assert coef.c == pytest.approx(c, rel=1e-5)
    assert coef.sqrt_alpha_next == pytest.approx(math.sqrt(0.5), rel=1e-7)

    x0 = np.full((2, 3), 1.0, dtype=np.float32)
    eps = np.full((2, 3), 2.0, dtype=np.float32)
    z = np.full((2, 3), 3.0, dtype=np.float32)
    out = dd.ddim_step(None, x0, eps, 2, 1, z, ac)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, math.sqrt(0.5) * 1 + c * 2 + sigma * 3, rtol=1e-6)

    # η = 0 is the deterministic DDIM: σ = 0 and c = √(1 − ᾱ_t')
    coef0 = dd.ddim_coefficients(ac, 2, 1, eta=0.0)
    assert coef0.sigma == 0.0
    assert coef0.c == pytest.approx(math.sqrt(0.5), rel=1e-6)


def test_final_step_returns_x0_prediction() -> None:
    ac = np.array([0.9, 0.5], dtype=np.float32)
    x0 = np.ones((2, 2), dtype=np.float32)
    assert dd.ddim_step(np.zeros_like(x0), x0, None, 0, -1, None, ac) is x0
    with pytest.raises(ValueError, match="final"):
        dd.ddim_coefficients(ac, 0, -1)
    with pytest.raises(ValueError, match="noise"):
        dd.ddim_step(x0, x0, x0, 1, 0, None, ac)


def test_ddim_step_derives_eps_from_x_t(schedule: dd.NoiseSchedule) -> None:
    rng = np.random.default_rng(1)
    x_t, x0, z = (rng.standard_normal((4, 5)).astype(np.float32) for _ in range(3))
    eps = dd.predict_noise_from_start(x_t, x0, 999, schedule.alphas_cumprod)
    np.testing.assert_array_equal(schedule.step(x_t, x0, None, 999, 979, z), schedule.step(x_t, x0, eps, 999, 979, z))


def test_ddim_step_accepts_torch_tensors(schedule: dd.NoiseSchedule) -> None:
    rng = np.random.default_rng(2)
    x_t, x0, z = (rng.standard_normal((3, 4)).astype(np.float32) for _ in range(3))
    ref = schedule.step(x_t, x0, None, 500, 480, z)
    out = schedule.step(*(torch.from_numpy(a) for a in (x_t, x0)), None, 500, 480, torch.from_numpy(z))
    assert out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-6, atol=1e-6)


def test_unclamped_c_argument_goes_negative_and_clamp_fixes_it(schedule: dd.NoiseSchedule) -> None:
    """Spec Appendix A item 18: in float32 the first step's 1 − ᾱ_t' − σ² is a residue that can be < 0."""
    ac = schedule.alphas_cumprod
    negative = [
        s
        for s in range(2, 101)
        for t, t_next in schedule.time_pairs(s)
        if t_next >= 0 and dd.ddim_c_squared(ac, t, t_next) < 0
    ]
    assert 3 in negative  # the original's NumPy (ONNX/TensorRT) path returns an all-NaN clip at S = 3
    t, t_next = schedule.time_pairs(3)[0]
    with np.errstate(invalid="ignore"):
        assert np.isnan(np.sqrt(dd.ddim_c_squared(ac, t, t_next)))
    coef = schedule.coefficients(t, t_next)
    assert coef.c == 0.0
    assert math.isfinite(coef.sigma)
    assert math.isfinite(coef.sqrt_alpha_next)


def test_full_sampling_runs_have_no_nan(schedule: dd.NoiseSchedule) -> None:
    """Every step count 2..100, with ε̂ from the table formula and a stand-in denoiser, stays finite."""
    rng = np.random.default_rng(3)
    target = rng.standard_normal((80, 265)).astype(np.float32)
    for s in range(2, 101):
        x = rng.standard_normal((80, 265)).astype(np.float32)
        for t, t_next in schedule.time_pairs(s):
            x0 = (0.5 * x + 0.5 * target).astype(np.float32)  # any smooth function of x_t will do
            eps = dd.predict_noise_from_start(x, x0, t, schedule.alphas_cumprod)
            noise = rng.standard_normal(x.shape).astype(np.float32) if t_next >= 0 else None
            x = schedule.step(x, x0, eps, t, t_next, noise)
        assert x.dtype == np.float32
        assert np.isfinite(x).all(), f"S={s}"
