"""The per-frame stages: motion rows → stitched keypoints → warped feature → decoded face → output frame.

Both ways of running the pipeline (a whole file, or a stream) end in the same four stages, each a method of
:class:`FrameRenderer` that the :class:`~ditto_demo.pipeline.runner.Runner` runs on a thread of its own:

    stitch (host) → warp (device) → decode (device) → compose (host or device, then host)

What crosses a thread is a plain item: ``(index, row)`` or a :class:`MotionRow` into stitch, ``(index, x_s,
x_d)`` into warp, ``(index, tensor)`` into decode and compose. Each stage owns what it mutates (the stitcher
belongs to the stitch thread, the appearance cache to the warp thread), so no stage reaches into another's object
across threads. :func:`tile_frames` lays several variants side by side for ``compare``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ditto_demo.pipeline.motion_space import unpack_motion
from ditto_demo.pipeline.networks import Networks
from ditto_demo.pipeline.paste_tensor import TensorPasteBack, make_paste_back
from ditto_demo.pipeline.render import PasteBack, pasted_output
from ditto_demo.pipeline.runner import Stage
from ditto_demo.pipeline.stitching import MotionStitcher
from ditto_demo.pipeline.types import Source, SourceFrame

__all__ = ["FrameRenderer", "MotionRow", "RowNumberer", "tile_frames"]


@dataclass(frozen=True)
class MotionRow:
    """One output frame's motion row (265,), numbered; a stream's frame 0 also carries the relative-motion anchor.

    Offline the stitcher takes its anchor ``d0`` from the first row it sees; a stream's anchor is the motion of
    the first LMDM clip's first frame, which only the motion stage knows. It travels with frame 0 through the
    queue, so the stitch thread sets it on its own stitcher instead of the motion thread reaching over.
    """

    index: int
    row: np.ndarray
    anchor: np.ndarray | None = None


class RowNumberer:
    """Numbers a stream's motion rows as output frames and attaches the anchor to frame 0 (motion thread only)."""

    def __init__(self, anchor: Any) -> None:
        #: ``anchor()`` returns the first frame's motion row; called once, after the first clip exists.
        self._anchor = anchor
        self.next_index = 0

    def number(self, rows: list[np.ndarray]) -> list[MotionRow]:
        numbered = []
        for row in rows:
            anchor = self._anchor() if self.next_index == 0 else None
            numbered.append(MotionRow(self.next_index, row, anchor))
            self.next_index += 1
        return numbered


class FrameRenderer:
    """The per-frame stages shared by both paths: stitch → warp → decode → compose.

    Warp and decode call the networks' tensor fast path (``run_tensors``), so between them nothing leaves the
    device: the source frame's appearance feature is uploaded once per source frame (a still portrait: once per
    request) instead of being copied in and out of host memory every frame. The paste-back comes from
    :func:`make_paste_back` for the decoder's device: on the CPU it is the host's cv2 paste-back (the decoder
    output is turned into a host image in the decode stage, with bit-identical results); elsewhere the render
    stays on the device and only the pasted face box comes back. ``paste`` overrides the choice (tests, bench).
    """

    #: Source frames whose appearance stays uploaded. Frames arrive in order (a still image: always frame 0; a video:
    #: ping-pong, each frame once or twice in a row), so one entry would do; the second is cheap slack. Bounded so a
    #: long video never holds more than two features on the device.
    FEATURE_CACHE_SIZE = 2

    def __init__(
        self,
        networks: Networks,
        source: Source,
        stitcher: MotionStitcher,
        framing: str,
        *,
        paste: PasteBack | TensorPasteBack | None = None,
    ) -> None:
        self.networks = networks
        self.source = source
        self.stitcher = stitcher
        self.framing = framing
        # Chosen by the decode stage's first frame (the decoder's device is known once it is loaded), then used by
        # the compose stage's single thread; the queue between the two orders the hand-over.
        self.paste = paste
        self._features: OrderedDict[tuple[int, torch.device], tuple[SourceFrame, torch.Tensor]] = OrderedDict()

    def stitch(self, item: MotionRow | tuple[int, np.ndarray]) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """Final source and driving keypoints of one frame (stitch thread: the only user of the stitcher)."""
        row = item if isinstance(item, MotionRow) else MotionRow(*item)
        if row.anchor is not None:
            self.stitcher.set_d0(unpack_motion(row.anchor))
        x_s, x_d = self.stitcher(row.index, unpack_motion(row.row))
        yield row.index, x_s, x_d

    def appearance(self, frame: SourceFrame, device: torch.device) -> torch.Tensor:
        """``frame``'s appearance feature on ``device``, uploaded on first use (warp stage thread only).

        Entries hold their ``SourceFrame``, so the ``id`` in the key cannot be reused by another frame meanwhile.
        """
        key = (id(frame), device)
        entry = self._features.get(key)
        if entry is None or entry[0] is not frame:
            entry = (frame, torch.tensor(frame.appearance, dtype=torch.float32, device=device))
            self._features[key] = entry
            while len(self._features) > self.FEATURE_CACHE_SIZE:
                self._features.popitem(last=False)
        else:
            self._features.move_to_end(key)
        return entry[1]

    def warp(self, item: tuple[int, np.ndarray, np.ndarray]) -> Iterator[tuple[int, torch.Tensor]]:
        index, x_s, x_d = item
        network = self.networks["warp_network"]
        device = network.torch_device
        feature = self.appearance(self.source.frame(index), device)
        out = network.run_tensors(
            feature_3d=feature, kp_source=_keypoints(x_s, device), kp_driving=_keypoints(x_d, device)
        )["out"]
        # Outputs may be views of buffers the network reuses, and the next frame's warp runs while this one is
        # decoded: hand over a copy.
        yield index, out.clone()

    def decode(self, item: tuple[int, torch.Tensor]) -> Iterator[tuple[int, np.ndarray | torch.Tensor]]:
        index, feature = item
        network = self.networks["decoder"]
        if self.paste is None:
            self.paste = make_paste_back(network.torch_device)
        yield index, self.paste.prepare(network.run_tensors(feature=feature)["output"])

    def compose(self, item: tuple[int, np.ndarray | torch.Tensor]) -> Iterator[tuple[int, np.ndarray]]:
        index, render = item
        frame = self.source.frame(index)
        paste: Any = self.paste  # PasteBack takes the host image, TensorPasteBack the device tensor decode made
        if self.framing == "crop":
            yield index, paste.crop(render)
            return
        pasted = paste(render, frame.image, frame.crop_to_image)
        yield index, pasted_output(self.framing, pasted, frame.image)

    def stages(self) -> list[Stage]:
        return [
            Stage("stitch", self.stitch),
            Stage("warp", self.warp),
            Stage("decode", self.decode),
            Stage("compose", self.compose),
        ]


