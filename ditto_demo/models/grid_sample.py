"""Volumetric (5-D) grid sampling, natively or as 2-D sampling over tiled depth slices.

The warp network samples a (N, C, D, H, W) feature volume with a (N, D', H', W', 3) grid. PyTorch and ONNX
(GridSample, opset 20) support that directly, but TensorRT's GridSample layer is 2-D only, which is why the
original release needed a hand-built TensorRT 8 plugin. :func:`grid_sample_3d_tiled` computes exactly the same
thing from operations every runtime has:

* the D depth slices, plus one all-zero slice before the first and one after the last (a depth neighbour
  outside the volume must read zeros, which is what ``padding_mode="zeros"`` means), become tiles of a 2-D
  mosaic; each tile is followed by a zero gutter row and column;
* one 2-D bilinear ``grid_sample`` reads, for every output point, the two depth slices around it (``floor(z)``
  and ``floor(z) + 1``); x and y are clamped onto the gutters, whose zeros reproduce the zero padding in-plane;
* the two reads are blended linearly along depth.

The mosaic is kept near-square rather than one long strip: the 2-D sampler normalises coordinates by the canvas
size, so a narrower canvas loses less float32 precision (about 5e-5 px here).

Every coordinate uses ``align_corners=False`` (pixel centres at ``(2i + 1) / n - 1``), the only mode Ditto uses.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["grid_sample_3d", "grid_sample_3d_tiled"]


def grid_sample_3d(volume: torch.Tensor, grid: torch.Tensor, *, tiled: bool = False) -> torch.Tensor:
    """Trilinear sampling with zero padding and ``align_corners=False``.

    ``tiled=True`` selects the plugin-free formulation used for TensorRT exports; both give the same values.
    """
    if tiled:
        return grid_sample_3d_tiled(volume, grid)
    return F.grid_sample(volume, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def grid_sample_3d_tiled(volume: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """``F.grid_sample`` on 5-D inputs, written with one 4-D ``grid_sample`` (see the module docstring)."""
    n, c, d, h, w = volume.shape
    _, d_out, h_out, w_out, _ = grid.shape
    tile_h, tile_w = h + 1, w + 1  # data plus one zero gutter row / column
    n_tiles = d + 2  # slices -1 .. D; the two end slices are zeros
    cols = math.ceil(math.sqrt(n_tiles))
    rows = math.ceil(n_tiles / cols)

    # (N, C, rows * cols, H + 1, W + 1) -> a rows x cols mosaic of tiles, (N, C, rows * (H + 1), cols * (W + 1)).
    padded = F.pad(volume, (0, 1, 0, 1, 1, 1 + rows * cols - n_tiles))
    mosaic = (
        padded.reshape(n, c, rows, cols, tile_h, tile_w)
        .permute(0, 1, 2, 4, 3, 5)
        .reshape(n, c, rows * tile_h, cols * tile_w)
    )

    gx, gy, gz = grid.unbind(-1)
    # Pixel coordinates in the source volume (align_corners=False), clamped onto the zero gutters / slices:
    # beyond one pixel outside the volume every neighbour is padding anyway.
    px = (((gx + 1.0) * w - 1.0) * 0.5).clamp(-1.0, float(w))
    py = (((gy + 1.0) * h - 1.0) * 0.5).clamp(-1.0, float(h))
    pz = (((gz + 1.0) * d - 1.0) * 0.5).clamp(-1.0, float(d))
    z0 = torch.floor(pz).clamp(-1.0, float(d - 1))
    wz = pz - z0  # weight of the upper slice z0 + 1

    def mosaic_coords(tile_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        row = torch.floor(tile_index / cols)
        col = tile_index - row * cols
        x = (2.0 * (col * tile_w + px) + 1.0) / (cols * tile_w) - 1.0
        y = (2.0 * (row * tile_h + py) + 1.0) / (rows * tile_h) - 1.0
        return x, y

    x0, y0 = mosaic_coords(z0 + 1.0)  # tile t holds slice t - 1
    x1, y1 = mosaic_coords(z0 + 2.0)
    # Both reads of every output point in one call, stacked along the 2-D grid's height axis.
    grid2d = torch.stack((torch.cat((x0, x1), dim=1), torch.cat((y0, y1), dim=1)), dim=-1)
    grid2d = grid2d.reshape(n, 2 * d_out * h_out, w_out, 2)
    sampled = F.grid_sample(mosaic, grid2d, mode="bilinear", padding_mode="zeros", align_corners=False)
    lower, upper = sampled.reshape(n, c, 2, d_out, h_out, w_out).unbind(2)
    weight = wz.unsqueeze(1)
    return lower * (1.0 - weight) + upper * weight
