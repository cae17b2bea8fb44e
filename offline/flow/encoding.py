"""Flow <-> temporal-AE input: (u, v, magnitude) scaled into [-1, 1], and back; one encoding for training,
evaluation and streaming (pure torch).

u and v are divided by `clip` (pixels per frame) and clamped to [-1, 1]; the magnitude sqrt(u^2 + v^2) of the
unclipped flow is mapped from [0, clip] to [-1, 1] (no motion = -1). decode_flow inverts u and v exactly wherever
|u|, |v| <= clip. The default bound (FlowConfig.clip = 10 px/frame at 256x256) is justified in bench/RESULTS.md:
it keeps more than 99.9 % of Ped2 / vtest flow vectors unclipped.
"""
from __future__ import annotations

import torch


def encode_flow(flow: torch.Tensor, clip: float = 10.0) -> torch.Tensor:
    """(..., 2, H, W) flow in pixels -> (..., 3, H, W) (u, v, magnitude) in [-1, 1]."""
    if flow.dim() < 3 or flow.shape[-3] != 2:
        raise ValueError(f"flow must be (..., 2, H, W), got {tuple(flow.shape)}")
    if not clip > 0:
        raise ValueError(f"flow clip bound must be > 0, got {clip}")
    flow = flow.float()
    uv = (flow / clip).clamp(-1.0, 1.0)
    mag = torch.linalg.vector_norm(flow, dim=-3, keepdim=True)
    return torch.cat((uv, (mag / clip).clamp(0.0, 1.0) * 2.0 - 1.0), dim=-3)


def decode_flow(encoded: torch.Tensor, clip: float = 10.0) -> torch.Tensor:
    """(..., 3, H, W) encoded flow -> (..., 2, H, W) pixels (the magnitude channel is redundant and ignored)."""
    if encoded.dim() < 3 or encoded.shape[-3] != 3:
        raise ValueError(f"encoded flow must be (..., 3, H, W), got {tuple(encoded.shape)}")
    return encoded[..., :2, :, :].float() * clip
