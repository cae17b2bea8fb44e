"""The discriminator's features from the spatial AE's own encoder (frozen), for bundles without CLIP weights.

The encoder's latent of a window, (B, C, T', H', W') with T' = T / 8, becomes one feature vector per temporal
slice: the global max and the global mean over H', W', concatenated, (B, T', 2C). The max keeps a local
inpainted region visible, the mean the scene's overall look. The discriminator MLP gives one logit per slice,
and each frame takes the probability of the slice that covers it (T / T' frames each). The latent has no fixed
scale, so that discriminator standardises its input with statistics of its training features
(offline/models/discriminator.py, `build_discriminator("spatial_encoder", ...)`).
"""
from __future__ import annotations

import torch


def latent_features(latent: torch.Tensor) -> torch.Tensor:
    """(B, C, T', H', W') encoder latent -> (B, T', 2C): per slice, [max over H', W' ; mean over H', W']."""
    if latent.dim() != 5:
        raise ValueError(f"latent must be (B, C, T', H', W'), got shape {tuple(latent.shape)}")
    feats = torch.cat([latent.amax(dim=(3, 4)), latent.mean(dim=(3, 4))], dim=1)
    return feats.transpose(1, 2).contiguous()


def feature_dim(latent_channels: int) -> int:
    """The discriminator's in_features for an encoder whose latent has `latent_channels` channels."""
    return 2 * latent_channels


def slices_to_frames(slice_values: torch.Tensor, frames: int) -> torch.Tensor:
    """(B, T') per-slice values -> (B, T): each slice's value repeated over the T / T' frames it covers."""
    slices = slice_values.shape[1]
    if slices < 1 or frames % slices:
        raise ValueError(f"{frames} frames do not split evenly into {slices} latent slices")
    return slice_values.repeat_interleave(frames // slices, dim=1)
