"""Small synthetic clips for the training tests: bright squares moving over a textured background."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from offline.config import load_config
from offline.data.clips import Clip
from offline.training.data import ClipData

TINY = {"data.size": 32, "data.window": 16, "data.train_stride": 4, "model.channels": [8, 8, 16],
        "train.batch_size": 4, "train.log_every": 1, "pa.spatial": "none", "pa.temporal": "none"}


def moving_squares(n_frames: int = 40, size: int = 32, seed: int = 0) -> np.ndarray:
    """(N, size, size, 1) uint8 gray frames: a static texture with two squares moving at constant speed."""
    rng = np.random.default_rng(seed)
    bg = (rng.integers(40, 90, (size, size)) + 0).astype(np.uint8)
    frames = np.repeat(bg[None], n_frames, axis=0).copy()
    for i in range(n_frames):
        for k, (y, v) in enumerate(((4, 1), (18, 2))):
            x = (3 + v * i + 7 * k) % (size - 6)
            frames[i, y : y + 6, x : x + 6] = 220
    return frames[..., None]


def synthetic_data(clips: int = 2, n_frames: int = 40, size: int = 32) -> list[ClipData]:
    out = []
    for c in range(clips):
        frames = moving_squares(n_frames, size, seed=c)
        clip = Clip(id=f"syn{c}", split="train", path=Path(f"synthetic/{c}"), num_frames=n_frames)
        out.append(ClipData(clip, frames))
    return out


def tiny_config(out_dir: Path, **overrides):
    values = {**TINY, "train.out_dir": str(out_dir), "data.root": "synthetic"}
    values.update({k.replace("__", "."): v for k, v in overrides.items()})
    return load_config(None, values)
