"""The score weights (eta1, eta2, eta3): validation and renormalisation over the components a model has (pure Python).

One definition for the config (`scoring.weights`), the bundle (`ScoringSpec.weights`) and the FrameScorer, so all
three accept and refuse the same values with the same message. No numpy or torch: `vad check-config` imports it.
"""
from __future__ import annotations

import math
from collections.abc import Sequence


def check_weights(weights: Sequence[float]) -> tuple[float, float, float]:
    """Validate (eta1, eta2, eta3): three numbers in [0, 1] that sum to 1."""
    if len(weights) != 3:
        raise ValueError(f"weights must be (eta1, eta2, eta3), got {len(weights)} values: {list(weights)}")
    if any(not 0.0 <= w <= 1.0 for w in weights):
        raise ValueError(f"each weight must lie in [0, 1], got {list(weights)}")
    if not math.isclose(sum(weights), 1.0, abs_tol=1e-6):
        raise ValueError(f"weights must sum to 1, got {sum(weights):.6g} ({list(weights)})")
    return tuple(float(w) for w in weights)  # type: ignore[return-value]


def renormalise_weights(weights: Sequence[float], available: Sequence[bool]) -> tuple[float, float, float]:
    """Zero the weights of missing components (no flow AE, no discriminator) and rescale the rest to sum to 1."""
    kept = [w if ok else 0.0 for w, ok in zip(weights, available)]
    total = sum(kept)
    if total <= 0:
        raise ValueError(f"no weight left for the available components {list(available)} with weights {list(weights)}")
    return tuple(w / total for w in kept)  # type: ignore[return-value]
