"""bench/false_alerts.py's classical floor: frame differencing on vtest's learn split, calibrated on the held-out
tails with overlapping windows, the unseen half streamed and replayed through the default alert rules."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_classical_rows_on_the_same_split(tmp_path, vtest):
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "false_alerts.py"), "--video", str(vtest), "--classical-only",
         "--classical", "frame-difference", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=600, cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    row = json.loads((tmp_path / "result.json").read_text())["classical"]["frame-difference"]
    cal, unseen = row["calibration"], row["unseen"]
    assert cal["samples"] > cal["frames"] >= 48  # windows every 4 frames overlap: more samples than frames
    assert unseen["clips"] == ["segment-002", "segment-003"] and 35 < unseen["seconds"] < 45
    alerts = unseen["false_alerts"]["default"]
    assert alerts["threshold"] == 0.9 and alerts["per_hour"] == round(alerts["alerts"] * 3600 / unseen["seconds"], 2)
    assert 0.0 < unseen["score_quantiles"]["0.5"] < unseen["score_quantiles"]["1.0"] <= 1.0
    assert "frame-difference: calibration" in proc.stdout
