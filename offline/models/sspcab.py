"""SSPCAB (Ristea et al., CVPR 2022): masked convolution with four corner sub-kernels plus channel attention.

The centre of the receptive field is hidden, so the block must predict it from context; its own loss is the
MSE between the block's input and output. For video features the corners are spatial, per frame.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SqueezeExcite(nn.Module):
    """Channel attention (squeeze and excitation) used inside SSPCAB."""

    def __init__(self, channels: int, reduction: int = 8):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reweight the channels of (B, C, ...) by their pooled gates."""
        w = self.fc(x.mean(dim=tuple(range(2, x.dim()))))
        return x * w.view(*w.shape, *([1] * (x.dim() - 2)))


class SSPCAB(nn.Module):
    """(B, C, T, H, W) -> same shape. kernel: corner sub-kernel size k'; dilation: distance d of the masked centre."""

    def __init__(self, channels: int, kernel: int = 1, dilation: int = 1, reduction: int = 8):
        super().__init__()
        self.pad = kernel + dilation
        self.border = kernel + 2 * dilation + 1
        self.corners = nn.ModuleList(nn.Conv3d(channels, channels, (1, kernel, kernel)) for _ in range(4))
        self.se = SqueezeExcite(channels, reduction)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, T, H, W) -> same shape: masked-centre convolution of the four corners, channel-attended."""
        p, b = self.pad, self.border
        xp = F.pad(x, (p, p, p, p))
        tl, tr, bl, br = self.corners
        y = (
            tl(xp[..., :-b, :-b])
            + tr(xp[..., :-b, b:])
            + bl(xp[..., b:, :-b])
            + br(xp[..., b:, b:])
        )
        return self.se(F.relu(y))
