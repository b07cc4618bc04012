"""LMDM denoiser (``MotionDecoder``) and the guided step (``LMDMStep``): layout, conformance, batching."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from reference_kit import CHECKPOINT_FILES, kit, relative_error, seed0_inputs, seed0_state_dict

from ditto_demo import diffusion
from ditto_demo.models.lmdm import MotionDecoder, RotaryEmbedding
from ditto_demo.models.lmdm_step import LMDMStep

TINY = {
    "motion_dim": 7,
    "cond_dim": 11,
    "seq_len": 6,
    "latent_dim": 16,
    "ff_size": 24,
    "num_layers": 2,
    "num_encoder_layers": 1,
    "num_heads": 2,
}


@pytest.fixture(scope="module")
def state_dict() -> dict[str, torch.Tensor]:
    return seed0_state_dict("lmdm")


@pytest.fixture(scope="module")
def step(state_dict: dict[str, torch.Tensor]) -> LMDMStep:
    module = LMDMStep().eval()
    module.denoiser.load_state_dict(state_dict, strict=True)
    return module


@pytest.fixture(scope="module")
def inputs() -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(v) for k, v in seed0_inputs("lmdm").items()}


@pytest.fixture(scope="module")
def step_outputs(step: LMDMStep, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        return step(inputs["x"], inputs["cond_frame"], inputs["cond"], inputs["time_cond"])


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.std())


def _tiny_inputs(batch: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, TINY["seq_len"], TINY["motion_dim"], generator=g)
    cond_frame = torch.randn(batch, TINY["motion_dim"], generator=g)
    cond = torch.randn(batch, TINY["seq_len"], TINY["cond_dim"], generator=g)
    time_cond = torch.randint(0, 1000, (batch,), generator=g)
    return x, cond_frame, cond, time_cond


# ------------------------------------------------------------------------------------------- weight layout


def test_state_dict_matches_inventory(step: LMDMStep) -> None:
    expected = kit().inventory()[CHECKPOINT_FILES["lmdm"]]
    assert expected["container_key"] == "model_state_dict"
    mine = {k: (list(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in step.denoiser.state_dict().items()}
    assert mine == {k: (v["shape"], v["dtype"]) for k, v in expected["tensors"].items()}


def test_strict_load_and_no_schedule_buffers_in_state_dict(step: LMDMStep, state_dict: dict[str, torch.Tensor]) -> None:
    result = step.denoiser.load_state_dict(state_dict, strict=True)
    assert not result.missing_keys
    assert not result.unexpected_keys
    # the schedule tables are derived data: the step's own state dict is exactly the denoiser's, prefixed
    assert set(step.state_dict()) == {f"denoiser.{k}" for k in state_dict}
    assert step.sqrt_recipm1_alphas_cumprod.shape == (1000,)


def test_shared_rotary_takes_the_last_loaded_copy(step: LMDMStep, state_dict: dict[str, torch.Tensor]) -> None:
    """The original's forward reads the loaded buffer; a load writes every copy into one tensor, last one wins."""
    dec = step.denoiser
    owners = [dec, *dec.cond_encoder, *dec.seqTransDecoder.stack]
    assert all(o.rotary is dec.rotary for o in owners)
    assert torch.equal(dec.rotary.freqs, state_dict["seqTransDecoder.stack.7.rotary.freqs"])


def test_default_rotary_frequencies() -> None:
    k = torch.arange(256, dtype=torch.float64)
    torch.testing.assert_close(RotaryEmbedding(512).freqs.double(), 10000.0 ** (-2 * k / 512), rtol=1e-6, atol=0)


# ------------------------------------------------------------------------------------------- conformance


def test_step_conformance(step_outputs: tuple[torch.Tensor, torch.Tensor]) -> None:
    pred_noise, x_start = step_outputs
    assert pred_noise.shape == x_start.shape == (1, 80, 265)
    err = relative_error({"pred_noise": pred_noise.numpy(), "x_start": x_start.numpy()}, "lmdm")
    assert err < 1e-3


