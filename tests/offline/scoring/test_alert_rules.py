"""offline/scoring/alert_rules.py: the alert state machine on scripted score sequences (10 frames per second)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from offline.scoring.alert_rules import AlertRules, AlertTracker, alert_spans, count_alerts, threshold_for_rate

FPS = 10.0


def run(tracker: AlertTracker, scores, warm=None):
    """Feed scores at 10 fps; return [(frame, kind, event)]."""
    out = []
    for i, s in enumerate(scores):
        for ev in tracker.update(i / FPS, s, i, warm=True if warm is None else warm[i]):
            out.append((i, ev.kind, ev))
    return out


def kinds(events):
    return [(i, k) for i, k, _ in events]


def test_short_spike_does_not_open():
    t = AlertTracker(threshold=0.5, min_duration_s=0.5, hysteresis=0.1, close_after_s=0.0)
    scores = [0.1] * 10 + [0.9] * 4 + [0.1] * 10  # 0.3 s above: shorter than 0.5 s
    assert run(t, scores) == []
    assert t.state == "idle"


def test_opens_after_min_duration_with_start_at_first_crossing_and_closes_with_hysteresis():
    t = AlertTracker(threshold=0.5, min_duration_s=0.5, hysteresis=0.2, close_after_s=0.0, camera="door")
    scores = [0.1] * 10 + [0.6, 0.7, 0.9, 0.8, 0.7, 0.6] + [0.45, 0.4, 0.35] + [0.2] + [0.1] * 5
    ev = run(t, scores)
    assert kinds(ev) == [(15, "opened"), (19, "closed")]
    opened, closed = ev[0][2], ev[1][2]
    assert opened.camera == "door"
    assert opened.start_s == pytest.approx(1.0)  # frame 10 first crossed
    assert (opened.peak_score, opened.peak_frame) == (0.9, 12)
    assert opened.peak_s == pytest.approx(1.2)
    # 0.45 .. 0.35 lie inside the hysteresis band (>= 0.3): still open until 0.2 at frame 19
    assert closed.end_s == pytest.approx(1.9)
    assert closed.reason == "score"
    assert (closed.peak_score, closed.peak_frame) == (0.9, 12)
    assert t.state == "idle"


def test_peak_events_while_open_and_new_peak_flag():
    t = AlertTracker(threshold=0.5, min_duration_s=0.2, hysteresis=0.0, close_after_s=0.0)
    flags = []
    events = []
    for i, s in enumerate([0.6, 0.7, 0.65, 0.8, 0.9, 0.85, 0.1]):
        events += [(i, e.kind) for e in t.update(i / FPS, s, i)]
        flags.append(t.new_peak)
    assert events == [(2, "opened"), (3, "peak"), (4, "peak"), (6, "closed")]
    assert flags == [True, True, False, True, True, False, False]


def test_pending_drops_back_when_score_falls_before_min_duration():
    t = AlertTracker(threshold=0.5, min_duration_s=1.0, hysteresis=0.1, close_after_s=0.0)
    scores = [0.9] * 5 + [0.1] + [0.9] * 5  # two 0.5 s stretches: never 1 s in one piece
    assert run(t, scores) == []
    assert t.state == "pending"
    assert t.peak[1] == 6  # the new stretch's own peak, not the first stretch's


def test_close_after_requires_sustained_low_score_and_end_is_first_low_frame():
    t = AlertTracker(threshold=0.5, min_duration_s=0.0, hysteresis=0.0, close_after_s=0.3)
    scores = [0.9, 0.9, 0.1, 0.1, 0.9, 0.1, 0.1, 0.1, 0.1, 0.1]
    ev = run(t, scores)
    assert kinds(ev) == [(0, "opened"), (8, "closed")]
    assert ev[-1][2].end_s == pytest.approx(0.5)  # the dip at 0.2 was too short; the low stretch began at 0.5


@pytest.mark.parametrize(
    "scores",
    [
        [math.nan] * 5,
        [0.9, math.nan, 0.9, math.nan],
    ],
)
def test_nan_scores_are_ignored(scores):
    t = AlertTracker(threshold=0.5, min_duration_s=10.0)
    assert run(t, scores) == []


def test_warmup_scores_are_ignored():
    t = AlertTracker(threshold=0.5, min_duration_s=0.0)
    warm = [False] * 5 + [True] * 2
    ev = run(t, [0.9] * 5 + [0.1, 0.9], warm=warm)
    assert kinds(ev) == [(6, "opened")]


def test_threshold_equal_counts_as_high():
    t = AlertTracker(threshold=0.5, min_duration_s=0.0, hysteresis=0.0, close_after_s=0.0)
    assert kinds(run(t, [0.5])) == [(0, "opened")]


def test_close_forces_an_open_alert_closed_and_drops_pending():
    t = AlertTracker(threshold=0.5, min_duration_s=0.0, camera="c")
    run(t, [0.9, 0.95])
    (ev,) = t.close(5.0, reason="removed")
    assert (ev.kind, ev.end_s, ev.reason, ev.peak_frame) == ("closed", 5.0, "removed", 1)
    assert t.close(6.0) == []
    p = AlertTracker(threshold=0.5, min_duration_s=5.0)
    run(p, [0.9])
    assert p.state == "pending"
    assert p.close(1.0) == [] and p.state == "idle"


def test_time_going_backwards_is_an_error_naming_the_frame():
    t = AlertTracker(threshold=0.5, camera="gate")
    t.update(10.0, 0.1, 100)
    with pytest.raises(ValueError, match="gate.*frame 101.*9.0 < 10.0"):
        t.update(9.0, 0.1, 101)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"threshold": math.nan}, "threshold"),
        ({"threshold": 0.5, "min_duration_s": -1}, "min_duration_s"),
        ({"threshold": 0.5, "hysteresis": -0.1}, "hysteresis"),
        ({"threshold": 0.5, "close_after_s": math.inf}, "close_after_s"),
    ],
)
def test_bad_parameters_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        AlertTracker(**kwargs)


def test_noisy_stream_gives_one_alert_per_anomalous_segment():
    """Random normal noise with two injected segments: exactly two alerts, each inside its segment."""
    rng = np.random.default_rng(0)
    n = 600
    scores = np.clip(rng.normal(0.2, 0.1, n), 0, 1)
    segments = [(150, 200), (400, 480)]
    for a, b in segments:
        scores[a:b] = np.clip(rng.normal(0.85, 0.08, b - a), 0, 1)
    t = AlertTracker(threshold=0.6, min_duration_s=0.5, hysteresis=0.2, close_after_s=0.5)
    ev = run(t, scores)
    opened = [e for _, k, e in ev if k == "opened"]
    closed = [e for _, k, e in ev if k == "closed"]
    assert len(opened) == len(closed) == 2
    for (a, b), o, c in zip(segments, opened, closed):
        assert a / FPS <= o.start_s <= a / FPS + 0.5
        assert b / FPS <= c.end_s <= b / FPS + 0.5
        assert a <= c.peak_frame < b
        assert c.peak_score == pytest.approx(scores[a:b].max())


# --- thresholds for a false-alert rate -------------------------------------------------------------------------

def _normal_scores(seconds: float, fps: float, seed: int) -> np.ndarray:
    """A stationary, autocorrelated score process like a normal scene's (AR(1) through a logistic)."""
    rng = np.random.default_rng(seed)
    n, phi = int(seconds * fps), 0.9
    x = np.empty(n)
    x[0] = 0.0
    e = rng.normal(0.0, 1.5 * np.sqrt(1 - phi**2), n)
    for i in range(1, n):
        x[i] = phi * x[i - 1] + e[i]
    return 1.0 / (1.0 + np.exp(-x))


