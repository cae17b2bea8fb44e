"""Event snapshots: a frame with its reconstruction-error evidence drawn on top, encoded as JPEG (Pillow).

`render_evidence_snapshot` shows what the detector's `block_max` reduction saw: the error map averaged in
square blocks (`block_means`), each block a flat translucent cell, the `top_k` worst blocks outlined, and a
header band with camera, UTC time, score and threshold. `render_snapshot` (a smooth per-pixel heatmap) stays
for callers that have no block size.
"""
from __future__ import annotations

import io
import math
import re
from datetime import datetime, timezone

import numpy as np
from PIL import Image, ImageDraw, ImageFont

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


EVIDENCE_MIN_SIDE = 384  # pixels: the frame is enlarged (nearest, integer factor) to at least this short side
CELL_ALPHA = 0.65  # opacity of the worst block's cell; other cells in proportion to their mean error
HEADER_BG, HEADER_FG = (20, 20, 20), (255, 255, 255)
# Outline rings drawn inside a block's cell, outermost first: a light core between dark edges shows on bright
# and dark scenes; the worst block gets a thick white core, the runners-up a thin light-grey one.
WORST_RINGS = ((1, (0, 0, 0)), (3, (255, 255, 255)), (1, (0, 0, 0)))
OTHER_RINGS = ((1, (0, 0, 0)), (1, (200, 200, 200)), (1, (0, 0, 0)))
# Same rule as streaming.config.NAME_PATTERN (not imported: this module stays numpy + Pillow).
_CAMERA_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")


