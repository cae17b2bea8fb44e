"""streaming/demo_bundle.py: the demo bundle builds reproducibly through `vad demo-bundle` and loads as a Detector."""
from __future__ import annotations

import json

import numpy as np

from offline.scoring.bundle import load_bundle
from offline.cli import main as vad_main
from offline.scoring.detector import Detector
from streaming.demo_bundle import demo_frames, ensure_demo_bundle, normal_runs


def test_demo_bundle_is_reproducible_and_loads(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    for out in (a, b):
        assert vad_main(["demo-bundle", "--out", str(out), "--steps", "3", "--size", "32"]) == 0
    assert "demo bundle written" in capsys.readouterr().out
    cfg_a, cfg_b = (json.loads((p / "config.json").read_text()) for p in (a, b))
    assert cfg_a["weights_sha256"] == cfg_b["weights_sha256"]  # same seed -> same weights
    assert cfg_a["calibration"] == cfg_b["calibration"]
    bundle = load_bundle(a)
    assert bundle.temporal is None and bundle.config.input.size == 32 and bundle.config.scoring.normaliser == "calibrated"
    assert bundle.config.calibration.components["w1"][1] > 0
    # calibrated: on its held-out normal footage the median score is 0.5 and the 0.99 quantile sits at the threshold
    # (the statistics come from windows every 4 frames, the replayed scores from the stream's quarter of them)
    q = bundle.config.calibration.score_quantiles
    assert abs(q["0.5"] - 0.5) < 0.04 and abs(q["0.99"] - bundle.config.scoring.threshold) < 0.04, q
    det = Detector(bundle)
    assert det.available == (True, False, False)
    assert vad_main(["demo-bundle", "--out", str(a)]) == 0  # exists: not rebuilt
    assert "exists" in capsys.readouterr().out
    assert ensure_demo_bundle(a) == a


def test_training_windows_exclude_the_anomaly():
    frames, labels = demo_frames(45.0, 10.0, 32)
    assert frames.shape[1:] == (32, 32, 3) and abs(len(frames) - 450) <= 1
    assert labels.any() and set(np.flatnonzero(labels)) <= set(range(199, 218)) | set(range(399, 418))
    runs = normal_runs(labels, 32)
    assert runs[0][0] == 0 and runs[-1][1] == len(frames) and len(runs) == 3
    for a, b in runs:
        assert b - a >= 32 and not labels[a:b].any()
    assert normal_runs(np.array([0, 0, 1, 0, 0, 0], bool), 3) == [(3, 6)]
