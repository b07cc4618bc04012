"""Motion extractor M: a ConvNeXt-V2-tiny that reads pose, translation, scale, expression and canonical keypoints.

All seven heads share one pooled 768-d descriptor. Pitch, yaw and roll come out as 66-bin logits (decoding them
to degrees, 3·E[bin] − 97.5, is the caller's job); keypoints and expression offsets come out flat, (N, 3·num_kp).
The backbone lives under ``detector`` because that prefix is part of every released state-dict key.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ChannelsFirstLayerNorm", "ConvNeXtV2", "ConvNeXtV2Block", "GlobalResponseNorm", "MotionExtractor"]

_LN_EPS = 1e-6


class ChannelsFirstLayerNorm(nn.Module):
    """LayerNorm over the channel axis of an NCHW tensor (stem and downsampling layers of ConvNeXt).

    Written out (mean, biased variance, divide by sqrt(var + eps)) rather than permuting to NHWC so the
    arithmetic follows the reference order; eps is 1e-6 as in ConvNeXt, not PyTorch's 1e-5.
    """

    def __init__(self, channels: int, eps: float = _LN_EPS) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise every pixel's channel vector, then apply the per-channel affine."""
        mean = x.mean(dim=1, keepdim=True)
        var = (x - mean).pow(2).mean(dim=1, keepdim=True)
        normed = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight[:, None, None] * normed + self.bias[:, None, None]


class GlobalResponseNorm(nn.Module):
    """ConvNeXt-V2 GRN on NHWC activations: boosts channels whose spatial L2 energy is above the channel mean.

    The +1e-6 sits in the denominator of the divisive normalisation; the residual ``+ x`` is part of the layer.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1, 1, 1, channels))
        self.beta = nn.Parameter(torch.zeros(1, 1, 1, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, H, W, C)."""
        energy = torch.linalg.vector_norm(x, ord=2, dim=(1, 2), keepdim=True)
        relative = energy / (energy.mean(dim=-1, keepdim=True) + 1e-6)
        return self.gamma * (x * relative) + self.beta + x


class ConvNeXtV2Block(nn.Module):
    """Residual ConvNeXt-V2 block: 7×7 depthwise conv, LayerNorm, 4× MLP with exact GELU and GRN.

    The pointwise layers are ``nn.Linear`` applied in NHWC layout (their weights are stored as 2-D matrices).
    Stochastic depth is omitted: the release uses drop_path 0, and it is an identity at inference anyway.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=_LN_EPS)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.grn = GlobalResponseNorm(4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """NCHW in, NCHW out, same shape."""
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = F.gelu(self.pwconv1(self.norm(y)), approximate="none")
        y = self.pwconv2(self.grn(y)).permute(0, 3, 1, 2)
        return x + y


class ConvNeXtV2(nn.Module):
    """The ``detector``: ConvNeXt-V2 backbone with a pooled LayerNorm descriptor and seven linear heads."""

    def __init__(
        self,
        in_channels: int = 3,
        depths: Sequence[int] = (3, 3, 9, 3),
        dims: Sequence[int] = (96, 192, 384, 768),
        num_kp: int = 21,
        num_bins: int = 66,
    ) -> None:
        super().__init__()
        if len(depths) != len(dims):
            raise ValueError("depths and dims must have the same length")
        # Stage 0 is entered through a 4×4/4 patchify stem; later stages through LN + 2×2/2 conv.
        layers = [
            nn.Sequential(nn.Conv2d(in_channels, dims[0], kernel_size=4, stride=4), ChannelsFirstLayerNorm(dims[0]))
        ]
        layers += [
            nn.Sequential(ChannelsFirstLayerNorm(dims[i - 1]), nn.Conv2d(dims[i - 1], dims[i], kernel_size=2, stride=2))
            for i in range(1, len(dims))
        ]
        self.downsample_layers = nn.ModuleList(layers)
        self.stages = nn.ModuleList(
            nn.Sequential(*(ConvNeXtV2Block(dim) for _ in range(depth)))
            for depth, dim in zip(depths, dims, strict=True)
        )
        width = dims[-1]
        self.norm = nn.LayerNorm(width, eps=_LN_EPS)
        self.fc_kp = nn.Linear(width, 3 * num_kp)
        self.fc_scale = nn.Linear(width, 1)
        self.fc_pitch = nn.Linear(width, num_bins)
        self.fc_yaw = nn.Linear(width, num_bins)
        self.fc_roll = nn.Linear(width, num_bins)
        self.fc_t = nn.Linear(width, 3)
        self.fc_exp = nn.Linear(width, 3 * num_kp)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(pitch, yaw, roll, t, exp, scale, kp) from an NCHW image."""
        for down, stage in zip(self.downsample_layers, self.stages, strict=True):
            x = stage(down(x))
        feat = self.norm(x.mean(dim=(-2, -1)))
        return (
            self.fc_pitch(feat),
            self.fc_yaw(feat),
            self.fc_roll(feat),
            self.fc_t(feat),
            self.fc_exp(feat),
            self.fc_scale(feat),
            self.fc_kp(feat),
        )


class MotionExtractor(nn.Module):
    """``image`` (N, 3, 256, 256) in [0, 1] → (pitch, yaw, roll, t, exp, scale, kp).

    Shapes with the released settings: pitch/yaw/roll (N, 66) logits, t (N, 3), exp (N, 63), scale (N, 1),
    kp (N, 63) — the binding order of the original ONNX/TensorRT graphs.
    """

    def __init__(
        self,
        num_kp: int = 21,
        num_bins: int = 66,
        depths: Sequence[int] = (3, 3, 9, 3),
        dims: Sequence[int] = (96, 192, 384, 768),
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        self.detector = ConvNeXtV2(in_channels=in_channels, depths=depths, dims=dims, num_kp=num_kp, num_bins=num_bins)

    def forward(
        self, image: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns ``(pitch, yaw, roll, t, exp, scale, kp)``; exp and kp flattened to (N, 3·num_kp)."""
        pitch, yaw, roll, t, exp, scale, kp = self.detector(image)
        n = image.shape[0]
        return pitch, yaw, roll, t, exp.reshape(n, -1), scale, kp.reshape(n, -1)
