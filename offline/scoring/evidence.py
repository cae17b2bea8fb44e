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
    """(B, C, T, H, W) pair -> (B, T) mean squared error of each frame (the "frame" reduction of `error_map`)."""
    return reduce_error(error_map(recon, target), "frame")


def frame_psnr(recon: torch.Tensor, target: torch.Tensor, max_val: float = 2.0, eps: float = 1e-10) -> torch.Tensor:
    """(B, C, T, H, W) pair -> (B, T) PSNR in dB; max_val 2 is the width of the [-1, 1] model range."""
    return mse_to_psnr(frame_mse(recon, target), max_val, eps)


REDUCTIONS = ("frame", "block_max")


def error_map(recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(B, C, T, H, W) pair -> (B, T, H, W) squared error averaged over channels."""
    if recon.shape != target.shape:
        raise ValueError(f"recon and target shapes differ: {tuple(recon.shape)} vs {tuple(target.shape)}")
    return ((recon.float() - target.float()) ** 2).mean(dim=1)


def block_means(maps: torch.Tensor, block: int) -> torch.Tensor:
    """(..., H, W) -> (..., H // block, W // block): the mean of each square block (block must divide H and W)."""
    h, w = maps.shape[-2:]
    if block < 1 or h % block or w % block:
        raise ValueError(f"block must be >= 1 and divide the map size {h}x{w}, got {block}")
    lead = maps.shape[:-2]
    pooled = torch.nn.functional.avg_pool2d(maps.reshape(-1, 1, h, w).float(), block, block)
    return pooled.reshape(*lead, h // block, w // block)


def reduce_error(maps: torch.Tensor, reduction: str, block: int = 16) -> torch.Tensor:
    """(B, T, H, W) error maps -> (B, T) one value per frame.

    "frame": the mean over the frame (the paper's MSE behind PSNR). "block_max": the mean inside each block of a
    grid of `block`-pixel squares, then the worst block: a cyclist covering 1 % of the frame is not diluted by
    the 99 % that is normal.
    """
    if reduction == "frame":
        return maps.float().mean(dim=(-2, -1))
    if reduction == "block_max":
        return block_means(maps, block).flatten(-2).amax(dim=-1)
    raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


POOLS = ("frame", "window")


def pool_frames(values: torch.Tensor, pool: str) -> torch.Tensor:
    """(B, T) per-frame evidence of B windows -> (B, T). "frame": as is. "window": every frame takes its window's
    mean, a T-frame smoothing that costs no latency (a frame's score is only known when its window completes)."""
    if pool == "frame":
        return values
    if pool == "window":
        return values.float().mean(dim=1, keepdim=True).expand_as(values)
    raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")


def mse_to_psnr(mse: torch.Tensor, max_val: float = 2.0, eps: float = 1e-10) -> torch.Tensor:
    """PSNR in dB of a mean squared error; max_val 2 is the width of the [-1, 1] model range."""
    return 10.0 * torch.log10(max_val**2 / (mse + eps))


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
