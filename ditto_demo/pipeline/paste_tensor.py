"""Paste-back on the decoder's device: :class:`TensorPasteBack`, the torch twin of :class:`render.PasteBack`.

Why it exists: on a GPU the host paste-back forces the decoder output to the host as a float image every frame,
and the cv2 warp then runs on the CPU. Here the render stays where the decoder wrote it; only the face box of the
finished uint8 frame comes back (``render.py`` explains why the box is all that changes).

Why it is not ``grid_sample``: the output must match :class:`~ditto_demo.pipeline.render.PasteBack`, i.e.
``cv2.remap`` (bilinear, border 0), to the bit where possible, and OpenCV's sampling arithmetic depends on its
version and on the CPU it runs on. Three formulas are known; ``"lerp_fma"`` and ``"table"`` were checked bit for
bit against OpenCV 5.0 (x86-64 with FMA) and 4.10, ``"lerp"`` follows OpenCV's scalar code and has not been
compared with a build that lacks FMA:

* ``"lerp_fma"`` (OpenCV ≥ 4.11 on a CPU with FMA): ``ix = ⌊x⌋``, ``a = x − ix``; per row
  ``v = p0 + a·(p1 − p0)`` with the product and sum fused (one rounding), then the same between the two rows with
  the y fraction. Emulated by doing the fused step in float64, where ``a·d`` of two float32 values is exact and
  the sum is rounded once more to float32 (a double rounding that can differ from a true FMA in about one case in
  2²⁹, far below anything visible after the uint8 truncation).
* ``"lerp"``: the same interpolation with separate float32 roundings (OpenCV ≥ 4.11 without FMA).
* ``"table"`` (OpenCV ≤ 4.10): positions quantised to 1/32 pixel (``q = round(32·x)`` half to even, integer
  part ``q >> 5``, fraction ``(q & 31)/32``); weights are products of the two 1-D fractions, summed left to right
  in float32.

Neighbours outside the source read 0 (BORDER_CONSTANT 0) in all three. :func:`remap_model` finds which formula
the installed cv2 uses by remapping a small random image once per process and comparing the candidates' output
bit for bit; each device op is a separate kernel (no fusion), so the formula gives the same bits on a GPU.

Everything that only depends on the transform and the frame size (the box, the four taps per pixel, the warped
mask ``alpha`` and ``1 − alpha``) is built on the device once and kept while the transform does not change, as in
:class:`PasteBack`. The background term ``(1 − alpha)·frame`` is kept too while the same read-only frame comes
back (a still portrait: one upload per request).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from ditto_demo.pipeline.render import PasteBack, crop_footprint

__all__ = [
    "REMAP_MODELS",
    "RemapModel",
    "TensorPasteBack",
    "decoder_output_to_tensor",
    "make_paste_back",
    "remap_model",
    "remap_tensor",
    "sampling_maps_tensor",
]

logger = logging.getLogger(__name__)

#: The bilinear sampling formulas ``cv2.remap`` is known to use (see the module docstring).
RemapModel = Literal["lerp_fma", "lerp", "table"]
REMAP_MODELS: tuple[RemapModel, ...] = ("lerp_fma", "lerp", "table")

#: OpenCV's sub-pixel resolution before 4.11 (``INTER_BITS`` = 5).
_TABLE_BITS = 5
_TABLE_SIZE = 1 << _TABLE_BITS
#: The four neighbours of a sampling position, in OpenCV's order: (dx, dy).
_NEIGHBOURS = ((0, 0), (1, 0), (0, 1), (1, 1))


# ------------------------------------------------------------------------------------------------ conversions


def decoder_output_to_tensor(output: torch.Tensor) -> torch.Tensor:
    """Decoder output (1, 3, H, W) in [0, 1], any float dtype → (3, H, W) float32 in [0, 255], on its device.

    Same arithmetic as :func:`render.decoder_output_to_image` (clip, then ×255 in float32) but planar: the warp
    below gathers channel planes, so no layout copy is needed. fp16 (the GPU decoder's dtype) is upcast first;
    clipping before or after an exact upcast gives the same values.
    """
    if output.ndim != 4 or tuple(output.shape[:2]) != (1, 3):
        raise ValueError(f"expected a decoder output of shape (1, 3, H, W), got {tuple(output.shape)}")
    return output[0].to(torch.float32).clamp(0, 1) * 255.0


# --------------------------------------------------------------------------------------------------- sampling


def sampling_maps_tensor(
    crop_to_image: np.ndarray, box: tuple[int, int, int, int], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Crop positions (map_x, map_y), (h, w) float32 on ``device``, of the frame pixels in ``box``.

    The same float64 expression as ``render._sampling_maps``, evaluated by separate IEEE float64 kernels and
    rounded once to float32, so the maps are bit-identical to the host's without uploading them.
    """
    x0, y0, x1, y1 = box
    inverse = np.linalg.inv(np.asarray(crop_to_image, dtype=np.float64))[:2]
    xs = torch.arange(x0, x1, dtype=torch.float64, device=device)[None, :]
    ys = torch.arange(y0, y1, dtype=torch.float64, device=device)[:, None]
    rows = []
    for row in inverse:
        a, b, c = (float(v) for v in row)
        rows.append((a * xs + (b * ys + c)).to(torch.float32))
    return rows[0], rows[1]


@dataclass(frozen=True)
class _Taps:
    """Where each output pixel reads its four neighbours, and with which fractions or weights.

    ``index``: (4·n,) flat source indices, clamped into the image (the value read there is discarded when the
    neighbour is outside). ``valid``: (4, 1, n) whether each neighbour is inside. ``fx``/``fy``: (1, n) float64
    fractions for the lerp formulas; ``weights``: (4, 1, n) float32 for the table formula, 0 where not valid.
    """

    index: torch.Tensor
    valid: torch.Tensor
    fx: torch.Tensor | None
    fy: torch.Tensor | None
    weights: torch.Tensor | None

    @property
    def count(self) -> int:
        return self.valid.shape[-1]


def _taps(map_x: torch.Tensor, map_y: torch.Tensor, width: int, height: int, model: RemapModel) -> _Taps:
    """The sampling plan of float32 maps into a ``width`` × ``height`` source under ``model``."""
    map_x = map_x.reshape(-1).to(torch.float32)
    map_y = map_y.reshape(-1).to(torch.float32)
    fx = fy = weights = None
    if model == "table":
        # 32·x is exact in float32 (a power of two); torch.round rounds half to even, as cvRound does.
        qx = torch.round(map_x * _TABLE_SIZE).to(torch.int64)
        qy = torch.round(map_y * _TABLE_SIZE).to(torch.int64)
        ix, iy = qx >> _TABLE_BITS, qy >> _TABLE_BITS
        ax = (qx & (_TABLE_SIZE - 1)).to(torch.float32) / _TABLE_SIZE  # exact multiples of 1/32
        ay = (qy & (_TABLE_SIZE - 1)).to(torch.float32) / _TABLE_SIZE
        wx = (1 - ax, ax)
        wy = (1 - ay, ay)
        weights = torch.stack([wy[dy] * wx[dx] for dx, dy in _NEIGHBOURS])[:, None, :]  # products: exact
    else:
        floor_x, floor_y = torch.floor(map_x), torch.floor(map_y)
        ix, iy = floor_x.to(torch.int64), floor_y.to(torch.int64)
        fx = (map_x - floor_x).to(torch.float64)[None, :]  # x − ⌊x⌋ is exact in float32
        fy = (map_y - floor_y).to(torch.float64)[None, :]
    xs = torch.stack([ix + dx for dx, _ in _NEIGHBOURS])
    ys = torch.stack([iy + dy for _, dy in _NEIGHBOURS])
    valid = (xs >= 0) & (xs < width) & (ys >= 0) & (ys < height)
    index = (ys.clamp(0, height - 1) * width + xs.clamp(0, width - 1)).reshape(-1)
    if weights is not None:
        weights = torch.where(valid[:, None, :], weights, torch.zeros((), dtype=weights.dtype, device=weights.device))
    return _Taps(index=index, valid=valid[:, None, :], fx=fx, fy=fy, weights=weights)


def _lerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor, fused: bool) -> torch.Tensor:
    """``a + t·(b − a)`` in float32; ``fused``: the multiply-add rounded once (float64 holds ``t·d`` exactly)."""
    difference = b - a
    if fused:
        return (t * difference.to(torch.float64) + a.to(torch.float64)).to(torch.float32)
    return a + t.to(torch.float32) * difference


