"""Frame-level ROC AUC the way the papers report it: micro (all frames pooled) and macro (mean over clips)."""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve


def micro_auc(scores: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray]) -> float:
    """AUC over all frames of all clips concatenated; NaN when the pool lacks one class."""
    y = np.concatenate([np.asarray(labels[c]) for c in scores])
    s = np.concatenate([np.asarray(scores[c]) for c in scores])
    if y.min() == y.max():
        return float("nan")
    return float(roc_auc_score(y, s))


def per_clip_auc(scores: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray]) -> dict[str, float | None]:
    """AUC of each clip; None where a clip has only one class (e.g. Ped2 08, 09, 11)."""
    out: dict[str, float | None] = {}
    for clip, s in scores.items():
        y = np.asarray(labels[clip])
        out[clip] = None if y.min() == y.max() else float(roc_auc_score(y, s))
    return out


def macro_auc(scores: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray]) -> float:
    """Mean of the per-clip AUCs over clips that have both classes; NaN if none has."""
    vals = [v for v in per_clip_auc(scores, labels).values() if v is not None]
    return float(np.mean(vals)) if vals else float("nan")


def pooled_roc(scores: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """ROC curve (fpr, tpr) of all clips' frames pooled, as the micro AUC counts them; for the ROC plot."""
    y = np.concatenate([np.asarray(labels[c]) for c in scores])
    s = np.concatenate([np.asarray(scores[c]) for c in scores])
    fpr, tpr, _ = roc_curve(y, s)
    return fpr, tpr
