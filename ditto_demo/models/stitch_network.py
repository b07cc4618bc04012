"""Stitching network S: nudges the driving keypoints so the rendered crop lines up with the source at paste-back.

An MLP looks at both keypoint sets and predicts a per-keypoint 3-D offset plus one shared (tx, ty) shift; the
shift moves every keypoint in the image plane (z is left alone). The released file stores these weights under
its ``retarget_shoulder`` entry.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["StitchingNetwork"]


class StitchingNetwork(nn.Module):
    """``(kp_source, kp_driving)`` (N, K, 3) each → ``(out,)``, the stitched driving keypoints (N, K, 3).

    The MLP (Linear/ReLU stack; state-dict keys ``mlp.0``, ``mlp.2``, …) maps the 6K concatenated coordinates
    to 3K + 2 values: K·3 keypoint offsets followed by the shared (tx, ty). K is read from the inputs, so
    ``input_size`` must be 6K and ``output_size`` 3K + 2.
    """

    def __init__(
        self, input_size: int = 126, hidden_sizes: Sequence[int] = (128, 128, 64), output_size: int = 65
    ) -> None:
        super().__init__()
        widths = [input_size, *hidden_sizes]
        layers: list[nn.Module] = []
        for fan_in, fan_out in itertools.pairwise(widths):
            layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
        layers.append(nn.Linear(widths[-1], output_size))
        self.mlp = nn.Sequential(*layers)

    def forward(self, kp_source: torch.Tensor, kp_driving: torch.Tensor) -> tuple[torch.Tensor]:
        """Returns ``(out,)``; out = x_d + offsets, then (tx, ty) added to the x and y of every keypoint."""
        n, k, _ = kp_driving.shape
        delta = self.mlp(torch.cat((kp_source.reshape(n, -1), kp_driving.reshape(n, -1)), dim=1))
        offsets = delta[:, : 3 * k].reshape(n, k, 3)
        # (tx, ty, 0): adding an exact zero to z keeps this identical to an in-place update of x and y only.
        shift = F.pad(delta[:, 3 * k : 3 * k + 2], (0, 1)).reshape(n, 1, 3)
        return ((kp_driving + offsets) + shift,)
