"""Warping network W: deforms the source appearance volume to the driving pose and projects it to 2-D features.

The dense motion network supplies a backward-warp field and an occlusion map; the warped volume is flattened
(depth folded into channels), passed through a conv → BN → LeakyReLU(0.01) block (``third``) and a 1×1 conv
(``fourth``), and finally attenuated where the occlusion map says the source cannot be seen.
"""

from __future__ import annotations

import torch
from torch import nn

from ditto_demo.models.blocks import SameBlock2d
from ditto_demo.models.dense_motion import DenseMotionNetwork
from ditto_demo.models.grid_sample import grid_sample_3d

__all__ = ["WarpingNetwork"]


class WarpingNetwork(nn.Module):
    """``(feature_3d, kp_source, kp_driving)`` → ``(out,)`` with out (N, 256, 64, 64) in the release.

    Argument order is Ditto's (source keypoints before driving). ``max_features`` is the width of the flattened
    volume and must equal ``reshape_channel * reshape_depth``. ``plugin_free=True`` routes both volumetric
    samplings through the tiled 2-D formulation (same values, exportable to TensorRT without a plugin); it can
    also be toggled after construction through the ``plugin_free`` attribute.
    """

    def __init__(
        self,
        num_kp: int = 21,
        block_expansion: int = 64,
        max_features: int = 512,
        num_down_blocks: int = 2,
        reshape_channel: int = 32,
        reshape_depth: int = 16,
        estimate_occlusion_map: bool = True,
        dense_block_expansion: int = 32,
        dense_max_features: int = 1024,
        dense_num_blocks: int = 5,
        compress: int = 4,
        kp_variance: float = 0.01,
        plugin_free: bool = False,
    ) -> None:
        super().__init__()
        if max_features != reshape_channel * reshape_depth:
            raise ValueError(
                f"max_features ({max_features}) must equal reshape_channel * reshape_depth "
                f"({reshape_channel} * {reshape_depth})"
            )
        self.dense_motion_network = DenseMotionNetwork(
            block_expansion=dense_block_expansion,
            num_blocks=dense_num_blocks,
            max_features=dense_max_features,
            num_kp=num_kp,
            feature_channel=reshape_channel,
            reshape_depth=reshape_depth,
            compress=compress,
            estimate_occlusion_map=estimate_occlusion_map,
            kp_variance=kp_variance,
        )
        out_channels = block_expansion * (2**num_down_blocks)
        self.third = SameBlock2d(max_features, out_channels, negative_slope=0.01)
        self.fourth = nn.Conv2d(out_channels, out_channels, kernel_size=1)
        self.plugin_free = plugin_free

    @property
    def plugin_free(self) -> bool:
        """Whether the 5-D grid samples use the plugin-free tiled 2-D formulation."""
        return self.dense_motion_network.plugin_free

    @plugin_free.setter
    def plugin_free(self, value: bool) -> None:
        # Stored only on the child so the two samplings can never disagree.
        self.dense_motion_network.plugin_free = bool(value)

    def forward(
        self, feature_3d: torch.Tensor, kp_source: torch.Tensor, kp_driving: torch.Tensor
    ) -> tuple[torch.Tensor]:
        """feature_3d (N, C, D, H, W); kp_source, kp_driving (N, num_kp, 3). Returns ``(out,)``."""
        deformation, occlusion = self.dense_motion_network(feature_3d, kp_source, kp_driving)
        warped = grid_sample_3d(feature_3d, deformation, tiled=self.plugin_free)
        n, c, d, h, w = warped.shape
        out = self.fourth(self.third(warped.reshape(n, c * d, h, w)))
        if occlusion is not None:
            out = out * occlusion
        return (out,)
