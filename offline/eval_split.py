"""The selection split: every recipe setting is chosen on one half of a dataset's test clips and reported on the
other, so a figure is not the figure its settings were tuned on.

Fixed before anything was measured on them: Ped2's shared test clips 01-05 select, 06-11 report; Ped1's shared
test clips 01-17 select, 19-35 report (each half 4 / 9 clips, each with normal and anomalous frames pooled).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from offline.auc import micro_auc

SPLITS: dict[str, dict[str, tuple[str, ...]]] = {
    "ped2": {"select": ("01", "02", "03", "05"), "report": ("06", "08", "09", "11")},
    "ped1": {"select": ("01", "03", "05", "07", "09", "11", "13", "15", "17"),
             "report": ("19", "21", "23", "25", "27", "29", "31", "33", "35")},
}


NAMES = {"UCSD Ped2": "ped2", "UCSD Ped1": "ped1"}  # labels.json "dataset" -> SPLITS key


def split_of(root: str | Path) -> str | None:
    """The SPLITS key of a dataset folder, from its labels.json's "dataset" name; None when it has no split."""
    try:
        name = json.loads((Path(root) / "labels.json").read_text()).get("dataset")
    except (OSError, ValueError, AttributeError):
        return None
    return NAMES.get(name)


def half_micro_auc(series: dict, labels: dict, clips) -> float:
    """Micro-AUC (0-100, 2 decimals) over the scored frames of `clips` present in `series`; NaN when none."""
    sc, lb = {}, {}
    for c in clips:
        if c not in series:
            continue
        s = np.asarray([np.nan if v is None else v for v in series[c]], dtype=np.float64)
        keep = np.isfinite(s)
        sc[c], lb[c] = s[keep], np.asarray(labels[c])[keep]
    if not sc:
        return float("nan")
    auc = micro_auc(sc, lb)
    return auc if math.isnan(auc) else round(100 * auc, 2)


def split_aucs(dataset: str, report: dict, protocol: str = "stream") -> dict[str, float]:
    """{"select": .., "report": ..} micro-AUCs of a `vad eval` report (before or after write_outputs) on the halves
    of `dataset` (a key of SPLITS; {} for a dataset without a split)."""
    if dataset not in SPLITS:
        return {}
    labels = report.get("_labels") or report.get("labels")
    series = report["series"][protocol]
    return {half: half_micro_auc(series, labels, clips) for half, clips in SPLITS[dataset].items()}
