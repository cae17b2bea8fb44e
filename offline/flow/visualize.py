"""Flow -> colour (pure numpy): hue = direction, saturation = magnitude, the usual colour-wheel coding."""
from __future__ import annotations

import numpy as np


def flow_to_rgb(flow: np.ndarray, max_magnitude: float | None = None) -> np.ndarray:
    """(2, H, W) flow in pixels -> (H, W, 3) uint8: hue = direction (right = red), saturation = |flow| / max.

    `max_magnitude` defaults to the field's own maximum (at least 1e-6); pass a fixed value to compare frames.
    """
    if flow.ndim != 3 or flow.shape[0] != 2:
        raise ValueError(f"flow must be (2, H, W), got {flow.shape}")
    u, v = flow.astype(np.float64)
    mag = np.hypot(u, v)
    scale = max(float(max_magnitude if max_magnitude is not None else mag.max()), 1e-6)
    hue = (np.arctan2(v, u) / (2 * np.pi)) % 1.0  # [0, 1)
    sat = np.clip(mag / scale, 0.0, 1.0)
    # HSV -> RGB with value 1
    h6 = hue * 6.0
    i = np.floor(h6).astype(int) % 6
    f = h6 - np.floor(h6)
    p, q, t = 1 - sat, 1 - sat * f, 1 - sat * (1 - f)
    one = np.ones_like(sat)
    table = [(one, t, p), (q, one, p), (p, one, t), (p, q, one), (t, p, one), (one, p, q)]
    rgb = np.zeros((*u.shape, 3))
    for k, (r, g, b) in enumerate(table):
        m = i == k
        rgb[m] = np.stack((r[m], g[m], b[m]), axis=-1)
    return (rgb * 255 + 0.5).astype(np.uint8)


def colour_wheel(size: int = 64) -> np.ndarray:
    """(size, size, 3) uint8 legend: the colour of every direction and magnitude up to the disc's edge."""
    r = (size - 1) / 2
    y, x = np.mgrid[0:size, 0:size] - r
    wheel = flow_to_rgb(np.stack((x, y)), max_magnitude=r)
    wheel[np.hypot(x, y) > r] = 255
    return wheel
