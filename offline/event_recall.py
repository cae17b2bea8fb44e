"""Alerts against labelled anomalies: which anomalous stretches of a test clip raise an alert, and which alerts
fall on normal frames only (pure; the alerts come from `offline.scoring.alert_rules.alert_spans`).

An operator cares about events, not frames: an anomaly counts as caught when any alert overlaps it (event
recall), and an alert that overlaps no anomaly is a false alert on the labelled footage.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def anomalous_ranges(labels: Sequence[int]) -> list[tuple[int, int]]:
    """Maximal runs of frames labelled 1 as (first, last) inclusive, in order."""
    lab = np.asarray(labels, dtype=np.int8) > 0
    if not lab.any():
        return []
    edges = np.diff(np.concatenate([[0], lab.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1
    return [(int(a), int(b)) for a, b in zip(starts, ends)]


def _overlaps(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] <= b[1] and b[0] <= a[1]


def match_alerts(spans: Sequence[tuple[int, int]], labels: Sequence[int]) -> dict:
    """{"ranges": anomalous ranges, "caught": how many of them an alert overlaps, "alerts": len(spans),
    "false_alerts": alerts overlapping no anomalous range} for one clip."""
    ranges = anomalous_ranges(labels)
    caught = sum(any(_overlaps(r, s) for s in spans) for r in ranges)
    false = sum(not any(_overlaps(s, r) for r in ranges) for s in spans)
    return {"ranges": len(ranges), "caught": int(caught), "alerts": len(spans), "false_alerts": int(false)}


def event_recall(per_clip: Sequence[dict]) -> float | None:
    """Share of all anomalous ranges caught over clips (`match_alerts` records); None when there is none."""
    ranges = sum(c["ranges"] for c in per_clip)
    return None if ranges == 0 else sum(c["caught"] for c in per_clip) / ranges
