"""Test checkpoints: a complete root in the Hub layout with random weights, made offline.

``write_test_checkpoints(root, size="tiny")`` writes the six ``.pth`` files in the released containers, a
``model_config.json`` with the tiny hyper-parameters (absent for ``size="full"``, whose networks have the released
sizes), stand-in auxiliary ONNX models (:mod:`ditto_demo.testing.standins`) and cfg pickles shaped like the
released ones. Everything runs on a CPU in seconds at ``tiny``; the output is noise, not a face.

Tiny networks keep every size that other stages depend on (21 keypoints, 66 pose bins, the 265-d motion and
1103-d condition layouts, 80-frame windows, 256 px input and 512 px output) and shrink internal widths and the
feature grid (32×32×2 instead of 64×64×16).

``size="micro"`` is the tiny set with a 16×16×2 feature grid and an ×8 pixel shuffle (still 512 px out): the
size for live runs on a small CPU, where the tiny warp and decoder (about 28 and 39 ms a frame on one core) cannot
keep 25 fps next to a browser; micro's take about 10 and 24 ms. It exists for latency and frame-rate
measurements of the live path, not for fidelity.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from ditto_demo.engine.checkpoints import instantiate
from ditto_demo.engine.export import export_network
from ditto_demo.engine.specs import CORE_NETWORKS, MODEL_CONFIG_FILE, get_spec
from ditto_demo.testing.standins import write_standin_aux_models

__all__ = ["MICRO_MODEL_CONFIG", "TEST_SIZES", "TINY_MODEL_CONFIG", "write_cfg_pickles", "write_test_checkpoints"]

#: The sizes ``write_test_checkpoints`` makes, smallest first (``full`` = the released hyper-parameters).
TEST_SIZES = ("micro", "tiny", "full")
TestSize = Literal["micro", "tiny", "full"]

#: Constructor arguments of the tiny test networks (written to ``model_config.json``).
TINY_MODEL_CONFIG: dict[str, dict[str, Any]] = {
    # A 32×32×2 feature grid instead of 64×64×16 (the dense-motion 7×7×7 conv dominates the cost at 64×64);
    # the decoder upsamples ×4 in its pixel shuffle to still produce 512×512.
    "appearance_extractor": {
        "block_expansion": 4, "max_features": 4, "reshape_channel": 2, "reshape_depth": 2, "num_resblocks": 1,
        "num_down_blocks": 3,
    },
    "motion_extractor": {"depths": [1, 1, 1, 1], "dims": [8, 8, 16, 16]},
    "warp_network": {
        "block_expansion": 4, "max_features": 4, "reshape_channel": 2, "reshape_depth": 2,
        "dense_block_expansion": 4, "dense_max_features": 8, "dense_num_blocks": 2, "compress": 1,
    },
    "decoder": {"max_features": 16, "block_expansion": 4, "out_channels": 4, "spade_hidden": 8, "upscale": 4},
    "stitch_network": {"hidden_sizes": [8, 8]},
    "lmdm": {"latent_dim": 32, "ff_size": 64, "num_layers": 1, "num_encoder_layers": 1, "num_heads": 2},
}

#: The tiny set with the feature grid halved again (256 / 2⁴ = 16) and the decoder's pixel shuffle doubled to ×8,
#: so that the output stays 512×512: the warp and the decoder's middle blocks cost about a quarter of tiny's.
MICRO_MODEL_CONFIG: dict[str, dict[str, Any]] = {
    **TINY_MODEL_CONFIG,
    "appearance_extractor": {**TINY_MODEL_CONFIG["appearance_extractor"], "num_down_blocks": 4},
    "decoder": {**TINY_MODEL_CONFIG["decoder"], "upscale": 8},
}

_EYE_KEYPOINTS = (11, 13, 15, 16, 18)


def _blink_template(rng: np.random.Generator) -> np.ndarray:
    """A (15, 63) expression delta: row 0 open (zeros), the eye keypoints' y closing and reopening."""
    template = np.zeros((15, 63), np.float32)
    closure = np.sin(np.linspace(0, np.pi, 15)) * 0.01
    for kp in _EYE_KEYPOINTS:
        template[:, 3 * kp + 1] = closure * (1 + 0.1 * rng.standard_normal())
    return template


