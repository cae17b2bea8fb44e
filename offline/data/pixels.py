"""Pixel conventions shared by training, evaluation and streaming (pure: numpy and torch only).

uint8 RGB <-> the models' float range [-1, 1] (channels first), and RGB -> gray with BT.601 luma (OpenCV's
RGB2GRAY weights), the one gray conversion of the flow package, motion masks and the flow cache.
"""
from __future__ import annotations

import numpy as np
import torch


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


# ITU-R BT.601 luma, OpenCV's RGB2GRAY weights
LUMA = (0.299, 0.587, 0.114)


def rgb_to_gray255(frames_rgb: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 RGB -> (...) float32 luma in [0, 255]; numpy twin of `model_to_gray255` for uint8 frames."""
    return frames_rgb.astype(np.float32) @ np.asarray(LUMA, dtype=np.float32)


def model_to_gray255(frames: torch.Tensor, channel_dim: int = 1) -> torch.Tensor:
    """Model-range frames in [-1, 1] with 3 (RGB) or 1 channel(s) on `channel_dim` -> luma in [0, 255], dim removed."""
    c = frames.shape[channel_dim]
    if c == 1:
        gray = frames.select(channel_dim, 0)
    elif c == 3:
        r, g, b = (frames.select(channel_dim, i) for i in range(3))
        gray = LUMA[0] * r + LUMA[1] * g + LUMA[2] * b
    else:
        raise ValueError(f"frames must have 1 or 3 channels on dim {channel_dim}, got {c} (shape {tuple(frames.shape)})")
    return ((gray.float() + 1.0) * 127.5).clamp(0.0, 255.0)