def test_count_alerts_replays_the_rules_per_trace():
    fps = 10.0
    trace = np.full(200, 0.3)
    trace[20:40] = 0.95  # 2 s high: one alert
    trace[100:102] = 0.95  # 0.2 s: too short for min_duration 0.5 s
    rules = AlertRules(min_duration_s=0.5, hysteresis=0.1, close_after_s=1.0)
    assert count_alerts([trace], fps, 0.9, rules) == 1
    assert count_alerts([trace, trace], fps, 0.9, rules) == 2
    assert count_alerts([trace], fps, 0.96, rules) == 0
    assert count_alerts([trace], fps, 0.2, rules) == 1  # always high: one alert that never closes


def test_alert_spans_run_from_the_first_crossing_to_the_first_low_frame_and_match_count_alerts():
    fps = 10.0
    trace = np.full(200, 0.3)
    trace[20:40] = 0.95  # opens at 25 (0.5 s), started at 20; low from 40, closes 1 s later
    trace[100:102] = 0.95  # too short
    trace[150:] = 0.95  # still open at the end
    trace[60] = np.nan
    rules = AlertRules(min_duration_s=0.5, hysteresis=0.1, close_after_s=1.0)
    spans = alert_spans(trace, fps, 0.9, rules)
    assert spans == [(20, 39), (150, 199)]
    assert len(spans) == count_alerts([trace], fps, 0.9, rules)
    assert alert_spans(trace, fps, 0.96, rules) == []
    with pytest.raises(ValueError, match="fps"):
        alert_spans(trace, 0.0, 0.9)