def _with_spectral_vectors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Set each spectral-norm (u, v) pair to the leading singular vectors of its weight, as a trained file has
    them: with random vectors sigma = u^T W v can be near zero and blow the normalised weight up."""
    for key in [k for k in state if k.endswith(".weight_u")]:
        base = key.removesuffix("_u")
        weight = state[base + "_orig"].reshape(state[base + "_orig"].shape[0], -1).double()
        u, _, vh = torch.linalg.svd(weight, full_matrices=False)
        state[base + "_u"], state[base + "_v"] = u[:, 0].float(), vh[0].float()
    return state


def write_cfg_pickles(root: Path, seed: int = 0) -> list[Path]:
    """The three ``ditto_cfg/*.pkl`` files, with the released structure (base_cfg / audio2motion_cfg /
    default_kwargs) and the stock values of ditto_spec.md §1.4 where they are known."""
    rng = np.random.default_rng(seed)
    base_cfg = {
        f"{name}_cfg": {"model_path": Path(get_spec(name).checkpoint or "").name, "device": "cuda"}
        for name in CORE_NETWORKS
        if name != "lmdm"
    }
    audio2motion = {
        "model_path": "models/lmdm_v0.4_hubert.pth", "device": "cuda", "motion_feat_dim": 265,
        "audio_feat_dim": 1103, "seq_frames": 80, "use_emo": True, "use_sc": True, "use_eye_open": True,
        "use_eye_ball": True, "w2f_type": "hubert",
    }
    offline = {
        "online_mode": False, "max_size": 1920, "template_n_frames": -1, "crop_scale": 2.3, "crop_vx_ratio": 0.0,
        "crop_vy_ratio": -0.125, "crop_flag_do_rot": True, "smo_k_s": 13, "emo": 4, "eye_f0_mode": False,
        "ch_info": None, "overlap_v2": 10, "fix_kp_cond": 0, "fix_kp_cond_dim": None, "sampling_timesteps": 50,
        "v_min_max_for_clip": None, "smo_k_d": 3, "N_d": -1, "use_d_keys": None, "relative_d": True,
        "drive_eye": None, "delta_eye_arr": _blink_template(rng), "delta_eye_open_n": 0, "fade_type": "",
        "fade_out_keys": ("exp",), "flag_stitching": True, "overall_ctrl_info": {"delta_pitch": 2},
    }
    online = {**offline, "online_mode": True, "overlap_v2": 70, "fix_kp_cond": 1, "fix_kp_cond_dim": [0, 202],
              "sampling_timesteps": 10, "fade_type": "d0", "fade_out_keys": ["exp"]}
    written = []
    for name, kwargs in (
        ("v0.4_hubert_cfg_pytorch.pkl", offline),
        ("v0.4_hubert_cfg_trt.pkl", offline),
        ("v0.4_hubert_cfg_trt_online.pkl", online),
    ):
        path = root / "ditto_cfg" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        cfg = {"base_cfg": base_cfg, "audio2motion_cfg": audio2motion, "default_kwargs": kwargs}
        path.write_bytes(pickle.dumps(cfg, protocol=4))
        written.append(path)
    return written


def write_test_checkpoints(
    root: Path, size: TestSize = "tiny", seed: int = 0, *, export_onnx: bool | None = None
) -> Path:
    """Write a complete checkpoint root with random weights under ``root``; returns ``root``.

    ``export_onnx`` (default: for ``tiny`` and ``micro``) also writes our ONNX exports under the released ``ditto_onnx``
    names, so the ONNX Runtime backend finds a released-style set; full-size exports are large and slow, and the
    ONNX backend exports on demand anyway.
    """
    if size not in TEST_SIZES:
        raise ValueError(f"size must be one of {', '.join(TEST_SIZES)}, not {size!r}")
    root = Path(root)
    torch.manual_seed(seed)
    config = {"micro": MICRO_MODEL_CONFIG, "tiny": TINY_MODEL_CONFIG}.get(size, {})
    for name in CORE_NETWORKS:
        spec = get_spec(name)
        module = instantiate(spec, config.get(name))
        target = getattr(module, spec.weights_attr) if spec.weights_attr else module
        state = _with_spectral_vectors({k: v.detach().clone() for k, v in target.state_dict().items()})
        path = root / str(spec.checkpoint)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({spec.container_key: state} if spec.container_key else state, path)
    config_path = root / MODEL_CONFIG_FILE
    if config:
        config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    else:
        config_path.unlink(missing_ok=True)
    if export_onnx if export_onnx is not None else size != "full":
        for name in CORE_NETWORKS:
            export_network(name, root, root / get_spec(name).onnx[0].path)
    write_standin_aux_models(root)
    write_cfg_pickles(root, seed)
    (root / "README.md").write_text(
        f"Test checkpoints ({size}, seed {seed}) written by `python -m ditto_demo make-test-checkpoints`.\n"
        "Random weights in the released layout and stand-in auxiliary models: they produce no real face.\n"
    )
    return root
