"""Where windows start in a clip: training/scoring window starts, a window's flow pairs, the evaluation plan (pure).

`window_starts` places windows every `stride` frames; `flow_pair_index` says which frame pairs make a window's
flow; `plan_windows` picks the windows that score every frame of a clip and which window scores which frame.
"""
from __future__ import annotations

import numpy as np


def window_starts(num_frames: int, window: int, stride: int, cover_end: bool = True) -> list[int]:
    """First frame of each window of `window` frames taken every `stride` frames.

    With `cover_end`, one more window ending on the last frame is added when the regular ones miss
    the tail, so every frame lies in some window (that window overlaps the one before it).
    Clips shorter than `window` give no windows.
    """
    if window < 1 or stride < 1:
        raise ValueError(f"window and stride must be >= 1, got window={window}, stride={stride}")
    if num_frames < window:
        return []
    starts = list(range(0, num_frames - window + 1, stride))
    if cover_end and starts[-1] + window < num_frames:
        starts.append(num_frames - window)
    return starts


def flow_pair_index(start: int, window: int) -> np.ndarray:
    """Which frame pairs (pair i = flow from frame i to i+1) make a window's flow: index t is pair start + t, the
    last index repeats the previous one (a window of T frames has T - 1 pairs; `window_flow`'s convention)."""
    return np.minimum(np.arange(start, start + window), start + window - 2)


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
