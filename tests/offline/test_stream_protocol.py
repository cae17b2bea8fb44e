"""`vad eval --protocol stream` on real Ped2 clips with a calibrated classical baseline (offline.evaluate.stream_clip,
offline.baselines.ClassicalDetector, calibrate_classical): anomalies score above normal frames, and a clip that starts
anomalous is not learned as normal at its start (the calibrated normaliser has no warm-up)."""
from __future__ import annotations

import numpy as np
import pytest

from offline.baselines import ClassicalDetector
from offline.data.readers import open_dataset, read_frames
from offline.evaluate import calibrate_classical, stream_clip
from offline.scoring.bundle import ScoringSpec

SIZE, HOP, BLOCK = 64, 16, 8
STARTS_ANOMALOUS = ("03", "05", "06")


@pytest.fixture(scope="module")
def dataset(ped2):
    return open_dataset(ped2)


@pytest.fixture(scope="module")
def detector(dataset):
    scoring = ScoringSpec(weights=(1.0, 0.0, 0.0), normaliser="calibrated", hop=HOP, reduction_spatial="block_max",
                          block=BLOCK)
    det = ClassicalDetector("frame-difference", SIZE, 16, scoring)
    cal = calibrate_classical(det, dataset.train, holdout_fraction=0.1)
    assert det.frame_scorer().kind == "calibrated"
    assert cal.score_quantiles["0.5"] == pytest.approx(0.5, abs=0.02)  # the training tails' median at 0.5
    return det


def scored(detector, dataset, cid: str) -> tuple[np.ndarray, np.ndarray]:
    clip = next(c for c in dataset.test if c.id == cid)
    out = stream_clip(detector, np.stack(list(read_frames(clip, size=SIZE))))
    return out["score"], np.asarray(clip.labels)


def test_clip_01_anomalous_part_scores_above_its_normal_part(detector, dataset):
    score, labels = scored(detector, dataset, "01")
    assert labels[:60].sum() == 0 and labels[60:].all()  # normal frames 1-60, anomalous 61-180
    ok = np.isfinite(score)
    assert ok[:176].all() and not ok[176:].any()  # hop 16: the last 4 frames wait for a window that never comes
    assert np.median(score[ok & (labels == 1)]) > np.median(score[ok & (labels == 0)])


@pytest.mark.parametrize("cid", STARTS_ANOMALOUS)
def test_clip_that_starts_anomalous_is_not_learned_as_normal(detector, dataset, cid):
    score, labels = scored(detector, dataset, cid)
    assert labels[:32].all()  # anomalous from the first frame
    assert np.isfinite(score[:32]).all()  # the first window gives all its frames: no warm-up gap
    assert np.median(score[:32]) > 0.5
