"""Event snapshots: a frame with its reconstruction-error heatmap blended on top, encoded as JPEG (Pillow)."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image

# A perceptual "turbo"-like ramp (dark blue -> cyan -> green -> yellow -> red), sampled at 9 stops.
_STOPS = np.array(
    [
        [48, 18, 59], [65, 105, 225], [32, 178, 220], [30, 215, 160], [120, 240, 70],
        [210, 230, 40], [250, 170, 30], [230, 80, 20], [150, 10, 5],
    ],
    dtype=np.float32,
)


def colormap(values: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] (any shape S) to RGB (S + (3,)) float32 in [0, 255]."""
    v = np.clip(np.nan_to_num(values, nan=0.0), 0.0, 1.0) * (len(_STOPS) - 1)
    lo = np.floor(v).astype(np.int64)
    hi = np.minimum(lo + 1, len(_STOPS) - 1)
    frac = (v - lo)[..., None]
    return _STOPS[lo] * (1 - frac) + _STOPS[hi] * frac


def overlay(rgb: np.ndarray, error_map: np.ndarray, alpha: float = 0.6, vmax: float | None = None) -> np.ndarray:
    """Blend the heatmap of `error_map` (h, w) over `rgb` (H, W, 3) uint8; returns (H, W, 3) uint8.

    The error map is resized to the frame, scaled by `vmax` (default: its 99th percentile), and blended with
    a weight proportional to the error, so low-error regions keep the original frame.
    """
    rgb = np.asarray(rgb)
    err = np.asarray(error_map, dtype=np.float32)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"snapshot frame must be (H, W, 3) uint8, got {rgb.shape} {rgb.dtype}")
    if err.ndim != 2 or 0 in err.shape:
        raise ValueError(f"snapshot error map must be a non-empty (H, W) array, got shape {err.shape}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"snapshot alpha must lie in [0, 1], got {alpha}")
    err = np.nan_to_num(err, nan=0.0, posinf=0.0, neginf=0.0)
    err = np.maximum(err, 0.0)
    h, w = rgb.shape[:2]
    if err.shape != (h, w):
        err = np.asarray(Image.fromarray(err).resize((w, h), Image.Resampling.BILINEAR))
    scale = float(vmax) if vmax is not None else float(np.percentile(err, 99))
    norm = err / scale if scale > 0 else np.zeros_like(err)
    norm = np.clip(norm, 0.0, 1.0)
    weight = (alpha * norm)[..., None]
    out = rgb.astype(np.float32) * (1 - weight) + colormap(norm) * weight
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def render_snapshot(
    rgb: np.ndarray, error_map: np.ndarray, *, alpha: float = 0.6, vmax: float | None = None, quality: int = 85
) -> bytes:
    """JPEG bytes of `rgb` (H, W, 3) uint8 with the error map (h, w) float overlaid as a heatmap."""
    if not 1 <= quality <= 95:
        raise ValueError(f"snapshot JPEG quality must lie in [1, 95], got {quality}")
    buf = io.BytesIO()
    Image.fromarray(overlay(rgb, error_map, alpha, vmax)).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()