def block_means(error_map: np.ndarray, block: int) -> np.ndarray:
    """Mean of `error_map` (H, W) inside each `block` x `block` cell; returns (H // block, W // block) float64.

    Args:
        error_map: per-pixel reconstruction error at the model's input size.
        block: cell side in pixels; must divide H and W (the detector's `block_max` grid).
    """
    err = np.asarray(error_map)
    if err.ndim != 2 or 0 in err.shape:
        raise ValueError(f"error_map must be a non-empty (H, W) array, got shape {err.shape}")
    _check_block(block, err.shape)
    h, w = err.shape
    return err.astype(np.float64).reshape(h // block, block, w // block, block).mean(axis=(1, 3))


def render_evidence_snapshot(
    rgb: np.ndarray,
    error_map: np.ndarray,
    *,
    block: int,
    score: float,
    camera: str,
    when_s: float,
    threshold: float | None = None,
    top_k: int = 3,
    quality: int = 85,
) -> bytes:
    """JPEG of the frame with its block evidence: block-mean cells, the `top_k` worst blocks outlined, a header.

    Args:
        rgb: the frame at the model's input size, (H, W, 3) uint8.
        error_map: reconstruction error at the same size, (H, W); non-finite and negative values count as 0.
        block: cell side in pixels (divides H and W), as in the detector's `block_max`.
        score: the frame's score, printed with 3 decimals.
        camera: the camera's name ([A-Za-z0-9_-], never a URL).
        when_s: the frame's wall time, epoch seconds; printed as ISO UTC.
        threshold: the alert threshold, printed when given.
        top_k: how many of the worst blocks to outline (blocks with zero error are never outlined).
        quality: JPEG quality in [1, 95].

    Returns JPEG bytes of width W * k and height H * k plus the header band, k the smallest integer making
    the short side at least EVIDENCE_MIN_SIDE.
    """
    rgb = np.asarray(rgb)
    err = np.asarray(error_map)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8 or 0 in rgb.shape:
        raise ValueError(f"rgb must be a non-empty (H, W, 3) uint8 array, got {rgb.shape} {rgb.dtype}")
    if err.ndim != 2 or err.shape != rgb.shape[:2]:
        raise ValueError(f"error_map must be (H, W) = {rgb.shape[:2]} like rgb, got shape {err.shape}")
    if not np.issubdtype(err.dtype, np.number) or np.issubdtype(err.dtype, np.complexfloating):
        raise ValueError(f"error_map must hold real numbers, got dtype {err.dtype}")
    _check_block(block, err.shape)
    for name, v in (("score", score), ("when_s", when_s), ("threshold", threshold)):
        if v is None and name == "threshold":
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float, np.number)) or not math.isfinite(v):
            raise ValueError(f"{name} must be a finite number, got {v!r}")
    if not isinstance(camera, str) or not _CAMERA_NAME.match(camera):
        # The value is not echoed: a URL passed here by mistake may carry credentials.
        raise ValueError(
            f"camera must be a camera name matching {_CAMERA_NAME.pattern} (never a URL), "
            f"got a {type(camera).__name__} of length {len(camera) if isinstance(camera, str) else '?'}"
        )
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 0:
        raise ValueError(f"top_k must be an integer >= 0, got {top_k!r}")
    if isinstance(quality, bool) or not isinstance(quality, (int, np.integer)) or not 1 <= quality <= 95:
        raise ValueError(f"quality must be an integer in [1, 95], got {quality!r}")
    try:
        when = datetime.fromtimestamp(float(when_s), tz=timezone.utc)
    except (OverflowError, OSError, ValueError) as exc:
        raise ValueError(f"when_s must be epoch seconds within the calendar, got {when_s!r}") from exc

    err = np.nan_to_num(err.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    means = block_means(np.maximum(err, 0.0), block)
    worst = float(means.max())
    rel = means / worst if worst > 0 else np.zeros_like(means)

    k = -(-EVIDENCE_MIN_SIDE // min(rgb.shape[:2]))
    cell = block * k
    frame = rgb.repeat(k, axis=0).repeat(k, axis=1).astype(np.float32)
    weight = (CELL_ALPHA * rel).repeat(cell, axis=0).repeat(cell, axis=1)[..., None]
    colour = colormap(rel).repeat(cell, axis=0).repeat(cell, axis=1)
    out = np.clip(frame * (1 - weight) + colour * weight + 0.5, 0, 255).astype(np.uint8)

    order = np.argsort(-means, axis=None, kind="stable")[: int(top_k)]
    ranked = [divmod(int(i), means.shape[1]) for i in order if means.flat[i] > 0]
    for rank, (r, c) in reversed(list(enumerate(ranked))):  # the worst drawn last, on top
        _draw_rings(out, r * cell, c * cell, cell, WORST_RINGS if rank == 0 else OTHER_RINGS)

    lines = [f"camera {camera}", when.strftime("%Y-%m-%dT%H:%M:%SZ")]
    lines.append(f"score {float(score):.3f}" + (f"  threshold {float(threshold):.3f}" if threshold is not None else ""))
    if ranked:
        r, c = ranked[0]
        more = f"; next {len(ranked) - 1} grey" if len(ranked) > 1 else ""
        lines.append(f"worst {block}px block: row {r}, col {c} (white box){more}")
    else:
        lines.append("no block above zero error")
    image = _with_header(Image.fromarray(out), lines)
    buf = io.BytesIO()
    # 4:4:4 keeps the thin outline colours crisp (4:2:0 would smear them into the cells).
    image.save(buf, format="JPEG", quality=int(quality), subsampling=0)
    return buf.getvalue()


def _check_block(block: int, shape: tuple[int, ...]) -> None:
    if isinstance(block, bool) or not isinstance(block, (int, np.integer)) or block < 1:
        raise ValueError(f"block must be an integer >= 1, got {block!r}")
    if any(n % block for n in shape):
        raise ValueError(f"block must divide the error map's size {tuple(shape)}, got {block}")


def _draw_rings(out: np.ndarray, y0: int, x0: int, side: int, rings: tuple) -> None:
    """Paint nested square rings inside the cell at (y0, x0) of `side` pixels, outermost first."""
    inset = 0
    for width, colour in rings:
        for _ in range(width):
            a, b = inset, side - 1 - inset
            if a > b:
                return
            out[y0 + a, x0 + a : x0 + b + 1] = colour
            out[y0 + b, x0 + a : x0 + b + 1] = colour
            out[y0 + a : y0 + b + 1, x0 + a] = colour
            out[y0 + a : y0 + b + 1, x0 + b] = colour
            inset += 1


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1: the bundled font at this size
    except TypeError:  # older Pillow: the fixed bitmap font
        return ImageFont.load_default()


def _with_header(image: Image.Image, lines: list[str]) -> Image.Image:
    """`image` below a dark band holding `lines`; the font shrinks until the longest line fits the width."""
    w = image.width
    pad = 6
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    size = max(12, w // 24)
    while True:
        font = _font(size)
        widths = [probe.textbbox((0, 0), ln, font=font)[2] for ln in lines]
        if max(widths) <= w - 2 * pad or size <= 8:
            break
        size -= 1
    line_h = probe.textbbox((0, 0), "Ag0", font=font)[3] + 4
    band = Image.new("RGB", (w, 2 * pad + line_h * len(lines)), HEADER_BG)
    draw = ImageDraw.Draw(band)
    for i, ln in enumerate(lines):
        draw.text((pad, pad + i * line_h), ln, fill=HEADER_FG, font=font)
    canvas = Image.new("RGB", (w, band.height + image.height))
    canvas.paste(band, (0, 0))
    canvas.paste(image, (0, band.height))
    return canvas
