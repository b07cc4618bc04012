"""The plugin-free volumetric sampler equals ``F.grid_sample`` on 5-D inputs, and exports without 5-D ops."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F

from ditto_demo.models.grid_sample import grid_sample_3d, grid_sample_3d_tiled


@pytest.mark.parametrize(
    ("volume_shape", "grid_shape", "spread"),
    [
        ((1, 4, 16, 64, 64), (1, 16, 64, 64), 1.3),  # the warp network's shapes, with points outside the volume
        ((2, 3, 5, 7, 9), (2, 3, 4, 6), 2.5),  # odd sizes, batch 2, most points far outside
        ((1, 2, 1, 3, 3), (1, 2, 2, 2), 1.1),  # a single depth slice
    ],
)
def test_tiled_matches_native(volume_shape: tuple[int, ...], grid_shape: tuple[int, ...], spread: float) -> None:
    generator = torch.Generator().manual_seed(7)
    volume = torch.randn(volume_shape, generator=generator)
    grid = (torch.rand((*grid_shape, 3), generator=generator) * 2 - 1) * spread
    native = F.grid_sample(volume, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    tiled = grid_sample_3d_tiled(volume, grid)
    # float32 rounding of the mosaic coordinates: ~5e-5 px, times the gradient of unit-variance noise.
    assert torch.allclose(tiled, native, atol=3e-4, rtol=0)
    assert (tiled - native).abs().max() > 0 or volume_shape[2] == 1  # it really is a different computation


def test_tiled_exact_on_voxel_centres_and_borders() -> None:
    volume = torch.randn(1, 2, 4, 5, 6, generator=torch.Generator().manual_seed(3))
    points = torch.tensor(
        [[-1.0, -1, -1], [1, 1, 1], [1.2, 0, 0], [0, 0, 1.25], [-1.2, -1.2, -1.2], [0.1, 0.2, -0.99], [5, 5, 5]]
    )
    grid = points.reshape(1, 1, 1, -1, 3)
    native = F.grid_sample(volume, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    assert torch.allclose(grid_sample_3d_tiled(volume, grid), native, atol=1e-6)
    assert grid_sample_3d_tiled(volume, grid)[..., -1].abs().max() == 0  # far outside reads the zero padding


def test_dispatch() -> None:
    volume, grid = torch.randn(1, 1, 3, 4, 5), torch.rand(1, 2, 2, 2, 3) * 2 - 1
    assert torch.equal(grid_sample_3d(volume, grid), F.grid_sample(volume, grid, align_corners=False))
    assert torch.equal(grid_sample_3d(volume, grid, tiled=True), grid_sample_3d_tiled(volume, grid))


class _Sampler(torch.nn.Module):
    def forward(self, volume: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        return grid_sample_3d_tiled(volume, grid)


def test_tiled_export_is_4d_only_and_runs_in_onnxruntime(tmp_path: Path) -> None:
    volume, grid = torch.randn(1, 3, 6, 8, 10), torch.rand(1, 6, 8, 10, 3) * 2.2 - 1.1
    path = tmp_path / "tiled.onnx"
    torch.onnx.export(_Sampler(), (volume, grid), str(path), opset_version=20, dynamo=False,
                      input_names=["volume", "grid"], output_names=["out"])
    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    shapes = {v.name: len(v.type.tensor_type.shape.dim) for v in (*model.graph.value_info, *model.graph.input)}
    grid_samples = [n for n in model.graph.node if n.op_type == "GridSample"]
    assert grid_samples, "the export should contain a GridSample"
    assert all(shapes[n.input[0]] == 4 and shapes[n.input[1]] == 4 for n in grid_samples)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"volume": volume.numpy(), "grid": grid.numpy()})
    expected = F.grid_sample(volume, grid, align_corners=False).numpy()
    np.testing.assert_allclose(out, expected, atol=3e-4)