def _remap(planes: torch.Tensor, taps: _Taps, model: RemapModel) -> torch.Tensor:
    """Sample (C, H·W) float32 source planes at the taps: (C, n) float32."""
    channels = planes.shape[0]
    gathered = planes.index_select(1, taps.index).view(channels, 4, taps.count).transpose(0, 1)  # (4, C, n)
    if model == "table":
        assert taps.weights is not None
        out = gathered[0] * taps.weights[0]
        for k in range(1, 4):
            out = out + gathered[k] * taps.weights[k]  # OpenCV's order: ((w0·p0 + w1·p1) + w2·p2) + w3·p3
        return out
    assert taps.fx is not None
    assert taps.fy is not None
    values = torch.where(taps.valid, gathered, torch.zeros((), dtype=gathered.dtype, device=gathered.device))
    fused = model == "lerp_fma"
    top = _lerp(values[0], values[1], taps.fx, fused)
    bottom = _lerp(values[2], values[3], taps.fx, fused)
    return _lerp(top, bottom, taps.fy, fused)


def remap_tensor(
    image: torch.Tensor, map_x: torch.Tensor, map_y: torch.Tensor, model: RemapModel | None = None
) -> torch.Tensor:
    """``cv2.remap(image, map_x, map_y, INTER_LINEAR, BORDER_CONSTANT, 0)`` on (C, H, W) float32 planes.

    Returns (C, h, w) float32 for (h, w) maps. ``model`` defaults to the installed cv2's (:func:`remap_model`).
    A one-off call: :class:`TensorPasteBack` keeps the taps between frames instead.
    """
    model = model or remap_model()
    channels, height, width = image.shape
    taps = _taps(map_x.to(image.device), map_y.to(image.device), width, height, model)
    out = _remap(image.reshape(channels, -1).to(torch.float32), taps, model)
    return out.view(channels, *map_x.shape)


