"""Per-frame anomaly evidence from reconstructions (pure torch): PSNR, flow error, weighted aggregate.

METHOD.md: P_t = 10 log10(M^2 / MSE_t) with M the value range, w1 = 1 - minmax(P), w2 = minmax(flow MSE),
w3 = discriminator probability, w = eta1 w1 + eta2 w2 + eta3 w3 with the etas summing to 1.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from offline.scoring.weights import check_weights

COMPONENTS = ("w1", "w2", "w3")


def frame_mse(recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(B, C, T, H, W) pair -> (B, T) mean squared error of each frame."""
    if recon.shape != target.shape:
        raise ValueError(f"recon and target shapes differ: {tuple(recon.shape)} vs {tuple(target.shape)}")
    return ((recon.float() - target.float()) ** 2).mean(dim=(1, 3, 4))


def frame_psnr(recon: torch.Tensor, target: torch.Tensor, max_val: float = 2.0, eps: float = 1e-10) -> torch.Tensor:
    """(B, C, T, H, W) pair -> (B, T) PSNR in dB; max_val 2 is the width of the [-1, 1] model range."""
    return 10.0 * torch.log10(max_val**2 / (frame_mse(recon, target) + eps))


def aggregate(
    w1: np.ndarray, w2: np.ndarray | None, w3: np.ndarray | None, weights: Sequence[float]
) -> np.ndarray:
    """eta1 w1 + eta2 w2 + eta3 w3 (each w already normalised); a missing component needs weight 0."""
    eta = check_weights(weights)
    out = eta[0] * np.asarray(w1, dtype=np.float64)
    for w, e, name in ((w2, eta[1], "w2"), (w3, eta[2], "w3")):
        if w is None:
            if e != 0:
                raise ValueError(f"{name} is missing but its weight is {e}; renormalise the weights first")
            continue
        out = out + e * np.asarray(w, dtype=np.float64)
    return out
