"""`calibrate` (offline/scoring/calibration.py): held-out normal clips -> the bundle's calibration, through Detector.

The statistics come from windows every `stride` frames (overlapping), the replayed trace from the non-overlapping
windows a camera's stream would score; with `pool: window` each window is one value, so short footage at stride 16
gave a handful of samples. Real Ped2 footage, a small random bundle (spatial + flow AE: the clip's flow is
computed once and sliced).
"""
from __future__ import annotations

import numpy as np
import pytest

from offline.data.pixels import to_model_range
from offline.data.readers import open_dataset, read_frames
from offline.scoring.bundle import ScoringSpec, random_bundle
from offline.scoring.calibration import calibrate, calibration_from_raw
from offline.scoring.clip_windows import prepare, score_windows
from offline.scoring.detector import Detector
from offline.scoring.frame_scorer import build_frame_scorer
from offline.scoring.normalise import robust_stats

SIZE, T, N = 32, 16, 56  # 56 frames: 3 non-overlapping windows (48 frames), 11 windows every 4 frames


@pytest.fixture(scope="module")
def detector(tmp_path_factory) -> Detector:
    scoring = ScoringSpec(normaliser="calibrated", pool="window", reduction_spatial="block_max", block=8)
    path = random_bundle(tmp_path_factory.mktemp("b") / "bundle", size=SIZE, temporal=True, channels=(8, 16, 32),
                         seed=3, scoring=scoring)
    return Detector.load(path)


@pytest.fixture(scope="module")
def frames(ped2) -> np.ndarray:
    clip = next(c for c in open_dataset(ped2).train if c.id == "01")
    return np.stack(list(read_frames(clip, size=SIZE)))[:N]


def test_overlapping_windows_are_the_samples_and_the_trace_is_the_stream(detector, frames):
    cal = calibrate(detector, [("01", to_model_range(frames))], stride=4)
    assert (cal.stride, cal.frames, cal.samples) == (4, 3 * T, 11 * T)
    assert len(cal.score_trace["01"]) == 3 * T
    # the statistics are those of every window at stride 4, each window scored by the one scoring path
    x, flow = prepare(detector, frames)
    per_window = {s: ws.raw(b) for s, ws, b in score_windows(detector, x, flow, list(range(0, N - T + 1, 4)), 2)}
    for c in ("w1", "w2"):
        values = np.concatenate([per_window[s][c] for s in sorted(per_window)])
        assert cal.robust[c] == pytest.approx(robust_stats(values), rel=1e-5)
        # pooled: a window is one value, so stride 4 gives 11 distinct samples where stride 16 gave 3
        assert len(np.unique(np.round(values, 6))) == 11
    # the trace is the non-overlapping windows, as the stream scores them, replayed with these statistics
    trace = {c: np.concatenate([per_window[s][c] for s in (0, T, 2 * T)]) for c in ("w1", "w2")} | {"w3": None}
    replay = build_frame_scorer(detector.config.scoring, cal, detector.available).update(trace)[0]["score"]
    assert np.asarray(cal.score_trace["01"], dtype=float) == pytest.approx(replay, abs=1e-4)


def test_stride_of_a_window_is_the_non_overlapping_calibration(detector, frames):
    cal = calibrate(detector, [("01", to_model_range(frames))], stride=T)
    assert (cal.stride, cal.frames, cal.samples) == (T, 3 * T, 3 * T)
    x, flow = prepare(detector, frames)
    trace: dict[str, list] = {}
    for s, ws, b in score_windows(detector, x, flow, [0, T, 2 * T], 3):
        for c, v in ws.raw(b).items():
            trace.setdefault(c, []).append(v)
    raw = {c: None if v[0] is None else np.concatenate(v) for c, v in trace.items()}
    same = calibration_from_raw({"01": raw}, detector.config.scoring, detector.available)
    assert all(cal.robust[c] == pytest.approx(same.robust[c]) for c in same.robust) and cal.score_trace == same.score_trace


def test_clips_shorter_than_a_window_are_skipped_and_none_at_all_is_an_error(detector, frames):
    with pytest.raises(ValueError, match="at least one frame"):
        calibrate(detector, [("01", to_model_range(frames[: T - 1]))])
    cal = calibrate(detector, [("short", to_model_range(frames[:5])), ("01", to_model_range(frames))])
    assert list(cal.score_trace) == ["01"] and cal.stride == T // 4
