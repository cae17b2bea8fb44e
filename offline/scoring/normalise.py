"""Turning raw per-frame evidence into comparable scores: the paper's per-video min-max, a causal running one,
and the calibrated one live cameras use (anchored on normal footage of the scene; `CalibratedNormaliser`).

Both normalisers share `normalise(values) -> values` (a whole sequence). The running one also streams:
`update(chunk) -> (normalised, warm)`; feeding a sequence in any chunking gives identical output, because
each value is normalised with statistics of strictly earlier values only.

Running normaliser (our design, for live streams):
  z_t = (x_t - m_{t-1}) / s_{t-1}, score_t = sigmoid(z_t) in (0, 1),
  m, s = exponentially weighted mean and standard deviation with a half-life of `halflife` frames.
  Statistics are updated only with values whose z is below `gate` (after warm-up), so a long anomaly does not
  teach the normaliser that it is normal; during the first `warmup` values every value updates them and the
  output is flagged not warm. A prior (mean, std) from calibration on normal footage seeds the statistics and
  counts as `prior_weight` frames, so a camera starts with sensible scores.
"""
from __future__ import annotations

import math

import numpy as np


class MinMaxNormaliser:
    """Per-video min-max (Rai et al.): needs the whole video, so it is offline only."""

    causal = False

    def normalise(self, values: np.ndarray) -> np.ndarray:
        """A whole video's values scaled to [0, 1]; a constant sequence gives zeros (no evidence)."""
        v = np.asarray(values, dtype=np.float64)
        if v.size == 0:
            return v
        lo, hi = np.nanmin(v), np.nanmax(v)
        if not hi > lo:  # constant sequence: no evidence either way
            return np.zeros_like(v)
        return (v - lo) / (hi - lo)

    def update(self, chunk: np.ndarray):
        """Refused: min-max needs the whole video, so it cannot stream."""
        raise TypeError("MinMaxNormaliser needs the whole video; use RunningNormaliser for streams")


