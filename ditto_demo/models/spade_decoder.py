"""SPADE decoder G: warped 2-D features → the 512×512 RGB crop.

The decoder's own input doubles as the SPADE "label map": every residual block re-modulates its instance-normalised
activations with per-pixel scale and shift predicted from that feature map (resized by nearest neighbour to the
block's resolution). All residual-block convolutions carry spectral normalisation; at inference that is a fixed
rescaling of each weight, computed here from the stored singular-vector estimates.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SPADE", "SPADEDecoder", "SPADEResnetBlock", "SpectralNormConv2d"]

_LRELU_SLOPE = 0.2
_NUM_MIDDLE_BLOCKS = 6


class SpectralNormConv2d(nn.Module):
    """Conv2d whose effective weight is ``weight_orig / sigma``, sigma = uᵀ · (W_mat · v), W_mat = (out, -1).

    Mirrors the checkpoint layout of ``torch.nn.utils.spectral_norm`` (``weight_orig`` parameter, ``weight_u`` and
    ``weight_v`` buffers) but only implements evaluation: the stored u and v are used as they are, with no power
    iteration, exactly as the reference does in ``eval()``. The weight is derived in ``forward`` from
    initialisers only, so ONNX exporters fold it to a constant.
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, padding: int = 0, bias: bool = True
    ) -> None:
        super().__init__()
        self.weight_orig = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        fan_in = in_channels * kernel_size * kernel_size
        self.register_buffer("weight_u", F.normalize(torch.randn(out_channels), dim=0, eps=1e-12))
        self.register_buffer("weight_v", F.normalize(torch.randn(fan_in), dim=0, eps=1e-12))
        self.padding = padding
        nn.init.kaiming_uniform_(self.weight_orig, a=5**0.5)

    def normalized_weight(self) -> torch.Tensor:
        """The weight the convolution actually uses."""
        w = self.weight_orig
        sigma = torch.dot(self.weight_u, torch.mv(w.reshape(w.shape[0], -1), self.weight_v))
        return w / sigma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Convolution with the spectrally normalised weight."""
        return F.conv2d(x, self.normalized_weight(), self.bias, padding=self.padding)


class SPADE(nn.Module):
    """Spatially-adaptive normalisation: InstanceNorm (no affine, eps 1e-5) modulated by maps from the label.

    out = norm(x) · (1 + γ(label)) + β(label); γ and β come from a shared 3×3 conv + ReLU trunk.
    """

    def __init__(self, norm_channels: int, label_channels: int, hidden: int = 128) -> None:
        super().__init__()
        self.mlp_shared = nn.Sequential(nn.Conv2d(label_channels, hidden, kernel_size=3, padding=1), nn.ReLU())
        self.mlp_gamma = nn.Conv2d(hidden, norm_channels, kernel_size=3, padding=1)
        self.mlp_beta = nn.Conv2d(hidden, norm_channels, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """x (N, C, H, W) normalised per instance and channel; label (N, L, h, w) resized to (H, W)."""
        normalized = F.instance_norm(x, eps=1e-5)
        label = F.interpolate(label, size=(x.shape[-2], x.shape[-1]), mode="nearest")
        trunk = self.mlp_shared(label)
        return normalized * (1 + self.mlp_gamma(trunk)) + self.mlp_beta(trunk)


class SPADEResnetBlock(nn.Module):
    """Residual block of two SPADE → LeakyReLU(0.2) → 3×3 spectral conv stages.

    The hidden width is min(fin, fout). When fin ≠ fout the shortcut is learned: SPADE then a bias-free 1×1
    spectral conv (SPADE without an activation on that path).
    """

    def __init__(self, fin: int, fout: int, label_channels: int, hidden: int = 128) -> None:
        super().__init__()
        fmid = min(fin, fout)
        self.learned_shortcut = fin != fout
        self.conv_0 = SpectralNormConv2d(fin, fmid, kernel_size=3, padding=1)
        self.conv_1 = SpectralNormConv2d(fmid, fout, kernel_size=3, padding=1)
        self.norm_0 = SPADE(fin, label_channels, hidden)
        self.norm_1 = SPADE(fmid, label_channels, hidden)
        if self.learned_shortcut:
            self.conv_s = SpectralNormConv2d(fin, fout, kernel_size=1, bias=False)
            self.norm_s = SPADE(fin, label_channels, hidden)

    def forward(self, x: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """Same spatial size; channels fin → fout."""
        shortcut = self.conv_s(self.norm_s(x, label)) if self.learned_shortcut else x
        dx = self.conv_0(F.leaky_relu(self.norm_0(x, label), _LRELU_SLOPE))
        dx = self.conv_1(F.leaky_relu(self.norm_1(dx, label), _LRELU_SLOPE))
        return shortcut + dx


class SPADEDecoder(nn.Module):
    """``feature`` (N, 256, 64, 64) → ``(output,)`` (N, 3, 512, 512) in [0, 1] with the released settings.

    Six SPADE blocks at the input resolution, then two nearest ×2 upsamplings each followed by a SPADE block,
    then LeakyReLU(0.2) → 3×3 conv → PixelShuffle(``upscale``) → sigmoid. With ``upscale <= 1`` the head is a
    single conv to RGB (stored as ``conv_img.weight`` rather than ``conv_img.0.weight``).
    """

    def __init__(
        self,
        upscale: int = 2,
        max_features: int = 512,
        block_expansion: int = 64,
        out_channels: int = 64,
        num_down_blocks: int = 2,
        spade_hidden: int = 128,
    ) -> None:
        super().__init__()
        in_channels = min(max_features, block_expansion * (2**num_down_blocks))
        wide = 2 * in_channels
        self.upscale = upscale
        self.fc = nn.Conv2d(in_channels, wide, kernel_size=3, padding=1)
        # Six width-preserving blocks at the input resolution, registered as G_middle_0 .. G_middle_5.
        for i in range(_NUM_MIDDLE_BLOCKS):
            self.add_module(f"G_middle_{i}", SPADEResnetBlock(wide, wide, in_channels, spade_hidden))
        self.up_0 = SPADEResnetBlock(wide, in_channels, in_channels, spade_hidden)
        self.up_1 = SPADEResnetBlock(in_channels, out_channels, in_channels, spade_hidden)
        self.conv_img: nn.Module
        if upscale <= 1:
            self.conv_img = nn.Conv2d(out_channels, 3, kernel_size=3, padding=1)
        else:
            self.conv_img = nn.Sequential(
                nn.Conv2d(out_channels, 3 * upscale * upscale, kernel_size=3, padding=1),
                nn.PixelShuffle(upscale),
            )

    def forward(self, feature: torch.Tensor) -> tuple[torch.Tensor]:
        """Returns ``(output,)``, RGB in [0, 1], (N, 3, 4·r·H, 4·r·W) with r = max(upscale, 1)."""
        label = feature
        x = self.fc(feature)
        for i in range(_NUM_MIDDLE_BLOCKS):
            x = getattr(self, f"G_middle_{i}")(x, label)
        x = self.up_0(F.interpolate(x, scale_factor=2.0, mode="nearest"), label)
        x = self.up_1(F.interpolate(x, scale_factor=2.0, mode="nearest"), label)
        x = self.conv_img(F.leaky_relu(x, _LRELU_SLOPE))
        return (torch.sigmoid(x),)
