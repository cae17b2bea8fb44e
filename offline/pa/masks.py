"""Masks for spatial pseudo-anomalies: LaMa-style random masks and motion-derived object masks (pure numpy/torch).

The paper inpaints object segmentation masks, or LaMa-style random masks when a frame has no object. No
segmentation weights can be had here, so object masks come from motion on fixed-camera footage: median
background over the clip, a threshold, morphology, connected components and a size filter. A user-supplied
`Segmenter` (any callable with the same contract) can replace the motion masks.

Every random choice takes a `numpy.random.Generator`, so a seed fixes the result.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from offline.data.pixels import rgb_to_gray255


class Segmenter(Protocol):
    """Hook for a user-configured segmentation model: frames (T, H, W, 3) uint8 RGB -> masks (T, H, W) bool."""

    def __call__(self, frames: np.ndarray) -> np.ndarray: ...


# ----------------------------------------------------------------------------------------------------------------
# LaMa-style random masks


def _stamp_segment(mask: np.ndarray, p0: np.ndarray, p1: np.ndarray, radius: float) -> None:
    """Set every pixel within `radius` of the segment p0-p1 ((y, x) points) in place."""
    h, w = mask.shape
    lo = np.floor(np.minimum(p0, p1) - radius).astype(int)
    hi = np.ceil(np.maximum(p0, p1) + radius).astype(int) + 1
    y0, x0 = max(lo[0], 0), max(lo[1], 0)
    y1, x1 = min(hi[0], h), min(hi[1], w)
    if y0 >= y1 or x0 >= x1:
        return
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float64)
    d = p1 - p0
    denom = float(d @ d)
    t = np.zeros_like(yy) if denom == 0 else np.clip(((yy - p0[0]) * d[0] + (xx - p0[1]) * d[1]) / denom, 0, 1)
    dist2 = (yy - (p0[0] + t * d[0])) ** 2 + (xx - (p0[1] + t * d[1])) ** 2
    mask[y0:y1, x0:x1] |= dist2 <= radius * radius


def _stroke(h: int, w: int, rng: np.random.Generator, scale: float) -> np.ndarray:
    """One irregular thick stroke: a random polyline of 1-6 segments, width and length relative to the frame."""
    side = min(h, w)
    out = np.zeros((h, w), bool)
    radius = max(1.0, rng.uniform(0.02, 0.08) * side * scale)
    p = np.array([rng.uniform(0, h), rng.uniform(0, w)])
    angle = rng.uniform(0, 2 * np.pi)
    for _ in range(int(rng.integers(1, 7))):
        angle += rng.uniform(-np.pi / 2, np.pi / 2)
        length = rng.uniform(0.05, 0.35) * side * scale
        q = p + length * np.array([np.sin(angle), np.cos(angle)])
        q = np.clip(q, 0, [h - 1, w - 1])
        _stamp_segment(out, p, q, radius)
        p = q
    return out


def _box(h: int, w: int, rng: np.random.Generator, scale: float) -> np.ndarray:
    """One axis-aligned box, sides between 5% and 40% of the frame (times `scale`)."""
    out = np.zeros((h, w), bool)
    bh = max(1, int(rng.uniform(0.05, 0.4) * h * scale))
    bw = max(1, int(rng.uniform(0.05, 0.4) * w * scale))
    y, x = int(rng.integers(0, h - bh + 1)), int(rng.integers(0, w - bw + 1))
    out[y : y + bh, x : x + bw] = True
    return out


def random_mask(
    height: int,
    width: int,
    rng: np.random.Generator,
    min_coverage: float = 0.02,
    max_coverage: float = 0.3,
    box_probability: float = 0.3,
) -> np.ndarray:
    """A LaMa-style mask (thick irregular strokes plus boxes) whose coverage lies in [min, max]: (H, W) bool.

    A target coverage is drawn uniformly in the bounds; shapes are added until it is reached, and a shape that
    would push the coverage over `max_coverage` is discarded (later shapes are drawn smaller). If the bounds cannot
    be met by strokes and boxes within the attempt budget, a compact blob fills the remaining deficit.
    """
    if not 0 <= min_coverage <= max_coverage <= 1:
        raise ValueError(f"coverage bounds must satisfy 0 <= min <= max <= 1, got min={min_coverage}, max={max_coverage}")
    if height < 1 or width < 1:
        raise ValueError(f"mask size must be positive, got {height}x{width}")
    total = height * width
    mask = np.zeros((height, width), bool)
    target = max(rng.uniform(min_coverage, max_coverage), min(max_coverage, 1.0 / total))
    scale = 1.0
    for _ in range(64):
        if mask.sum() >= target * total:
            break
        shape = _box(height, width, rng, scale) if rng.random() < box_probability else _stroke(height, width, rng, scale)
        cand = mask | shape
        if cand.sum() > max_coverage * total:
            scale *= 0.8
            continue
        mask = cand
    deficit = int(np.ceil(min_coverage * total)) - int(mask.sum())
    if deficit > 0:  # rare: fill the rest with the free pixels nearest a random free pixel
        free = np.flatnonzero(~mask.ravel())
        start = free[int(rng.integers(0, free.size))]
        order = np.argsort(np.abs(free // width - start // width) + np.abs(free % width - start % width), kind="stable")
        mask.ravel()[free[order[:deficit]]] = True
    return mask


# ----------------------------------------------------------------------------------------------------------------
# Motion-derived object masks


def _dilate(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Binary dilation of (N, 1, H, W) float {0, 1} with a (2r+1)^2 square."""
    return F.max_pool2d(x, 2 * radius + 1, stride=1, padding=radius) if radius > 0 else x


