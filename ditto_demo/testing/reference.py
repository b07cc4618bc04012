"""Oracles and reference-format adapters that only the tests use, kept out of the production modules.

Each function here either reads the reference implementation's own formats (its ``setup()`` / ``run()`` kwargs), or
computes in one call what production computes piece by piece (a whole stream's features or frame count, a one-off
paste-back), so a test can compare the two. The app, the CLI and the bench never import this module; the names and
signatures are the ones these functions had in the production modules they came from.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import fields
from typing import Any

import numpy as np

from ditto_demo.errors import InputError
from ditto_demo.pipeline.audio import (
    BLOCK_FRAMES,
    HOP_SAMPLES,
    OFFLINE_LEAD_SAMPLES,
    ONLINE_LEAD_SAMPLES,
    HubertFn,
    HubertStream,
    audio_frame_count,
    online_feature_count,
    silence_block,
    tile_silence,
)
from ditto_demo.pipeline.blink import DEFAULT_SCHEDULE_FRAMES, mode_from_open_n
from ditto_demo.pipeline.motion import SEQ_FRAMES
from ditto_demo.pipeline.motion_space import NUM_KP
from ditto_demo.pipeline.render import OutputLayout, PasteBack, pasted_output, render_to_uint8
from ditto_demo.pipeline.stitching import POSE_KEYS, StitchOptions
from ditto_demo.pipeline.timebase import HUBERT_DIM

__all__ = [
    "compose_output",
    "offline_window_starts",
    "online_hubert_features",
    "online_window_starts",
    "paste_back",
    "silence_features",
    "stitch_options_from_reference",
    "streaming_frame_count",
]

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------------------------
# Stitching: the reference's kwargs as StitchOptions
# ---------------------------------------------------------------------------------------------------------------


def stitch_options_from_reference(
    kwargs: Mapping[str, Any] | None = None,
    *,
    ctrl_info: Mapping[int, Mapping[str, Any]] | Sequence[Mapping[str, Any]] | None = None,
    n_frames: int | None = None,
    fade_in: int = -1,
    fade_out: int = -1,
    **overrides: Any,
) -> StitchOptions:
    """Options from the reference's ``setup()`` kwargs (e.g. a cfg pkl's ``default_kwargs``) and ``run`` kwargs.

    Reads ``use_d_keys``, ``relative_d``, ``drive_eye``, ``delta_eye_arr``, ``delta_eye_open_n``,
    ``fade_type``, ``fade_out_keys``, ``flag_stitching``, ``ch_info`` (its frame-0 scale) and
    ``overall_ctrl_info``; ``ctrl_info`` (per-frame, per-frame wins over overall) is merged into per-frame
    arrays of ``n_frames`` entries (3000 when unknown). ``alpha_in_logits`` is True, as in the reference;
    ``overrides`` replace any field afterwards. Per-frame ``fade_alpha`` / ``fade_out_keys`` entries are ignored
    with a warning (fades come from ``fade_in`` / ``fade_out`` only). Was ``StitchOptions.from_reference``.
    """
    kwargs = dict(kwargs or {})
    values: dict[str, Any] = {"alpha_in_logits": True}
    if kwargs.get("use_d_keys") is not None:
        keys = kwargs["use_d_keys"]
        values["driving_keys"] = dict(keys) if isinstance(keys, Mapping) else tuple(keys)
    for theirs, ours in (("relative_d", "relative"), ("drive_eye", "drive_eyes"), ("fade_type", "fade_type")):
        if kwargs.get(theirs) is not None:
            values[ours] = kwargs[theirs]
    if kwargs.get("flag_stitching") is not None:
        values["use_stitching"] = bool(kwargs["flag_stitching"])
    if kwargs.get("fade_out_keys") is not None:
        values["fade_keys"] = tuple(kwargs["fade_out_keys"])
    if kwargs.get("delta_eye_arr") is not None:
        values["blink_template"] = np.asarray(kwargs["delta_eye_arr"], dtype=np.float32)
    mode, interval, gaps = mode_from_open_n(kwargs.get("delta_eye_open_n", 0))
    values.update(blink_mode=mode, blink_interval=interval, blink_gaps=gaps)
    ch_info = kwargs.get("ch_info")
    if ch_info is not None:
        values["reference_scale"] = float(np.asarray(ch_info["x_s_info_lst"][0]["scale"]).reshape(-1)[0])
    values["fade_in"] = max(int(fade_in), 0)
    values["fade_out"] = max(int(fade_out), 0)

    overall = dict(kwargs.get("overall_ctrl_info") or {})
    if isinstance(ctrl_info, Mapping):
        per_frame = {int(k): dict(v) for k, v in ctrl_info.items()}
    else:
        per_frame = {i: dict(v) for i, v in enumerate(ctrl_info or [])}
    length = n_frames if n_frames is not None else max([DEFAULT_SCHEDULE_FRAMES, *(k + 1 for k in per_frame)])
    scalar_keys = [f"{kind}_{angle}" for kind in ("delta", "alpha") for angle in POSE_KEYS] + ["vad_alpha"]
    for key in scalar_keys:
        frames_with_key = {i: c[key] for i, c in per_frame.items() if key in c and 0 <= i < length}
        if not frames_with_key:
            if key in overall:
                values[key] = float(overall[key])
            continue
        array = np.full(length, float(overall[key]) if key in overall else np.nan)
        for i, value in frames_with_key.items():
            array[i] = float(value)
        if key == "vad_alpha":
            array = np.where(np.isnan(array), 1.0, array)
        values[key] = array
    frames_with_exp = {i: c["delta_exp"] for i, c in per_frame.items() if "delta_exp" in c and 0 <= i < length}
    if frames_with_exp:
        base = np.asarray(overall["delta_exp"], np.float64).reshape(-1) if "delta_exp" in overall else np.nan
        rows = np.empty((length, NUM_KP * 3))
        rows[:] = base
        for i, value in frames_with_exp.items():
            rows[i] = np.asarray(value, np.float64).reshape(-1)
        values["delta_exp"] = rows
    elif "delta_exp" in overall:
        values["delta_exp"] = np.asarray(overall["delta_exp"], np.float64).reshape(-1)
    if any("fade_alpha" in c or "fade_out_keys" in c for c in per_frame.values()):
        logger.warning("Per-frame fade_alpha/fade_out_keys in ctrl_info are ignored; use fade_in / fade_out.")
    known = {f.name for f in fields(StitchOptions)}
    unknown = set(overrides) - known
    if unknown:
        raise InputError(f"Unknown stitch option(s): {', '.join(sorted(unknown))}.")
    values.update(overrides)
    return StitchOptions(**values)


# ---------------------------------------------------------------------------------------------------------------
# Render: one-off paste-back and framing from the 512 render
# ---------------------------------------------------------------------------------------------------------------


def paste_back(render512: np.ndarray, frame: np.ndarray, crop_to_image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """One-off paste-back of ``render512`` (S, S, 3) float 0–255 into ``frame`` (H, W, 3) uint8 (no caching)."""
    return PasteBack(mask)(render512, frame, crop_to_image)


def compose_output(
    layout: OutputLayout, pasted: np.ndarray | None, render: np.ndarray, source_frame: np.ndarray
) -> np.ndarray:
    """The frame to write for a layout: "full" the pasted frame, "crop" the 512 render as uint8, "side_by_side"
    the source frame next to the pasted result (same height, even sides)."""
    if layout == "crop":
        return render_to_uint8(render)
    if pasted is None:
        raise ValueError(f"layout {layout!r} needs the pasted frame")
    return pasted_output(layout, pasted, source_frame)


# ---------------------------------------------------------------------------------------------------------------
# Audio: window positions and whole-signal features
# ---------------------------------------------------------------------------------------------------------------


def offline_window_starts(num_samples: int) -> np.ndarray:
    """Start of each offline window in original-signal samples (negative = inside the leading zeros)."""
    blocks = math.ceil(audio_frame_count(num_samples) / BLOCK_FRAMES)
    return np.arange(blocks, dtype=np.int64) * HOP_SAMPLES - OFFLINE_LEAD_SAMPLES


def online_window_starts(num_samples: int) -> np.ndarray:
    """Start of each streaming window in original-signal samples: 80 samples later than the offline ones."""
    blocks = online_feature_count(num_samples) // BLOCK_FRAMES
    return np.arange(blocks, dtype=np.int64) * HOP_SAMPLES - ONLINE_LEAD_SAMPLES


def silence_features(hubert: HubertFn, num_frames: int) -> np.ndarray:
    """Offline features of ``num_frames`` × 640 zero samples: the streaming warm-up ("silence") rows.

    Equal to :func:`~ditto_demo.pipeline.audio.hubert_features` on that many zeros, computed with ONE HuBERT call:
    zeros padded with zeros make every window the same all-zero window, so every 5-row block is the same. The
    pipeline builds the same rows from a cached :func:`~ditto_demo.pipeline.audio.silence_block` with
    :func:`~ditto_demo.pipeline.audio.tile_silence`.
    """
    if num_frames <= 0:
        return np.zeros((0, HUBERT_DIM), dtype=np.float32)
    return tile_silence(silence_block(hubert), num_frames)


def online_hubert_features(hubert: HubertFn, audio: np.ndarray) -> np.ndarray:
    """All streaming features of a known signal, (5·⌈(len + 1920) / 3200⌉, 1024) — what a live stream would yield."""
    stream = HubertStream(hubert)
    blocks = stream.push(audio) + stream.finish()
    return np.concatenate(blocks, axis=0) if blocks else np.zeros((0, HUBERT_DIM), dtype=np.float32)


# ---------------------------------------------------------------------------------------------------------------
# Motion: how many rows a stream emits
# ---------------------------------------------------------------------------------------------------------------


def streaming_frame_count(num_features: int, overlap: int) -> int:
    """Rows :class:`~ditto_demo.pipeline.motion.StreamingMotion` emits in total for ``num_features`` real rows.

    For O ≥ 40 (the stock online O = 70) this is the reference's count, 10·(⌊M/10⌋ + 1) for O = 70: a few frames
    more than the speech lasts, because the last window is padded with its final feature and every row generated
    for it is emitted. For O < 40 it is exactly M (the reference drops frames there, see
    :mod:`ditto_demo.pipeline.motion`). A replay of the clip schedule, independent of the generator's own code.
    """
    valid = SEQ_FRAMES - overlap
    fuse = min(overlap, valid)
    total = overlap + num_features
    start, end, frontier = 0, 0, overlap
    while start < total:
        advance = valid if start + SEQ_FRAMES <= total else total - start
        end = SEQ_FRAMES if end == 0 else end + valid
        frontier = min(frontier + advance, end) if start + advance >= total else max(frontier, end - fuse)
        start += advance
    return frontier - overlap
