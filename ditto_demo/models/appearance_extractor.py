"""Appearance feature extractor F: the source portrait → a 3-D appearance feature volume.

The image is encoded with 2-D convolutions, then the channel axis is split into (channels, depth) so that the
features become a volume the warping network can deform with 3-D keypoint motion.
"""

from __future__ import annotations

import torch
from torch import nn

from ditto_demo.models.blocks import DownBlock2d, ResBlock3d, SameBlock2d

__all__ = ["AppearanceFeatureExtractor"]


class AppearanceFeatureExtractor(nn.Module):
    """``image`` (N, 3, 256, 256) in [0, 1] → ``pred`` (N, 32, 16, 64, 64) with the released hyper-parameters.

    ``max_features`` must equal ``reshape_channel * reshape_depth``: the 2-D features are reinterpreted as a
    volume with channel index ``c = reshape_depth * c3 + d``.
    """

    def __init__(
        self,
        image_channel: int = 3,
        block_expansion: int = 64,
        num_down_blocks: int = 2,
        max_features: int = 512,
        reshape_channel: int = 32,
        reshape_depth: int = 16,
        num_resblocks: int = 6,
    ) -> None:
        super().__init__()
        if max_features != reshape_channel * reshape_depth:
            raise ValueError(
                f"max_features ({max_features}) must equal reshape_channel * reshape_depth "
                f"({reshape_channel} * {reshape_depth})"
            )
        self.reshape_channel = reshape_channel
        self.reshape_depth = reshape_depth

        self.first = SameBlock2d(image_channel, block_expansion)
        widths = [min(max_features, block_expansion * (2**i)) for i in range(num_down_blocks + 1)]
        self.down_blocks = nn.ModuleList(DownBlock2d(widths[i], widths[i + 1]) for i in range(num_down_blocks))
        self.second = nn.Conv2d(widths[-1], max_features, kernel_size=1)
        # Named children "3dr0", "3dr1", ... as in the released checkpoint.
        self.resblocks_3d = nn.Sequential()
        for i in range(num_resblocks):
            self.resblocks_3d.add_module(f"3dr{i}", ResBlock3d(reshape_channel))

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor]:
        """Returns ``(pred,)``, the appearance volume f_s."""
        x = self.first(image)
        for block in self.down_blocks:
            x = block(x)
        x = self.second(x)
        n, _, h, w = x.shape
        volume = x.reshape(n, self.reshape_channel, self.reshape_depth, h, w)
        return (self.resblocks_3d(volume),)