def _erode(x: torch.Tensor, radius: int) -> torch.Tensor:
    return -F.max_pool2d(-x, 2 * radius + 1, stride=1, padding=radius) if radius > 0 else x


def label_components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """8-connected component labels of a (H, W) bool mask: (labels int32 (H, W), 0 = background; count).

    Run-length union-find: runs of each row are joined with the overlapping runs of the row above.
    """
    h, w = mask.shape
    padded = np.zeros((h, w + 2), np.int8)
    padded[:, 1:-1] = mask
    d = np.diff(padded, axis=1)
    rows, starts = np.nonzero(d == 1)
    _, ends = np.nonzero(d == -1)  # exclusive ends, aligned with starts (both row-major)
    n = rows.size
    if n == 0:
        return np.zeros((h, w), np.int32), 0
    parent = np.arange(n)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    row_ptr = np.searchsorted(rows, np.arange(h + 1))
    for r in range(1, h):
        i, i_end = row_ptr[r - 1], row_ptr[r]
        j, j_end = row_ptr[r], row_ptr[r + 1]
        while i < i_end and j < j_end:
            if starts[i] <= ends[j] and starts[j] <= ends[i]:  # 8-connected overlap
                a, b = find(i), find(j)
                if a != b:
                    parent[max(a, b)] = min(a, b)
            if ends[i] < ends[j]:
                i += 1
            else:
                j += 1
    roots = np.array([find(i) for i in range(n)])
    _, run_label = np.unique(roots, return_inverse=True)
    lengths = ends - starts
    labels = np.zeros(h * w, np.int32)
    run_of_pixel = np.repeat(np.arange(n), lengths)
    offset = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    labels[rows[run_of_pixel] * w + starts[run_of_pixel] + offset] = run_label[run_of_pixel] + 1
    return labels.reshape(h, w), int(run_label.max()) + 1


@dataclass(frozen=True)
class MotionMaskParams:
    """Motion-mask settings; thresholds in gray levels (0-255), sizes as fractions of the frame area."""

    threshold: float = 20.0
    open_radius: int = 1
    close_radius: int = 3
    dilate_radius: int = 2
    min_area: float = 0.0008
    max_area: float = 0.25


