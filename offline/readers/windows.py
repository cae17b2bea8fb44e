"""Window placement and pixel-range conversion (pure: numpy and torch only)."""
from __future__ import annotations

import numpy as np
import torch


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


def scale_uint8(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 pixel values to float32 in [-1, 1], layout unchanged (the models' value range)."""
    x = torch.as_tensor(np.ascontiguousarray(x) if isinstance(x, np.ndarray) else x)
    if x.dtype != torch.uint8:
        raise ValueError(f"expected uint8 pixels, got {x.dtype}")
    return x.to(torch.float32).div_(127.5).sub_(1.0)


def to_model_range(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 RGB frames to float32 in [-1, 1], channels first.

    (H, W, 3) -> (3, H, W); (..., T, H, W, 3) -> (..., 3, T, H, W), e.g. (T, H, W, 3) -> (3, T, H, W).
    """
    x = torch.as_tensor(np.ascontiguousarray(frames) if isinstance(frames, np.ndarray) else frames)
    if x.dtype != torch.uint8 or x.ndim < 3 or x.shape[-1] != 3:
        raise ValueError(f"expected uint8 frames of shape (..., H, W, 3), got {x.dtype} {tuple(x.shape)}")
    x = scale_uint8(x)
    return x.movedim(-1, -3 if x.ndim == 3 else -4)


def from_model_range(x: torch.Tensor | np.ndarray) -> np.ndarray:
    """Inverse of `to_model_range`: float in [-1, 1] (clamped) to uint8 RGB, channels last.

    (3, H, W) -> (H, W, 3); (..., 3, T, H, W) -> (..., T, H, W, 3).
    """
    x = torch.as_tensor(x).detach().to("cpu", torch.float32)
    axis = -3 if x.ndim == 3 else -4
    if x.ndim < 3 or x.shape[axis] != 3:
        raise ValueError(f"expected (3, H, W) or (..., 3, T, H, W), got {tuple(x.shape)}")
    x = x.clamp(-1.0, 1.0).add(1.0).mul(127.5).round().to(torch.uint8)
    return x.movedim(axis, -1).contiguous().numpy()
