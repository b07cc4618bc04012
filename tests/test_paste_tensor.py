"""The device paste-back (CPU torch here): it must reproduce the host cv2 paste-back, and the renderer's tensor path
must give exactly the frames of the host path.

Measured on this suite's CPU (OpenCV 5.0, FMA): with the formula :func:`remap_model` detects, TensorPasteBack is
bit-identical to PasteBack on every case below (max difference 0, no differing pixel). The bound asserted allows
one channel of one pixel per case to be off by one grey level, the float64 emulation of a fused multiply-add can
in principle round differently about once in 2²⁹ operations.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from ditto_demo.engine.backends.torch_backend import TorchNetwork
from ditto_demo.pipeline.audio import hubert_features, load_audio
from ditto_demo.pipeline.conditioning import Conditioning
from ditto_demo.pipeline.controls import Controls
from ditto_demo.pipeline.frames import FrameRenderer
from ditto_demo.pipeline.motion import generate_motion
from ditto_demo.pipeline.paste_tensor import (
    REMAP_MODELS,
    TensorPasteBack,
    decoder_output_to_tensor,
    make_paste_back,
    remap_model,
    remap_tensor,
    sampling_maps_tensor,
)
from ditto_demo.pipeline.pipeline import Pipeline
from ditto_demo.pipeline.plan import emotion_for, motion_options, stitch_options
from ditto_demo.pipeline.render import (
    PasteBack,
    _sampling_maps,
    crop_footprint,
    decoder_output_to_image,
    render_to_uint8,
)
from ditto_demo.pipeline.stitching import MotionStitcher
from ditto_demo.pipeline.types import Source
from ditto_demo.testing.reference import compose_output

ASSETS = Path(__file__).resolve().parents[1] / "assets"
PORTRAIT = ASSETS / "portrait_illustration.png"


def _similarity(angle: float, scale: float, tx: float, ty: float) -> np.ndarray:
    a = np.radians(angle)
    c, s = np.cos(a) * scale, np.sin(a) * scale
    return np.array([[c, -s, tx], [s, c, ty], [0, 0, 1]], dtype=np.float64)


def _custom_mask() -> np.ndarray:
    """A mask unlike the template: a soft disc with values outside [0, 1] (alpha is clipped after the warp)."""
    yy, xx = np.mgrid[0:512, 0:512].astype(np.float32)
    radius = np.hypot(xx - 250.3, yy - 270.9) / 230
    return (1.2 - radius).astype(np.float32)


#: (crop → frame transform, frame (width, height), mask or None for the template)
CASES = {
    "rotated_scaled_translated": (_similarity(17.5, 1.37, 260.3, -40.7), (1000, 620), None),
    "hd_face": (_similarity(-4, 1.31, 700.2, 180.9), (1920, 1080), None),
    "shrunk": (_similarity(-8, 0.41, 33.3, 21.9), (320, 240), None),
    "partly_outside": (_similarity(-30, 0.9, -150.2, 300.6), (480, 640), None),
    "fully_outside": (_similarity(10, 1.0, 5000.0, -4000.0), (300, 200), None),
    "odd_sized_frame": (_similarity(3, 0.75, 11.5, 5.25), (411, 389), None),
    "custom_mask": (_similarity(-12, 1.1, 90.7, 40.1), (701, 655), _custom_mask()),
}


def _inputs(case: str) -> tuple[np.ndarray, np.ndarray]:
    """A random frame and a decoder output partly outside [0, 1] (the clipping is part of the contract)."""
    _, (width, height), _ = CASES[case]
    rng = np.random.default_rng(len(case))
    frame = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    output = rng.uniform(-0.1, 1.1, (1, 3, 512, 512)).astype(np.float32)
    return frame, output


def _agreement(ours: np.ndarray, host: np.ndarray) -> tuple[int, int]:
    """(max |difference| in grey levels, number of differing channel values)."""
    diff = np.abs(ours.astype(np.int16) - host.astype(np.int16))
    return int(diff.max()), int((diff > 0).sum())


# -- the sampling formula ---------------------------------------------------------------------------------------------
def test_detected_formula_reproduces_cv2_remap_exactly() -> None:
    model = remap_model()
    assert model in REMAP_MODELS
    rng = np.random.default_rng(7)
    for channels in (1, 3):
        image = rng.uniform(-50, 300, (37, 53, channels)).astype(np.float32)
        map_x = rng.uniform(-4, 57, (29, 61)).astype(np.float32)
        map_y = rng.uniform(-4, 41, (29, 61)).astype(np.float32)
        expected = cv2.remap(image[..., 0] if channels == 1 else image, map_x, map_y, cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_CONSTANT, borderValue=0).reshape(29, 61, channels)
        planes = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        got = remap_tensor(planes, torch.from_numpy(map_x), torch.from_numpy(map_y)).permute(1, 2, 0).numpy()
        np.testing.assert_array_equal(got, expected)


def test_formulas_differ_where_documented() -> None:
    """The table formula snaps to 1/32 pixel (0.01 → 0, 0.02 → 1/32); the lerps do not; outside reads 0."""
    image = torch.tensor([[[0.0, 100.0], [200.0, 300.0]]])  # (1, 2, 2)
    map_x = torch.tensor([[0.01, 0.02, -0.5, 1.5]])
    map_y = torch.zeros((1, 4))
    table = remap_tensor(image, map_x, map_y, "table")[0, 0].tolist()
    lerp = remap_tensor(image, map_x, map_y, "lerp")[0, 0].tolist()
    assert table[:2] == [0.0, 100.0 / 32]
    assert lerp[:2] == pytest.approx([1.0, 2.0], abs=1e-5)
    # Half a pixel outside on either side: half of the edge pixel, half of the constant 0 border.
    for values in (table, lerp, remap_tensor(image, map_x, map_y, "lerp_fma")[0, 0].tolist()):
        assert values[2:] == [0.0, 50.0]


def test_sampling_maps_are_the_hosts_bit_for_bit() -> None:
    for m, (width, height), _ in CASES.values():
        box = crop_footprint(m, (width, height))
        host_x, host_y = _sampling_maps(m, box)
        ours_x, ours_y = sampling_maps_tensor(m, box, torch.device("cpu"))
        np.testing.assert_array_equal(ours_x.numpy(), host_x)
        np.testing.assert_array_equal(ours_y.numpy(), host_y)


# -- TensorPasteBack against PasteBack --------------------------------------------------------------------------------
@pytest.mark.parametrize("case", list(CASES))
def test_tensor_paste_back_matches_the_host(case: str) -> None:
    m, _, mask = CASES[case]
    frame, output = _inputs(case)
    host = PasteBack(mask)(decoder_output_to_image(output), frame, m)
    ours = TensorPasteBack(mask)(torch.from_numpy(output), frame, m)
    assert ours.dtype == np.uint8
    assert ours.shape == frame.shape
    largest, count = _agreement(ours, host)
    assert largest <= 1
    assert count <= 1  # observed: 0 (bit-identical) in every case
    if case == "fully_outside":
        np.testing.assert_array_equal(ours, frame)
        assert ours is not frame


def test_empty_box_does_no_device_work_and_copies_the_frame() -> None:
    paste = TensorPasteBack()
    frame = np.full((50, 60, 3), 9, np.uint8)
    out = paste(torch.rand(1, 3, 512, 512), frame, _similarity(0, 1, -2000, 0))
    np.testing.assert_array_equal(out, frame)
    out[0, 0] = 0
    assert frame[0, 0, 0] == 9
    assert paste._placement is not None
    assert paste._placement.taps is None


def test_placement_and_background_are_cached_only_while_valid() -> None:
    m, _, _ = CASES["rotated_scaled_translated"]
    frame, output = _inputs("rotated_scaled_translated")
    render = torch.from_numpy(output)
    host = PasteBack()
    paste = TensorPasteBack()

    frozen = frame.copy()
    frozen.flags.writeable = False
    first = paste(render, frozen, m)
    placement, background = paste._placement, paste._background
    assert background is not None  # a read-only frame's background term is kept
    second = paste(render * 0.5, frozen, m)
    assert paste._placement is placement
    assert paste._background is background
    np.testing.assert_array_equal(first, host(decoder_output_to_image(output), frozen, m))
    np.testing.assert_array_equal(second, host(decoder_output_to_image(output * 0.5), frozen, m))

    # A writable frame is read every call, so changing it in place shows in the next result.
    writable = frame.copy()
    paste(render, writable, m)
    assert paste._background_of is frozen  # never the writable one
    writable[::3] = 255 - writable[::3]
    np.testing.assert_array_equal(paste(render, writable, m), host(decoder_output_to_image(output), writable, m))

    # Another transform or frame size builds a new placement, and still matches.
    moved = m @ _similarity(0, 1, 3.5, -2.25)
    np.testing.assert_array_equal(paste(render, writable, moved), host(decoder_output_to_image(output), writable,
                                                                       moved))
    assert paste._placement is not placement
    smaller = np.ascontiguousarray(writable[:301, :457])
    np.testing.assert_array_equal(paste(render, smaller, moved), host(decoder_output_to_image(output), smaller,
                                                                      moved))


def test_float16_render_is_upcast_first() -> None:
    m, _, _ = CASES["odd_sized_frame"]
    frame, output = _inputs("odd_sized_frame")
    half = torch.from_numpy(output).to(torch.float16)
    assert half.device.type == "cpu"
    ours = TensorPasteBack()(half, frame, m)
    host = PasteBack()(decoder_output_to_image(half.to(torch.float32).numpy()), frame, m)
    np.testing.assert_array_equal(ours, host)
    # The host conversion of the fp16 array itself gives the same image (clip then exact upcast).
    np.testing.assert_array_equal(decoder_output_to_image(half.numpy()), decoder_output_to_tensor(half).permute(
        1, 2, 0).numpy())


def test_crop_and_conversion_match_the_host_helpers() -> None:
    output = np.random.default_rng(3).uniform(-0.2, 1.2, (1, 3, 512, 512)).astype(np.float32)
    image = decoder_output_to_image(output)
    np.testing.assert_array_equal(decoder_output_to_tensor(torch.from_numpy(output)).permute(1, 2, 0).numpy(), image)
    crop = TensorPasteBack().crop(torch.from_numpy(output))
    np.testing.assert_array_equal(crop, render_to_uint8(image))
    np.testing.assert_array_equal(crop, compose_output("crop", None, image, np.zeros((4, 4, 3), np.uint8)))
    np.testing.assert_array_equal(PasteBack().crop(image), crop)


def test_inputs_are_validated() -> None:
    paste = TensorPasteBack()
    frame = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(ValueError, match="decoder output"):
        paste(torch.zeros(1, 3, 256, 256), frame, np.eye(3))
    with pytest.raises(ValueError, match="decoder output"):
        paste(torch.zeros(3, 512, 512), frame, np.eye(3))
    with pytest.raises(ValueError, match="uint8 frame"):
        paste(torch.zeros(1, 3, 512, 512), frame.astype(np.float32), np.eye(3))
    with pytest.raises(ValueError, match="square"):
        TensorPasteBack(np.zeros((4, 5), np.float32))


def test_make_paste_back_picks_by_device() -> None:
    assert type(make_paste_back("cpu")) is PasteBack
    assert type(make_paste_back(torch.device("cpu"))) is PasteBack
    for device in ("cuda", torch.device("cuda", 1), "meta", "mps"):  # nothing is allocated on the device yet
        assert type(make_paste_back(device)) is TensorPasteBack
    mask = _custom_mask()
    np.testing.assert_array_equal(make_paste_back("cpu", mask).mask, mask)
    np.testing.assert_array_equal(make_paste_back("cuda", mask).mask, mask)


# -- the renderer: tensor path == host path == the numpy path it replaced ----------------------------------------------
@pytest.fixture(scope="module")
def pipeline(tiny_root: Path) -> Pipeline:
    return Pipeline(tiny_root, backend="torch", device="cpu")


def _video_like(source: Source) -> Source:
    """The portrait as a two-frame "video": the second frame has another appearance and a moved crop."""
    from dataclasses import replace

    first = source.frames[0]
    appearance = (first.appearance * np.float32(0.9) + np.float32(0.05)).astype(np.float32)
    appearance.flags.writeable = False
    crop_to_image = first.crop_to_image @ _similarity(2.0, 1.02, 3.25, -4.5)
    crop_to_image.flags.writeable = False
    second = replace(first, appearance=appearance, crop_to_image=crop_to_image)
    return replace(source, frames=(first, second), is_image=False, fps=25.0)


def _keypoints(pipeline: Pipeline, source: Source, frames: int) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """Stitched (index, x_s, x_d) for ``frames`` frames of real motion on the tiny networks."""
    controls = Controls(steps=2, seed=5)
    defaults = pipeline.defaults("pytorch")
    options = motion_options(controls, defaults)
    audio = load_audio(ASSETS / "speech_en.wav")[: frames * 640]
    features = hubert_features(pipeline.networks["hubert"], audio)
    conditioning = Conditioning.from_source(source, emotion_for(controls, defaults, frames),
                                            eye_f0_mode=defaults.eye_from_first_frame)
    motion = generate_motion(conditioning.rows(features), conditioning.source_motion, pipeline.networks["lmdm"],
                             options)
    stitcher = MotionStitcher(source, stitch_options(controls, defaults, source, frames, options.seed), frames,
                              pipeline.networks["stitch_network"])
    renderer = FrameRenderer(pipeline.networks, source, stitcher, "full")
    return [next(renderer.stitch((index, row))) for index, row in enumerate(motion[:frames])]


def _numpy_path(pipeline: Pipeline, source: Source, keypoints: list, framing: str) -> list[np.ndarray]:
    """The renderer as it was before the tensor path: host arrays in and out of both networks, cv2 paste-back."""
    paste = PasteBack()
    frames = []
    for index, x_s, x_d in keypoints:
        frame = source.frame(index)
        out = pipeline.networks["warp_network"](feature_3d=frame.appearance, kp_source=x_s, kp_driving=x_d)["out"]
        render = decoder_output_to_image(pipeline.networks["decoder"](feature=out)["output"])
        pasted = None if framing == "crop" else paste(render, frame.image, frame.crop_to_image)
        frames.append(compose_output(framing, pasted, render, frame.image))
    return frames


def _render(renderer: FrameRenderer, keypoints: list) -> list[np.ndarray]:
    frames = []
    for item in keypoints:
        for warped in renderer.warp(item):
            for decoded in renderer.decode(warped):
                frames.extend(image for _, image in renderer.compose(decoded))
    return frames


@pytest.mark.parametrize("framing", ["full", "crop", "side_by_side"])
def test_renderer_tensor_path_equals_the_host_path(pipeline: Pipeline, framing: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    source = _video_like(pipeline.register(PORTRAIT, Controls()))
    keypoints = _keypoints(pipeline, source, 5)
    expected = _numpy_path(pipeline, source, keypoints, framing)

    host_calls: list[str] = []
    original_run = TorchNetwork._run

    def counting_run(self: TorchNetwork, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        host_calls.append(self.name)
        return original_run(self, feeds)

    monkeypatch.setattr(TorchNetwork, "_run", counting_run)
    host_renderer = FrameRenderer(pipeline.networks, source, None, framing)  # type: ignore[arg-type]
    host_frames = _render(host_renderer, keypoints)
    assert type(host_renderer.paste) is PasteBack  # the decoder is on the CPU
    device_renderer = FrameRenderer(pipeline.networks, source, None, framing, paste=TensorPasteBack())  # type: ignore[arg-type]
    device_frames = _render(device_renderer, keypoints)
    # Neither path goes through the host-array call (and its read-only feature copy) of warp or decoder.
    assert "warp_network" not in host_calls
    assert "decoder" not in host_calls

    assert len(host_frames) == len(device_frames) == len(expected) == 5
    for want, host, device in zip(expected, host_frames, device_frames, strict=True):
        np.testing.assert_array_equal(host, want)
        np.testing.assert_array_equal(device, want)
    # Frames 0, 1, 1, 0, 0 of the two-frame source: both features stay uploaded, nothing more.
    assert len(device_renderer._features) == 2


def test_appearance_is_uploaded_once_per_source_frame(pipeline: Pipeline) -> None:
    source = _video_like(pipeline.register(PORTRAIT, Controls()))
    renderer = FrameRenderer(pipeline.networks, source, None, "full")  # type: ignore[arg-type]
    cpu = torch.device("cpu")
    first = renderer.appearance(source.frames[0], cpu)
    assert renderer.appearance(source.frames[0], cpu) is first
    np.testing.assert_array_equal(first.numpy(), source.frames[0].appearance)
    second = renderer.appearance(source.frames[1], cpu)
    assert second is not first
    assert renderer.appearance(source.frames[0], cpu) is first  # both fit in the cache
    from dataclasses import replace

    third = replace(source.frames[0], appearance=source.frames[1].appearance)
    renderer.appearance(third, cpu)
    assert len(renderer._features) == FrameRenderer.FEATURE_CACHE_SIZE  # bounded: the oldest went
    assert renderer.appearance(source.frames[1], cpu) is not second
