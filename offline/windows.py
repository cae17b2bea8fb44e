"""Which windows to score for a clip and which window gives each frame its score (pure)."""
from __future__ import annotations

import numpy as np

from offline.readers.windows import window_starts


def plan_windows(n_frames: int, window: int = 16, stride: int = 16, frame: str = "all") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Plan windows covering every frame of a clip.

    frame="all": windows every `stride` frames, plus one aligned to the clip's end, each frame scored by the
    last window that contains it. frame="center": every frame is scored as the 9th (index window // 2) frame
    of its own window (LNTRA), windows clamped at the clip's ends; `stride` is ignored.

    Returns (starts (W,), window_of_frame (N,), offset_of_frame (N,)).
    """
    if n_frames < window:
        raise ValueError(f"a clip of {n_frames} frames is shorter than one window of {window}")
    if frame == "center":
        centre = window // 2
        starts_per_frame = np.clip(np.arange(n_frames) - centre, 0, n_frames - window)
        starts, which = np.unique(starts_per_frame, return_inverse=True)
        return starts, which, np.arange(n_frames) - starts_per_frame
    if frame != "all":
        raise ValueError(f"frame must be 'all' or 'center', got {frame!r}")
    starts_arr = np.array(window_starts(n_frames, window, stride, cover_end=True))
    which = np.empty(n_frames, dtype=np.int64)
    for i, s in enumerate(starts_arr):
        which[s : s + window] = i
    return starts_arr, which, np.arange(n_frames) - starts_arr[which]