@functools.cache
def remap_model() -> RemapModel:
    """The formula the installed ``cv2.remap`` uses, found by comparing each candidate with it once per process.

    Why probe instead of reading ``cv2.__version__``: the same OpenCV version computes differently with and without
    FMA on the CPU it runs on. The probe covers 1 and 3 channels, positions inside, on the border and outside, and
    exact 1/64 ties (where the table formula's rounding shows). If no candidate matches exactly, the closest is
    used and a warning logged: results then differ from :class:`PasteBack` by rounding only.
    """
    import cv2

    rng = np.random.default_rng(20240605)
    height, width = 23, 31
    map_x = rng.uniform(-2.5, width + 1.5, (17, 40)).astype(np.float32)
    map_y = rng.uniform(-2.5, height + 1.5, (17, 40)).astype(np.float32)
    map_x[:4] = (rng.integers(-64, 64 * width, (4, 40)) / 64).astype(np.float32)  # halfway between 1/32 steps
    errors: dict[RemapModel, float] = {}
    for channels in (3, 1):
        image = rng.uniform(-20, 275, (height, width, channels)).astype(np.float32)
        expected = cv2.remap(np.squeeze(image, axis=2) if channels == 1 else image, map_x, map_y, cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_CONSTANT, borderValue=0).reshape(17, 40, channels)
        planes = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        for model in REMAP_MODELS:
            got = remap_tensor(planes, torch.from_numpy(map_x), torch.from_numpy(map_y), model).permute(1, 2, 0)
            error = float(np.abs(got.numpy() - expected).max())
            errors[model] = max(errors.get(model, 0.0), error)
    exact = [model for model in REMAP_MODELS if errors[model] == 0.0]
    if exact:
        logger.debug("cv2 %s remap formula: %s", cv2.__version__, exact[0])
        return exact[0]
    closest = min(REMAP_MODELS, key=lambda model: errors[model])
    logger.warning("no known formula reproduces cv2 %s remap exactly (max errors %s); using %s: device paste-back "
                   "may differ from the host's by a grey level on a few pixels", cv2.__version__, errors, closest)
    return closest


# ------------------------------------------------------------------------------------------------- paste-back


@dataclass(frozen=True)
class _DevicePlacement:
    """What stays the same while the crop transform does, on one device: the box, taps, alpha and 1 − alpha."""

    key: bytes
    device: torch.device
    box: tuple[int, int, int, int]
    taps: _Taps | None  # None when the box is empty
    alpha: torch.Tensor | None  # (1, n) float32, the warped mask clipped to [0, 1]
    keep: torch.Tensor | None  # (1, n) float32, 1 − alpha


