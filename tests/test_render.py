"""Paste-back: mask geometry, equality with a plain full-frame implementation, truncation, framing helpers."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from ditto_demo.pipeline.render import (
    PasteBack,
    crop_footprint,
    decoder_output_to_image,
    pad_to_even,
    paste_mask,
    render_to_uint8,
    side_by_side,
)
from ditto_demo.testing.reference import compose_output, paste_back


@pytest.fixture(scope="module")
def mask() -> np.ndarray:
    return paste_mask()


def _similarity(angle: float, scale: float, tx: float, ty: float) -> np.ndarray:
    a = np.radians(angle)
    c, s = np.cos(a) * scale, np.sin(a) * scale
    return np.array([[c, -s, tx], [s, c, ty], [0, 0, 1]], dtype=np.float64)


def _full_frame_reference(render: np.ndarray, frame: np.ndarray, m: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The obvious implementation: sample the whole frame (positions from absolute pixel coordinates), blend, cut."""
    height, width = frame.shape[:2]
    inverse = np.linalg.inv(m)[:2]
    xs = np.arange(width, dtype=np.float64)[None, :]
    ys = np.arange(height, dtype=np.float64)[:, None]
    map_x = (inverse[0, 0] * xs + (inverse[0, 1] * ys + inverse[0, 2])).astype(np.float32)
    map_y = (inverse[1, 0] * xs + (inverse[1, 1] * ys + inverse[1, 2])).astype(np.float32)
    alpha = cv2.remap(mask, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    alpha = np.clip(alpha, 0, 1)[..., None]
    warped = cv2.remap(render, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return np.clip(alpha * warped + (1 - alpha) * frame, 0, 255).astype(np.uint8)


def _warp_affine_reference(render: np.ndarray, frame: np.ndarray, m: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The reference's own recipe: cv2.warpAffine of mask and render over the whole frame."""
    height, width = frame.shape[:2]
    alpha = np.clip(cv2.warpAffine(mask, m[:2], (width, height), flags=cv2.INTER_LINEAR), 0, 1)[..., None]
    warped = cv2.warpAffine(render, m[:2], (width, height), flags=cv2.INTER_LINEAR)
    return np.clip(alpha * warped + (1 - alpha) * frame, 0, 255).astype(np.uint8)


# -- mask -----------------------------------------------------------------------------------------------------------
def test_mask_geometry(mask: np.ndarray) -> None:
    assert mask.shape == (512, 512)
    assert mask.dtype == np.float32
    assert mask.min() == 0.0
    assert mask.max() == 1.0
    assert (mask[26:486, 26:486] == 1).all()  # the solid 460×460 square (0.9 of 512) starting at 26
    # Edge bands: linspace(0, 1, 26) from the border inwards (row 25 is already 1).
    np.testing.assert_allclose(mask[:26, 256], np.linspace(0, 1, 26), atol=1e-7)
    np.testing.assert_allclose(mask[486:, 256], np.linspace(1, 0, 26), atol=1e-7)
    np.testing.assert_allclose(mask[256, :26], np.linspace(0, 1, 26), atol=1e-7)
    assert mask[0, 256] == 0.0
    assert mask[25, 256] == 1.0
    # Corners: 0 at the image corner and along the outer edges, 1 at the inner corner, radial in between.
    for y, x in ((0, 0), (0, 511), (511, 0), (511, 511), (0, 25), (25, 0)):
        assert mask[y, x] == 0.0
    assert mask[25, 25] == 1.0
    u = v = 1 - 10 / 25  # pixel (10, 10): 15 of 25 steps outside the inner corner on both axes
    assert mask[10, 10] == pytest.approx(1 - min(1.0, np.hypot(u, v)), abs=1e-6)
    assert mask[20, 22] == pytest.approx(1 - min(1.0, np.hypot(1 - 20 / 25, 1 - 22 / 25)), abs=1e-6)
    # Symmetric under both flips and the transpose.
    np.testing.assert_array_equal(mask, mask[::-1, :])
    np.testing.assert_array_equal(mask, mask[:, ::-1])
    np.testing.assert_array_equal(mask, mask.T)


# -- paste-back -----------------------------------------------------------------------------------------------------
CASES = {
    "identity": (_similarity(0, 1, 0, 0), (512, 512)),
    "identity_in_larger_frame": (_similarity(0, 1, 40, 30), (700, 600)),
    "rotated_scaled": (_similarity(17.5, 1.37, 260.3, -40.7), (1000, 620)),
    "shrunk": (_similarity(-8, 0.41, 33.3, 21.9), (320, 240)),
    "partly_outside": (_similarity(-30, 0.9, -150.2, 300.6), (480, 640)),
    "odd_sized_frame": (_similarity(3, 0.75, 11.5, 5.25), (411, 389)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_paste_back_equals_the_full_frame_implementation(case: str, mask: np.ndarray) -> None:
    m, (width, height) = CASES[case]
    rng = np.random.default_rng(len(case))
    frame = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    render = rng.uniform(-20, 275, (512, 512, 3)).astype(np.float32)  # out of range too: clamping is tested
    ours = paste_back(render, frame, m, mask)
    assert ours.dtype == np.uint8
    assert ours.shape == frame.shape
    np.testing.assert_array_equal(ours, _full_frame_reference(render, frame, m, mask))
    # And within one grey level of cv2.warpAffine over the whole frame (its positions are rounded differently).
    diff = np.abs(ours.astype(np.int16) - _warp_affine_reference(render, frame, m, mask))
    assert diff.max() <= 1
    assert (diff > 0).mean() < 0.01


def test_crop_entirely_outside_leaves_the_frame(mask: np.ndarray) -> None:
    frame = np.random.default_rng(0).integers(0, 256, (100, 120, 3), dtype=np.uint8)
    render = np.full((512, 512, 3), 200, np.float32)
    out = paste_back(render, frame, _similarity(0, 0.1, 500, 500), mask)
    np.testing.assert_array_equal(out, frame)
    assert out is not frame


def test_footprint_box_covers_the_warp_and_is_clipped() -> None:
    m = _similarity(30, 0.5, 100, -50)
    x0, y0, x1, y1 = crop_footprint(m, (400, 300))
    assert y0 == 0  # the crop starts above the frame: clipped
    assert x1 <= 400
    assert y1 <= 300
    warped = cv2.warpAffine(np.ones((512, 512), np.float32), m[:2], (400, 300), flags=cv2.INTER_LINEAR)
    ys, xs = np.nonzero(warped)
    assert xs.min() >= x0
    assert xs.max() < x1
    assert ys.min() >= y0
    assert ys.max() < y1


def test_blend_truncates_and_clamps() -> None:
    flat_mask = np.ones((512, 512), np.float32)
    frame = np.zeros((512, 512, 3), np.uint8)
    render = np.full((512, 512, 3), 100.8, np.float32)
    render[0, 0] = 300.0
    render[0, 1] = -5.0
    out = paste_back(render, frame, np.eye(3), flat_mask)
    assert out[256, 256, 0] == 100  # truncated, not rounded to 101
    assert out[0, 0, 0] == 255
    assert out[0, 1, 0] == 0
    half = np.full((512, 512), 0.5, np.float32)
    frame[:] = 99
    render[:] = 102.0
    assert paste_back(render, frame, np.eye(3), half)[100, 100, 0] == 100  # 100.5 → 100
    assert render_to_uint8(np.array([[[254.99, 255.5, -1.0]]]))[0, 0].tolist() == [254, 255, 0]


def test_paste_back_class_reuses_the_placement_and_matches(mask: np.ndarray) -> None:
    rng = np.random.default_rng(3)
    frame = rng.integers(0, 256, (360, 480, 3), dtype=np.uint8)
    m1, m2 = _similarity(5, 0.6, 100, 20), _similarity(-5, 0.6, 110, 25)
    paster = PasteBack(mask)
    for m in (m1, m1, m2, m1):
        render = rng.uniform(0, 255, (512, 512, 3)).astype(np.float32)
        np.testing.assert_array_equal(paster(render, frame, m), paste_back(render, frame, m, mask))
    placement = paster._placement
    paster(render, frame, m1)
    assert paster._placement is placement  # unchanged transform: nothing recomputed
    paster(render, frame, m2)
    assert paster._placement is not placement


def test_paste_back_validates_inputs(mask: np.ndarray) -> None:
    paster = PasteBack(mask)
    with pytest.raises(ValueError, match="uint8"):
        paster(np.zeros((512, 512, 3), np.float32), np.zeros((10, 10, 3), np.float32), np.eye(3))
    with pytest.raises(ValueError, match="render"):
        paster(np.zeros((256, 256, 3), np.float32), np.zeros((10, 10, 3), np.uint8), np.eye(3))


# -- decoder output and framing -------------------------------------------------------------------------------------
def test_decoder_output_to_image() -> None:
    output = np.zeros((1, 3, 512, 512), np.float32)
    output[0, 0, 1, 2] = 0.5
    output[0, 1, 1, 2] = 1.5
    output[0, 2, 1, 2] = -0.5
    image = decoder_output_to_image(output)
    assert image.shape == (512, 512, 3)
    assert image.dtype == np.float32
    assert image.flags.c_contiguous
    assert image[1, 2].tolist() == [127.5, 255.0, 0.0]
    with pytest.raises(ValueError, match="decoder output"):
        decoder_output_to_image(np.zeros((3, 512, 512), np.float32))


def test_pad_to_even_and_side_by_side() -> None:
    odd = np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3)
    even = pad_to_even(odd)
    assert even.shape == (6, 8, 3)
    np.testing.assert_array_equal(even[:5, :7], odd)
    np.testing.assert_array_equal(even[5, :7], odd[4])
    assert pad_to_even(even) is even
    left = np.full((49, 30, 3), 10, np.uint8)
    right = np.full((98, 60, 3), 200, np.uint8)
    both = side_by_side(left, right)
    assert both.shape[0] == 50
    assert both.shape[1] % 2 == 0
    assert both.shape[1] == 60  # 30 + 30 (right resized to height 49), already even
    np.testing.assert_array_equal(both[:49, :30], left)
    assert (both[:49, 30:] == 200).all()


def test_compose_output_layouts() -> None:
    render = np.full((512, 512, 3), 12.7, np.float32)
    source = np.zeros((101, 80, 3), np.uint8)
    pasted = np.ones((101, 80, 3), np.uint8)
    crop = compose_output("crop", None, render, source)
    assert crop.shape == (512, 512, 3)
    assert crop.dtype == np.uint8
    assert crop[0, 0, 0] == 12
    assert compose_output("full", pasted, render, source) is pasted
    sbs = compose_output("side_by_side", pasted, render, source)
    assert sbs.shape == (102, 160, 3)
    np.testing.assert_array_equal(sbs[:101, 80:], pasted)
    with pytest.raises(ValueError, match="pasted frame"):
        compose_output("full", None, render, source)