def test_pred_noise_uses_the_schedule_tables(
    step_outputs: tuple[torch.Tensor, torch.Tensor], inputs: dict[str, torch.Tensor]
) -> None:
    pred_noise, x_start = step_outputs
    t = int(inputs["time_cond"][0])
    expected = diffusion.predict_noise_from_start(
        inputs["x"].numpy(), x_start.numpy(), t, diffusion.cosine_alphas_cumprod()
    )
    np.testing.assert_allclose(pred_noise.numpy(), expected, rtol=1e-6, atol=1e-6)


def test_batched_guidance_equals_two_passes() -> None:
    """One doubled-batch call (encoder skipped for the null half) equals separate conditional/unconditional calls.

    A narrow model with the released sequence and feature sizes keeps this fast; the full-size batched path is
    what the conformance test above exercises.
    """
    torch.manual_seed(3)
    module = LMDMStep(latent_dim=64, ff_size=96, num_layers=2, num_heads=4).eval()
    g = torch.Generator().manual_seed(3)
    x, cond_frame, cond = (
        torch.randn(1, 80, 265, generator=g),
        torch.randn(1, 265, generator=g),
        torch.randn(1, 80, 1103, generator=g),
    )
    t = torch.tensor([321])
    with torch.no_grad():
        both = module.denoiser(x, cond_frame, cond, t, passes="both")
        cond_only = module.denoiser(x, cond_frame, cond, t, passes="cond")
        uncond_only = module.denoiser(x, cond_frame, None, t, passes="uncond")
        _, x_start = module(x, cond_frame, cond, t)
    assert both.shape == (2, 80, 265)
    assert _rel(both[:1], cond_only) < 1e-5
    assert _rel(both[1:], uncond_only) < 1e-5
    assert _rel(x_start, uncond_only + 2 * (cond_only - uncond_only)) < 1e-5


# ------------------------------------------------------------------------------------------- small models


def test_tiny_configuration_builds_and_runs() -> None:
    torch.manual_seed(0)
    module = LMDMStep(**TINY).eval()
    keys = set(module.denoiser.state_dict())
    assert "seqTransDecoder.stack.1.film3.block.1.weight" in keys
    assert "cond_encoder.0.rotary.freqs" in keys
    assert "cond_encoder.1.rotary.freqs" not in keys
    assert module.denoiser.null_cond_embed.shape == (1, 6, 16)

    x, cond_frame, cond, t = _tiny_inputs(batch=3)
    with torch.no_grad():
        pred_noise, x_start = module(x, cond_frame, cond, t)
        single = module(x[1:2], cond_frame[1:2], cond[1:2], t[1:2])
    assert pred_noise.shape == x_start.shape == (3, 6, 7)
    assert torch.isfinite(pred_noise).all()
    assert torch.isfinite(x_start).all()
    # samples in a batch are independent
    torch.testing.assert_close(x_start[1:2], single[1], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(pred_noise[1:2], single[0], rtol=1e-5, atol=1e-5)


def test_guidance_weight_one_is_the_conditional_prediction() -> None:
    torch.manual_seed(1)
    module = LMDMStep(guidance_weight=1.0, **TINY).eval()
    x, cond_frame, cond, t = _tiny_inputs(batch=2, seed=1)
    with torch.no_grad():
        _, x_start = module(x, cond_frame, cond, t)
        conditional = module.denoiser(x, cond_frame, cond, t)
    assert _rel(x_start, conditional) < 1e-5


def test_invalid_pass_requests() -> None:
    torch.manual_seed(2)
    decoder = MotionDecoder(**TINY).eval()
    x, cond_frame, cond, t = _tiny_inputs(batch=1)
    with pytest.raises(ValueError, match="condition"):
        decoder(x, cond_frame, None, t, passes="both")
    with pytest.raises(ValueError, match="passes"):
        decoder(x, cond_frame, cond, t, passes="neither")  # type: ignore[arg-type]
