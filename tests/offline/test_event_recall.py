"""Alerts matched against labelled anomalous stretches (event recall, false alerts on labelled footage)."""
from __future__ import annotations

import numpy as np

from offline.event_recall import anomalous_ranges, event_recall, match_alerts, operating_curve
from offline.scoring.alert_rules import AlertRules


def test_anomalous_ranges_are_maximal_runs_inclusive():
    assert anomalous_ranges([0, 1, 1, 0, 0, 1, 0, 1, 1]) == [(1, 2), (5, 5), (7, 8)]
    assert anomalous_ranges(np.zeros(5)) == []
    assert anomalous_ranges(np.ones(3)) == [(0, 2)]


def test_match_alerts_counts_caught_ranges_and_alerts_on_normal_frames_only():
    labels = [0] * 10 + [1] * 10 + [0] * 10 + [1] * 5 + [0] * 5  # ranges (10, 19), (30, 34)
    spans = [(0, 3), (18, 25), (5, 9)]  # the second touches the first range; the others fall on normal frames
    m = match_alerts(spans, labels)
    assert m == {"ranges": 2, "caught": 1, "alerts": 3, "false_alerts": 2}
    assert match_alerts([(9, 10), (34, 40)], labels)["caught"] == 2  # one frame of overlap counts
    assert match_alerts([], labels) == {"ranges": 2, "caught": 0, "alerts": 0, "false_alerts": 0}


def test_event_recall_pools_ranges_over_clips():
    assert event_recall([{"ranges": 2, "caught": 1}, {"ranges": 2, "caught": 2}]) == 0.75
    assert event_recall([{"ranges": 0, "caught": 0}]) is None


def test_operating_curve_trades_recall_for_false_alerts_as_the_threshold_rises():
    fps = 10.0
    labels = {"a": [0] * 40 + [1] * 20 + [0] * 40, "b": [0] * 100}
    # clip a: a strong anomaly (0.95) and a weaker normal bump (0.8); clip b: normal with a bump at 0.7
    a = np.full(100, 0.3)
    a[40:60], a[10:20] = 0.95, 0.8
    b = np.full(100, 0.3)
    b[50:60] = 0.7
    curve = operating_curve({"a": a, "b": b}, labels, fps, [0.9, 0.6, 0.75], AlertRules(),
                            unseen_per_hour={0.6: 12.0, 0.75: 3.0, 0.9: 0.0})
    assert [p["threshold"] for p in curve] == [0.6, 0.75, 0.9]  # lowest first
    assert [p["event_recall"] for p in curve] == [1.0, 1.0, 1.0]
    assert [p["test_false_alerts"] for p in curve] == [2, 1, 0]  # both bumps, then a's, then none
    assert [p["unseen_per_hour"] for p in curve] == [12.0, 3.0, 0.0]
    above = operating_curve({"a": a}, labels, fps, [0.99], AlertRules())
    assert above == [{"threshold": 0.99, "event_recall": 0.0, "test_false_alerts": 0}]
