"""Decoding adapters: PyAV for video files, OpenCV for image frames; every failure becomes a DataError
that names the file and the frame index."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterator

import av
import cv2
import numpy as np

from offline.data.clips import DataError

logger = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".avi", ".mov")
IMAGE_EXTENSIONS = (".tif", ".tiff", ".jpg", ".jpeg", ".png", ".bmp")


def probe_video(path: Path) -> tuple[int, float]:
    """(frame count, fps) of a video: the container's count, else its video packets counted (no decoding)."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise DataError(f"{path}: no video stream")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate
            fps = float(rate) if rate else 0.0
            count = stream.frames
            if count <= 0:
                count = sum(1 for packet in container.demux(stream) if packet.size > 0)
    except av.error.FFmpegError as exc:
        raise DataError(f"{path}: cannot open as a video: {exc}") from None
    return int(count), fps


def decode_video(path: Path, strict: bool = True) -> Iterator[np.ndarray]:
    """RGB frames (H, W, 3) uint8 of the first video stream, in order; gray sources give 3 equal channels.

    `strict` asks FFmpeg to fail on bitstream errors instead of concealing them (a corrupt packet then
    raises here rather than decoding into garbage).
    """
    try:
        container = av.open(str(path))
    except av.error.FFmpegError as exc:
        raise DataError(f"{path}: cannot open as a video: {exc}") from None
    with container:
        if not container.streams.video:
            raise DataError(f"{path}: no video stream")
        stream = container.streams.video[0]
        if strict:
            stream.codec_context.options = {"err_detect": "explode"}
        index = 0
        try:
            for frame in container.decode(stream):
                yield frame.to_ndarray(format="rgb24")
                index += 1
        except av.error.FFmpegError as exc:
            raise DataError(f"{path}: decode failed at frame {index}: {exc}") from None


def read_image(path: Path, index: int) -> np.ndarray:
    """One image frame as RGB (H, W, 3) uint8; gray images give 3 equal channels."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        reason = "missing" if not path.exists() else "unreadable or corrupt image"
        raise DataError(f"{path}: frame {index}: {reason}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def decode_images(files: tuple[Path, ...]) -> Iterator[np.ndarray]:
    """RGB frames from image files in order; all must have the first frame's size."""
    shape = None
    for index, path in enumerate(files):
        image = read_image(path, index)
        if shape is None:
            shape = image.shape
        elif image.shape != shape:
            raise DataError(
                f"{path}: frame {index} is {image.shape[1]}x{image.shape[0]}, "
                f"the clip's first frame is {shape[1]}x{shape[0]}"
            )
        yield image


def resize(frame: np.ndarray, size: int | tuple[int, int] | None) -> np.ndarray:
    """Resize an (H, W, C) frame to (size, size, C) or (h, w, C) with area interpolation; None or the same size: as is.

    The project's one resize: dataset readers and live ingest (streaming.ingest) both call it, so a bundle sees
    camera frames prepared exactly like the frames it was trained on.
    """
    if frame.ndim != 3:
        raise ValueError(f"resize expects an (H, W, C) frame, got shape {frame.shape}")
    if size is None:
        return frame
    h, w = (size, size) if isinstance(size, int) else size
    if h < 1 or w < 1:
        raise ValueError(f"resize size must be positive, got {size}")
    if frame.shape[:2] == (h, w):
        return frame
    out = cv2.resize(np.ascontiguousarray(frame), (w, h), interpolation=cv2.INTER_AREA)
    return out if out.ndim == 3 else out[..., None]  # OpenCV drops a single channel axis