def _keypoints(points: np.ndarray, device: torch.device) -> torch.Tensor:
    """Keypoints (1, 21, 3) as a float32 tensor on ``device`` (the binding dtype: run_tensors does not cast)."""
    return torch.tensor(np.asarray(points, dtype=np.float32), device=device)


def tile_frames(
    tiles: list[tuple[str, np.ndarray]], columns: int | None = None, *, max_size: tuple[int, int] | None = None
) -> np.ndarray:
    """Frames side by side (``columns`` per row), each labelled in its top-left corner; even output sides.

    ``max_size`` (width, height) shrinks every tile alike so the whole canvas fits, for grids that must play on a
    phone (1920×1080 keeps H.264 within level 4.1). Labels sit in a filled dark box, readable on any background.
    """

    columns = max(1, min(columns or len(tiles), len(tiles)))
    rows = -(-len(tiles) // columns)
    height = max(t.shape[0] for _, t in tiles)
    width = max(t.shape[1] for _, t in tiles)
    scale = 1.0
    if max_size is not None:
        scale = min(1.0, max_size[0] / (columns * width), max_size[1] / (rows * height))
    if scale < 1.0:
        tiles = [(label, _shrink(image, scale)) for label, image in tiles]
        height = max(t.shape[0] for _, t in tiles)
        width = max(t.shape[1] for _, t in tiles)
    canvas = np.zeros((rows * height + rows * height % 2, columns * width + columns * width % 2, 3), np.uint8)
    for index, (label, image) in enumerate(tiles):
        top, left = (index // columns) * height, (index % columns) * width
        canvas[top:top + image.shape[0], left:left + image.shape[1]] = image
        if label:
            _draw_label(canvas, label, left, top, width)
    return canvas


def _shrink(image: np.ndarray, scale: float) -> np.ndarray:
    import cv2

    size = (max(2, round(image.shape[1] * scale)), max(2, round(image.shape[0] * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def _draw_label(canvas: np.ndarray, label: str, left: int, top: int, tile_width: int) -> None:
    """White text in a filled, slightly transparent dark box at the tile's top-left corner."""
    import cv2

    scale = max(0.5, tile_width / 640)
    thickness = max(1, round(2 * scale))
    (text_w, text_h), baseline = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    pad = max(4, round(8 * scale))
    x0, y0 = left + pad, top + pad
    x1 = min(canvas.shape[1], x0 + text_w + 2 * pad)
    y1 = min(canvas.shape[0], y0 + text_h + baseline + 2 * pad)
    box = canvas[y0:y1, x0:x1]
    box[:] = (box.astype(np.float32) * 0.25 + np.array([20, 20, 20], np.float32) * 0.75).astype(np.uint8)
    cv2.putText(canvas, label, (x0 + pad, y0 + pad + text_h), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255),
                thickness, cv2.LINE_AA)
