"""Finding files in a checkpoint root and turning ``.pth`` files into loaded PyTorch modules.

A checkpoint root has the Hub repository's layout (``ditto_cfg/``, ``ditto_onnx/``, ``ditto_pytorch/``, ...). It
may hold only part of it: a root with nothing but ``ditto_pytorch/models/*.pth`` is enough for the PyTorch
backend, with the released hyper-parameters.
"""

from __future__ import annotations

import importlib
import inspect
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ditto_demo.engine.integrity import file_problem, repair_command
from ditto_demo.engine.specs import MODEL_CONFIG_FILE, NetworkSpec
from ditto_demo.errors import CheckpointError

__all__ = [
    "build_module",
    "configured_input_shapes",
    "instantiate",
    "load_state_dict",
    "model_config",
    "model_kwargs",
    "repair_hint",
]

log = logging.getLogger(__name__)


def repair_hint(root: Path) -> str:
    """The sentence telling a user how to get a good copy of the checkpoints back."""
    return repair_command(root, "torch")


def model_config(root: Path) -> dict[str, Any]:
    """The whole ``model_config.json`` of a root ({} when absent: the released hyper-parameters)."""
    path = root / MODEL_CONFIG_FILE
    if not path.is_file():
        return {}
    try:
        config = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc}); {repair_hint(root)}.") from exc
    if not isinstance(config, dict):
        raise CheckpointError(f"{path} must be a JSON object of network names; {repair_hint(root)}.")
    return config


def model_kwargs(root: Path, network: str) -> dict[str, Any]:
    """Constructor arguments for ``network``: those in ``model_config.json`` if the root has one, else none."""
    path = root / MODEL_CONFIG_FILE
    kwargs = model_config(root).get(network, {})
    if not isinstance(kwargs, dict):
        raise CheckpointError(f"{path}: the entry for {network!r} must be an object of constructor arguments.")
    return kwargs


def load_state_dict(path: Path, container_key: str | None, root: Path) -> dict[str, torch.Tensor]:
    """Read a released ``.pth`` safely (``weights_only``) and unwrap its container key.

    ``weights_only=True`` refuses anything but tensors and plain containers, so a swapped file cannot run code.
    A leading ``module.`` (left by ``DataParallel`` training) is dropped, as the original loader does.
    """
    if not path.is_file():
        raise CheckpointError(f"Missing checkpoint file {path}; {repair_hint(root)}.")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for damaged zips and unpickling refusals
        damage = file_problem(path)  # a hash mismatch with the Hub's record says exactly what happened
        reason = damage or f"cannot be read: {type(exc).__name__}: {exc}"
        raise CheckpointError(f"Cannot read checkpoint {path}: it {reason}; {repair_hint(root)}.") from exc
    if container_key is not None:
        if not isinstance(obj, Mapping) or container_key not in obj:
            raise CheckpointError(f"{path} has no {container_key!r} entry; {repair_hint(root)}.")
        obj = obj[container_key]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors; {repair_hint(root)}.")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def _module_class(spec: NetworkSpec) -> type[nn.Module]:
    assert spec.module is not None
    module_path, class_name = spec.module.split(":")
    return getattr(importlib.import_module(module_path), class_name)


def instantiate(spec: NetworkSpec, kwargs: Mapping[str, Any] | None = None) -> nn.Module:
    """A fresh (randomly initialised) module of ``spec`` with the given constructor arguments."""
    if spec.module is None:
        raise ValueError(f"{spec.name} has no PyTorch implementation")
    return _module_class(spec)(**dict(kwargs or {}))


def _params(spec: NetworkSpec, config: Mapping[str, Any]) -> dict[str, Any]:
    """Constructor arguments in effect: the module signature's defaults, updated by the root's config."""
    signature = inspect.signature(_module_class(spec).__init__)
    params = {k: p.default for k, p in signature.parameters.items() if p.default is not inspect.Parameter.empty}
    params.update(config.get(spec.name, {}))
    return params


def configured_input_shapes(spec: NetworkSpec, config: Mapping[str, Any]) -> dict[str, tuple[int | str, ...]]:
    """Input shapes of ``spec``'s module under a root's ``model_config`` (the released shapes when it is empty).

    Channel counts follow each network's hyper-parameters; the 3-D feature grid's side follows the appearance
    extractor's downsampling (256 / 2^num_down_blocks: 64 released), since the warp network and the decoder
    consume that grid. Defaults come from the modules' own signatures, so they are never restated here.
    """
    shapes: dict[str, tuple[int | str, ...]] = {b.name: b.shape for b in spec.inputs}
    if spec.module is None:
        return shapes
    params = _params(spec, config)
    from ditto_demo.engine.specs import get_spec  # local: specs imports nothing from here, keep it that way

    grid = 256 // 2 ** _params(get_spec("appearance_extractor"), config)["num_down_blocks"]
    if spec.name == "warp_network":
        keypoints = (1, params["num_kp"], 3)
        shapes.update(
            feature_3d=(1, params["reshape_channel"], params["reshape_depth"], grid, grid),
            kp_source=keypoints,
            kp_driving=keypoints,
        )
    elif spec.name == "decoder":
        width = min(params["max_features"], params["block_expansion"] * 2 ** params["num_down_blocks"])
        shapes["feature"] = (1, width, grid, grid)
    elif spec.name == "stitch_network":
        keypoints = (1, params["input_size"] // 6, 3)  # x_s and x_d, flattened (num_kp * 3 each)
        shapes.update(kp_source=keypoints, kp_driving=keypoints)
    elif spec.name == "lmdm":
        shapes.update(
            x=(1, params["seq_len"], params["motion_dim"]),
            cond_frame=(1, params["motion_dim"]),
            cond=(1, params["seq_len"], params["cond_dim"]),
        )
    return shapes


def build_module(spec: NetworkSpec, root: Path) -> nn.Module:
    """The network of ``spec`` with its checkpoint loaded strictly, in eval mode, on the CPU, in float32."""
    if spec.checkpoint is None:
        raise ValueError(f"{spec.name} has no PyTorch checkpoint")
    kwargs = model_kwargs(root, spec.name)
    try:
        module = instantiate(spec, kwargs)
    except TypeError as exc:
        raise CheckpointError(f"{root / MODEL_CONFIG_FILE}: bad arguments for {spec.name} ({exc}).") from exc
    state = load_state_dict(root / spec.checkpoint, spec.container_key, root)
    target = getattr(module, spec.weights_attr) if spec.weights_attr else module
    expected = target.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong_shape = [
        f"{k} {tuple(v.shape)} vs {tuple(expected[k].shape)}"
        for k, v in state.items()
        if k in expected and expected[k].shape != v.shape
    ]
    if missing or unexpected or wrong_shape:
        details = "; ".join(
            f"{label} {_few(items)}"
            for label, items in (("missing", missing), ("unexpected", unexpected), ("shape", wrong_shape))
            if items
        )
        raise CheckpointError(
            f"{root / spec.checkpoint} does not fit the {spec.name} network ({details}); {repair_hint(root)}."
        )
    target.load_state_dict(state, strict=True)
    log.debug("loaded %s from %s", spec.name, root / spec.checkpoint)
    return module.eval()


def _few(items: list[str], limit: int = 3) -> str:
    shown = ", ".join(items[:limit])
    return f"{shown} (+{len(items) - limit} more)" if len(items) > limit else shown
