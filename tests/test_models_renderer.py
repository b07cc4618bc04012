"""Renderer networks: checkpoint layout, conformance with the original outputs, tiny builds, plugin-free warp."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from reference_kit import CHECKPOINT_FILES, kit, relative_error, seed0_inputs, seed0_state_dict
from torch import nn

from ditto_demo.models.appearance_extractor import AppearanceFeatureExtractor
from ditto_demo.models.motion_extractor import MotionExtractor
from ditto_demo.models.spade_decoder import SPADEDecoder, SpectralNormConv2d
from ditto_demo.models.stitch_network import StitchingNetwork
from ditto_demo.models.warp_network import WarpingNetwork

NETWORKS: dict[str, Callable[[], nn.Module]] = {
    "appearance_extractor": AppearanceFeatureExtractor,
    "motion_extractor": MotionExtractor,
    "warp_network": WarpingNetwork,
    "decoder": SPADEDecoder,
    "stitch_network": StitchingNetwork,
}


@dataclass
class Seeded:
    """A default-size network holding the seed-0 weights, its inputs and its outputs on them."""

    module: nn.Module
    inputs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]


def _output_names(name: str) -> list[str]:
    return kit().OUTPUT_NAMES[CHECKPOINT_FILES[name]]


def _run(module: nn.Module, inputs: dict[str, np.ndarray]) -> tuple[torch.Tensor, ...]:
    with torch.inference_mode():
        return module(*(torch.from_numpy(v) for v in inputs.values()))


@pytest.fixture(scope="module")
def seeded() -> Callable[[str], Seeded]:
    """Builds, loads and runs each full-size network at most once for the whole file (they take seconds)."""
    cache: dict[str, Seeded] = {}

    def get(name: str) -> Seeded:
        if name not in cache:
            module = NETWORKS[name]().eval()
            module.load_state_dict(seed0_state_dict(name), strict=True)
            inputs = seed0_inputs(name)
            outs = _run(module, inputs)
            assert isinstance(outs, tuple)
            cache[name] = Seeded(module, inputs, {n: o.numpy() for n, o in zip(_output_names(name), outs, strict=True)})
        return cache[name]

    return get


@pytest.mark.parametrize("name", list(NETWORKS))
def test_state_dict_matches_released_layout(name: str, seeded: Callable[[str], Seeded]) -> None:
    inventory = kit().inventory()[CHECKPOINT_FILES[name]]["tensors"]
    state = seeded(name).module.state_dict()
    assert set(state) == set(inventory)
    mismatched = {
        k: (list(v.shape), inventory[k]["shape"]) for k, v in state.items() if list(v.shape) != inventory[k]["shape"]
    }
    assert not mismatched


@pytest.mark.parametrize("name", list(NETWORKS))
def test_matches_reference_outputs(name: str, seeded: Callable[[str], Seeded]) -> None:
    assert relative_error(seeded(name).outputs, name) < 1e-3


def test_warp_plugin_free_matches_native(seeded: Callable[[str], Seeded]) -> None:
    ref = seeded("warp_network")
    module = ref.module
    assert isinstance(module, WarpingNetwork)
    try:
        module.plugin_free = True
        assert module.dense_motion_network.plugin_free
        (tiled,) = _run(module, ref.inputs)
    finally:
        module.plugin_free = False
    native = ref.outputs["out"]
    assert np.abs(tiled.numpy() - native).max() / native.std() < 1e-3


def test_spectral_conv_equals_torch_spectral_norm_in_eval() -> None:
    torch.manual_seed(0)
    reference = nn.utils.spectral_norm(nn.Conv2d(6, 5, kernel_size=3, padding=1))
    reference.train()
    reference(torch.randn(1, 6, 8, 8))  # a few power iterations so u and v are not the initial guesses
    reference(torch.randn(1, 6, 8, 8))
    reference.eval()
    mine = SpectralNormConv2d(6, 5, kernel_size=3, padding=1)
    mine.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(2, 6, 8, 8)
    with torch.inference_mode():
        torch.testing.assert_close(mine(x), reference(x), rtol=1e-5, atol=1e-6)


# A tiny case: the module, its positional inputs, and the expected output shapes.
TinyCase = tuple[nn.Module, tuple[torch.Tensor, ...], tuple[tuple[int, ...], ...]]


def _tiny_appearance() -> TinyCase:
    module = AppearanceFeatureExtractor(
        block_expansion=4, max_features=16, reshape_channel=4, reshape_depth=4, num_resblocks=2
    )
    return module, (torch.rand(1, 3, 32, 32),), ((1, 4, 4, 8, 8),)


def _tiny_motion() -> TinyCase:
    module = MotionExtractor(num_kp=5, num_bins=7, depths=(1, 1, 1, 1), dims=(8, 8, 16, 16))
    return module, (torch.rand(1, 3, 64, 64),), ((1, 7), (1, 7), (1, 7), (1, 3), (1, 15), (1, 1), (1, 15))


def _tiny_warp(plugin_free: bool = False, batch: int = 1) -> TinyCase:
    module = WarpingNetwork(
        num_kp=3,
        block_expansion=4,
        max_features=16,
        num_down_blocks=1,
        reshape_channel=4,
        reshape_depth=4,
        dense_block_expansion=4,
        dense_max_features=16,
        dense_num_blocks=2,
        compress=2,
        plugin_free=plugin_free,
    )
    kp_s = 0.3 * torch.randn(batch, 3, 3)
    args = (torch.randn(batch, 4, 4, 16, 16), kp_s, kp_s + 0.05 * torch.randn(batch, 3, 3))
    return module, args, ((batch, 8, 16, 16),)


def _tiny_warp_plugin_free() -> TinyCase:
    return _tiny_warp(plugin_free=True)


def _tiny_decoder() -> TinyCase:
    module = SPADEDecoder(max_features=16, block_expansion=4, out_channels=4, spade_hidden=8)
    return module, (torch.randn(1, 16, 8, 8),), ((1, 3, 64, 64),)


def _tiny_stitch() -> TinyCase:
    module = StitchingNetwork(input_size=24, hidden_sizes=(8, 8), output_size=14)
    return module, (torch.randn(1, 4, 3), torch.randn(1, 4, 3)), ((1, 4, 3),)


TINY: dict[str, Callable[[], TinyCase]] = {
    "appearance_extractor": _tiny_appearance,
    "motion_extractor": _tiny_motion,
    "warp_network": _tiny_warp,
    "warp_network_plugin_free": _tiny_warp_plugin_free,
    "decoder": _tiny_decoder,
    "stitch_network": _tiny_stitch,
}


@pytest.mark.parametrize("name", list(TINY))
def test_tiny_configuration_runs(name: str) -> None:
    torch.manual_seed(0)
    module, args, shapes = TINY[name]()
    with torch.inference_mode():
        outs = module.eval()(*args)
    assert isinstance(outs, tuple)
    assert tuple(tuple(o.shape) for o in outs) == shapes
    assert all(torch.isfinite(o).all() for o in outs)


def test_tiny_warp_plugin_free_is_equivalent() -> None:
    torch.manual_seed(0)
    module, args, _ = _tiny_warp()
    module.eval()
    with torch.inference_mode():
        (native,) = module(*args)
        module.plugin_free = True
        (tiled,) = module(*args)
    torch.testing.assert_close(tiled, native, rtol=1e-4, atol=1e-5)


def test_tiny_warp_batch_items_are_independent() -> None:
    # The dense motion network folds the keypoint candidates into the batch axis; samples must not mix.
    torch.manual_seed(0)
    module, args, _ = _tiny_warp(batch=2)
    module.eval()
    with torch.inference_mode():
        (both,) = module(*args)
        singles = [module(*(a[i : i + 1] for a in args))[0] for i in range(2)]
    torch.testing.assert_close(both, torch.cat(singles), rtol=1e-5, atol=1e-6)


def test_stitching_shift_leaves_depth_alone() -> None:
    # With the keypoint-offset rows zeroed, only the shared (tx, ty) can move the keypoints: z must not change.
    torch.manual_seed(0)
    module = StitchingNetwork(input_size=24, hidden_sizes=(8,), output_size=14).eval()
    last = module.mlp[-1]
    assert isinstance(last, nn.Linear)
    with torch.no_grad():
        last.weight[:12].zero_()
        last.bias[:12].zero_()
    kp_s, kp_d = torch.randn(1, 4, 3), torch.randn(1, 4, 3)
    with torch.inference_mode():
        (out,) = module(kp_s, kp_d)
    moved = out - kp_d
    torch.testing.assert_close(moved[..., 2], torch.zeros(1, 4))
    torch.testing.assert_close(moved[..., :2], moved[:, :1, :2].expand(1, 4, 2))
