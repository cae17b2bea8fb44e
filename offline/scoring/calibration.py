"""Calibration statistics from a scene's held-out normal footage: the reference a camera's scores start from.

`calibration_from_raw` takes per-clip raw evidence (what `Detector.score` gives per frame, in stream order) and
returns the bundle's `Calibration`: raw (mean, std) and robust (median, scaled MAD) per component, the quantiles of
the weighted robust z-sum (which the calibrated normaliser maps to scores), and, as a check, the final scores'
quantiles when that footage is replayed through the bundle's own FrameScorer. `calibrate` scores held-out windows
with a detector (a bundle's, or a classical one) and hands the evidence over: `vad export` and `vad eval`'s
baselines both use it.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from offline.scoring.bundle import Calibration
from offline.scoring.evidence import COMPONENTS
from offline.scoring.frame_scorer import build_frame_scorer
from offline.scoring.normalise import robust_stats
from offline.scoring.weights import renormalise_weights

QUANTILES = (0.5, 0.9, 0.95, 0.99, 0.999)


def calibration_from_raw(
    per_clip: Mapping[str, Mapping[str, np.ndarray | None]], scoring, available: Sequence[bool]
) -> Calibration:
    """per_clip: {clip: {"w1": (N,), "w2": (N,) or None, "w3": ...}} raw evidence of normal frames in stream order."""
    joined = {
        c: np.concatenate([np.asarray(r[c], dtype=np.float64).reshape(-1) for r in per_clip.values()])
        for c, ok in zip(COMPONENTS, available) if ok and all(r.get(c) is not None for r in per_clip.values())
    }
    if not joined or next(iter(joined.values())).size == 0:
        raise ValueError("calibration needs at least one frame of normal footage")
    comps = {c: (float(np.mean(v)), float(np.std(v))) for c, v in joined.items()}
    robust = {c: robust_stats(v) for c, v in joined.items()}
    weights = dict(zip(COMPONENTS, renormalise_weights(scoring.weights, available)))
    z = sum(weights[c] * (v - robust[c][0]) / robust[c][1] for c, v in joined.items())
    qs = sorted(set(QUANTILES) | {scoring.calibration_quantile})
    z_quantiles = {str(q): float(np.quantile(z, q)) for q in qs}
    partial = Calibration(components=comps, robust=robust, z_quantiles=z_quantiles, frames=int(z.size))
    scores = []
    for raw in per_clip.values():
        fs = build_frame_scorer(scoring, partial, available)
        scores.append(fs.update({c: raw.get(c) for c in COMPONENTS})[0]["score"])
    allscores = np.concatenate(scores)
    trace = {str(cid): [round(float(v), 4) if np.isfinite(v) else None for v in s] for cid, s in zip(per_clip, scores)}
    return partial.model_copy(update={
        "score_quantiles": {str(q): float(np.nanquantile(allscores, q)) for q in QUANTILES}, "score_trace": trace,
    })


def calibrate(detector, windows, batch: int = 8) -> Calibration:
    """The calibration from held-out normal windows scored by `detector` (the one scoring path); `windows` yields
    (frames (3, T, H, W) in [-1, 1], clip id) in stream order per clip, windows not overlapping."""
    per_clip: dict[str, list[dict[str, np.ndarray | None]]] = {}
    items = list(windows)
    for i in range(0, len(items), batch):
        chunk = items[i : i + batch]
        ws = detector.score(torch.stack([x for x, _ in chunk]))
        for b, (_, cid) in enumerate(chunk):
            per_clip.setdefault(cid, []).append(ws.raw(b))
    joined = {
        cid: {c: None if rs[0][c] is None else np.concatenate([r[c] for r in rs]) for c in COMPONENTS}
        for cid, rs in per_clip.items()
    }
    return calibration_from_raw(joined, detector.config.scoring, detector.available)
