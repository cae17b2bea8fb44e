"""The calibrated normaliser (offline/scoring/normalise.py CalibratedNormaliser, calibration.py, frame_scorer.py).

Anchored on normal footage: its median scores 0.5 and its `calibration_quantile` scores `threshold`, from the first
frame (no warm-up); a stream that starts anomalous is not learned as normal; a small persistent shift is followed
slowly (half-life `adapt_halflife`), never more than `adapt_limit` scales; NaN evidence scores NaN and teaches nothing.
"""
from __future__ import annotations

import logging

import numpy as np
import pytest

from offline.scoring.bundle import Calibration, ScoringSpec, random_bundle
from offline.scoring.calibration import calibration_from_raw
from offline.scoring.frame_scorer import build_frame_scorer, calibrated_params

AVAILABLE = (True, True, False)
SPEC = ScoringSpec(normaliser="calibrated")  # threshold 0.9 at the 0.99 quantile, half-life 3000, gate 0.75, limit 3


def normal_evidence(seed: int, n: int) -> dict[str, np.ndarray | None]:
    """Raw evidence of normal frames: skewed, like the real components (w1 lognormal, w2 gamma)."""
    rng = np.random.default_rng(seed)
    return {"w1": rng.lognormal(0.0, 0.4, n), "w2": rng.gamma(3.0, 0.5, n), "w3": None}


@pytest.fixture(scope="module")
def footage() -> dict[str, dict[str, np.ndarray | None]]:
    return {f"clip{i}": normal_evidence(i, 300 + 50 * i) for i in range(5)}


@pytest.fixture(scope="module")
def calibration(footage) -> Calibration:
    return calibration_from_raw(footage, SPEC, AVAILABLE)


def scorer(calibration, spec: ScoringSpec = SPEC):
    fs = build_frame_scorer(spec, calibration, AVAILABLE)
    assert fs.kind == "calibrated"
    return fs


def at(calibration, z: float, n: int = 1) -> dict[str, np.ndarray | None]:
    """n frames whose every component sits `z` robust scales above the calibration's location."""
    return {c: np.full(n, loc + z * scale) for c, (loc, scale) in calibration.robust.items()} | {"w3": None}


def drift(fs) -> dict[str, float]:
    return fs._calibrated.state()["drift"]


# ------------------------------------------------------------------------------------------------ (a) anchoring
def test_calibration_records_the_anchor(calibration, footage):
    assert calibration.frames == sum(len(r["w1"]) for r in footage.values())
    assert set(calibration.robust) == {"w1", "w2"}
    assert {"0.5", str(SPEC.calibration_quantile)} <= set(calibration.z_quantiles)
    assert calibration.score_quantiles["0.5"] == pytest.approx(0.5, abs=0.02)
    assert calibration.score_quantiles[str(SPEC.calibration_quantile)] == pytest.approx(SPEC.threshold, abs=0.02)
    # the replayable trace: every footage frame in stream order, the same scores the quantiles summarise
    assert {k: len(v) for k, v in calibration.score_trace.items()} == {k: len(r["w1"]) for k, r in footage.items()}
    trace = np.concatenate([np.asarray(v, dtype=float) for v in calibration.score_trace.values()])
    assert np.nanquantile(trace, 0.5) == pytest.approx(calibration.score_quantiles["0.5"], abs=1e-3)


@pytest.mark.parametrize("quantile, threshold", [(0.99, 0.9), (0.95, 0.8), (0.999, 0.97)])
def test_replayed_footage_median_at_half_and_quantile_at_threshold(footage, quantile, threshold):
    spec = SPEC.model_copy(update={"calibration_quantile": quantile, "threshold": threshold})
    cal = calibration_from_raw(footage, spec, AVAILABLE)
    scores = np.concatenate([scorer(cal, spec).update(raw)[0]["score"] for raw in footage.values()])
    assert np.median(scores) == pytest.approx(0.5, abs=0.02)
    assert np.quantile(scores, quantile) == pytest.approx(threshold, abs=0.02)
    # and on fresh normal footage of the same scene (not the calibration frames themselves)
    fresh = normal_evidence(99, 4000)
    scores = scorer(cal, spec).update(fresh)[0]["score"]
    assert np.median(scores) == pytest.approx(0.5, abs=0.03)
    assert np.mean(scores >= threshold) == pytest.approx(1 - quantile, abs=max(0.5 * (1 - quantile), 0.004))


