"""Convolution + BatchNorm building blocks shared by the appearance extractor and the warping network.

Every block keeps its convolution under ``conv`` and its BatchNorm under ``norm`` (the ResBlock3d uses
``conv1/conv2/norm1/norm2``) because those attribute names are the released checkpoints' state-dict keys.
BatchNorm layers are ordinary ``nn.BatchNorm*d`` modules: in ``eval()`` they apply the stored running
statistics, which is the only mode the released weights are meant for.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "DownBlock2d",
    "DownBlock3d",
    "Hourglass3d",
    "HourglassDecoder3d",
    "HourglassEncoder3d",
    "ResBlock3d",
    "SameBlock2d",
    "UpBlock3d",
]


class SameBlock2d(nn.Module):
    """Resolution-preserving conv → BN → activation, used as the image stem and as the warp head's ``third``.

    ``negative_slope=None`` gives a ReLU; the warp head passes 0.01 (PyTorch's LeakyReLU default, which is what
    the reference ends up using there).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        padding: int = 1,
        negative_slope: float | None = None,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=kernel_size, padding=padding)
        self.norm = nn.BatchNorm2d(out_channels)
        self.negative_slope = negative_slope

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Convolve, normalise with the running statistics, activate."""
        y = self.norm(self.conv(x))
        if self.negative_slope is None:
            return F.relu(y)
        return F.leaky_relu(y, self.negative_slope)


class DownBlock2d(nn.Module):
    """Encoder step of the appearance extractor: conv → BN → ReLU, then a 2×2 average pool halves H and W."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Features at half the spatial resolution."""
        return F.avg_pool2d(F.relu(self.norm(self.conv(x))), kernel_size=2)


class DownBlock3d(nn.Module):
    """Hourglass encoder step: 3-D conv → BN → ReLU, pooled over H and W only (the depth axis is never reduced)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_channels, out_channels, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm3d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Features with H and W halved, depth unchanged."""
        return F.avg_pool3d(F.relu(self.norm(self.conv(x))), kernel_size=(1, 2, 2))


class UpBlock3d(nn.Module):
    """Hourglass decoder step: nearest-neighbour ×2 over H and W (depth kept), then 3-D conv → BN → ReLU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_channels, out_channels, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm3d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Features with H and W doubled."""
        up = F.interpolate(x, scale_factor=(1.0, 2.0, 2.0), mode="nearest")
        return F.relu(self.norm(self.conv(up)))


class ResBlock3d(nn.Module):
    """Pre-activation residual block on the appearance volume: x + conv(relu(bn(conv(relu(bn(x))))))."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(channels, channels, kernel_size=3, padding=1)
        self.conv2 = nn.Conv3d(channels, channels, kernel_size=3, padding=1)
        self.norm1 = nn.BatchNorm3d(channels)
        self.norm2 = nn.BatchNorm3d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual refinement at unchanged shape."""
        y = self.conv1(F.relu(self.norm1(x)))
        y = self.conv2(F.relu(self.norm2(y)))
        return x + y


def _level_channels(block_expansion: int, max_features: int, level: int) -> int:
    """Channel width of hourglass level ``level`` (1-based for encoder outputs): doubling, capped."""
    return min(max_features, block_expansion * (2**level))


class HourglassEncoder3d(nn.Module):
    """Down path of the dense-motion hourglass; keeps every intermediate so the decoder can use them as skips."""

    def __init__(self, block_expansion: int, in_channels: int, num_blocks: int, max_features: int) -> None:
        super().__init__()
        widths = [in_channels] + [_level_channels(block_expansion, max_features, i + 1) for i in range(num_blocks)]
        self.widths = widths
        self.down_blocks = nn.ModuleList(DownBlock3d(widths[i], widths[i + 1]) for i in range(num_blocks))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The input followed by each block's output, finest first."""
        outs = [x]
        for block in self.down_blocks:
            outs.append(block(outs[-1]))
        return outs


class HourglassDecoder3d(nn.Module):
    """Up path of the hourglass: each up-block output is concatenated with the encoder feature of equal size.

    The last concatenation is with the hourglass input itself, so the result has
    ``block_expansion + in_channels`` channels (142 in the release), refined by one more conv → BN → ReLU.
    """

    def __init__(self, encoder_widths: list[int], block_expansion: int, max_features: int) -> None:
        super().__init__()
        num_blocks = len(encoder_widths) - 1
        blocks = []
        current = encoder_widths[-1]
        for level in reversed(range(num_blocks)):
            out_channels = _level_channels(block_expansion, max_features, level)
            blocks.append(UpBlock3d(current, out_channels))
            current = out_channels + encoder_widths[level]
        self.up_blocks = nn.ModuleList(blocks)
        self.out_channels = current
        self.conv = nn.Conv3d(current, current, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm3d(current)

    def forward(self, skips: list[torch.Tensor]) -> torch.Tensor:
        """Decode from the coarsest encoder output back to the input resolution."""
        out = skips[-1]
        for block, skip in zip(self.up_blocks, reversed(skips[:-1]), strict=True):
            out = torch.cat((block(out), skip), dim=1)
        return F.relu(self.norm(self.conv(out)))


class Hourglass3d(nn.Module):
    """U-Net style 3-D hourglass that turns the keypoint-deformed features into per-voxel motion evidence."""

    def __init__(self, block_expansion: int, in_channels: int, num_blocks: int, max_features: int) -> None:
        super().__init__()
        self.encoder = HourglassEncoder3d(block_expansion, in_channels, num_blocks, max_features)
        self.decoder = HourglassDecoder3d(self.encoder.widths, block_expansion, max_features)
        self.out_channels = self.decoder.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_channels, D, H, W) → (N, out_channels, D, H, W); H and W must be divisible by 2**num_blocks."""
        return self.decoder(self.encoder(x))
