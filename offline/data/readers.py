"""Datasets for training and evaluation: open any supported layout and decode its clips, frame by frame.

The dataset path is configuration (`data.root`); nothing is copied into the repository. Layout detection
and label files live in `offline.data.layouts` / `.labels`, decoding in `offline.data.decode`, window
placement in `offline.data.windows` and pixel conversion in `offline.data.pixels` (pure). Every read problem
raises `DataError` naming the file and frame.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np

from offline.data.clips import Clip, DataError, Dataset
from offline.data.decode import decode_images, decode_video, resize
from offline.data.layouts import LAYOUTS, LOADERS, detect_layout

if TYPE_CHECKING:
    from offline.config import DataConfig

logger = logging.getLogger(__name__)

__all__ = ["Clip", "DataError", "Dataset", "open_dataset", "open_from_config", "read_frames"]


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
