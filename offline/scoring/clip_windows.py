"""One clip's windows through a detector: its flow computed once, windows slicing frames and flow (pure of I/O).

`vad eval`'s protocols and the bundle's calibration both score a whole clip's windows; overlapping windows share
frame pairs, so TV-L1 runs once per pair, not once per window.
"""
from __future__ import annotations

import numpy as np
import torch

from offline.data.pixels import model_to_gray255, to_model_range
from offline.data.windows import flow_pair_index


def clip_flow(detector, x: torch.Tensor, batch: int = 64) -> torch.Tensor:
    """Encoded flow of every consecutive pair of a clip, once: (3, N, H, W) frames -> (3, N - 1, H, W); each window
    then gets exactly the pairs `window_flow` would compute for it."""
    from offline.flow import encode_flow
    from offline.flow.cache import clip_flow as pair_flow

    gray = model_to_gray255(x, channel_dim=0).numpy()  # (N, H, W) in [0, 255], window_flow's conversion
    raw = torch.from_numpy(pair_flow(gray, detector.flow_estimator, batch, dtype=np.float32))
    return encode_flow(raw, detector.config.flow.clip).permute(1, 0, 2, 3)


def window_of_flow(flow: torch.Tensor, start: int, window: int) -> torch.Tensor:
    """(3, T, H, W) window of clip flow: index t is flow t -> t+1, the last index repeats the previous one."""
    return flow[:, torch.from_numpy(flow_pair_index(start, window))]


def prepare(detector, frames: np.ndarray) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(N, H, W, 3) uint8 frames -> ((3, N, H, W) in [-1, 1], the clip's encoded flow when the detector needs it)."""
    x = to_model_range(frames)
    return x, (clip_flow(detector, x) if detector.needs_flow else None)


def score_windows(detector, x: torch.Tensor, flow: torch.Tensor | None, starts, batch: int):
    """Detector.score over windows starting at `starts`, in order: yields (start, window scores, index in batch)."""
    for i in range(0, len(starts), batch):
        chunk = starts[i : i + batch]
        windows = torch.stack([x[:, s : s + detector.window] for s in chunk])
        flows = None if flow is None else torch.stack([window_of_flow(flow, s, detector.window) for s in chunk])
        ws = detector.score(windows, flow=flows)
        for b, s in enumerate(chunk):
            yield int(s), ws, b
