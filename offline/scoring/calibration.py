"""Calibration statistics from a scene's held-out normal footage: the reference a camera's scores start from.

`calibration_from_raw` takes per-clip raw evidence (what `Detector.score` gives per frame, in stream order) and
returns the bundle's `Calibration`: raw (mean, std) and robust (median, scaled MAD) per component, the quantiles of
the weighted robust z-sum (which the calibrated normaliser maps to scores), and, as a check, the final scores'
quantiles when that footage is replayed through the bundle's own FrameScorer. `calibrate` scores held-out clips
with a detector (a bundle's, or a classical one) and hands the evidence over: `vad export` and `vad eval`'s
baselines both use it. The statistics come from windows every `stride` frames (overlapping: a camera's windows can
start on any frame, and with `scoring.pool: window` each window is one sample, so a few seconds of footage at
stride 16 gave a handful of samples and a far too narrow scale); the replayed trace from non-overlapping windows.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from offline.scoring.bundle import Calibration
from offline.scoring.evidence import COMPONENTS
from offline.scoring.frame_scorer import build_frame_scorer
from offline.scoring.normalise import robust_stats
from offline.scoring.weights import renormalise_weights

QUANTILES = (0.5, 0.9, 0.95, 0.99, 0.999)


def calibration_from_raw(
    per_clip: Mapping[str, Mapping[str, np.ndarray | None]], scoring, available: Sequence[bool],
    samples: Mapping[str, Mapping[str, np.ndarray | None]] | None = None, stride: int | None = None,
) -> Calibration:
    """per_clip: {clip: {"w1": (N,), "w2": (N,) or None, "w3": ...}} raw evidence of normal frames in stream order
    (replayed for the score trace); `samples` (the same form, e.g. overlapping windows' evidence): what the
    statistics are taken from, default per_clip; `stride`: the step between those windows, recorded."""
    source = per_clip if samples is None else samples
    joined = {
        c: np.concatenate([np.asarray(r[c], dtype=np.float64).reshape(-1) for r in source.values()])
        for c, ok in zip(COMPONENTS, available) if ok and all(r.get(c) is not None for r in source.values())
    }
    if not joined or next(iter(joined.values())).size == 0:
        raise ValueError("calibration needs at least one frame of normal footage")
    comps = {c: (float(np.mean(v)), float(np.std(v))) for c, v in joined.items()}
    robust = {c: robust_stats(v) for c, v in joined.items()}
    weights = dict(zip(COMPONENTS, renormalise_weights(scoring.weights, available)))
    z = sum(weights[c] * (v - robust[c][0]) / robust[c][1] for c, v in joined.items())
    qs = sorted(set(QUANTILES) | {scoring.calibration_quantile})
    z_quantiles = {str(q): float(np.quantile(z, q)) for q in qs}
    frames = sum(len(next(v for v in r.values() if v is not None)) for r in per_clip.values())
    partial = Calibration(components=comps, robust=robust, z_quantiles=z_quantiles, frames=frames, samples=int(z.size),
                          stride=stride)
    scores = []
    for raw in per_clip.values():
        fs = build_frame_scorer(scoring, partial, available)
        scores.append(fs.update({c: raw.get(c) for c in COMPONENTS})[0]["score"])
    allscores = np.concatenate(scores)
    trace = {str(cid): [round(float(v), 4) if np.isfinite(v) else None for v in s] for cid, s in zip(per_clip, scores)}
    return partial.model_copy(update={
        "score_quantiles": {str(q): float(np.nanquantile(allscores, q)) for q in QUANTILES}, "score_trace": trace,
    })


def calibrate(detector, clips, stride: int | None = None, batch: int = 8) -> Calibration:
    """The calibration from held-out normal footage scored by `detector` (the one scoring path).

    clips: (clip id, frames (3, N, H, W) in [-1, 1]) in stream order. Windows every `stride` frames (default a
    quarter window) are the statistics' samples; the non-overlapping windows from each clip's first frame are the
    replayed trace. The clip's flow, when the detector needs it, is computed once and sliced.
    """
    from offline.data.windows import window_starts
    from offline.scoring.clip_windows import clip_flow, score_windows

    window = detector.window
    stride = stride or max(1, window // 4)
    if stride < 1:
        raise ValueError(f"calibration stride must be >= 1, got {stride}")
    trace: dict[str, dict[str, list[np.ndarray]]] = {}
    samples: dict[str, dict[str, list[np.ndarray]]] = {}
    for cid, x in clips:
        n = x.shape[1]
        sampled = set(window_starts(n, window, stride, cover_end=False))
        traced = set(window_starts(n, window, window, cover_end=False))
        if not traced:
            continue
        flow = clip_flow(detector, x) if detector.needs_flow else None
        for s, ws, b in score_windows(detector, x, flow, sorted(sampled | traced), batch):
            raw = ws.raw(b)
            for into, keep in ((trace, s in traced), (samples, s in sampled)):
                if keep:
                    for c in COMPONENTS:
                        into.setdefault(cid, {}).setdefault(c, []).append(raw[c])
    if not trace:
        raise ValueError(f"calibration needs at least one frame of normal footage in a clip of {window} frames or more")
    joined = [
        {cid: {c: None if rs[c][0] is None else np.concatenate(rs[c]) for c in COMPONENTS} for cid, rs in d.items()}
        for d in (trace, samples)
    ]
    return calibration_from_raw(joined[0], detector.config.scoring, detector.available, samples=joined[1], stride=stride)
