"""Access to the conformance kit in ``tests/reference`` (weights, inputs and reference outputs)."""

from __future__ import annotations

import importlib.util
from functools import cache
from pathlib import Path
from types import ModuleType

import numpy as np
import torch

REFERENCE_DIR = Path(__file__).resolve().parent / "reference"
REFERENCE_NPZ = REFERENCE_DIR / "conformance_seed0.npz"

#: Network name (as ``load_network`` spells it) -> released checkpoint file name.
CHECKPOINT_FILES = {
    "appearance_extractor": "appearance_extractor.pth",
    "motion_extractor": "motion_extractor.pth",
    "warp_network": "warp_network.pth",
    "decoder": "decoder.pth",
    "stitch_network": "stitch_network.pth",
    "lmdm": "lmdm_v0.4_hubert.pth",
}


@cache
def kit() -> ModuleType:
    """The conformance module, imported from its file (it is not a package)."""
    spec = importlib.util.spec_from_file_location("ditto_conformance_kit", REFERENCE_DIR / "conformance.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@cache
def _seed0_arrays(file_name: str) -> dict[str, np.ndarray]:
    """Generated once per test session: the decoder's spectral-norm SVDs alone take seconds."""
    tensors = kit().inventory()[file_name]["tensors"]
    return kit().make_state_dict(tensors, seed=0)


def seed0_state_dict(network: str) -> dict[str, torch.Tensor]:
    """The seed-0 weights of ``network`` as a flat state dict (no container key); fresh tensors every call."""
    return {k: torch.from_numpy(v.copy()) for k, v in _seed0_arrays(CHECKPOINT_FILES[network]).items()}


def seed0_inputs(network: str) -> dict[str, np.ndarray]:
    """The inputs the reference outputs were computed on (``make_inputs(0)``)."""
    return kit().make_inputs(0)[CHECKPOINT_FILES[network]]


def relative_error(outputs: dict[str, np.ndarray], network: str) -> float:
    """Worst (max abs difference / reference std) over the network's outputs."""
    return kit().compare(outputs, CHECKPOINT_FILES[network], REFERENCE_NPZ)


def write_seed0_checkpoints(root: Path) -> Path:
    """A checkpoint root in the Hub layout holding only ``ditto_pytorch/models/*.pth`` (seed-0 weights).

    Same files as the kit's ``write_checkpoints`` (released container keys), from the session's cached weights.
    """
    models = root / "ditto_pytorch" / "models"
    models.mkdir(parents=True, exist_ok=True)
    for network, file_name in CHECKPOINT_FILES.items():
        state = seed0_state_dict(network)
        container = kit().inventory()[file_name]["container_key"]
        torch.save({container: state} if container else state, models / file_name)
    return root
