"""The released run-time configuration pickles (``ditto_cfg/*.pkl``), read without running code.

The cfg files are plain pickles of dicts holding NumPy arrays. ``pickle.load`` would execute whatever a swapped
file asks for, so :class:`RestrictedUnpickler` resolves only the few globals that NumPy arrays and plain
containers need and refuses everything else. Only ``default_kwargs`` matters to us (the run-time defaults:
sampling steps, overlap, blink template, emotion, pose offset ...); ``base_cfg`` paths are ignored because the
engine decides which files to load.
"""

from __future__ import annotations

import io
import logging
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ditto_demo.errors import CheckpointError

__all__ = ["CFG_FILES", "ReleasedDefaults", "RestrictedUnpickler", "load_cfg", "load_defaults", "safe_loads"]

log = logging.getLogger(__name__)

#: Which cfg pickle describes which way of running (the online one has the streaming values).
CFG_FILES = {
    "pytorch": "ditto_cfg/v0.4_hubert_cfg_pytorch.pkl",
    "offline": "ditto_cfg/v0.4_hubert_cfg_trt.pkl",
    "online": "ditto_cfg/v0.4_hubert_cfg_trt_online.pkl",
}

_ALLOWED_GLOBALS = {
    # NumPy arrays, dtypes and scalars (module paths of NumPy 1.x and 2.x).
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),  # protocol 5 array payloads
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    # Protocol-2 pickles store array bytes through codecs.encode.
    ("_codecs", "encode"),
    ("collections", "OrderedDict"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("builtins", "slice"),
    ("builtins", "complex"),
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that knows NumPy arrays and plain containers and nothing else."""

    def find_class(self, module: str, name: str) -> Any:
        module = {"__builtin__": "builtins", "copy_reg": "copyreg"}.get(module, module)  # Python 2 names
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused to load {module}.{name}: cfg files may hold only data")


def safe_loads(data: bytes) -> Any:
    """Unpickle ``data`` with :class:`RestrictedUnpickler`."""
    return RestrictedUnpickler(io.BytesIO(data)).load()


def load_cfg(path: Path) -> dict[str, Any]:
    """The whole cfg dict of a released pickle, or a :class:`CheckpointError` naming the file and the fix."""
    try:
        cfg = safe_loads(path.read_bytes())
    except FileNotFoundError as exc:
        raise CheckpointError(f"Missing configuration file {path}; run `python -m ditto_demo download`.") from exc
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as exc:
        raise CheckpointError(
            f"{path} is not a Ditto configuration file we can read safely ({exc}); delete it and run "
            "`python -m ditto_demo download` to restore the released one."
        ) from exc
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{path} does not hold a configuration dict; restore the released file.")
    return cfg


@dataclass(frozen=True)
class ReleasedDefaults:
    """The run-time defaults of one cfg pickle (``default_kwargs``), with the code's fallbacks where absent.

    Fallbacks are the reference code's hard-coded values (ditto_spec.md §1.4), used when a checkpoint folder has
    no cfg pickle at all.
    """

    online: bool = False
    max_size: int = 1920
    crop_scale: float = 2.3
    crop_vx_ratio: float = 0.0
    crop_vy_ratio: float = -0.125
    crop_rotate: bool = True
    source_smoothing: int = 13
    emotion: Any = 4
    eye_from_first_frame: bool = False
    overlap: int = 10
    fix_kp_cond: int = 0
    fix_kp_cond_dim: tuple[int, int] | None = None
    steps: int = 50
    clip_range: np.ndarray | None = None
    motion_smoothing: int = 3
    relative: bool = True
    drive_eyes: bool | None = None
    blink_template: np.ndarray | None = None
    blink_gap: int | list[int] = 0
    fade_type: str = ""
    fade_keys: tuple[str, ...] = ("exp",)
    use_stitching: bool = True
    overall_ctrl: dict[str, Any] = field(default_factory=dict)
    source: str = "built-in fallbacks"

    @classmethod
    def from_kwargs(cls, kwargs: dict[str, Any], source: str) -> ReleasedDefaults:
        """Map the reference's ``default_kwargs`` names onto ours (unknown keys are ignored)."""
        fallback = cls()
        get = kwargs.get
        clip = get("v_min_max_for_clip")
        fix_dim = get("fix_kp_cond_dim")
        return cls(
            online=bool(get("online_mode", fallback.online)),
            max_size=int(get("max_size", fallback.max_size)),
            crop_scale=float(get("crop_scale", fallback.crop_scale)),
            crop_vx_ratio=float(get("crop_vx_ratio", fallback.crop_vx_ratio)),
            crop_vy_ratio=float(get("crop_vy_ratio", fallback.crop_vy_ratio)),
            crop_rotate=bool(get("crop_flag_do_rot", fallback.crop_rotate)),
            source_smoothing=int(get("smo_k_s", fallback.source_smoothing)),
            emotion=get("emo", fallback.emotion),
            eye_from_first_frame=bool(get("eye_f0_mode", fallback.eye_from_first_frame)),
            overlap=int(get("overlap_v2", fallback.overlap)),
            fix_kp_cond=int(get("fix_kp_cond", fallback.fix_kp_cond)),
            fix_kp_cond_dim=(int(fix_dim[0]), int(fix_dim[1])) if fix_dim is not None else None,
            steps=int(get("sampling_timesteps", fallback.steps)),
            clip_range=np.asarray(clip, dtype=np.float32)[:2] if clip is not None else None,
            motion_smoothing=int(get("smo_k_d", fallback.motion_smoothing)),
            relative=bool(get("relative_d", fallback.relative)),
            drive_eyes=get("drive_eye", fallback.drive_eyes),
            blink_template=(
                np.asarray(get("delta_eye_arr"), dtype=np.float32) if get("delta_eye_arr") is not None else None
            ),
            blink_gap=get("delta_eye_open_n", fallback.blink_gap),
            fade_type=str(get("fade_type", fallback.fade_type) or ""),
            fade_keys=tuple(get("fade_out_keys", fallback.fade_keys)),
            use_stitching=bool(get("flag_stitching", fallback.use_stitching)),
            overall_ctrl=dict(get("overall_ctrl_info", None) or {}),
            source=source,
        )


def load_defaults(root: Path, variant: str = "pytorch") -> ReleasedDefaults:
    """The defaults of ``variant`` (``pytorch``, ``offline`` or ``online``) from ``root``, else the fallbacks.

    A missing cfg file is not an error (a folder with only ``.pth`` files runs with the reference's built-in
    defaults, and the log says so); an unreadable or unsafe one is.
    """
    if variant not in CFG_FILES:
        raise ValueError(f"variant must be one of {', '.join(CFG_FILES)}")
    candidates = [CFG_FILES[variant], *(p for v, p in CFG_FILES.items() if v != variant)]
    for rel in candidates:
        path = root / rel
        if path.is_file():
            kwargs = load_cfg(path).get("default_kwargs") or {}
            if not isinstance(kwargs, dict):
                raise CheckpointError(f"{path}: default_kwargs is not a dict; restore the released file.")
            if rel != CFG_FILES[variant]:
                log.info("no %s cfg under %s: using the defaults of %s", variant, root, rel)
            return ReleasedDefaults.from_kwargs(kwargs, source=str(path))
    log.info("no cfg pickle under %s: using the reference's built-in defaults", root)
    return ReleasedDefaults()
