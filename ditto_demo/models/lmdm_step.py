"""One guided LMDM denoising step — the computation of the released ``lmdm_v0.4_hubert`` ONNX graph / engine.

Inputs x_t (1, 80, 265), cond_frame (1, 265), cond (1, 80, 1103), time_cond (1,) int64; outputs
(pred_noise, x_start), each (1, 80, 265). Keeping the whole step (both guidance passes and ε̂) inside one module is
what lets a backend run a denoising step as a single engine call; the DDIM update itself stays outside, in
:mod:`ditto_demo.diffusion`, because its coefficients depend on the step count, not on the network.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ditto_demo.diffusion import NoiseSchedule
from ditto_demo.models.lmdm import MotionDecoder

__all__ = ["LMDMStep"]


class LMDMStep(nn.Module):
    """Classifier-free-guided x̂₀ and the noise ε̂ it implies, for one diffusion time step.

    x̂₀ = x̂₀_uncond + w·(x̂₀_cond − x̂₀_uncond) with w = ``guidance_weight`` (2 in the release), then
    ε̂ = x_t·√(1/(1−ᾱ_t)) − x̂₀/√(1/ᾱ_t − 1): the original's table form of (x_t − √ᾱ_t·x̂₀)/√(1−ᾱ_t), kept so the
    float32 rounding follows it. Both guidance passes run as one doubled batch (see :class:`MotionDecoder`).

    The released checkpoint holds only the denoiser: load it with ``step.denoiser.load_state_dict(sd)``. The
    schedule tables are non-persistent buffers — derived data that must never appear in (or be required from)
    a state dict, but should follow the module across devices and into exported graphs.
    """

    sqrt_recip_one_minus_alphas_cumprod: Tensor
    sqrt_recipm1_alphas_cumprod: Tensor

    def __init__(
        self,
        guidance_weight: float = 2.0,
        *,
        motion_dim: int = 265,
        cond_dim: int = 1103,
        seq_len: int = 80,
        latent_dim: int = 512,
        ff_size: int = 1024,
        num_layers: int = 8,
        num_encoder_layers: int = 2,
        num_heads: int = 8,
        rope_theta: float = 10000.0,
    ) -> None:
        super().__init__()
        self.guidance_weight = float(guidance_weight)
        self.denoiser = MotionDecoder(
            motion_dim=motion_dim,
            cond_dim=cond_dim,
            seq_len=seq_len,
            latent_dim=latent_dim,
            ff_size=ff_size,
            num_layers=num_layers,
            num_encoder_layers=num_encoder_layers,
            num_heads=num_heads,
            rope_theta=rope_theta,
        )
        schedule = NoiseSchedule.cosine()
        for name in ("sqrt_recip_one_minus_alphas_cumprod", "sqrt_recipm1_alphas_cumprod"):
            table = torch.tensor(getattr(schedule, name), dtype=torch.float32)
            self.register_buffer(name, table, persistent=False)

    def forward(self, x: Tensor, cond_frame: Tensor, cond: Tensor, time_cond: Tensor) -> tuple[Tensor, Tensor]:
        """Returns (pred_noise, x_start) for a batch of B ≥ 1 independent samples."""
        batch = x.shape[0]
        both = self.denoiser(x, cond_frame, cond, time_cond, passes="both")
        x_cond, x_uncond = both[:batch], both[batch:]
        x_start = x_uncond + (x_cond - x_uncond) * self.guidance_weight
        a = self.sqrt_recip_one_minus_alphas_cumprod[time_cond].reshape(-1, 1, 1)
        b = self.sqrt_recipm1_alphas_cumprod[time_cond].reshape(-1, 1, 1)
        pred_noise = a * x - x_start / b
        return pred_noise, x_start
