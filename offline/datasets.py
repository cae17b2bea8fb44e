"""Datasets for training and evaluation: open any supported layout, decode clips, cut 16-frame windows.

The dataset path is configuration (`data.root`); nothing is copied into the repository. Layout detection
and label files live in `offline.readers.layouts` / `.labels`, decoding in `offline.readers.decode`,
window maths in `offline.readers.windows` (pure). Every read problem raises `DataError` naming the file
and frame.
"""
from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np
import torch

from offline.readers.base import Clip, DataError, Dataset
from offline.readers.decode import decode_images, decode_video, resize
from offline.readers.layouts import LAYOUTS, LOADERS, detect_layout
from offline.readers.windows import from_model_range, to_model_range, window_starts

if TYPE_CHECKING:
    from offline.config import DataConfig

logger = logging.getLogger(__name__)

__all__ = [
    "Clip", "DataError", "Dataset", "Window", "WindowDataset", "from_model_range", "iter_windows",
    "open_dataset", "open_from_config", "read_frames", "to_model_range", "window_starts",
]


def open_dataset(
    root: str | Path,
    layout: str = "auto",
    labels: str | Path | None = None,
    image_fps: float = 10.0,
    clips: list[str] | None = None,
) -> Dataset:
    """Find the train and test clips under `root`.

    Args:
        layout: "auto" (detect), "shared", "ucsd", "frames", "avenue" or "videos".
        labels: an explicit label file (labels.json or a concatenated .npy) for the frames/Avenue layouts.
        image_fps: nominal frame rate of image-sequence clips, which carry none.
        clips: keep only these clip ids.
    """
    root = Path(root).expanduser()
    if layout == "auto":
        layout = detect_layout(root)
    elif layout not in LOADERS:
        raise DataError(f"data.layout: unknown layout {layout!r}; expected 'auto' or one of {list(LAYOUTS)}")
    elif not root.exists():
        raise DataError(f"{root}: dataset path does not exist (data.root)")
    dataset = LOADERS[layout](root, labels=Path(labels) if labels else None, image_fps=image_fps)
    if not dataset.clips:
        raise DataError(f"{root}: layout {layout!r} found no clips")
    logger.info("%s: %s layout, %d train / %d test clips", root, layout, len(dataset.train), len(dataset.test))
    return dataset.select(clips)


def open_from_config(cfg: "DataConfig") -> Dataset:
    """`open_dataset` with the `data` section of the config (root, layout, clips)."""
    return open_dataset(cfg.root, cfg.layout, clips=cfg.clips)


def read_frames(clip: Clip, size: int | None = 256, strict: bool = True) -> Iterator[np.ndarray]:
    """RGB frames (size, size, 3) uint8 of one clip, in order (size None: original size).

    The number of frames is checked against `clip.num_frames`: a clip that ends early (truncated file)
    raises DataError naming the file, frame and expected count; `strict` also fails on corrupt packets.
    """
    source = decode_images(clip.frame_files) if clip.frame_files else decode_video(clip.path, strict=strict)
    index = -1
    for index, frame in enumerate(source):
        if index >= clip.num_frames:
            if clip.count_from == "labels":
                raise DataError(f"{clip.path}: has more than the {clip.num_frames} frames its labels give (frame {index})")
            logger.warning("%s: more frames than the container's count %d; ignoring the rest", clip.path, clip.num_frames)
            return
        yield resize(frame, size)
    if index + 1 < clip.num_frames:
        expected = {"labels": "its labels give", "files": "frame files", "container": "the container says"}[clip.count_from]
        raise DataError(
            f"{clip.path}: ends after {index + 1} frames (failed at frame {index + 1}), "
            f"expected {clip.num_frames} ({expected}); truncated or corrupt file"
        )


@dataclass(frozen=True)
class Window:
    """`window` consecutive frames of one clip: `frames` (3, T, H, W) float32 in [-1, 1], first frame `start`."""

    frames: torch.Tensor
    clip_id: str
    start: int


def iter_windows(
    clip: Clip, size: int = 256, window: int = 16, stride: int = 16, cover_end: bool = True, strict: bool = True
) -> Iterator[Window]:
    """Windows of a clip, decoded once, streaming (at most `window` frames kept in memory).

    With `cover_end` (default) a last window ending on the clip's final frame is added when the regular
    windows miss the tail, so every frame is scored; it overlaps the previous window (place scores by `start`).
    """
    starts = deque(window_starts(clip.num_frames, window, stride, cover_end))
    if not starts:
        logger.warning("%s: %d frames, fewer than one window of %d; skipped", clip.path, clip.num_frames, window)
        return
    buffer: deque[tuple[int, np.ndarray]] = deque()
    for index, frame in enumerate(read_frames(clip, size, strict)):
        if index < starts[0]:
            continue  # stride > window: a gap between windows
        buffer.append((index, frame))
        while starts and index == starts[0] + window - 1:
            s = starts.popleft()
            chunk = np.stack([f for i, f in buffer if s <= i < s + window])
            yield Window(to_model_range(chunk), clip.id, s)
        if not starts:
            return
        while buffer and buffer[0][0] < starts[0]:
            buffer.popleft()


class WindowDataset(torch.utils.data.Dataset):
    """All windows of some clips for training, frames decoded once and kept as uint8.

    Gray clips (R = G = B everywhere, like Ped2) are stored with one channel, a third of the memory.
    Item: (frames (3, T, H, W) float32 in [-1, 1], clip index, start frame).
    """

    def __init__(self, clips: list[Clip], size: int = 256, window: int = 16, stride: int = 1, strict: bool = True):
        self.clips = list(clips)
        self.size, self.window, self.stride = size, window, stride
        self._frames: list[np.ndarray] = []
        self.index: list[tuple[int, int]] = []
        for ci, clip in enumerate(self.clips):
            frames = np.stack(list(read_frames(clip, size, strict)))
            if (frames[..., :1] == frames[..., 1:]).all():
                frames = np.ascontiguousarray(frames[..., :1])
            self._frames.append(frames)
            self.index.extend((ci, s) for s in window_starts(len(frames), window, stride, cover_end=False))
        logger.info(
            "%d windows from %d clips (%.0f MB of frames)",
            len(self.index), len(self.clips), sum(f.nbytes for f in self._frames) / 2**20,
        )

    def __len__(self) -> int:
        return len(self.index)

    def frames(self, clip_index: int) -> np.ndarray:
        """All frames of one clip, (N, size, size, 3) uint8 RGB."""
        f = self._frames[clip_index]
        return np.repeat(f, 3, axis=-1) if f.shape[-1] == 1 else f

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int]:
        ci, start = self.index[i]
        chunk = self._frames[ci][start : start + self.window]
        if chunk.shape[-1] == 1:
            chunk = np.repeat(chunk, 3, axis=-1)
        return to_model_range(chunk), ci, start