# --------------------------------------------------------------------------------------------- (b) no warm-up
def test_first_frame_already_gets_the_anchored_score(calibration):
    probe = at(calibration, 1.0)
    fresh = scorer(calibration)
    first, _ = fresh.update(probe)
    used = scorer(calibration)
    used.update(normal_evidence(7, 1000))
    later, _ = used.update(probe)
    assert first["score"][0] == pytest.approx(later["score"][0], abs=0.02)
    # the fresh scorer's value is the anchor itself: sigmoid(k (z - z50)), z = 1 with the weights summing to 1
    p = calibrated_params(SPEC, calibration)
    k = np.log(SPEC.threshold / (1 - SPEC.threshold)) / (p["zq"] - p["z50"])
    assert first["score"][0] == pytest.approx(1 / (1 + np.exp(-k * (1.0 - p["z50"]))), rel=1e-9)
    # the calibration footage's median frame scores about 0.5 on the first frame, and warm flags are all set
    out, warm = scorer(calibration).update(at(calibration, 0.0, 5))
    assert warm.all() and out["score"][0] == pytest.approx(0.5, abs=0.05)


# ------------------------------------------------------------------------------------- (c) anomalous start
def test_a_stream_that_starts_anomalous_is_not_learned_as_normal(calibration):
    rng = np.random.default_rng(3)
    anomalous = at(calibration, 6.0, 300)
    anomalous = {c: None if v is None else v + 0.3 * calibration.robust[c][1] * rng.standard_normal(300)
                 for c, v in anomalous.items()}
    fs = scorer(calibration)
    scores, _ = fs.update(anomalous)
    assert (scores["score"] > SPEC.threshold).all(), scores["score"].min()
    assert all(abs(d) <= SPEC.adapt_limit for d in drift(fs).values())
    assert all(abs(d) < 1e-9 for d in drift(fs).values())  # scored above the gate: nothing learned
    after, _ = fs.update(normal_evidence(4, 1000))
    assert np.median(after["score"]) == pytest.approx(0.5, abs=0.03)  # normal footage after it: normal scores


def test_drift_is_bounded_by_adapt_limit_even_when_everything_teaches(calibration):
    """With the gate wide open and a fast half-life, a large level shift still moves the location at most
    `adapt_limit` calibration scales."""
    spec = SPEC.model_copy(update={"adapt_gate": 1.0, "adapt_halflife": 10.0, "adapt_limit": 2.0})
    fs = scorer(calibration, spec)
    scores, _ = fs.update(at(calibration, 6.0, 500))
    assert all(d == pytest.approx(2.0) for d in drift(fs).values())
    # bounded: the shifted level is still 4 scales above the location, so it keeps scoring high
    assert scores["score"][-1] > SPEC.threshold
    fs.update(at(calibration, -6.0, 500))
    assert all(d == pytest.approx(-2.0) for d in drift(fs).values())


# ------------------------------------------------------------------------------------- (d) slow adaptation
@pytest.mark.parametrize("halflife", [200.0, 3000.0])
def test_small_persistent_shift_is_followed_with_the_stated_half_life(calibration, halflife):
    spec = SPEC.model_copy(update={"adapt_halflife": halflife})
    fs = scorer(calibration, spec)
    n = int(halflife)
    scores, _ = fs.update(at(calibration, 0.5, n))
    assert (scores["score"] < spec.adapt_gate).all()  # a +0.5 scale shift is below the gate: it teaches
    for d in drift(fs).values():
        assert d == pytest.approx(0.25, abs=0.01)  # half-way after one half-life
    fs.update(at(calibration, 0.5, n))
    for d in drift(fs).values():
        assert d == pytest.approx(0.375, abs=0.01)
    assert scores["score"][-1] < scores["score"][0]  # the shifted level slowly becomes the new normal


