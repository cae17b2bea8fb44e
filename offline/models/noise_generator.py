"""The shallow noise generator G of the learned-noise baseline (Astrid et al.): noise in [-2, 2]."""
from __future__ import annotations

import torch
from torch import nn


class NoiseGenerator(nn.Module):
    """(B, C, T, H, W) -> noise of the same shape, Tanh x 2. T % 4 == 0, H and W % 8 == 0."""

    def __init__(self, in_channels: int = 3, channels: tuple[int, int, int] = (96, 128, 256)):
        super().__init__()
        c1, c2, c3 = channels
        s1, s2 = (1, 2, 2), (2, 2, 2)

        def block(conv: nn.Module, c: int) -> list[nn.Module]:
            return [conv, nn.BatchNorm3d(c), nn.LeakyReLU(0.2, inplace=True)]

        self.net = nn.Sequential(
            *block(nn.Conv3d(in_channels, c1, 3, s1, 1), c1),
            *block(nn.Conv3d(c1, c2, 3, s2, 1), c2),
            *block(nn.Conv3d(c2, c3, 3, s2, 1), c3),
            *block(nn.ConvTranspose3d(c3, c2, 3, s2, 1, output_padding=1), c2),
            *block(nn.ConvTranspose3d(c2, c1, 3, s2, 1, output_padding=1), c1),
            nn.ConvTranspose3d(c1, in_channels, 3, s1, 1, output_padding=(0, 1, 1)),
            nn.Tanh(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) window -> noise of the same shape for the learned-noise PA."""
        return 2.0 * self.net(x)
