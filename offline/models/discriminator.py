"""The discriminator of Rai et al.: per-frame 512-d CLIP features -> logit (normal 0, spatial PA 1)."""
from __future__ import annotations

import torch
from torch import nn


class Discriminator(nn.Module):
    """Small MLP on 512-d CLIP image features: logit that a frame is a spatial pseudo-anomaly (w3)."""

    def __init__(self, in_features: int = 512, hidden: int = 128):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(N, 512) -> logits (N, 1); sigmoid gives w3, the probability of a pseudo-anomaly."""
        return self.net(features)