def test_noisy_small_shift_moves_about_half_way_after_a_half_life(calibration):
    spec = SPEC.model_copy(update={"adapt_halflife": 500.0})
    n = 500
    shifted = {c: None if v is None else v + 0.5 * calibration.robust[c][1] for c, v in normal_evidence(11, n).items()}
    fs = scorer(calibration, spec)
    fs.update(shifted)
    moved = np.array(list(drift(fs).values()))
    # normal noise around a +0.5 shift (the gate keeps the loudest frames out, pulling a little low)
    assert ((moved > 0.1) & (moved < 0.45)).all(), moved


# ---------------------------------------------------------------------------------------------------- (e) NaN
@pytest.mark.parametrize("which", ["w1", "w2", "both"])
def test_nan_evidence_scores_nan_and_does_not_move_the_state(calibration, which):
    spec = SPEC.model_copy(update={"adapt_halflife": 20.0})  # fast, so a learned NaN would show at once
    ev = normal_evidence(12, 200)
    bad = {k: None if v is None else v.copy() for k, v in ev.items()}
    holes = [0, 50, 51, 52, 199]
    for c in (["w1", "w2"] if which == "both" else [which]):
        bad[c][holes] = np.nan
    clean = scorer(calibration, spec)
    with_nan = scorer(calibration, spec)
    got, _ = with_nan.update(bad)
    assert np.isnan(got["score"][holes]).all()
    keep = np.setdiff1d(np.arange(200), holes)
    assert np.isfinite(got["score"][keep]).all()
    ref, _ = clean.update({k: None if v is None else v[keep] for k, v in ev.items()})
    np.testing.assert_array_equal(got["score"][keep], ref["score"])
    assert drift(with_nan) == drift(clean)
    assert with_nan._calibrated.count == clean._calibrated.count == len(keep)


def test_nan_first_frame_leaves_the_anchor(calibration):
    fs = scorer(calibration)
    out, _ = fs.update({"w1": np.array([np.nan]), "w2": np.array([np.nan]), "w3": None})
    assert np.isnan(out["score"][0])
    assert all(d == 0.0 for d in drift(fs).values())


# -------------------------------------------------------------------------------------------- (f) fallback
@pytest.mark.parametrize(
    "cal",
    [
        None,
        Calibration(components={"w1": (1.0, 0.4), "w2": (1.5, 0.8)}),  # exported before calibrated scoring
        Calibration(components={"w1": (1.0, 0.4)}, robust={"w1": (1.0, 0.4)}, z_quantiles={"0.5": 0.0}),  # no 0.99
    ],
    ids=["no-calibration", "no-robust", "no-quantile"],
)
def test_calibrated_without_robust_statistics_falls_back_to_running(cal):
    assert calibrated_params(SPEC, cal) is None
    fs = build_frame_scorer(SPEC, cal, AVAILABLE)
    assert fs.kind == "running" and fs._calibrated is None
    out, warm = fs.update(normal_evidence(0, 40))
    assert out["score"].shape == (40,) and not warm[0] and warm[-1]  # the running normaliser warms up


def test_detector_without_calibration_warns_and_runs_the_running_normaliser(tmp_path, caplog):
    from offline.scoring.detector import Detector

    path = random_bundle(tmp_path / "b", size=32, temporal=False, channels=(4, 8, 8), scoring=SPEC)
    det = Detector.load(path)
    with caplog.at_level(logging.WARNING, logger="offline.scoring.detector"):
        fs = det.frame_scorer()
    assert fs.kind == "running"
    assert "running normaliser is used instead" in caplog.text


def test_calibrated_params_follow_the_scoring_spec(calibration):
    spec = SPEC.model_copy(update={"threshold": 0.8, "adapt_halflife": 123.0, "adapt_gate": 0.6, "adapt_limit": 1.5})
    p = calibrated_params(spec, calibration)
    assert (p["threshold"], p["halflife"], p["gate"], p["limit"]) == (0.8, 123.0, 0.6, 1.5)
    assert p["z50"] == calibration.z_quantiles["0.5"] and p["zq"] == calibration.z_quantiles["0.99"]
    assert p["robust"] == {k: tuple(v) for k, v in calibration.robust.items()}
