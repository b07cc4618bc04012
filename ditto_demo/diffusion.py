"""Noise schedule and DDIM sampler arithmetic of Ditto's motion diffusion model (LMDM), in NumPy only.

Why NumPy and why so fussy about rounding: the sampler's coefficients are a handful of float32 scalars that the
original computes once per step count and then applies to every clip. Reproducing them bit for bit (rather than
"mathematically equal") is what makes our sampled motion comparable with the original's, so every function below
states the precision of each operation, and the tests check the results against torch where torch defines them.

Facts reproduced here (ditto_spec.md §2.6.4, checked against the public ``core/models/modules/LMDM.py``,
``core/models/lmdm.py`` and ``core/models/modules/lmdm_modules/utils.py``):

* Cosine schedule (s = 0.008, 1000 steps) built in float64, β clipped to [0, 0.999], then cast to float32.
  ᾱ is the running product of the float32 values 1 − β. The original calls ``torch.cumprod`` on a CPU tensor,
  and PyTorch's CPU kernel accumulates a float32 product in float64 and rounds each partial product to float32.
  A pure float32 running product differs in 991 of the 1000 entries, so we accumulate in float64 as well.
* DDIM time pairs come from ``torch.linspace(-1, T - 1, S + 1)`` in float32, truncated to int and reversed.
  ``torch.linspace`` on the CPU evaluates ``start + step * i`` for the first half and ``end - step * (n - 1 - i)``
  for the second half, with a fused multiply-add (one rounding). We emulate that exactly in float64, where the
  product and sum are exact, and round once to float32.
* DDIM with η = 1; the last pair (t' = −1) returns x̂₀ itself.

Deliberate deviation (spec Appendix A item 18): the original takes c = √(1 − ᾱ_t' − σ²) in float32. For the first
step the argument is a rounding residue of one or two ulps that can come out negative, making c (and the whole
80-frame clip) NaN — for S = 3 with NumPy arithmetic and S = 5 with PyTorch's (its CPU ``sqrt`` is not correctly
rounded, so σ² differs by an ulp). We clamp the argument at 0; everywhere else the values are unchanged.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

__all__ = [
    "COSINE_OFFSET",
    "MAX_BETA",
    "NUM_TIMESTEPS",
    "DDIMCoefficients",
    "NoiseSchedule",
    "cosine_alphas_cumprod",
    "cosine_betas",
    "ddim_c_squared",
    "ddim_coefficients",
    "ddim_step",
    "ddim_time_pairs",
    "ddim_timesteps",
    "predict_noise_from_start",
    "sqrt_recip_alphas_cumprod",
    "sqrt_recip_one_minus_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod",
]

#: Length of the training diffusion chain.
NUM_TIMESTEPS = 1000
#: The small offset s of the cosine schedule (Nichol & Dhariwal), which keeps β_0 away from 0.
COSINE_OFFSET = 0.008
#: Upper clip of β, which keeps the last steps of the chain from being a pure-noise singularity.
MAX_BETA = 0.999

_F32 = np.float32


def cosine_betas(
    num_timesteps: int = NUM_TIMESTEPS, s: float = COSINE_OFFSET, max_beta: float = MAX_BETA
) -> np.ndarray:
    """β_i of the cosine schedule in float64 (the precision the original builds them in).

    The operations follow the original's order — ``(i / T + s) / (1 + s) * π / 2`` — because float64 rounding of a
    different but equivalent expression could, in rare cases, flip the last bit of a float32 ᾱ.
    """
    steps = np.arange(num_timesteps + 1, dtype=np.float64) / num_timesteps + s
    f = np.cos(steps / (1 + s) * np.pi / 2) ** 2
    alpha_bar = f / f[0]
    return np.clip(1 - alpha_bar[1:] / alpha_bar[:-1], 0.0, max_beta)


def cosine_alphas_cumprod(num_timesteps: int = NUM_TIMESTEPS, s: float = COSINE_OFFSET) -> np.ndarray:
    """ᾱ_t (float32, length ``num_timesteps``) exactly as the original's CPU ``torch.cumprod`` yields them.

    β is rounded to float32 first and 1 − β is formed in float32 (as the original does with ``torch.Tensor``);
    the running product is then accumulated in float64 and each partial product rounded to float32, which is
    what PyTorch's CPU cumprod kernel does for float32 input.
    """
    one_minus_beta = _F32(1.0) - cosine_betas(num_timesteps, s).astype(np.float32)
    return np.cumprod(one_minus_beta.astype(np.float64)).astype(np.float32)


def sqrt_recip_alphas_cumprod(alphas_cumprod: np.ndarray) -> np.ndarray:
    """√(1/ᾱ) in float32: scales x_t back to the x₀ scale (x₀ = x_t·√(1/ᾱ) − ε·√(1/ᾱ − 1))."""
    ac = np.asarray(alphas_cumprod, dtype=np.float32)
    return np.sqrt(_F32(1.0) / ac)


def sqrt_recip_one_minus_alphas_cumprod(alphas_cumprod: np.ndarray) -> np.ndarray:
    """√(1/(1 − ᾱ)) in float32 — the x_t coefficient of the original's ε̂ formula."""
    ac = np.asarray(alphas_cumprod, dtype=np.float32)
    return np.sqrt(_F32(1.0) / (_F32(1.0) - ac))