class RunningNormaliser:
    """Causal standardisation with gated exponentially weighted statistics (see module docstring)."""

    causal = True

    def __init__(
        self,
        halflife: float = 600.0,
        warmup: int = 32,
        gate: float = 3.0,
        prior: tuple[float, float] | None = None,
        prior_weight: float = 32.0,
        min_std: float = 1e-6,
    ):
        if halflife <= 0 or warmup < 1:
            raise ValueError(f"halflife must be > 0 and warmup >= 1, got halflife={halflife}, warmup={warmup}")
        self.alpha = 1.0 - 0.5 ** (1.0 / halflife)
        self.warmup, self.gate, self.min_std = warmup, gate, min_std
        self.prior, self.prior_weight = prior, prior_weight
        self.reset()

    def reset(self) -> None:
        """Back to the prior (or empty) statistics, as at a camera's start."""
        self.count = 0
        if self.prior is not None:
            self.mean, self.var, self.weight = float(self.prior[0]), float(self.prior[1]) ** 2, self.prior_weight
        else:
            self.mean, self.var, self.weight = 0.0, 0.0, 0.0

    def _z(self, x: float) -> float:
        if self.weight <= 0:
            return 0.0
        std = max(math.sqrt(self.var), self.min_std, 1e-3 * abs(self.mean))
        return (x - self.mean) / std

    def _learn(self, x: float) -> None:
        # Before warm-up ends, a plain running average (weight grows); after, exponential forgetting.
        rate = max(self.alpha, 1.0 / (self.weight + 1.0))
        delta = x - self.mean
        self.mean += rate * delta
        self.var = (1.0 - rate) * (self.var + rate * delta * delta)
        self.weight += 1.0

    def update(self, chunk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Normalise a chunk of consecutive values; returns (scores in (0, 1), warm flags)."""
        xs = np.asarray(chunk, dtype=np.float64).reshape(-1)
        out = np.empty_like(xs)
        warm = np.empty(xs.shape, dtype=bool)
        for i, x in enumerate(xs):
            if not math.isfinite(x):
                out[i], warm[i] = np.nan, self.count >= self.warmup
                continue
            z = self._z(x)
            out[i] = 1.0 / (1.0 + math.exp(-max(min(z, 50.0), -50.0)))
            warm[i] = self.count >= self.warmup
            if self.count < self.warmup or z < self.gate:
                self._learn(x)
            self.count += 1
        return out, warm

    def normalise(self, values: np.ndarray) -> np.ndarray:
        """A whole sequence from a fresh state (for offline comparison with the min-max normaliser)."""
        self.reset()
        return self.update(values)[0]

    def state(self) -> dict:
        """The statistics now (count, mean, variance, weight), for status and tests."""
        return {"count": self.count, "mean": self.mean, "var": self.var, "weight": self.weight}


def robust_stats(values: np.ndarray) -> tuple[float, float]:
    """(median, 1.4826 x median absolute deviation) of the finite values: a location and scale that a few
    unusual frames in the calibration footage do not move; the scale is floored to keep z-scores finite."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    v = v[np.isfinite(v)]
    if v.size == 0:
        raise ValueError("robust_stats needs at least one finite value")
    med = float(np.median(v))
    scale = 1.4826 * float(np.median(np.abs(v - med)))
    return med, max(scale, float(np.std(v)) * 0.1, 1e-6 * max(1.0, abs(med)))


def logit(p: float) -> float:
    """log(p / (1 - p)) for p in (0, 1)."""
    return math.log(p / (1.0 - p))


class CalibratedNormaliser:
    """A camera's score anchored on normal footage of its scene (the bundle's calibration), for live streams.

    Each component is standardised with the calibration's robust location and scale, z_c = (x_c - loc_c) / scale_c;
    the weighted sum z = sum eta_c z_c is mapped to score = sigmoid(k (z - z50)), where z50 is z's median on the
    calibration footage and k puts that footage's `quantile` (e.g. 0.99) at `threshold` (e.g. 0.9). So on normal
    footage of the scene the median score is 0.5 and about 1 % of frames reach the default threshold, from the very
    first frame: no warm-up, nothing learned from what the camera shows first. A scene that drifts (light, season)
    moves the locations slowly (half-life `halflife` frames), only with frames scored below `gate`, and never more
    than `limit` calibration scales from where they started, so a long anomaly is never learned as normal.
    """

    causal = True

    def __init__(
        self,
        robust: dict[str, tuple[float, float]],
        weights: dict[str, float],
        z50: float,
        zq: float,
        threshold: float = 0.9,
        halflife: float = 3000.0,
        gate: float = 0.75,
        limit: float = 3.0,
    ):
        missing = sorted(k for k, w in weights.items() if w > 0 and k not in robust)
        if missing:
            raise ValueError(f"calibration has no robust statistics for component(s) {missing}")
        if not 0.5 < threshold < 1:
            raise ValueError(f"threshold must lie in (0.5, 1), got {threshold}")
        if halflife <= 0:
            raise ValueError(f"halflife must be > 0, got {halflife}")
        self.names = [k for k, w in weights.items() if w > 0]
        self.weights = {k: float(weights[k]) for k in self.names}
        self.loc0 = {k: float(robust[k][0]) for k in self.names}
        self.scale = {k: float(robust[k][1]) for k in self.names}
        self.z50 = float(z50)
        self.k = logit(threshold) / max(float(zq) - self.z50, 1e-6)
        self.alpha = 1.0 - 0.5 ** (1.0 / halflife)
        self.gate, self.limit = gate, limit
        self.reset()

    def reset(self) -> None:
        """Back to the calibration's locations."""
        self.loc = dict(self.loc0)
        self.count = 0

    def update(self, comps: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Score consecutive frames (each component (N,)); returns (scores (N,), per-component z (N,) each)."""
        xs = {k: np.asarray(comps[k], dtype=np.float64).reshape(-1) for k in self.names}
        n = len(next(iter(xs.values()))) if xs else 0
        scores = np.empty(n)
        zs = {k: np.empty(n) for k in self.names}
        for i in range(n):
            total, finite = 0.0, True
            for k in self.names:
                zk = (xs[k][i] - self.loc[k]) / self.scale[k]
                zs[k][i] = zk
                finite &= math.isfinite(zk)
                total += self.weights[k] * zk
            if not finite:
                scores[i] = np.nan
                continue
            scores[i] = 1.0 / (1.0 + math.exp(-max(min(self.k * (total - self.z50), 50.0), -50.0)))
            if scores[i] < self.gate:
                for k in self.names:
                    moved = self.loc[k] + self.alpha * (xs[k][i] - self.loc[k])
                    bound = self.limit * self.scale[k]
                    self.loc[k] = min(max(moved, self.loc0[k] - bound), self.loc0[k] + bound)
            self.count += 1
        return scores, zs

    def state(self) -> dict:
        """Where the locations are now, in calibration scales from where they started (for status and tests)."""
        return {"count": self.count, "drift": {k: (self.loc[k] - self.loc0[k]) / self.scale[k] for k in self.names}}


def make_normaliser(kind: str, **params) -> MinMaxNormaliser | RunningNormaliser:
    """The normaliser named by `scoring.normaliser` ("minmax" or "running") with its parameters."""
    if kind == "minmax":
        return MinMaxNormaliser()
    if kind == "running":
        return RunningNormaliser(**params)
    raise ValueError(f"unknown normaliser {kind!r}; valid: 'minmax', 'running'")
