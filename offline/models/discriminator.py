"""The discriminator of Rai et al.: per-frame 512-d CLIP features (or the spatial encoder's per-slice features,
offline/models/encoder_features.py) -> logit (normal 0, spatial PA 1)."""
from __future__ import annotations

import torch
from torch import nn


class Discriminator(nn.Module):
    """Small MLP on feature vectors (512-d CLIP, or 2C from the spatial encoder): logit of a spatial pseudo-anomaly (w3).

    Args:
        in_features: feature width.
        hidden: hidden width.
        standardise: subtract a per-feature mean and divide by a std (buffers, set by `fit_standardisation`
            from the training features) before the MLP. The spatial encoder's latent has no fixed scale (a few
            hundredths on a briefly trained AE), on which SGD with the paper's settings learns the bias alone.
    """

    def __init__(self, in_features: int = 512, hidden: int = 128, standardise: bool = False):
        super().__init__()
        self.standardise = standardise
        if standardise:
            self.register_buffer("feature_mean", torch.zeros(in_features))
            self.register_buffer("feature_std", torch.ones(in_features))
        self.net = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 1))

    def fit_standardisation(self, features: torch.Tensor) -> None:
        """Set the standardisation from training features (N, in_features); a near-constant feature keeps a floor
        of 1 % of the mean std, so that it cannot blow up at scoring time."""
        std = features.std(dim=0)
        self.feature_mean.copy_(features.mean(dim=0))
        self.feature_std.copy_(std.clamp_min(max(float(std.mean()) * 1e-2, 1e-12)))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(..., in_features) -> logits (..., 1); sigmoid gives w3, the probability of a pseudo-anomaly."""
        if self.standardise:
            features = (features - self.feature_mean) / self.feature_std
        return self.net(features)


def build_discriminator(features: str = "clip", in_features: int = 512) -> Discriminator:
    """The discriminator for a feature tower: "clip" (the paper's MLP) or "spatial_encoder" (with standardisation)."""
    if features not in ("clip", "spatial_encoder"):
        raise ValueError(f"unknown discriminator features {features!r}; expected 'clip' or 'spatial_encoder'")
    return Discriminator(in_features, standardise=features == "spatial_encoder")
