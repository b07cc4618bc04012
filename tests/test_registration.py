"""Source registration end to end on the tiny checkpoint root: image, video, cache, and the no-face paths."""

from __future__ import annotations

import logging
import shutil
import threading
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest
from PIL import Image

from ditto_demo.errors import InputError
from ditto_demo.pipeline.crop import transform_points
from ditto_demo.pipeline.eyes import eye_features_from_203
from ditto_demo.pipeline.networks import Networks
from ditto_demo.pipeline.registration import RegistrationOptions, SourceCache, register_frames, register_source
from ditto_demo.pipeline.types import Source

PORTRAIT = Path(__file__).resolve().parents[1] / "assets" / "portrait_illustration.png"
Net = Callable[..., Mapping[str, np.ndarray]]


class Patched:
    """A ``Networks`` stand-in: the real networks, some replaced, every lookup and call counted."""

    def __init__(self, base: Networks, **overrides: Net) -> None:
        self.base, self.overrides = base, overrides
        self.calls: Counter[str] = Counter()

    def __getitem__(self, name: str) -> Net:
        net = self.overrides.get(name) or self.base[name]

        def counted(**inputs: np.ndarray) -> Mapping[str, np.ndarray]:
            self.calls[name] += 1
            return net(**inputs)

        return counted


@pytest.fixture(scope="module")
def networks(tiny_root: Path) -> Networks:
    return Networks(tiny_root, backend="torch", device="cpu")


