"""Registration geometry against the formulas of ditto_spec.md §2.8–§2.10, §4.2, §4.4: pure functions, no models."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ditto_demo.pipeline.crop import anchor_points, crop_image, crop_rect, crop_transform, transform_points
from ditto_demo.pipeline.eyes import DEFAULT_EYE_BALL, eye_features, eye_features_from_203
from ditto_demo.pipeline.face import (
    Detection,
    anchor_centres,
    decode_detections,
    detect_faces,
    detector_blob,
    landmark106,
    landmark106_matrix,
    landmark203,
    letterbox,
    nms,
)
from ditto_demo.pipeline.registration import smooth_motions

# ---------------------------------------------------------------------------------------------------------------
# Crop math (§4.2)


def _face_203() -> np.ndarray:
    """A layout with the anchor points placed exactly: eyes at (∓20, −20), mouth at (0, 30)."""
    points = np.zeros((203, 2))
    rng = np.random.default_rng(1)
    points[:] = rng.uniform([-40, -50], [40, 70], size=(203, 2))
    points[100], points[101], points[102], points[103] = (-50, 0), (50, 0), (0, -60), (0, 80)
    for k, (dx, dy) in zip((0, 6, 12, 18), ((5, 0), (0, 5), (-5, 0), (0, -5)), strict=True):
        points[k] = (-20 + dx, -20 + dy)
    for k, (dx, dy) in zip((24, 30, 36, 42), ((5, 0), (0, 5), (-5, 0), (0, -5)), strict=True):
        points[k] = (20 + dx, -20 + dy)
    points[48], points[66] = (-10, 30), (10, 30)
    return points


def _place(points: np.ndarray, angle: float, scale: float, offset: tuple[float, float]) -> np.ndarray:
    """Rotate (image convention, y down: positive = clockwise on screen), scale and move a face layout."""
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    return points @ rot.T * scale + np.asarray(offset)


def test_anchor_points_use_the_eye_and_lip_indices_of_each_layout() -> None:
    pts = _face_203()
    eyes, mouth = anchor_points(pts)
    np.testing.assert_allclose(eyes, (0, -20), atol=1e-12)
    np.testing.assert_allclose(mouth, (0, 30), atol=1e-12)
    p106 = np.full((106, 2), 1000.0)
    p106[[33, 35, 40, 39]] = (10, 10)
    p106[[87, 89, 94, 93]] = (30, 14)
    p106[52], p106[61] = (18, 50), (22, 52)
    eyes, mouth = anchor_points(p106)
    np.testing.assert_allclose(eyes, (20, 12))
    np.testing.assert_allclose(mouth, (20, 51))
    with pytest.raises(ValueError, match="203 or 106"):
        anchor_points(np.zeros((68, 2)))


@pytest.mark.parametrize("angle", [0.0, 0.3, -0.5, 2.0])
def test_crop_rect_recovers_rotation_side_and_centre(angle: float) -> None:
    scale, offset = 1.7, (400.0, 300.0)
    pts = _place(_face_203(), angle, scale, offset)
    rect = crop_rect(pts, scale=2.3, vx_ratio=0.0, vy_ratio=0.0)
    assert rect.angle == pytest.approx(angle, abs=1e-9)
    # Upright box is 100 × 140 → square side 140 · 1.7 (placement) · 2.3 (crop scale).
    assert rect.side == pytest.approx(140 * scale * 2.3)
    # The upright box centre is (0, 10) in the layout.
    expected = _place(np.array([[0.0, 10.0]]), angle, scale, offset)[0]
    np.testing.assert_allclose(rect.centre, expected, atol=1e-9)


@pytest.mark.parametrize("angle", [0.0, 0.4])
def test_vy_and_vx_offsets_move_the_centre_along_the_face_axes(angle: float) -> None:
    pts = _place(_face_203(), angle, 1.0, (200.0, 200.0))
    base = crop_rect(pts, scale=2.0)
    shifted_y = crop_rect(pts, scale=2.0, vy_ratio=-0.125)
    shifted_x = crop_rect(pts, scale=2.0, vx_ratio=0.1)
    u_x = np.array([math.cos(angle), math.sin(angle)])
    u_y = np.array([-math.sin(angle), math.cos(angle)])
    np.testing.assert_allclose(np.subtract(shifted_y.centre, base.centre), -0.125 * base.side * u_y, atol=1e-9)
    # vx is applied on purpose (the reference drops it).
    np.testing.assert_allclose(np.subtract(shifted_x.centre, base.centre), 0.1 * base.side * u_x, atol=1e-9)
    assert shifted_x.side == base.side == shifted_y.side


def test_crop_transform_uprights_the_face_and_centres_the_square() -> None:
    angle, dsize = 0.35, 512
    pts = _place(_face_203(), angle, 2.0, (500.0, 400.0))
    m = crop_transform(pts, dsize, scale=2.3, vy_ratio=-0.125)
    rect = crop_rect(pts, 2.3, 0.0, -0.125)
    np.testing.assert_allclose(transform_points(np.array([rect.centre]), m)[0], (256, 256), atol=1e-9)
    eyes, mouth = anchor_points(transform_points(pts, m))
    assert abs(eyes[0] - mouth[0]) < 1e-9  # mouth straight below the eyes: rotation removed
    left = transform_points(pts[[0, 6, 12, 18]], m).mean(0)
    right = transform_points(pts[[24, 30, 36, 42]], m).mean(0)
    assert left[1] == pytest.approx(right[1])  # eye line horizontal
    s = dsize / rect.side
    np.testing.assert_allclose(
        m[:2, :2], s * np.array([[math.cos(angle), math.sin(angle)], [-math.sin(angle), math.cos(angle)]]), atol=1e-12
    )
    unrotated = crop_transform(pts, dsize, scale=2.3, vy_ratio=-0.125, rotate=False)
    np.testing.assert_allclose(unrotated[:2, :2], s * np.eye(2), atol=1e-12)
    np.testing.assert_allclose(transform_points(np.array([rect.centre]), unrotated)[0], (256, 256), atol=1e-9)


def test_crop_image_warps_bilinear_with_black_border_and_inverse_matrix() -> None:
    image = np.full((300, 400, 3), 200, np.uint8)
    pts = _place(_face_203(), 0.2, 1.5, (60.0, 150.0))  # near the left edge: the crop leaves the image
    crop = crop_image(image, pts, 128, scale=2.3, vy_ratio=-0.125)
    assert crop.image.shape == (128, 128, 3)
    assert crop.image.dtype == np.uint8
    np.testing.assert_allclose(crop.crop_to_image @ crop.image_to_crop, np.eye(3), atol=1e-9)
    np.testing.assert_allclose(crop.crop_to_image, np.linalg.inv(crop.image_to_crop))
    assert crop.crop_to_image.dtype == np.float64
    # The crop's left part lies outside the image → 0; its centre is inside → the image's value.
    assert crop.image[64, 0].tolist() == [0, 0, 0]
    assert crop.image[64, 100].tolist() == [200, 200, 200]
    # A marker at the crop centre in the image lands at the crop centre.
    marked = np.zeros((300, 400, 3), np.uint8)
    cx, cy = transform_points(np.array([[64.0, 64.0]]), crop.crop_to_image)[0]
    marked[round(cy) - 1 : round(cy) + 2, round(cx) - 1 : round(cx) + 2] = 255
    out = crop_image(marked, pts, 128, scale=2.3, vy_ratio=-0.125).image
    assert out[62:67, 62:67].max() > 100
    assert out[:50].max() == 0


def test_degenerate_axis_falls_back_to_upright() -> None:
    pts = _face_203()
    pts[[0, 6, 12, 18, 24, 30, 36, 42, 48, 66]] = (5.0, 5.0)  # eyes and mouth coincide
    assert crop_rect(pts, 1.5).angle == 0.0


# ---------------------------------------------------------------------------------------------------------------
# SCRFD (§2.8)


def test_letterbox_keeps_aspect_truncates_and_reports_det_scale() -> None:
    wide = np.full((200, 300, 3), 9, np.uint8)
    canvas, det_scale = letterbox(wide)
    assert canvas.shape == (512, 512, 3)
    assert det_scale == pytest.approx(341 / 200)  # new height int(512 · 200/300) = 341
    assert canvas[340, 511].tolist() == [9, 9, 9]
    assert canvas[341:].max() == 0
    tall = np.full((300, 200, 3), 9, np.uint8)
    canvas, det_scale = letterbox(tall)
    assert det_scale == pytest.approx(512 / 300)
    assert canvas[511, 340].tolist() == [9, 9, 9]
    assert canvas[:, 341:].max() == 0


def test_detector_blob_swaps_channels_and_normalises() -> None:
    canvas = np.zeros((512, 512, 3), np.uint8)
    canvas[..., 0] = 255  # red in an RGB frame
    blob = detector_blob(canvas)
    assert blob.shape == (1, 3, 512, 512)
    assert blob.dtype == np.float32
    np.testing.assert_allclose(blob[0, :, 0, 0], [(0 - 127.5) / 128, (0 - 127.5) / 128, (255 - 127.5) / 128])


def test_anchor_centres_are_row_major_and_repeated_per_anchor() -> None:
    centres = anchor_centres(32)
    assert centres.shape == (16 * 16 * 2, 2)
    assert centres[0].tolist() == centres[1].tolist() == [0, 0]
    assert centres[2].tolist() == [32, 0]  # next column
    assert centres[2 * 16].tolist() == [0, 32]  # next row


def _raw_outputs() -> dict[str, np.ndarray]:
    out = {}
    for level, stride in enumerate((8, 16, 32), start=1):
        n = (512 // stride) ** 2 * 2
        out[f"scores{level}"] = np.zeros((n, 1), np.float32)
        out[f"boxes{level}"] = np.zeros((n, 4), np.float32)
        out[f"kps{level}"] = np.zeros((n, 10), np.float32)
    return out


def _put(
    out: dict[str, np.ndarray],
    level: int,
    x: int,
    y: int,
    anchor: int,
    score: float,
    dist: tuple[float, float, float, float],
    kps: np.ndarray | None = None,
) -> None:
    stride = (8, 16, 32)[level - 1]
    side = 512 // stride
    i = 2 * (y * side + x) + anchor
    out[f"scores{level}"][i] = score
    out[f"boxes{level}"][i] = dist
    if kps is not None:
        out[f"kps{level}"][i] = kps


def test_decode_detections_maps_distances_keypoints_and_scale() -> None:
    out = _raw_outputs()
    kps = np.array([-1, -1, 1, -1, 0, 0, -1, 1, 1, 1], np.float32)
    _put(out, 1, x=10, y=20, anchor=1, score=0.9, dist=(2, 3, 4, 5), kps=kps)  # centre (80, 160), stride 8
    _put(out, 3, x=3, y=4, anchor=0, score=0.49, dist=(1, 1, 1, 1))  # below the 0.5 threshold
    found = decode_detections(out, det_scale=0.5)
    assert len(found) == 1
    det = found[0]
    np.testing.assert_allclose(det.box, np.array([80 - 16, 160 - 24, 80 + 32, 160 + 40]) / 0.5)
    assert det.score == pytest.approx(0.9)
    np.testing.assert_allclose(det.keypoints, (np.array([80, 160]) + kps.reshape(5, 2) * 8) / 0.5)
    # Exactly at the threshold counts.
    _put(out, 3, x=3, y=4, anchor=0, score=0.5, dist=(1, 1, 1, 1))
    assert len(decode_detections(out)) == 2


def test_nms_uses_the_inclusive_pixel_convention() -> None:
    # Boxes 10 px wide shifted by 4: IoU 60/140 = 0.43 with "+1" sizes, 45/117 = 0.38 without.
    boxes = np.array([[0, 0, 9, 9], [4, 0, 13, 9], [100, 100, 120, 120]], np.float32)
    scores = np.array([0.9, 0.8, 0.7], np.float32)
    assert nms(boxes, scores, 0.4) == [0, 2]
    # Shifted by 5: 50/150 = 0.33 → both kept.
    boxes[1] = (5, 0, 14, 9)
    assert nms(boxes, scores, 0.4) == [0, 1, 2]
    # Order is by score, not by input position.
    assert nms(boxes, np.array([0.1, 0.8, 0.7], np.float32), 0.4) == [1, 2, 0]


def test_detect_faces_returns_largest_first_in_image_pixels() -> None:
    out = _raw_outputs()
    _put(out, 1, x=5, y=5, anchor=0, score=0.99, dist=(2, 2, 2, 2))  # small, most confident
    _put(out, 3, x=8, y=8, anchor=1, score=0.7, dist=(3, 3, 3, 3))  # large: 192 px in the letterbox
    seen: list[np.ndarray] = []

    def detector(image: np.ndarray) -> dict[str, np.ndarray]:
        seen.append(image)
        return out

    image = np.zeros((1024, 1024, 3), np.uint8)  # det_scale 0.5
    faces = detect_faces(image, detector)
    assert [f.score for f in faces] == pytest.approx([0.7, 0.99])
    np.testing.assert_allclose(faces[0].box, np.array([256 - 96, 256 - 96, 256 + 96, 256 + 96]) * 2)
    assert seen[0].shape == (1, 3, 512, 512)


# ---------------------------------------------------------------------------------------------------------------
# Landmark nets (§2.9, §2.10)


def test_landmark106_crop_and_mapping_back() -> None:
    box = (100.0, 50.0, 180.0, 170.0)  # 80 × 120, centre (140, 110)
    image = np.zeros((300, 300, 3), np.uint8)
    image[108:113, 138:143, 0] = 255  # red marker at the box centre
    seen: list[np.ndarray] = []
    raw = np.zeros((106, 2), np.float32)
    raw[1] = (-1, -1)
    raw[2] = (1, 1)

    def net(data: np.ndarray) -> dict[str, np.ndarray]:
        seen.append(data)
        return {"fc1": raw.reshape(1, 212)}

    points = landmark106(image, box, net)
    s = 192 / (1.5 * 120)
    np.testing.assert_allclose(points[0], (140, 110), atol=1e-9)
    np.testing.assert_allclose(points[1], np.array([140, 110]) - 96 / s, atol=1e-9)
    np.testing.assert_allclose(points[2], np.array([140, 110]) + 96 / s, atol=1e-9)
    blob = seen[0]
    assert blob.shape == (1, 3, 192, 192)
    assert blob[0, 2, 96, 96] == pytest.approx(255)
    assert blob[0, 0, 96, 96] == 0
    np.testing.assert_allclose(landmark106_matrix(box)[:2, 2], (96 - 140 * s, 96 - 110 * s))


def test_landmark203_crop_and_mapping_back() -> None:
    anchor = _place(_face_203(), 0.25, 1.2, (160.0, 150.0))
    image = np.zeros((320, 320, 3), np.uint8)
    image[..., 0] = 51
    raw = np.full((203, 2), 0.5, np.float32)
    raw[1] = (0.0, 0.0)
    seen: list[np.ndarray] = []

    def net(input: np.ndarray) -> dict[str, np.ndarray]:
        seen.append(input)
        return {"landmarks": raw.reshape(1, 406)}

    points, crop = landmark203(image, anchor, net)
    rect = crop_rect(anchor, 1.5, 0.0, -0.1)
    np.testing.assert_allclose(points[0], rect.centre, atol=1e-9)  # crop centre (112, 112)
    np.testing.assert_allclose(points[1], transform_points(np.zeros((1, 2)), crop.crop_to_image)[0], atol=1e-9)
    assert seen[0].shape == (1, 3, 224, 224)
    assert seen[0][0, 0, 112, 112] == pytest.approx(0.2)
    assert seen[0][0, 2, 112, 112] == 0


# ---------------------------------------------------------------------------------------------------------------
# Eye features (§4.4)


def _eye_landmarks() -> np.ndarray:
    pts = np.zeros((478, 3))
    pts[33], pts[133] = (0.3, 0.4, 0), (0.4, 0.4, 0)  # left eye, width 0.1
    for (lower, upper), gap in zip(((145, 159), (144, 160), (153, 158)), (0.02, 0.01, 0.01), strict=True):
        pts[upper] = (0.35, 0.39, 0)
        pts[lower] = (0.35, 0.39 + gap, 0)
    pts[263], pts[362] = (0.7, 0.4, 0), (0.6, 0.4, 0)  # right eye, width 0.1
    for (lower, upper), gap in zip(((374, 386), (373, 387), (380, 385)), (0.03, 0.015, 0.015), strict=True):
        pts[upper] = (0.65, 0.39, 0)
        pts[lower] = (0.65, 0.39 + gap, 0)
    pts[468] = (0.35, 0.41, 0.005)  # left iris: down and back from the eye centre
    pts[473] = (0.66, 0.4, 0.0)  # right iris: towards the outer corner
    return pts


def test_eye_features_match_the_formulas_and_layout() -> None:
    eye_open, eye_ball = eye_features(_eye_landmarks()[None])
    assert eye_open.shape == (1, 2)
    assert eye_ball.shape == (1, 6)
    np.testing.assert_allclose(eye_open[0], [0.04 / 0.1, 0.06 / 0.1], rtol=1e-6)
    offset = np.array([0.0, 0.01, 0.005])
    length = np.linalg.norm(offset)
    move_l = (offset / length - np.array([-1.0, 0.0, 0.0])) * length  # outer corner 33 is to the left of 133
    move_r = np.zeros(3)  # iris along the eye direction: (unit − unit) · d = 0
    expected = np.stack([move_l, move_r], -1).reshape(6)  # (L_x, R_x, L_y, R_y, L_z, R_z)
    np.testing.assert_allclose(eye_ball[0], expected, atol=1e-7)
    assert eye_ball[0, 0] == pytest.approx(length)
    assert eye_ball[0, 2] == pytest.approx(0.01)


def test_eye_features_are_finite_on_degenerate_points() -> None:
    eye_open, eye_ball = eye_features(np.zeros((478, 3)))
    assert np.all(eye_open == 0)
    assert np.all(eye_ball == 0)
    with pytest.raises(ValueError, match="478"):
        eye_features(np.zeros((1, 468, 3)))


def test_eye_features_from_203_use_the_lid_gap_ratio() -> None:
    pts = np.zeros((203, 2))
    pts[0], pts[12], pts[6], pts[18] = (0, 0), (10, 0), (5, -1.5), (5, 1.5)
    pts[24], pts[36], pts[30], pts[42] = (20, 0), (40, 0), (30, -1), (30, 1)
    eye_open, eye_ball = eye_features_from_203(pts)
    factor = 1 + 2 * math.sqrt(0.75)
    np.testing.assert_allclose(eye_open, [[0.3 * factor, 0.1 * factor]], rtol=1e-6)
    np.testing.assert_array_equal(eye_ball, DEFAULT_EYE_BALL)


# ---------------------------------------------------------------------------------------------------------------
# Temporal smoothing (§4.3)


def test_smoothing_is_a_truncated_centred_mean_over_every_field() -> None:
    motions = [
        {"kp": np.full((1, 63), float(i), np.float32), "pitch": np.full((1, 66), 2.0 * i, np.float32)}
        for i in range(10)
    ]
    out = smooth_motions(motions, 3)
    assert [float(m["kp"][0, 0]) for m in out] == pytest.approx([0.5, 1, 2, 3, 4, 5, 6, 7, 8, 8.5])
    assert float(out[0]["pitch"][0, 5]) == pytest.approx(1.0)
    assert out[0]["kp"].shape == (1, 63)
    assert out[0]["kp"].dtype == np.float32
    wide = smooth_motions(motions, 13)  # window [i-6, i+6], cut at the ends
    assert float(wide[0]["kp"][0, 0]) == pytest.approx(np.mean(range(7)))
    assert float(wide[9]["kp"][0, 0]) == pytest.approx(np.mean(range(3, 10)))
    even = smooth_motions(motions, 4)  # half-width 2 each side, as the reference
    assert float(even[5]["kp"][0, 0]) == pytest.approx(np.mean([3, 4, 5, 6, 7]))
    assert float(smooth_motions(motions, 1)[3]["kp"][0, 0]) == 3.0
    assert float(motions[0]["kp"][0, 0]) == 0.0  # inputs untouched


def test_detection_area() -> None:
    assert Detection((0, 0, 10, 20), 0.9, np.zeros((5, 2))).area == 200
