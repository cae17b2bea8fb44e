"""Per-frame evidence -> one anomaly score per frame: normalise each component, then the weighted aggregate.

Raw components (higher = more anomalous): w1 = -PSNR of the spatial AE, w2 = flow reconstruction MSE of the
temporal AE, w3 = discriminator probability (already in [0, 1], used as is). Offline evaluation calls `video`,
the streaming service calls `update` per camera; both run the same normalise-then-aggregate code.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from offline.scoring.normalise import CalibratedNormaliser, MinMaxNormaliser, RunningNormaliser, make_normaliser
from offline.scoring.evidence import COMPONENTS, aggregate
from offline.scoring.weights import check_weights, renormalise_weights


class FrameScorer:
    """Weights (eta1, eta2, eta3) are renormalised over the components that exist (e.g. no discriminator).

    Args:
        weights: the paper's etas, summing to 1.
        normaliser: "minmax" (per video, offline only), "running" (causal) or "calibrated" (causal, anchored on
            the bundle's calibration: `calibrated` gives CalibratedNormaliser's keyword arguments but the weights).
        available: which of (w1, w2, w3) the model provides.
        running: keyword arguments of RunningNormaliser (halflife, warmup, gate, prior_weight).
        priors: per-component (mean, std) of the raw values on normal footage, from the bundle's calibration.
    """

    def __init__(
        self,
        weights: Sequence[float],
        normaliser: str = "minmax",
        available: Sequence[bool] = (True, True, True),
        running: Mapping | None = None,
        priors: Mapping[str, Sequence[float]] | None = None,
        calibrated: Mapping | None = None,
    ):
        self.requested = check_weights(weights)
        self.available = tuple(bool(a) for a in available)
        self.weights = renormalise_weights(self.requested, self.available)
        self.kind = normaliser
        self._norms: dict[str, MinMaxNormaliser | RunningNormaliser] = {}
        self._calibrated: CalibratedNormaliser | None = None
        if normaliser == "calibrated":
            if calibrated is None:
                raise ValueError("the calibrated normaliser needs the bundle's calibration (robust statistics, z quantiles)")
            self._calibrated = CalibratedNormaliser(weights=dict(zip(COMPONENTS, self.weights)), **calibrated)
            return
        for name in COMPONENTS[:2]:
            params = dict(running or {}) if normaliser == "running" else {}
            if normaliser == "running" and priors and name in priors:
                params["prior"] = tuple(priors[name])
            self._norms[name] = make_normaliser(normaliser, **params)

    def _check(self, raw: Mapping[str, np.ndarray | None]) -> dict[str, np.ndarray | None]:
        out: dict[str, np.ndarray | None] = {}
        for name, ok in zip(COMPONENTS, self.available):
            value = raw.get(name)
            if ok and value is None:
                raise ValueError(f"component {name} is marked available but missing")
            out[name] = None if not ok or value is None else np.asarray(value, dtype=np.float64).reshape(-1)
        return out

    def _combine(self, w: dict[str, np.ndarray | None]) -> np.ndarray:
        return aggregate(w["w1"], w["w2"], w["w3"], self.weights)

    def video(self, raw: Mapping[str, np.ndarray | None]) -> dict[str, np.ndarray]:
        """Whole video at once: {"w1", "w2", "w3" (normalised, absent ones omitted), "score"}."""
        if self._calibrated is not None:
            self._calibrated.reset()
            return self.update(raw)[0]
        comps = self._check(raw)
        norm: dict[str, np.ndarray | None] = {"w3": comps["w3"]}
        for name in COMPONENTS[:2]:
            norm[name] = None if comps[name] is None else self._norms[name].normalise(comps[name])
        result = {k: v for k, v in norm.items() if v is not None}
        result["score"] = self._combine(norm)
        return result

    def update(self, raw: Mapping[str, np.ndarray | None]) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Next chunk of a stream (running or calibrated): (normalised components + score, warm flags)."""
        if self._calibrated is not None:
            comps = self._check(raw)
            score, zs = self._calibrated.update({k: v for k, v in comps.items() if v is not None})
            return {**zs, "score": score}, np.ones(score.shape, dtype=bool)
        if self.kind != "running":
            raise TypeError(f"streaming needs a causal normaliser (running or calibrated), this scorer uses {self.kind!r}")
        comps = self._check(raw)
        norm: dict[str, np.ndarray | None] = {"w3": comps["w3"]}
        warm = None
        for name in COMPONENTS[:2]:
            if comps[name] is None:
                norm[name] = None
                continue
            norm[name], w = self._norms[name].update(comps[name])
            warm = w if warm is None else warm & w
        result = {k: v for k, v in norm.items() if v is not None}
        result["score"] = self._combine(norm)
        return result, warm if warm is not None else np.ones(result["score"].shape, dtype=bool)

    def reset(self) -> None:
        """Forget the running statistics (back to the calibration priors); min-max has none."""
        if self._calibrated is not None:
            self._calibrated.reset()
        for norm in self._norms.values():
            if isinstance(norm, RunningNormaliser):
                norm.reset()


def calibrated_params(scoring, calibration) -> dict | None:
    """CalibratedNormaliser's keyword arguments (but the weights) from a ScoringSpec and a Calibration, or None when
    the calibration lacks what it needs (a bundle exported before calibrated scoring existed)."""
    q = str(scoring.calibration_quantile)
    if calibration is None or not calibration.robust or "0.5" not in calibration.z_quantiles or q not in calibration.z_quantiles:
        return None
    return {
        "robust": {k: tuple(v) for k, v in calibration.robust.items()},
        "z50": calibration.z_quantiles["0.5"], "zq": calibration.z_quantiles[q], "threshold": scoring.threshold,
        "halflife": scoring.adapt_halflife, "gate": scoring.adapt_gate, "limit": scoring.adapt_limit,
    }


def build_frame_scorer(scoring, calibration, available: Sequence[bool], normaliser: str | None = None, weights=None) -> FrameScorer:
    """The one factory of per-camera / per-clip FrameScorers: a bundle's (or a baseline's) ScoringSpec and
    Calibration decide weights, normaliser and its parameters. A bundle without calibrated statistics asked for
    the calibrated normaliser falls back to the running one seeded with its priors (logged by the caller)."""
    kind = normaliser or scoring.normaliser
    params = calibrated_params(scoring, calibration) if kind == "calibrated" else None
    if kind == "calibrated" and params is None:
        kind = "running"
    priors = dict(calibration.components) if calibration is not None and calibration.components else None
    return FrameScorer(
        weights if weights is not None else scoring.weights, kind, available,
        running={"halflife": scoring.running_halflife, "warmup": scoring.running_warmup}, priors=priors, calibrated=params,
    )