def median_background(gray: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Per-pixel median over time of a fixed-camera clip: (T, H, W) -> (H, W) float32."""
    g = torch.as_tensor(gray, dtype=torch.float32)
    return g.median(dim=0).values


def motion_masks(gray: np.ndarray | torch.Tensor, params: MotionMaskParams = MotionMaskParams()) -> np.ndarray:
    """Object masks from motion on a fixed-camera clip: (T, H, W) gray in [0, 255] -> (T, H, W) bool.

    Pixels far from the clip's median background are foreground; opening removes speckle, closing fills
    bodies, components outside the size bounds are dropped, and the rest is dilated a little so the
    inpainting covers the object's edge.
    """
    g = torch.as_tensor(gray, dtype=torch.float32)
    if g.ndim != 3:
        raise ValueError(f"motion_masks expects gray frames (T, H, W), got shape {tuple(g.shape)}")
    t, h, w = g.shape
    fg = ((g - median_background(g)).abs() > params.threshold).float()[:, None]
    fg = _dilate(_erode(fg, params.open_radius), params.open_radius)
    fg = _erode(_dilate(fg, params.close_radius), params.close_radius)
    fg_np = fg[:, 0].numpy() > 0.5
    keep = np.zeros_like(fg_np)
    lo, hi = params.min_area * h * w, params.max_area * h * w
    for i in range(t):
        labels, n = label_components(fg_np[i])
        if n == 0:
            continue
        areas = np.bincount(labels.ravel(), minlength=n + 1)
        good = (areas >= lo) & (areas <= hi)
        good[0] = False
        keep[i] = good[labels]
    out = _dilate(torch.from_numpy(keep).float()[:, None], params.dilate_radius)
    return out[:, 0].numpy() > 0.5


def fill_empty_with_random(
    masks: np.ndarray, rng: np.random.Generator, min_coverage: float = 0.02, max_coverage: float = 0.3
) -> tuple[np.ndarray, np.ndarray]:
    """Replace each empty (H, W) mask of a (T, H, W) stack by a random mask, as the paper does.

    Returns (masks, is_object (T,) bool: True where the frame kept its object mask).
    """
    out = np.array(masks, dtype=bool, copy=True)
    has_object = out.reshape(out.shape[0], -1).any(axis=1)
    for i in np.flatnonzero(~has_object):
        out[i] = random_mask(out.shape[1], out.shape[2], rng, min_coverage, max_coverage)
    return out, has_object


def mask_bbox(mask: np.ndarray | torch.Tensor) -> tuple[int, int, int, int] | None:
    """Bounding box (y0, x0, h, w) of a (H, W) mask, or of the union over time of a (T, H, W) one; None if empty."""
    m = np.asarray(mask.cpu() if isinstance(mask, torch.Tensor) else mask).astype(bool)
    if m.ndim == 3:
        m = m.any(axis=0)
    ys, xs = np.nonzero(m.any(axis=1))[0], np.nonzero(m.any(axis=0))[0]
    if ys.size == 0:
        return None
    return int(ys[0]), int(xs[0]), int(ys[-1] - ys[0] + 1), int(xs[-1] - xs[0] + 1)


def object_masks(
    frames: np.ndarray, segmenter: Segmenter | None = None, params: MotionMaskParams = MotionMaskParams()
) -> np.ndarray:
    """Object masks of a clip: (T, H, W, 3) uint8 RGB -> (T, H, W) bool, from `segmenter` if given, else motion."""
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"object_masks expects RGB frames (T, H, W, 3), got shape {frames.shape}")
    if segmenter is not None:
        out = np.asarray(segmenter(frames), dtype=bool)
        if out.shape != frames.shape[:3]:
            raise ValueError(f"segmenter returned masks of shape {out.shape}, expected {frames.shape[:3]}")
        return out
    gray = rgb_to_gray255(frames)
    return motion_masks(gray, params)
