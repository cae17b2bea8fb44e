"""The classical reference scorer: mean absolute difference between consecutive frames (pure numpy).

It needs no training, so it exercises the evaluation chain (normalisers, metrics, plots) on real footage and
gives a floor any learned model should beat.
"""
from __future__ import annotations

import numpy as np


def frame_difference(frames: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) or (N, H, W) uint8/float frames -> (N,) mean |frame_t - frame_{t-1}| (frame 0 copies frame 1)."""
    x = np.asarray(frames, dtype=np.float32)
    if x.ndim == 4:
        x = x.mean(axis=-1)
    if x.ndim != 3 or len(x) < 2:
        raise ValueError(f"need (N, H, W[, 3]) frames with N >= 2, got shape {np.shape(frames)}")
    diff = np.abs(np.diff(x, axis=0)).mean(axis=(1, 2))
    return np.concatenate([diff[:1], diff]).astype(np.float64)
