"""Plots people would rather look at than read: ROC curves and per-clip scores with ground truth shaded."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_roc(curves: Mapping[str, tuple[np.ndarray, np.ndarray, float]], path: Path, title: str) -> Path:
    """curves: label -> (fpr, tpr, auc)."""
    fig, ax = plt.subplots(figsize=(5, 5))
    for label, (fpr, tpr, auc) in curves.items():
        ax.plot(fpr, tpr, label=f"{label} (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=title, xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _shade(ax, labels: np.ndarray) -> None:
    y = np.asarray(labels).astype(bool)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], y.astype(int), [0]])))
    for start, end in zip(edges[::2], edges[1::2]):
        ax.axvspan(start - 0.5, end - 0.5, color="tab:red", alpha=0.15, linewidth=0)


def plot_clip_scores(
    series: Mapping[str, Mapping[str, np.ndarray]], labels: Mapping[str, np.ndarray], path: Path, title: str
) -> Path:
    """series: clip -> {curve label -> per-frame score}; ground-truth anomalous frames shaded red."""
    clips = list(series)
    fig, axes = plt.subplots(len(clips), 1, figsize=(9, 1.8 * len(clips) + 0.6), squeeze=False)
    for ax, clip in zip(axes[:, 0], clips):
        _shade(ax, labels[clip])
        for name, values in series[clip].items():
            ax.plot(np.arange(len(values)), values, linewidth=1, label=name)
        ax.set_ylabel(f"clip {clip}", fontsize=8)
        ax.set_xlim(0, len(labels[clip]) - 1)
        ax.tick_params(labelsize=7)
    axes[0, 0].legend(loc="upper right", fontsize=7, ncol=3)
    axes[-1, 0].set_xlabel("frame (red: ground-truth anomalous)")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
