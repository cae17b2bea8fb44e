"""The rule that turns a false-alert rate into a threshold (`threshold_for_rate`), held to real unseen footage.

UCSD Ped1's training clips split as `vad learn` splits them (01-24 learned, 25-34 unseen, 200 s of normal footage
the detector never saw): a classical frame-difference detector calibrated on the learning clips, a threshold chosen
there for a rate, then the unseen clips replayed through the service's alert rules at 10 fps. Measured
(2026-12-04, 64 px, block_max 8 pooled): 60/h -> 36/h unseen, 120/h -> 90/h; 10 and 30/h -> none.
"""
from __future__ import annotations

import pytest

from offline.baselines import ClassicalDetector
from offline.data.readers import open_dataset
from offline.evaluate import calibrate_classical
from offline.learn import evaluate_unseen, split_clips
from offline.scoring.alert_rules import AlertRules, threshold_for_rate
from offline.scoring.bundle import ScoringSpec

pytestmark = pytest.mark.slow
FPS = 10.0


def test_a_threshold_chosen_for_a_rate_holds_on_unseen_ped1_footage(shared_data):
    if not (shared_data / "ped1").is_dir():  # a later addition to the shared footage: say so rather than fail
        pytest.skip(f"UCSD Ped1 not found at {shared_data / 'ped1'}")
    train, unseen = split_clips(list(open_dataset(shared_data / "ped1").train), 0.294)
    assert [c.id for c in unseen] == [f"{i:02d}" for i in range(25, 35)]
    scoring = ScoringSpec(weights=(1.0, 0.0, 0.0), normaliser="calibrated", reduction_spatial="block_max", block=8,
                          pool="window")
    det = ClassicalDetector("frame-difference", 64, 16, scoring)
    cal = calibrate_classical(det, train, 1.0)  # the whole learning clips: ~460 s resolves tens of alerts an hour
    rules = AlertRules()
    choices = {rate: threshold_for_rate(cal.score_trace, FPS, rate, rules) for rate in (10.0, 60.0, 120.0)}
    assert all(c.resolved for c in choices.values())
    assert choices[10.0].threshold > choices[60.0].threshold > choices[120.0].threshold  # a lower rate, a higher bar
    report = evaluate_unseen(det, unseen, rules, {str(r): c.threshold for r, c in choices.items()}, progress=False)
    assert report["seconds"] == pytest.approx(200.0)
    for rate in choices:
        realised = report["false_alerts"][str(rate)]["per_hour"]
        # one alert in 200 s is 18/h: the realised rate stays within a factor of 2 above the target, and the
        # looser targets are not met by a threshold so high that the footage shows nothing
        assert realised <= 2 * rate, (rate, realised)
    assert report["false_alerts"]["120.0"]["per_hour"] >= 120.0 / 4
