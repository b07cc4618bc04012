"""Export our PyTorch networks to ONNX under the released binding names.

Two flavours of the warp network: the default keeps the native 5-D ``GridSample`` (opset 20, what ONNX Runtime
runs), and ``plugin_free=True`` writes the volumetric sampling as 2-D ``GridSample`` over tiled depth slices
(:mod:`ditto_demo.models.grid_sample`), which stock TensorRT 10/11 builds without the GridSample3D plugin.
"""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from ditto_demo.engine.checkpoints import build_module, configured_input_shapes, model_config
from ditto_demo.engine.specs import NetworkSpec, get_spec

__all__ = ["EXPORT_OPSET", "example_inputs", "export_module", "export_network"]

log = logging.getLogger(__name__)

#: Opset of our exports: the first in which GridSample takes 5-D inputs.
EXPORT_OPSET = 20


def example_inputs(
    spec: NetworkSpec, shapes: Mapping[str, tuple[int | str, ...]] | None = None
) -> tuple[torch.Tensor, ...]:
    """Inputs for tracing, of the given shapes (default: the released binding shapes)."""
    generator = torch.Generator().manual_seed(0)
    tensors = []
    for binding in spec.inputs:
        shape = tuple(shapes[binding.name]) if shapes and binding.name in shapes else binding.shape
        if any(isinstance(d, str) for d in shape):
            raise ValueError(f"{spec.name} has dynamic input dimensions; it cannot be exported from a module")
        if binding.dtype == "int64":
            tensors.append(torch.full(shape, 500, dtype=torch.int64))
        else:
            tensors.append(0.3 * torch.randn(shape, generator=generator))
    return tuple(tensors)


def export_module(
    module: nn.Module,
    spec: NetworkSpec,
    path: Path,
    *,
    inputs: tuple[torch.Tensor, ...] | None = None,
    plugin_free: bool = False,
) -> Path:
    """Write ``module`` to ``path`` as a single-file ONNX graph with the spec's binding names.

    The file is written under a temporary name and renamed when complete, so a crash never leaves a truncated
    model where a later run would pick it up.
    """
    module = module.eval().float().cpu()
    if hasattr(module, "plugin_free"):
        module.plugin_free = plugin_free
    elif plugin_free:
        raise ValueError(f"{spec.name} has no volumetric sampling; plugin_free applies to warp_network only")
    args = inputs if inputs is not None else example_inputs(spec)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        _export(module, args, tmp, spec)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    log.info("exported %s to %s%s", spec.name, path, " (plugin-free)" if plugin_free else "")
    return path


def _export(module: nn.Module, args: tuple[torch.Tensor, ...], path: Path, spec: NetworkSpec) -> None:
    """``torch.export``-based exporter (one file, weights inside); the TorchScript one if that fails.

    The TorchScript exporter is deprecated but still traces every module here; it is kept as a fallback so an
    exporter regression in a future PyTorch degrades to a warning rather than a failed engine build.
    """
    common = {
        "input_names": list(spec.input_names),
        "output_names": list(spec.output_names),
        "opset_version": EXPORT_OPSET,
    }
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # tracing chatter about constants that are constant here
        try:
            torch.onnx.export(module, args, str(path), dynamo=True, external_data=False, verbose=False, **common)
            return
        except Exception as exc:  # the dynamo exporter raises many unrelated types on unsupported graphs
            log.warning("torch.export ONNX export of %s failed (%s); using the TorchScript exporter", spec.name, exc)
        torch.onnx.export(module, args, str(path), dynamo=False, do_constant_folding=True, **common)


def export_network(name: str, root: Path, path: Path, *, plugin_free: bool = False) -> Path:
    """Load ``name`` from the checkpoint root ``root`` and export it to ``path``."""
    spec = get_spec(name)
    if spec.module is None:
        raise ValueError(f"{name} is an auxiliary model that exists only as ONNX; there is nothing to export")
    inputs = example_inputs(spec, configured_input_shapes(spec, model_config(root)))
    return export_module(build_module(spec, root), spec, path, inputs=inputs, plugin_free=plugin_free)