@pytest.fixture(scope="module")
def portrait_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10 frames of the portrait at 25 fps (H.264; frames differ slightly through compression)."""
    path = tmp_path_factory.mktemp("video") / "portrait.mp4"
    frame = np.asarray(Image.open(PORTRAIT).convert("RGB"))
    writer = imageio_ffmpeg.write_frames(str(path), (frame.shape[1], frame.shape[0]), fps=25, ffmpeg_log_level="error")
    writer.send(None)
    for _ in range(10):
        writer.send(np.ascontiguousarray(frame))
    writer.close()
    return path


def _check_shapes(source: Source, frames: int, size: tuple[int, int], appearance: tuple[int, ...]) -> None:
    assert len(source.frames) == frames
    assert source.size == size
    assert source.canonical_kp.shape == (63,)
    assert source.faces_found == 1
    for frame in source.frames:
        assert frame.image.shape == (size[1], size[0], 3)
        assert frame.image.dtype == np.uint8
        assert frame.crop_to_image.shape == (3, 3)
        assert frame.crop_to_image.dtype == np.float64
        assert {k: v.shape for k, v in frame.motion.items()} == {
            "pitch": (1, 66),
            "yaw": (1, 66),
            "roll": (1, 66),
            "t": (1, 3),
            "exp": (1, 63),
            "scale": (1, 1),
            "kp": (1, 63),
        }
        assert all(v.dtype == np.float32 for v in frame.motion.values())
        assert frame.appearance.shape == appearance
        assert frame.eye_open.shape == (1, 2)
        assert frame.eye_ball.shape == (1, 6)
        for array in (frame.image, frame.crop_to_image, frame.appearance, frame.eye_open, *frame.motion.values()):
            assert not array.flags.writeable  # shared through the cache: read-only


def test_register_image(networks: Networks) -> None:
    source = register_source(PORTRAIT, networks)
    _check_shapes(source, 1, (512, 640), (1, 2, 2, 32, 32))  # tiny: 2 channels, depth 2, 32×32 grid
    assert source.is_image
    assert source.fps is None
    # The stand-in detector's face: 240 px centred at (256, 256) in the letterbox, det_scale 512/640.
    np.testing.assert_allclose(source.face_box, (170, 170, 470, 470), atol=1e-3)
    np.testing.assert_array_equal(source.canonical_kp, source.frames[0].motion["kp"].reshape(63))
    # The 512 crop's centre lies inside the face box, and the crop is larger than the face (scale 2.3).
    centre = transform_points(np.array([[256.0, 256.0]]), source.frames[0].crop_to_image)[0]
    x1, y1, x2, y2 = source.face_box
    assert x1 < centre[0] < x2
    assert y1 < centre[1] < y2
    assert np.all(np.isfinite(source.frames[0].eye_open))
    assert source.frames[0].eye_open.min() > 0


def test_register_video_tracks_and_smooths(networks: Networks, portrait_video: Path) -> None:
    counter = {"n": 0}
    real_motion = networks["motion_extractor"]

    raw: list[dict[str, np.ndarray]] = []

    def drifting_motion(image: np.ndarray) -> dict[str, np.ndarray]:
        """The real outputs plus the frame index, so the smoothing is visible and checkable."""
        out = {k: v + counter["n"] for k, v in real_motion(image=image).items()}
        counter["n"] += 1
        raw.append(out)
        return out

    patched = Patched(networks, motion_extractor=drifting_motion)
    progress: list[tuple[int, int]] = []
    options = RegistrationOptions(smooth_kernel=5)
    source = register_source(portrait_video, patched, options, progress=lambda *p: progress.append(p))
    _check_shapes(source, 10, (512, 640), (1, 2, 2, 32, 32))
    assert not source.is_image
    assert source.fps == pytest.approx(25)
    assert progress[-1] == (10, 10)
    # Detection and the 106 landmarks run once; later frames track with the previous 203 landmarks.
    assert patched.calls["insightface_det"] == 1
    assert patched.calls["landmark106"] == 1
    assert patched.calls["landmark203"] == 10
    assert patched.calls["landmark478"] == 10
    # canonical_kp is frame 0's raw kp; every field of frame i is the mean of raw frames i-2 .. i+2, the window
    # cut at the ends (3 frames at frame 0, 4 at frame 1, ...).
    np.testing.assert_allclose(source.canonical_kp, raw[0]["kp"].reshape(63), rtol=1e-6)
    for i, frame in enumerate(source.frames):
        window = raw[max(0, i - 2): i + 3]
        for key in ("kp", "pitch", "exp", "scale"):
            expected = np.mean([np.asarray(r[key], np.float64) for r in window], axis=0)
            np.testing.assert_allclose(frame.motion[key], expected, rtol=1e-5, atol=1e-5)


def test_template_frames_registers_only_the_first_frames(networks: Networks, portrait_video: Path) -> None:
    fast = Patched(networks, appearance_extractor=lambda image: {"pred": np.zeros((1, 2, 2, 32, 32), np.float32)})
    source = register_source(portrait_video, fast, RegistrationOptions(template_frames=3))
    assert len(source.frames) == 3
    with pytest.raises(InputError, match="more than 3 frames"):
        register_source(portrait_video, fast, RegistrationOptions(max_frames=3))


def test_cache_reuses_by_content_and_options(networks: Networks, tmp_path: Path) -> None:
    cache = SourceCache(max_entries=2)
    first = cache.get(PORTRAIT, networks)
    assert cache.get(PORTRAIT, networks) is first
    copy = tmp_path / "same_bytes_other_name.png"
    shutil.copy(PORTRAIT, copy)
    assert cache.get(copy, networks) is first  # keyed by content, not by name
    assert (cache.hits, cache.misses) == (2, 1)
    wider = cache.get(PORTRAIT, networks, RegistrationOptions(crop_scale=2.8))
    assert wider is not first
    # A larger crop scale maps the 512 crop onto a larger part of the image.
    assert abs(np.linalg.det(wider.frames[0].crop_to_image)) > abs(np.linalg.det(first.frames[0].crop_to_image))
    assert cache.get(PORTRAIT, networks, RegistrationOptions(crop_scale=2.8)) is wider
    cache.get(PORTRAIT, networks, RegistrationOptions(crop_vy_ratio=0.0))  # third entry: evicts the oldest
    assert len(cache) == 2
    assert cache.get(PORTRAIT, networks) is not first  # was evicted, registered again
    cache.clear()
    assert len(cache) == 0


def test_cache_registers_once_for_concurrent_requests(networks: Networks) -> None:
    patched = Patched(networks)
    cache = SourceCache()
    results: list[Source] = []
    threads = [threading.Thread(target=lambda: results.append(cache.get(PORTRAIT, patched))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 4
    assert all(r is results[0] for r in results)
    assert patched.calls["insightface_det"] == 1


def _no_detections(image: np.ndarray) -> dict[str, np.ndarray]:
    out = {}
    for level, stride in enumerate((8, 16, 32), start=1):
        n = (512 // stride) ** 2 * 2
        out[f"scores{level}"] = np.zeros((n, 1), np.float32)
        out[f"boxes{level}"] = np.ones((n, 4), np.float32)
        out[f"kps{level}"] = np.zeros((n, 10), np.float32)
    return out


def test_no_face_is_an_input_error(networks: Networks, portrait_video: Path) -> None:
    blind = Patched(networks, insightface_det=_no_detections)
    with pytest.raises(InputError) as error:
        register_source(PORTRAIT, blind)
    assert str(error.value) == (
        "No face was found in portrait_illustration.png; use a photo with one clearly visible, front-facing face."
    )
    with pytest.raises(InputError, match=r"No face was found in the first frame of portrait\.mp4"):
        register_source(portrait_video, blind)
    cache = SourceCache()
    with pytest.raises(InputError):
        cache.get(PORTRAIT, blind)
    assert len(cache) == 0  # failures are not cached


def test_several_faces_use_the_largest(networks: Networks, caplog: pytest.LogCaptureFixture) -> None:
    def two_faces(image: np.ndarray) -> dict[str, np.ndarray]:
        out = _no_detections(image)
        out["scores1"][2 * (5 * 64 + 5)] = 0.99  # a small, confident face near the corner (stride 8)
        out["boxes1"][2 * (5 * 64 + 5)] = 2.0
        out["scores3"][2 * (8 * 16 + 8)] = 0.9  # the large centred one (stride 32)
        out["boxes3"][2 * (8 * 16 + 8)] = 120.0 / 32
        return out

    with caplog.at_level(logging.INFO, logger="ditto_demo.pipeline.registration"):
        source = register_source(PORTRAIT, Patched(networks, insightface_det=two_faces))
    assert source.faces_found == 2
    np.testing.assert_allclose(source.face_box, (170, 170, 470, 470), atol=1e-3)
    assert any("2 faces found" in r.getMessage() and "largest" in r.getMessage() for r in caplog.records)


def test_eye_fallback_when_mediapipe_finds_no_face(networks: Networks, caplog: pytest.LogCaptureFixture) -> None:
    def no_mesh(image: np.ndarray) -> dict[str, np.ndarray]:
        raise InputError("No face was found in the crop for the eye landmarks; use a clearer, frontal portrait.")

    points: list[np.ndarray] = []
    real203 = networks["landmark203"]

    def spy203(input: np.ndarray) -> Mapping[str, np.ndarray]:
        out = real203(input=input)
        points.append(out["landmarks"])
        return out

    with caplog.at_level(logging.WARNING):
        source = register_source(PORTRAIT, Patched(networks, landmark478=no_mesh, landmark203=spy203))
    frame = source.frames[0]
    assert np.all(frame.eye_ball == 0)
    # Openness is scale-free, so the 203 points in crop units give the same value as in image pixels.
    expected, _ = eye_features_from_203(points[0].reshape(203, 2))
    np.testing.assert_allclose(frame.eye_open, expected, rtol=1e-5)
    assert any("estimated from the 203 landmarks" in r.getMessage() for r in caplog.records)


def test_register_frames_rejects_an_empty_list_and_bad_options(networks: Networks) -> None:
    with pytest.raises(InputError, match="no frames"):
        register_frames([], networks, is_image=True)
    with pytest.raises(InputError, match="crop_scale"):
        RegistrationOptions(crop_scale=0)
    with pytest.raises(InputError, match="smooth_kernel"):
        RegistrationOptions(smooth_kernel=0)
    with pytest.raises(InputError, match="template_frames"):
        RegistrationOptions(template_frames=0)


def test_crop_options_move_the_crop(networks: Networks) -> None:
    fast = Patched(networks, appearance_extractor=lambda image: {"pred": np.zeros((1, 2, 2, 32, 32), np.float32)})
    base = register_source(PORTRAIT, fast).frames[0].crop_to_image
    shifted = register_source(PORTRAIT, fast, RegistrationOptions(crop_vx_ratio=0.1)).frames[0].crop_to_image
    side = np.hypot(base[0, 0], base[1, 0]) * 512  # crop side in image pixels
    moved = transform_points(np.array([[256.0, 256.0]]), shifted) - transform_points(np.array([[256.0, 256.0]]), base)
    assert np.hypot(*moved[0]) == pytest.approx(0.1 * side, rel=1e-6)
