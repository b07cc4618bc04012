"""Finding files in a checkpoint root and turning ``.pth`` files into loaded PyTorch modules.

A checkpoint root has the Hub repository's layout (``ditto_cfg/``, ``ditto_onnx/``, ``ditto_pytorch/``, ...). It
may hold only part of it: a root with nothing but ``ditto_pytorch/models/*.pth`` is enough for the PyTorch
backend, with the released hyper-parameters.
"""

from __future__ import annotations

import importlib
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ditto_demo.engine.specs import MODEL_CONFIG_FILE, NetworkSpec
from ditto_demo.errors import CheckpointError

__all__ = ["build_module", "load_state_dict", "model_kwargs", "repair_hint"]

log = logging.getLogger(__name__)


def repair_hint(root: Path) -> str:
    """The sentence telling a user how to get a good copy of the checkpoints back."""
    return (
        f"delete the damaged file under {root} and run `python -m ditto_demo download` "
        "(or point DITTO_CHECKPOINTS at a complete copy)"
    )


def model_kwargs(root: Path, network: str) -> dict[str, Any]:
    """Constructor arguments for ``network``: those in ``model_config.json`` if the root has one, else none."""
    path = root / MODEL_CONFIG_FILE
    if not path.is_file():
        return {}
    try:
        config = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc}); {repair_hint(root)}.") from exc
    kwargs = config.get(network, {})
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
        reason = f"{type(exc).__name__}: {exc}"
        raise CheckpointError(f"Cannot read checkpoint {path} ({reason}); {repair_hint(root)}.") from exc
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
