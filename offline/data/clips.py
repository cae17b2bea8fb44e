"""The records every layout produces (`Clip`, `Dataset`) and the one error type readers raise (`DataError`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np


class DataError(ValueError):
    """Unreadable, truncated or inconsistent data; the message names the file (and frame) at fault."""


@dataclass(frozen=True, eq=False)  # identity equality: labels is an array
class Clip:
    """One video clip: a video file or a folder of image frames.

    `labels` is a (num_frames,) uint8 array, 1 = anomalous frame, or None when the clip has no labels.
    `count_from` says where `num_frames` came from: "labels" (a label file, checked on decode),
    "files" (image files counted) or "container" (the video's own frame count or packet count).
    """

    id: str
    split: Literal["train", "test"]
    path: Path
    num_frames: int
    labels: np.ndarray | None = None
    fps: float = 10.0
    count_from: Literal["labels", "files", "container"] = "container"
    frame_files: tuple[Path, ...] = field(default=(), repr=False)

    @property
    def is_video(self) -> bool:
        """True for a video file, False for a folder of image frames."""
        return not self.frame_files


@dataclass
class Dataset:
    """The clips found under `root`, split into normal training clips and (possibly labelled) test clips."""

    root: Path
    layout: str
    train: list[Clip]
    test: list[Clip]

    @property
    def clips(self) -> list[Clip]:
        """Training then test clips, in order."""
        return [*self.train, *self.test]

    def select(self, ids: list[str] | None) -> "Dataset":
        """Keep only clips whose id is in `ids` (None keeps all); unknown ids are an error."""
        if ids is None:
            return self
        known = {c.id for c in self.clips}
        missing = sorted(set(ids) - known)
        if missing:
            raise DataError(f"{self.root}: data.clips names unknown clip(s) {missing}; known: {sorted(known)}")
        keep = set(ids)
        return Dataset(self.root, self.layout, [c for c in self.train if c.id in keep], [c for c in self.test if c.id in keep])