def test_threshold_for_rate_holds_on_unseen_footage_of_the_same_scene():
    """Chosen on one hour of normal scores, the rate on another hour is within a factor of 2 of the target."""
    fps, rules = 5.0, AlertRules(min_duration_s=0.5, hysteresis=0.1, close_after_s=1.0)
    calibration, unseen = _normal_scores(3600, fps, seed=1), _normal_scores(3600, fps, seed=2)
    for target in (5.0, 20.0, 60.0):
        choice = threshold_for_rate({"cal": calibration}, fps, target, rules)
        assert choice.resolved and choice.expected_per_hour <= target
        assert 0.5 <= choice.threshold < 0.999
        measured = count_alerts([unseen], fps, choice.threshold, rules)
        assert target / 2 <= measured <= target * 2, (target, choice, measured)
        # the lowest such threshold: one score level lower would exceed the target on the calibration footage
        below = np.max(calibration[calibration < choice.threshold])
        assert count_alerts([calibration], fps, float(below), rules) > target


def test_threshold_for_rate_on_footage_too_short_to_resolve_the_target_says_so():
    fps = 5.0
    short = _normal_scores(120, fps, seed=3)  # two minutes cannot show 1 alert per hour
    choice = threshold_for_rate([short], fps, 1.0)
    assert not choice.resolved
    assert choice.expected_per_hour == 0 and choice.bound_per_hour == pytest.approx(30.0)
    assert count_alerts([short], fps, choice.threshold) == 0
    assert short.max() < choice.threshold <= short.max() + 1e-9  # above every score it showed, no pending frame


def test_threshold_for_rate_rejects_bad_input():
    with pytest.raises(ValueError, match="max_false_alerts_per_hour"):
        threshold_for_rate([[0.5]], 5.0, -1.0)
    with pytest.raises(ValueError, match="no calibration footage"):
        threshold_for_rate([], 5.0, 1.0)


def test_resolve_threshold_order_config_then_rate_then_learned_then_bundle():
    from offline.scoring.alert_rules import resolve_threshold
    from offline.scoring.bundle import Calibration, ScoringSpec

    fps = 5.0
    trace = _normal_scores(3600, fps, seed=4)
    cal = Calibration(score_trace={"c": [round(float(v), 4) for v in trace]}, frames=len(trace))
    spec, learned = ScoringSpec(threshold=0.9), ScoringSpec(threshold=0.9, alert_threshold=0.93)
    explicit = resolve_threshold(0.8, 10.0, learned, cal, fps)
    assert (explicit.threshold, explicit.source) == (0.8, "config")
    assert explicit.expected_per_hour == count_alerts([trace], fps, 0.8)  # one hour of footage: count = rate
    rate = resolve_threshold(None, 10.0, learned, cal, fps)
    assert rate.source == "max_false_alerts_per_hour" and rate.target_per_hour == 10.0 and rate.expected_per_hour <= 10
    assert resolve_threshold(None, None, learned, cal, fps).threshold == 0.93
    plain = resolve_threshold(None, None, spec, cal, fps)
    assert (plain.threshold, plain.source) == (0.9, "bundle")
    # no trace (an old bundle): the rate cannot be chosen, the bundle's threshold holds and no rate is claimed
    old = resolve_threshold(None, 10.0, spec, Calibration(), fps)
    assert (old.threshold, old.source, old.expected_per_hour) == (0.9, "bundle", None)
    assert "no calibration score trace" in old.note
    quiet = resolve_threshold(0.9999, None, spec, cal, fps)
    assert quiet.expected_per_hour == 0 and quiet.bound_per_hour == pytest.approx(1.0)
