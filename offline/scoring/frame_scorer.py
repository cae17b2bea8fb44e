"""Per-frame evidence -> one anomaly score per frame: normalise each component, then the weighted aggregate.

Raw components (higher = more anomalous): w1 = -PSNR of the spatial AE, w2 = flow reconstruction MSE of the
temporal AE, w3 = discriminator probability (already in [0, 1], used as is). Offline evaluation calls `video`,
the streaming service calls `update` per camera; both run the same normalise-then-aggregate code.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from offline.scoring.normalise import MinMaxNormaliser, RunningNormaliser, make_normaliser
from offline.scoring.evidence import COMPONENTS, aggregate
from offline.scoring.weights import check_weights, renormalise_weights


class FrameScorer:
    """Weights (eta1, eta2, eta3) are renormalised over the components that exist (e.g. no discriminator).

    Args:
        weights: the paper's etas, summing to 1.
        normaliser: "minmax" (per video, offline only) or "running" (causal).
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
    ):
        self.requested = check_weights(weights)
        self.available = tuple(bool(a) for a in available)
        self.weights = renormalise_weights(self.requested, self.available)
        self.kind = normaliser
        self._norms: dict[str, MinMaxNormaliser | RunningNormaliser] = {}
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
        comps = self._check(raw)
        norm: dict[str, np.ndarray | None] = {"w3": comps["w3"]}
        for name in COMPONENTS[:2]:
            norm[name] = None if comps[name] is None else self._norms[name].normalise(comps[name])
        result = {k: v for k, v in norm.items() if v is not None}
        result["score"] = self._combine(norm)
        return result

    def update(self, raw: Mapping[str, np.ndarray | None]) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Next chunk of a stream (running normaliser only): (normalised components + score, warm flags)."""
        if self.kind != "running":
            raise TypeError(f"streaming needs the running normaliser, this scorer uses {self.kind!r}")
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
        for norm in self._norms.values():
            if isinstance(norm, RunningNormaliser):
                norm.reset()