class TensorPasteBack:
    """:class:`~ditto_demo.pipeline.render.PasteBack` for a decoder output that stays on its device.

    ``paste(render, frame, crop_to_image)``: ``render`` is the decoder output (1, 3, S, S) in [0, 1] (any float
    dtype, any device), ``frame`` the host (H, W, 3) uint8 frame; returns a new host frame with the face pasted,
    equal to ``PasteBack()(decoder_output_to_image(render), frame, crop_to_image)``. The blend runs in float32 in
    PasteBack's order (``alpha·warped + keep·frame``, clip, truncate); only the box comes back to the host.

    Holds one placement (and the background of one frame), so use one instance per stream of frames, from one
    thread. ``model`` overrides the detected cv2 formula (tests).
    """

    def __init__(self, mask: np.ndarray | None = None, *, model: RemapModel | None = None) -> None:
        self._host = PasteBack(mask)  # validates and normalises the mask exactly as the host class does
        self.mask = self._host.mask
        self.model = model
        self._masks: dict[torch.device, torch.Tensor] = {}
        self._placement: _DevicePlacement | None = None
        self._background_of: np.ndarray | None = None  # the frame whose background term is cached
        self._background: torch.Tensor | None = None

    @property
    def size(self) -> int:
        """Side of the renders this instance pastes (the mask's)."""
        return int(self.mask.shape[0])

    def _mask_on(self, device: torch.device) -> torch.Tensor:
        if device not in self._masks:
            self._masks[device] = torch.tensor(self.mask, dtype=torch.float32, device=device).reshape(1, -1)
        return self._masks[device]

    def _place(self, crop_to_image: np.ndarray, frame_shape: tuple[int, ...], device: torch.device) -> _DevicePlacement:
        matrix = np.ascontiguousarray(crop_to_image, dtype=np.float64)
        key = matrix.tobytes() + np.asarray(frame_shape[:2], dtype=np.int64).tobytes()
        placement = self._placement
        if placement is not None and placement.key == key and placement.device == device:
            return placement
        height, width = frame_shape[:2]
        box = crop_footprint(matrix, (width, height), self.size)
        x0, y0, x1, y1 = box
        if x1 <= x0 or y1 <= y0:
            placement = _DevicePlacement(key, device, box, None, None, None)
        else:
            model = self.model or remap_model()
            map_x, map_y = sampling_maps_tensor(matrix, box, device)
            taps = _taps(map_x, map_y, self.size, self.size, model)
            alpha = _remap(self._mask_on(device), taps, model).clamp(0, 1)
            placement = _DevicePlacement(key, device, box, taps, alpha, 1 - alpha)
        self._placement = placement
        self._background_of = self._background = None
        return placement

    def _background_term(self, frame: np.ndarray, placement: _DevicePlacement) -> torch.Tensor:
        """``keep · frame`` over the box, (3, n) float32 on the device; reused for the same read-only frame.

        A read-only frame (the registered portrait's are) cannot change under us, so holding a reference to it and
        comparing identity is a safe cache key; a writable frame is uploaded every call.
        """
        if self._background is not None and frame is self._background_of:
            return self._background
        assert placement.keep is not None
        x0, y0, x1, y1 = placement.box
        region = torch.from_numpy(np.ascontiguousarray(frame[y0:y1, x0:x1]).reshape(-1, 3))
        pixels = region.to(placement.device).t().to(torch.float32)  # (3, n)
        background = placement.keep * pixels
        if not frame.flags.writeable:
            self._background_of, self._background = frame, background
        return background

    def image(self, render: torch.Tensor) -> torch.Tensor:
        """The render as (3, S, S) float32 in [0, 255] on its device, checked against the mask's size."""
        if tuple(render.shape) != (1, 3, self.size, self.size):
            raise ValueError(f"expected a (1, 3, {self.size}, {self.size}) decoder output, got {tuple(render.shape)}")
        return decoder_output_to_tensor(render)

    def prepare(self, decoder_output: torch.Tensor) -> torch.Tensor:
        """The decoder output kept on its device as this class's own float32 copy (the network may reuse its
        output buffer on the next frame, while this one waits in the queue to the compose stage)."""
        return decoder_output.to(torch.float32, copy=True)

    def crop(self, render: torch.Tensor) -> np.ndarray:
        """The bare crop as host (S, S, 3) uint8 (the "crop" framing): clamped and truncated like the blend."""
        with torch.inference_mode():
            pixels = self.image(render).clamp(0, 255).to(torch.uint8)
            return pixels.permute(1, 2, 0).contiguous().cpu().numpy()

    def __call__(self, render: torch.Tensor, frame: np.ndarray, crop_to_image: np.ndarray) -> np.ndarray:
        """The frame (H, W, 3) uint8 with the decoder output ``render`` pasted in; a new host array."""
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f"expected an (H, W, 3) uint8 frame, got {frame.shape} {frame.dtype}")
        with torch.inference_mode():
            image = self.image(render)
            placement = self._place(crop_to_image, frame.shape, image.device)
            result = frame.copy()
            if placement.taps is None:
                return result
            assert placement.alpha is not None
            x0, y0, x1, y1 = placement.box
            warped = _remap(image.reshape(3, -1), placement.taps, self.model or remap_model())
            blended = placement.alpha * warped
            blended = blended + self._background_term(frame, placement)  # PasteBack's order of operations
            pixels = blended.clamp_(0, 255).to(torch.uint8)  # truncation, as the host's cast
            box = pixels.view(3, y1 - y0, x1 - x0).permute(1, 2, 0).contiguous().cpu().numpy()
        result[y0:y1, x0:x1] = box
        return result


def make_paste_back(device: torch.device | str, mask: np.ndarray | None = None) -> PasteBack | TensorPasteBack:
    """The paste-back for renders produced on ``device``: the host's cv2 one on the CPU, else the device one.

    Why by device: on the CPU cv2's remap is several times faster than the gathers here and the decoder output is
    already in host memory; anywhere else the device version saves the render's trip to the host.
    """
    if torch.device(device).type == "cpu":
        return PasteBack(mask)
    return TensorPasteBack(mask)