def sqrt_recipm1_alphas_cumprod(alphas_cumprod: np.ndarray) -> np.ndarray:
    """√(1/ᾱ − 1) in float32 — the x̂₀ divisor of the original's ε̂ formula."""
    ac = np.asarray(alphas_cumprod, dtype=np.float32)
    return np.sqrt(_F32(1.0) / ac - _F32(1.0))


def predict_noise_from_start(x_t: Any, x0_pred: Any, t: int, alphas_cumprod: np.ndarray) -> Any:
    """ε̂ implied by x_t and a predicted x̂₀, in the original's form ε̂ = x_t·√(1/(1−ᾱ)) − x̂₀ / √(1/ᾱ − 1).

    That form equals (x_t − √ᾱ·x̂₀)/√(1−ᾱ) and (x_t·√(1/ᾱ) − x̂₀)/√(1/ᾱ − 1); we keep the original's so the
    float32 rounding matches. Works on NumPy arrays and torch tensors alike (the coefficients are plain floats
    holding float32 values, so float32 inputs stay float32).
    """
    a = float(sqrt_recip_one_minus_alphas_cumprod(alphas_cumprod)[t])
    b = float(sqrt_recipm1_alphas_cumprod(alphas_cumprod)[t])
    return x_t * a - x0_pred / b


def ddim_timesteps(num_steps: int, num_timesteps: int = NUM_TIMESTEPS) -> np.ndarray:
    """The S + 1 descending time indices the sampler visits, ending at −1 (``int64``).

    Equal to ``reversed(torch.linspace(-1, T - 1, S + 1).int())`` on the CPU: float32 values from a fused
    multiply-add (emulated exactly in float64), truncated toward zero.
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    n = num_steps + 1
    start, end = _F32(-1.0), _F32(num_timesteps - 1)
    step = np.float64((end - start) / _F32(num_steps))  # float32 division, like torch's step_t = float
    i = np.arange(n, dtype=np.float64)
    first_half = i < n // 2
    exact = np.where(first_half, np.float64(start) + step * i, np.float64(end) - step * (n - 1 - i))
    values = exact.astype(np.float32)
    return np.trunc(values).astype(np.int64)[::-1].copy()


def ddim_time_pairs(num_steps: int, num_timesteps: int = NUM_TIMESTEPS) -> list[tuple[int, int]]:
    """Consecutive (t, t_next) pairs, e.g. S = 10 → (999, 899), …, (99, −1)."""
    times = ddim_timesteps(num_steps, num_timesteps).tolist()
    return list(itertools.pairwise(times))


def _sigma(alphas_cumprod: np.ndarray, t: int, t_next: int, eta: float) -> np.float32:
    """σ of DDIM in float32, evaluated in the original's operation order."""
    alpha = _F32(alphas_cumprod[t])
    alpha_next = _F32(alphas_cumprod[t_next])
    one = _F32(1.0)
    return _F32(eta) * np.sqrt((one - alpha / alpha_next) * (one - alpha_next) / (one - alpha))


def ddim_c_squared(alphas_cumprod: np.ndarray, t: int, t_next: int, eta: float = 1.0) -> np.float32:
    """The raw float32 argument 1 − ᾱ_t' − σ² of c's square root, NOT clamped.

    Exposed so callers and tests can see the rounding residue that the original turns into NaN.
    """
    alpha_next = _F32(alphas_cumprod[t_next])
    sigma = _sigma(alphas_cumprod, t, t_next, eta)
    return _F32(1.0) - alpha_next - sigma**2


class DDIMCoefficients(NamedTuple):
    """Scalars of one DDIM update x ← √ᾱ_t'·x̂₀ + c·ε̂ + σ·z (float32 values held as Python floats)."""

    sqrt_alpha_next: float
    c: float
    sigma: float


