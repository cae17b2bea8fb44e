"""Baseline pseudo-anomalies (pure numpy/torch): LNTRA patch and skip-frame, Gaussian noise, learned-noise PAs.

Clips are (3, T, H, W) float in [-1, 1] (the model's range); randomness comes from a numpy Generator.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

# ----------------------------------------------------------------------------------------------------------------
# LNTRA patch with SmoothMixS


def smoothmix_s(height: int, width: int, smooth: float = 0.25) -> torch.Tensor:
    """SmoothMix square mask: 1 in the core, a linear ramp to 0 over `smooth` of each side: (height, width)."""
    if not 0 <= smooth <= 0.5:
        raise ValueError(f"smooth must lie in [0, 0.5], got {smooth}")

    def profile(n: int) -> torch.Tensor:
        ramp = max(smooth * n, 1e-6)
        pos = torch.arange(n, dtype=torch.float32) + 0.5
        return torch.clamp(torch.minimum(pos, n - pos) / ramp, 0, 1)

    return profile(height)[:, None] * profile(width)[None, :]


def generated_intruders(count: int, size: int, rng: np.random.Generator) -> torch.Tensor:
    """Procedural intruder images (stripes, checkers, blobs, smooth noise; random colours): (count, 3, size, size).

    The default LNTRA intruder source when no image folder is configured: nothing is downloaded.
    """
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    out = np.empty((count, 3, size, size), np.float32)
    for i in range(count):
        kind = i % 4
        if kind == 0:  # stripes at a random angle and frequency
            a, f = rng.uniform(0, np.pi), rng.uniform(3, 12)
            v = np.sin(2 * np.pi * f * (np.cos(a) * xx + np.sin(a) * yy))
        elif kind == 1:  # checkerboard
            n = int(rng.integers(2, 9))
            v = ((np.floor(yy * n) + np.floor(xx * n)) % 2) * 2 - 1
        elif kind == 2:  # overlapping discs
            v = -np.ones_like(xx)
            for _ in range(int(rng.integers(2, 7))):
                cy, cx, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.1, 0.4)
                v = np.where((yy - cy) ** 2 + (xx - cx) ** 2 < r * r, rng.uniform(-1, 1), v)
        else:  # smooth noise: upsampled coarse random grid
            coarse = torch.from_numpy(rng.uniform(-1, 1, (1, 1, 6, 6)).astype(np.float32))
            v = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)[0, 0].numpy()
        colour_a, colour_b = rng.uniform(-1, 1, 3), rng.uniform(-1, 1, 3)
        t = (np.clip(v, -1, 1) + 1) / 2
        out[i] = colour_a[:, None, None] * t + colour_b[:, None, None] * (1 - t)
    return torch.from_numpy(np.clip(out, -1, 1))


def lntra_patch(
    clip: torch.Tensor,
    intruder: torch.Tensor,
    rng: np.random.Generator,
    max_size: float = 0.5,
    max_speed: int = 10,
    min_size: float = 0.1,
    smooth: float = 0.25,
) -> tuple[torch.Tensor, torch.Tensor]:
    """LNTRA patch PA: blend a moving intruder patch into a clip with a SmoothMixS mask.

    Args:
        clip: (3, T, H, W) in [-1, 1].
        intruder: (3, h, w) image in [-1, 1]; resized to the patch size.
        max_size: largest patch side as a fraction of the frame side (paper: 0.5).
        max_speed: largest per-frame displacement in pixels along each axis (paper: 10); the patch bounces
            off the frame border.
    Returns:
        (PA clip (3, T, H, W), blend weights (T, H, W) in [0, 1]).
    """
    if clip.ndim != 4 or clip.shape[0] != 3:
        raise ValueError(f"clip must be (3, T, H, W), got shape {tuple(clip.shape)}")
    _, t, h, w = clip.shape
    ph = max(2, int(round(rng.uniform(min_size, max_size) * h)))
    pw = max(2, int(round(rng.uniform(min_size, max_size) * w)))
    patch = F.interpolate(intruder[None].float(), size=(ph, pw), mode="bilinear", align_corners=False)[0]
    patch = patch.clamp(-1, 1).to(clip.dtype)
    alpha = smoothmix_s(ph, pw, smooth).to(clip.dtype)
    pos = np.array([rng.uniform(0, h - ph), rng.uniform(0, w - pw)])
    vel = rng.uniform(-max_speed, max_speed, 2)
    limit = np.array([h - ph, w - pw], dtype=float)
    out = clip.clone()
    weights = torch.zeros((t, h, w), dtype=clip.dtype)
    for i in range(t):
        y, x = (int(round(v)) for v in pos)
        weights[i, y : y + ph, x : x + pw] = alpha
        region = out[:, i, y : y + ph, x : x + pw]
        out[:, i, y : y + ph, x : x + pw] = (1 - alpha) * region + alpha * patch
        pos = pos + vel
        for k in range(2):  # bounce off the borders
            if pos[k] < 0 or pos[k] > limit[k]:
                vel[k] = -vel[k]
                pos[k] = float(np.clip(pos[k], 0, limit[k]))
    return out, weights


# ----------------------------------------------------------------------------------------------------------------
# LNTRA skip-frame


def sample_skip_frame(
    num_frames: int, window: int, strides: list[int] | tuple[int, ...], rng: np.random.Generator
) -> tuple[int, int] | None:
    """Draw (start, stride) so `window` frames with that stride fit in a clip of `num_frames`; None if none fits."""
    fitting = [s for s in strides if (window - 1) * s < num_frames]
    if not fitting:
        return None
    stride = int(rng.choice(fitting))
    start = int(rng.integers(0, num_frames - (window - 1) * stride))
    return start, stride


def skip_frame_indices(start: int, stride: int, window: int = 16) -> np.ndarray:
    """Frame indices of a skip-frame PA window: start, start + stride, ... (window,)."""
    if stride < 1 or window < 1 or start < 0:
        raise ValueError(f"need start >= 0, stride >= 1, window >= 1; got start={start}, stride={stride}, window={window}")
    return start + stride * np.arange(window)


def skip_frame(frames: torch.Tensor, start: int, stride: int, window: int = 16) -> torch.Tensor:
    """Skip-frame PA: (3, N, H, W) clip -> (3, window, H, W) sampled with `stride` (> 1 fakes unusual speed)."""
    idx = skip_frame_indices(start, stride, window)
    if idx[-1] >= frames.shape[1]:
        raise ValueError(
            f"skip-frame window start={start} stride={stride} needs frame {idx[-1]}, clip has {frames.shape[1]}"
        )
    return frames[:, torch.from_numpy(idx)]


# ----------------------------------------------------------------------------------------------------------------
# Noise PAs


def torch_generator(rng: np.random.Generator) -> torch.Generator:
    """A torch CPU generator seeded from a numpy Generator, so one seed drives both."""
    return torch.Generator().manual_seed(int(rng.integers(0, 2**63 - 1)))


def gaussian_pa(x: torch.Tensor, sigma: float, rng: np.random.Generator, clip: bool = True) -> torch.Tensor:
    """Gaussian-noise PA `X + N(0, sigma)` (paper: sigma in {0.1, 0.5, 1}); clipped to [-1, 1] unless clip=False."""
    if sigma <= 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    noise = torch.randn(x.shape, generator=torch_generator(rng), dtype=torch.float32).to(x.device, x.dtype)
    out = x + sigma * noise
    return out.clamp(-1, 1) if clip else out


def learned_noise_pa(x: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Learned-noise PA from G's output: X^P = clip(X + G(X), -1, 1), and the noise recomputed as X^P - X.

    Any shape; returns (X^P, effective noise). Gradients flow to `noise` where the clip is inactive.
    """
    if x.shape != noise.shape:
        raise ValueError(f"noise shape {tuple(noise.shape)} differs from input shape {tuple(x.shape)}")
    x_p = (x + noise).clamp(-1, 1)
    return x_p, x_p - x


def noise_generator_loss(
    recon: torch.Tensor, x_p: torch.Tensor, noise: torch.Tensor, lam: float = 0.1
) -> torch.Tensor:
    """G's objective `||F(X^P) - X^P||^2 - lam * ||G(X)||^2` (per-element means; lam 0.1 for video)."""
    return F.mse_loss(recon, x_p) - lam * noise.pow(2).mean()
