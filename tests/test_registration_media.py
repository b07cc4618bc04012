"""Loading portraits: the resize rule, image modes, hostile files, videos and their limits (ditto_spec.md §4.1)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest
from PIL import Image, ImageFile

from ditto_demo.errors import InputError
from ditto_demo.pipeline.media import fit_size, load_image, load_media, looks_like_video


@pytest.mark.parametrize(
    ("size", "max_size", "expected"),
    [
        ((4000, 3001), 1920, (1920, 1440)),  # 3001 · 1920/4000 = 1440.48 → 1440
        ((3001, 4000), 1920, (1440, 1920)),  # portrait orientation: the height is the long side
        ((1921, 1080), 1920, (1920, 1078)),  # 1079.44 → 1079 → floored to even
        ((641, 481), 1920, (640, 480)),  # no downscale, but odd sides lose a pixel
        ((1920, 1080), 1920, (1920, 1080)),
        ((5001, 3001), 0, (5000, 3000)),  # max_size ≤ 0: no limit
        ((3000, 3000), 1000, (1000, 1000)),
    ],
)
def test_fit_size_follows_the_reference_rule(size: tuple[int, int], max_size: int, expected: tuple[int, int]) -> None:
    assert fit_size(*size, max_size) == expected


def test_fit_size_refuses_a_one_pixel_picture() -> None:
    with pytest.raises(InputError, match="at least 2 pixels"):
        fit_size(1, 500)


def test_image_is_resized_bilinear_to_the_working_size(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    Image.new("RGB", (4000, 3001), (10, 200, 30)).save(path)
    frame = load_image(path, min_side=1)
    assert frame.shape == (1440, 1920, 3)
    assert frame.dtype == np.uint8
    assert frame[700, 900].tolist() == [10, 200, 30]


def test_png_alpha_is_composited_on_white(tmp_path: Path) -> None:
    rgba = np.zeros((4, 6, 4), np.uint8)
    rgba[:, :2] = (255, 0, 0, 255)  # opaque red
    rgba[:, 2:4] = (0, 0, 0, 0)  # transparent black
    rgba[:, 4:] = (0, 0, 255, 128)  # half-transparent blue
    path = tmp_path / "alpha.png"
    Image.fromarray(rgba, "RGBA").save(path)
    media = load_media(path, min_side=1)
    frame = media.frames[0]
    assert media.is_image
    assert media.fps is None
    assert frame.shape == (4, 6, 3)
    assert frame[0, 0].tolist() == [255, 0, 0]
    assert frame[0, 2].tolist() == [255, 255, 255]
    np.testing.assert_allclose(frame[0, 4], [127, 127, 255], atol=2)


def test_cmyk_jpeg_becomes_rgb(tmp_path: Path) -> None:
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(path, quality=95)  # pure red in CMYK
    frame = load_image(path, min_side=1)
    assert frame.shape == (16, 16, 3)
    np.testing.assert_allclose(frame[8, 8], [255, 0, 0], atol=12)


def test_16_bit_grayscale_is_scaled_to_8_bits(tmp_path: Path) -> None:
    values = np.array([[0, 256, 65535, 32768]], np.uint16).repeat(2, axis=0)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    frame = load_image(path, min_side=1)
    assert frame.shape == (2, 4, 3)
    assert frame[0, :, 0].tolist() == [0, 1, 255, 128]
    assert np.all(frame[..., 0] == frame[..., 2])


def test_grayscale_and_palette_images_become_rgb(tmp_path: Path) -> None:
    gray = tmp_path / "gray.png"
    Image.new("L", (4, 4), 77).save(gray)
    assert load_image(gray, min_side=1)[0, 0].tolist() == [77, 77, 77]
    palette = tmp_path / "palette.gif"
    Image.new("RGB", (4, 4), (0, 128, 255)).convert("P").save(palette)
    np.testing.assert_allclose(load_image(palette, min_side=1)[0, 0], [0, 128, 255], atol=40)
    assert load_image(palette, min_side=1).shape == (4, 4, 3)


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :20] = (255, 0, 0)  # left half red
    pixels[:, 20:] = (0, 0, 255)
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    path = tmp_path / "rotated.jpg"
    image.save(path, exif=exif, quality=95)
    frame = load_image(path, min_side=1)
    assert frame.shape == (40, 20, 3)  # portrait now
    assert frame[5, 10, 0] > 200  # the red (left) half went to the top
    assert frame[5, 10, 2] < 50
    assert frame[35, 10, 2] > 200


def test_content_decides_not_the_extension(tmp_path: Path) -> None:
    png_named_mp4 = tmp_path / "photo.mp4"
    Image.new("RGB", (8, 6), (1, 2, 3)).save(png_named_mp4, format="PNG")
    media = load_media(png_named_mp4, min_side=1)
    assert media.is_image
    assert media.frames[0].shape == (6, 8, 3)


def test_text_file_named_png_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_text("hello, this is not a picture\n")
    with pytest.raises(InputError, match=r"notes\.png is not an image or video we can read .*use a JPG, PNG or WebP"):
        load_media(path)


def test_empty_and_missing_files_are_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        load_media(empty)
    with pytest.raises(InputError, match="does not exist"):
        load_media(tmp_path / "nope.png")
    with pytest.raises(InputError, match="folder"):
        load_media(tmp_path)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_image_is_refused(tmp_path: Path, fmt: str) -> None:
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    path = tmp_path / f"cut.{fmt.lower()}"
    Image.fromarray(noise).save(path, format=fmt)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"not an image or video we can read.*truncated"):
        load_media(path)


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` × ``height`` but which carries almost no data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    data = chunk(b"IDAT", zlib.compress(b"\x00" * 64))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + data + chunk(b"IEND", b"")


@pytest.mark.parametrize(("width", "height"), [(8000, 6000), (100_000, 100_000)])
def test_decompression_bomb_is_refused_before_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, width: int, height: int
) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_header_only(width, height))

    def no_decoding(self: ImageFile.ImageFile) -> None:
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    with pytest.raises(InputError, match="40 MP"):
        load_media(path)


def test_max_pixels_is_an_argument(tmp_path: Path) -> None:
    path = tmp_path / "small.png"
    Image.new("RGB", (100, 100)).save(path)
    with pytest.raises(InputError, match=r"100x100 pixels .* more than the 0\.005 MP"):
        load_media(path, max_pixels=5000)
    assert load_media(path, max_pixels=10_000).frames[0].shape == (100, 100, 3)


# ---------------------------------------------------------------------------------------------------------------
# Videos


def _write_video(path: Path, frames: int, size: tuple[int, int] = (64, 48), fps: float = 25) -> Path:
    writer = imageio_ffmpeg.write_frames(str(path), size, fps=fps, macro_block_size=1, ffmpeg_log_level="error")
    writer.send(None)
    for i in range(frames):
        frame = np.zeros((size[1], size[0], 3), np.uint8)
        frame[..., 0] = 20 * i  # the frame index, readable through compression
        writer.send(frame)
    writer.close()
    return path


def test_video_frames_fps_and_order(tmp_path: Path) -> None:
    media = load_media(_write_video(tmp_path / "clip.mp4", 10))
    assert not media.is_image
    assert media.fps == pytest.approx(25)
    assert len(media.frames) == 10
    assert media.frames[0].shape == (48, 64, 3)
    assert media.frames[0].dtype == np.uint8
    reds = [int(f[24, 32, 0]) for f in media.frames]
    assert reds == sorted(reds)
    assert abs(reds[-1] - 180) < 12


def test_video_is_detected_by_content(tmp_path: Path) -> None:
    path = _write_video(tmp_path / "clip.mp4", 3)
    disguised = tmp_path / "clip.png"
    disguised.write_bytes(path.read_bytes())
    media = load_media(disguised)
    assert not media.is_image
    assert len(media.frames) == 3
    assert looks_like_video(path.read_bytes()[:64])
    assert not looks_like_video(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)


def test_video_frames_are_resized_from_the_first_frame(tmp_path: Path) -> None:
    media = load_media(_write_video(tmp_path / "wide.mp4", 2, size=(100, 60)), max_size=50)
    assert [f.shape for f in media.frames] == [(30, 50, 3)] * 2
    assert media.original_size == (100, 60)


def test_first_frames_selects_but_limits_refuse(tmp_path: Path) -> None:
    path = _write_video(tmp_path / "clip.mp4", 10)
    assert len(load_media(path, first_frames=4).frames) == 4
    with pytest.raises(InputError, match="more than 5 frames"):
        load_media(path, max_frames=5)
    assert len(load_media(path, max_frames=10).frames) == 10
    with pytest.raises(InputError, match=r"longer than 0\.2 seconds"):
        load_media(path, max_seconds=0.2)
    assert len(load_media(path, max_seconds=0.4).frames) == 10
    # Only the frames kept count against the limits.
    assert len(load_media(path, max_seconds=0.2, max_frames=5, first_frames=4).frames) == 4
    with pytest.raises(InputError, match=r"64x48 pixels \(0\.0 MP\), more than the 0\.0001 MP"):
        load_media(path, max_pixels=100)


def test_video_without_frames_is_refused(tmp_path: Path) -> None:
    path = _write_video(tmp_path / "nothing.mp4", 0)
    assert path.exists()
    with pytest.raises(InputError, match=r"nothing\.mp4 contains no video frames"):
        load_media(path)


def test_broken_video_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "broken.mp4"
    path.write_bytes(b"\x00\x00\x00\x20ftypisom" + b"\x13" * 200)
    with pytest.raises(InputError, match=r"broken\.mp4 (is not an image or video we can read|contains no video)"):
        load_media(path)


def test_tiny_image_is_refused_with_advice(tmp_path: Path) -> None:
    from PIL import Image

    from ditto_demo.pipeline.media import load_media

    path = tmp_path / "icon.png"
    Image.new("RGB", (48, 300), (200, 180, 160)).save(path)
    with pytest.raises(InputError, match=r"only 48×300 pixels.*front-facing photo at least 64 pixels"):
        load_media(path)
