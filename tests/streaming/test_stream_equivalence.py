"""The service and `vad eval --protocol stream` compute the same numbers (issue: one path from bundle to scores).

A real Ped2 test clip goes through the camera path (streaming.ingest.IngestLoop on the file -> ring buffer windows ->
streaming.batching.BatchScorer) and through offline.evaluate.stream_clip on frames decoded by read_frames: the same
frames get scored, and every one of them gets the identical score.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from offline.data.pixels import to_model_range
from offline.data.readers import open_dataset, read_frames
from offline.data.windows import window_starts
from offline.evaluate import stream_clip
from offline.scoring.bundle import ScoringSpec, load_bundle, random_bundle, save_bundle
from offline.scoring.detector import Detector
from offline.scoring.calibration import calibrate
from streaming.batching import BatchScorer, frame_scorer_factory
from streaming.ingest import IngestLoop, IngestSettings

T = 16
CLIP = "09"  # 120 frames: hop 16 scores frames 0-111 by the clip's end, hop 8 all 120
SCORED = {16: 112, 8: 120}


def clip_of(ped2: Path, cid: str, part: str = "test"):
    dataset = open_dataset(ped2)
    return next(c for c in getattr(dataset, part) if c.id == cid)


def calibrated_bundle(path: Path, ped2: Path, size: int, hop: int, temporal: bool, recipe: dict | None = None,
                      flow=None) -> Path:
    """A small random bundle with calibrated scoring (`recipe`: ScoringSpec fields on top), calibrated (as `vad
    export` does) on three windows' worth of two Ped2 training clips."""
    # a fast, open adaptation so the camera's state changes from window to window and must carry over exactly
    fields = {"reduction_spatial": "block_max", "reduction_temporal": "block_max", "block": 8, **(recipe or {})}
    scoring = ScoringSpec(normaliser="calibrated", hop=hop, adapt_halflife=50.0, adapt_gate=1.0, **fields)
    random_bundle(path, size=size, temporal=temporal, channels=(8, 16, 32), seed=hop, scoring=scoring, flow=flow)
    det = Detector.load(path)
    clips = [(cid, to_model_range(np.stack(list(read_frames(clip_of(ped2, cid, "train"), size=size)))[: 3 * T]))
             for cid in ("01", "02")]  # (3, N, H, W) each
    cal = calibrate(det, clips)
    assert cal.robust and "0.99" in cal.z_quantiles
    b = load_bundle(path)
    save_bundle(path, b.spatial, b.temporal, input_spec=b.config.input, flow=b.config.flow, scoring=b.config.scoring,
                calibration=cal)
    return path


def ingest_windows(clip_path: Path, size: int, hop: int) -> list:
    """Every window the camera path emits for a file, in order (a non-looped file: run() returns at its end)."""
    windows = []
    settings = IngestSettings(fps=None, size=size, window=T, hop=hop, realtime_files=False, loop_files=False)
    loop = IngestLoop("ped2", str(clip_path), settings, on_window=lambda w: windows.append(w) or True)
    loop.run()
    stats = loop.stats()
    assert stats["state"] == "stopped" and stats["windows_dropped"] == 0, stats
    return windows


def service_scores(detector, windows, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(frame indices scored, in order; per-frame scores (n,), NaN where not scored) from the service's scorer."""
    scorer = BatchScorer(detector, frame_scorer_factory(detector), max_batch=16, return_maps=False)
    scored = scorer.score(windows)
    idx = np.concatenate([s.indices for s in scored])
    moved = scorer._scorers["ped2"].frame_scorer._calibrated.state()["drift"]
    assert any(abs(d) > 0.01 for d in moved.values()), moved  # the state evolved along the clip
    out = np.full(n, np.nan)
    out[idx] = np.concatenate([s.score for s in scored])
    return idx, out


def assert_equivalent(detector, ped2: Path, size: int, hop: int) -> None:
    clip = clip_of(ped2, CLIP)
    windows = ingest_windows(clip.path, size, hop)
    frames = np.stack(list(read_frames(clip, size=size)))
    assert len(windows) == len(window_starts(len(frames), T, hop, cover_end=False))
    idx, live = service_scores(detector, windows, len(frames))
    offline = stream_clip(detector, frames)["score"]
    # the same frames scored: each once, in order, the hop deciding how far the clip's tail is reached
    np.testing.assert_array_equal(idx, np.arange(SCORED[hop]))
    np.testing.assert_array_equal(np.flatnonzero(np.isfinite(offline)), idx)
    # the identical score for each of them
    np.testing.assert_array_equal(live[idx], offline[idx])
    # a calibrated, non-trivial score (not all equal, inside (0, 1))
    assert 0 < live[idx].min() < live[idx].max() < 1


@pytest.mark.parametrize("hop", [16, 8])
def test_camera_path_and_eval_stream_protocol_give_identical_scores(ped2, tmp_path, hop):
    path = calibrated_bundle(tmp_path / "bundle", ped2, size=32, hop=hop, temporal=False)
    detector = Detector.load(path)
    assert detector.frame_scorer().kind == "calibrated"
    assert detector.config.scoring.hop == hop
    assert_equivalent(detector, ped2, 32, hop)


@pytest.mark.slow
@pytest.mark.parametrize("hop", [16, 8])
def test_camera_path_and_eval_stream_protocol_agree_with_a_temporal_ae(ped2, tmp_path, hop):
    """With the flow AE and the cpu recipe (`vad learn`'s default bundle: flow frame mean, window pooling): the
    service computes TV-L1 per window, eval once per clip and slices it; OpenCV's TV-L1 on the CPU is deterministic
    per pair, so the scores are still identical."""
    from offline.learn import CPU_RECIPE

    path = calibrated_bundle(tmp_path / "bundle", ped2, size=32, hop=hop, temporal=True, recipe=CPU_RECIPE)
    detector = Detector.load(path, flow_backend="opencv")
    assert detector.available[1] and detector.frame_scorer().kind == "calibrated"
    assert detector.config.scoring.pool == "window"
    assert_equivalent(detector, ped2, 32, hop)


@pytest.mark.slow
def test_camera_path_and_eval_stream_protocol_agree_with_warm_started_flow(ped2, tmp_path):
    """flow.warm_start: each pair of a window after its first starts from the previous pair's flow with one pyramid
    level. The service chains the pairs of each window, eval chains the clip's pairs every 16 frames from its first
    and slices: the same flow, so the same scores; and not the cold flow's scores."""
    from offline.config import FlowConfig
    from offline.learn import CPU_RECIPE

    budget = {"scales": 3, "warps": 1, "inner_iterations": 10, "outer_iterations": 1}
    warm = FlowConfig(backend="opencv", warm_start=True, **budget)
    path = calibrated_bundle(tmp_path / "warm", ped2, size=32, hop=16, temporal=True, recipe=CPU_RECIPE, flow=warm)
    detector = Detector.load(path)
    assert detector.flow_estimator.warm_start
    assert_equivalent(detector, ped2, 32, 16)
    frames = np.stack(list(read_frames(clip_of(ped2, CLIP), size=32)))
    cold = Detector.load(calibrated_bundle(tmp_path / "cold", ped2, size=32, hop=16, temporal=True, recipe=CPU_RECIPE,
                                           flow=FlowConfig(backend="opencv", **budget)))
    a, b = stream_clip(detector, frames)["w2"], stream_clip(cold, frames)["w2"]
    assert np.isfinite(a).sum() == 112 and not np.allclose(a[:112], b[:112])