def ddim_coefficients(alphas_cumprod: np.ndarray, t: int, t_next: int, eta: float = 1.0) -> DDIMCoefficients:
    """σ, c and √ᾱ_t' for the pair (t, t_next ≥ 0).

    c's argument is clamped at 0 (deliberate fix of spec Appendix A item 18, see the module docstring): a
    negative argument can only be a float32 rounding residue, since mathematically 1 − ᾱ_t' − σ² ≥ 0 for η ≤ 1.
    """
    if t_next < 0:
        raise ValueError("the final pair (t_next < 0) has no DDIM coefficients: it returns x̂₀ directly")
    alpha_next = _F32(alphas_cumprod[t_next])
    sigma = _sigma(alphas_cumprod, t, t_next, eta)
    c = np.sqrt(np.maximum(ddim_c_squared(alphas_cumprod, t, t_next, eta), _F32(0.0)))
    return DDIMCoefficients(float(np.sqrt(alpha_next)), float(c), float(sigma))


def ddim_step(
    x_t: Any,
    x0_pred: Any,
    eps_pred: Any | None,
    t: int,
    t_next: int,
    noise: Any | None,
    alphas_cumprod: np.ndarray,
    eta: float = 1.0,
) -> Any:
    """One DDIM (η = 1 by default) update from time t to t_next.

    Returns x̂₀ itself when ``t_next < 0`` (the original's last step); otherwise
    √ᾱ_t'·x̂₀ + c·ε̂ + σ·z, summed left to right in the input's precision, with c's square-root argument
    clamped at 0 — the original yields NaN there for some step counts (S = 3 / S = 5, spec Appendix A item 18);
    the clamp is a deliberate fix and changes nothing else.

    ``x_t`` is only needed when ``eps_pred`` is ``None``: ε̂ is then derived from x_t and x̂₀ with the original's
    table formula (:func:`predict_noise_from_start`). Accepts NumPy arrays or torch tensors.
    """
    if t_next < 0:
        return x0_pred
    if noise is None:
        raise ValueError(f"the DDIM step {t} -> {t_next} needs a noise sample")
    if eps_pred is None:
        eps_pred = predict_noise_from_start(x_t, x0_pred, t, alphas_cumprod)
    coef = ddim_coefficients(alphas_cumprod, t, t_next, eta)
    return x0_pred * coef.sqrt_alpha_next + eps_pred * coef.c + noise * coef.sigma


def _frozen(a: np.ndarray) -> np.ndarray:
    """A read-only copy, so a schedule shared between samplers cannot be altered through one of them."""
    out = np.array(a, copy=True)
    out.setflags(write=False)
    return out


@dataclass(frozen=True, eq=False)
class NoiseSchedule:
    """ᾱ and the tables derived from it, immutable (arrays are read-only) so one instance can be shared."""

    alphas_cumprod: np.ndarray
    sqrt_recip_alphas_cumprod: np.ndarray = field(init=False, repr=False)
    sqrt_recip_one_minus_alphas_cumprod: np.ndarray = field(init=False, repr=False)
    sqrt_recipm1_alphas_cumprod: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        ac = np.asarray(self.alphas_cumprod, dtype=np.float32)
        # frozen dataclass: derived fields are set once, here, and never again
        object.__setattr__(self, "alphas_cumprod", _frozen(ac))
        object.__setattr__(self, "sqrt_recip_alphas_cumprod", _frozen(sqrt_recip_alphas_cumprod(ac)))
        object.__setattr__(
            self, "sqrt_recip_one_minus_alphas_cumprod", _frozen(sqrt_recip_one_minus_alphas_cumprod(ac))
        )
        object.__setattr__(self, "sqrt_recipm1_alphas_cumprod", _frozen(sqrt_recipm1_alphas_cumprod(ac)))

    @classmethod
    def cosine(cls, num_timesteps: int = NUM_TIMESTEPS, s: float = COSINE_OFFSET) -> NoiseSchedule:
        """The schedule Ditto was trained with (the only one it uses)."""
        return cls(cosine_alphas_cumprod(num_timesteps, s))

    @property
    def num_timesteps(self) -> int:
        return int(self.alphas_cumprod.shape[0])

    def time_pairs(self, num_steps: int) -> list[tuple[int, int]]:
        """(t, t_next) pairs of an S-step DDIM run over this schedule."""
        return ddim_time_pairs(num_steps, self.num_timesteps)

    def coefficients(self, t: int, t_next: int, eta: float = 1.0) -> DDIMCoefficients:
        """See :func:`ddim_coefficients`."""
        return ddim_coefficients(self.alphas_cumprod, t, t_next, eta)

    def step(
        self,
        x_t: Any,
        x0_pred: Any,
        eps_pred: Any | None,
        t: int,
        t_next: int,
        noise: Any | None,
        eta: float = 1.0,
    ) -> Any:
        """See :func:`ddim_step`."""
        return ddim_step(x_t, x0_pred, eps_pred, t, t_next, noise, self.alphas_cumprod, eta)
