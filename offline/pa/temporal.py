"""Temporal pseudo-anomaly: mix the flow patch under a mask's bounding box with a same-sized patch elsewhere (pure).

`P_t`: with box p' (the mask's bounding box) and a random box p_r' of the same size, p' becomes
`lam * p' + (1 - lam) * p_r'`, `lam ~ Beta(0.4, 0.4)`, over every frame of a flow window (METHOD.md).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

Box = tuple[int, int, int, int]  # (y0, x0, h, w)


@dataclass(frozen=True)
class FlowMixup:
    """The random draw of one temporal PA: the target box, the source corner (y, x) and the mixing weight."""

    box: Box
    source: tuple[int, int]
    lam: float


def sample_flow_mixup(box: Box, height: int, width: int, rng: np.random.Generator, alpha: float = 0.4) -> FlowMixup:
    """Draw lam ~ Beta(alpha, alpha) and a same-sized source box uniformly inside the (height, width) frame."""
    y0, x0, h, w = box
    if h < 1 or w < 1 or y0 < 0 or x0 < 0 or y0 + h > height or x0 + w > width:
        raise ValueError(f"box {box} (y0, x0, h, w) does not fit a {height}x{width} frame")
    sy = int(rng.integers(0, height - h + 1))
    sx = int(rng.integers(0, width - w + 1))
    return FlowMixup(box=box, source=(sy, sx), lam=float(rng.beta(alpha, alpha)))


def apply_flow_mixup(flow: torch.Tensor, mix: FlowMixup) -> torch.Tensor:
    """Mix one patch of a flow window: (C, T, H, W) or (B, C, T, H, W) -> same shape; a new tensor.

    Both patches are read from the input, so overlapping source and target boxes are handled correctly.
    """
    if flow.ndim not in (4, 5):
        raise ValueError(f"flow must be (C, T, H, W) or (B, C, T, H, W), got shape {tuple(flow.shape)}")
    y0, x0, h, w = mix.box
    sy, sx = mix.source
    height, width = flow.shape[-2:]
    if y0 + h > height or x0 + w > width or sy + h > height or sx + w > width:
        raise ValueError(f"mixup boxes {mix} do not fit a {height}x{width} flow")
    out = flow.clone()
    target = flow[..., y0 : y0 + h, x0 : x0 + w]
    source = flow[..., sy : sy + h, sx : sx + w]
    out[..., y0 : y0 + h, x0 : x0 + w] = mix.lam * target + (1.0 - mix.lam) * source
    return out


def flow_mixup(
    flow: torch.Tensor, box: Box, rng: np.random.Generator, alpha: float = 0.4
) -> tuple[torch.Tensor, FlowMixup]:
    """Temporal PA of a whole flow window (C, T, H, W) or (B, C, T, H, W); returns (PA flow, the draw)."""
    mix = sample_flow_mixup(box, flow.shape[-2], flow.shape[-1], rng, alpha)
    return apply_flow_mixup(flow, mix), mix
