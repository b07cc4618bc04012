"""Dense motion network: turns sparse 3-D keypoint motion into a dense backward-warp field and an occlusion map.

Each keypoint k proposes a translation-only flow for the whole volume (driving point → source point), plus one
"background" proposal that is the identity. The source features are warped by every proposal, paired with a
Gaussian heatmap difference that says where keypoint k moved from and to, and a 3-D hourglass decides per voxel
how to blend the proposals (softmax over the num_kp + 1 candidates). The same hourglass output, with depth folded
into channels, predicts a 2-D occlusion map in (0, 1).

Coordinates are normalised grid_sample coordinates ordered (x, y, z), x along W, y along H, z along D, each
sampled on an inclusive [-1, 1] lattice (first voxel at -1, last at +1) — the keypoints live in that space.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ditto_demo.models.blocks import Hourglass3d
from ditto_demo.models.grid_sample import grid_sample_3d

__all__ = ["DenseMotionNetwork", "identity_grid"]


def identity_grid(depth: int, height: int, width: int, like: torch.Tensor) -> torch.Tensor:
    """(D, H, W, 3) lattice with (x, y, z) coordinates ``2 * i / (n - 1) - 1`` in the dtype/device of ``like``.

    The inclusive lattice (not pixel centres) is what the released weights were trained with, even though the
    grid is later consumed by ``grid_sample`` with ``align_corners=False``.
    """

    def axis(n: int) -> torch.Tensor:
        return 2.0 * (torch.arange(n, dtype=like.dtype, device=like.device) / (n - 1)) - 1.0

    z = axis(depth).view(depth, 1, 1).expand(depth, height, width)
    y = axis(height).view(1, height, 1).expand(depth, height, width)
    x = axis(width).view(1, 1, width).expand(depth, height, width)
    return torch.stack((x, y, z), dim=-1)


class DenseMotionNetwork(nn.Module):
    """Predicts ``(deformation, occlusion)`` from the appearance volume and the two keypoint sets.

    ``deformation`` is (N, D, H, W, 3) in grid_sample coordinates; ``occlusion`` is (N, 1, H, W), or ``None``
    when ``estimate_occlusion_map`` is off. ``reshape_depth`` must equal the volume depth D (the occlusion
    head's input width depends on it).
    """

    def __init__(
        self,
        block_expansion: int = 32,
        num_blocks: int = 5,
        max_features: int = 1024,
        num_kp: int = 21,
        feature_channel: int = 32,
        reshape_depth: int = 16,
        compress: int = 4,
        estimate_occlusion_map: bool = True,
        kp_variance: float = 0.01,
        plugin_free: bool = False,
    ) -> None:
        super().__init__()
        self.num_kp = num_kp
        self.kp_variance = kp_variance
        self.plugin_free = plugin_free
        # Each of the num_kp + 1 candidates contributes its heatmap (1 channel) and its warped features.
        self.hourglass = Hourglass3d(block_expansion, (num_kp + 1) * (compress + 1), num_blocks, max_features)
        hidden = self.hourglass.out_channels
        self.mask = nn.Conv3d(hidden, num_kp + 1, kernel_size=7, padding=3)
        self.compress = nn.Conv3d(feature_channel, compress, kernel_size=1)
        self.norm = nn.BatchNorm3d(compress)
        self.occlusion = (
            nn.Conv2d(hidden * reshape_depth, 1, kernel_size=7, padding=3) if estimate_occlusion_map else None
        )

    def _gaussians(self, grid: torch.Tensor, kp: torch.Tensor) -> torch.Tensor:
        """Isotropic Gaussian bumps (peak 1, variance ``kp_variance``) at each keypoint: (N, K, D, H, W)."""
        diff = grid.unsqueeze(0).unsqueeze(0) - kp[:, :, None, None, None, :]
        return torch.exp(-0.5 * diff.pow(2).sum(dim=-1) / self.kp_variance)

    def forward(
        self, feature: torch.Tensor, kp_source: torch.Tensor, kp_driving: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """feature (N, C, D, H, W); keypoints (N, num_kp, 3)."""
        n, _, d, h, w = feature.shape
        k1 = self.num_kp + 1
        compressed = F.relu(self.norm(self.compress(feature)))
        c = compressed.shape[1]

        grid = identity_grid(d, h, w, kp_source)
        # Candidate flows: identity for the background, and for keypoint k the shift that maps the driving
        # keypoint onto the source keypoint (a zero-order, translation-only motion).
        shifted = grid[None, None] - kp_driving[:, :, None, None, None, :] + kp_source[:, :, None, None, None, :]
        background = grid[None, None].expand(n, 1, d, h, w, 3)
        sparse_motion = torch.cat((background, shifted), dim=1)  # (N, K+1, D, H, W, 3)

        # Warp the compressed features once per candidate; candidates are folded into the batch axis.
        volumes = compressed.unsqueeze(1).expand(n, k1, c, d, h, w).reshape(n * k1, c, d, h, w)
        warped = grid_sample_3d(volumes, sparse_motion.reshape(n * k1, d, h, w, 3), tiled=self.plugin_free)
        warped = warped.reshape(n, k1, c, d, h, w)

        heat = self._gaussians(grid, kp_driving) - self._gaussians(grid, kp_source)
        heat = torch.cat((heat.new_zeros(n, 1, d, h, w), heat), dim=1).unsqueeze(2)  # background gets no heat

        hourglass_in = torch.cat((heat, warped), dim=2).reshape(n, k1 * (c + 1), d, h, w)
        prediction = self.hourglass(hourglass_in)

        weights = F.softmax(self.mask(prediction), dim=1)  # (N, K+1, D, H, W)
        deformation = (sparse_motion * weights.unsqueeze(-1)).sum(dim=1)

        occlusion = None
        if self.occlusion is not None:
            folded = prediction.reshape(n, -1, h, w)  # depth folded into channels: c * D + d
            occlusion = torch.sigmoid(self.occlusion(folded))
        return deformation, occlusion
