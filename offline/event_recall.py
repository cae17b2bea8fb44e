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


def match_clips(series: dict, labels: dict, fps: float, threshold: float, rules) -> dict[str, dict]:
    """{clip id: `match_alerts` record} of every trace in `series` replayed through the service's alert rules
    (`alert_spans` under `rules` at `fps`) at `threshold`, against that clip's frame labels."""
    from offline.scoring.alert_rules import alert_spans

    return {cid: match_alerts(alert_spans(s, fps, threshold, rules), labels[cid]) for cid, s in series.items()}


def operating_curve(series: dict, labels: dict, fps: float, thresholds: Sequence[float], rules,
                    unseen_per_hour: dict[float, float] | None = None) -> list[dict]:
    """Per threshold, what an operator trades: event recall and false alerts on the labelled clips, and (when given,
    measured on unseen normal footage) false alerts per hour, lowest threshold first.

    `series` and `labels` map clip ids to a stream score trace and its frame labels; the alerts are the service's
    (`match_clips`). The curve shows how far the threshold a calibration chose is from the lowest one the unseen
    footage would have allowed, which a single operating point cannot.
    """
    curve = []
    for thr in sorted(float(t) for t in thresholds):
        clips = list(match_clips(series, labels, fps, thr, rules).values())
        point = {"threshold": round(thr, 4), "event_recall": event_recall(clips),
                 "test_false_alerts": sum(c["false_alerts"] for c in clips)}
        if unseen_per_hour is not None:
            point["unseen_per_hour"] = unseen_per_hour[thr]
        curve.append(point)
    return curve
