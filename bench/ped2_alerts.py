"""Alerts a camera would raise on each Ped2 test clip: a `vad eval` report's stream-protocol scores (what the service
computes, tests/streaming/test_stream_equivalence.py) replayed through the service's alert rules at a threshold.

    .venv/bin/python bench/ped2_alerts.py runs/ped2-table/ROW [--threshold 0.9] [--data ../shared/data/ped2]

Per clip: the highest score on normal and on anomalous frames, the frames where alerts open (0-based), and which of
them open on a frame labelled normal. The default threshold is the bundle's (0.9: the calibration's 99th percentile).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(argv=None) -> int:
    from offline.data.readers import open_dataset
    from offline.scoring.alert_rules import AlertRules, AlertTracker

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("row", type=Path, help="a `vad eval --out` folder (report.json)")
    ap.add_argument("--threshold", type=float, default=0.9)
    ap.add_argument("--fps", type=float, default=10.0, help="Ped2's rate")
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "ped2")
    args = ap.parse_args(argv)
    report = json.loads((args.row / "report.json").read_text())
    series = report["series"]["stream"]
    labels = {c.id: np.asarray(c.labels) for c in open_dataset(args.data).test if c.id in series}
    rules = AlertRules()
    print(f"{report['scorer']}: threshold {args.threshold}, min {rules.min_duration_s} s, hysteresis {rules.hysteresis}")
    print("| clip | normal frames | max score, normal | max score, anomalous | alerts open at | on a normal frame |")
    print("|---|---|---|---|---|---|")
    for cid, lab in labels.items():
        s = np.array([np.nan if v is None else v for v in series[cid]], dtype=float)
        tracker = AlertTracker(args.threshold, rules.min_duration_s, rules.hysteresis, rules.close_after_s)
        opened = [i for i, v in enumerate(s) for ev in tracker.update(i / args.fps, float(v), i) if ev.kind == "opened"]
        lab = lab[: len(s)]
        top = lambda m: "-" if not np.isfinite(s[m]).any() else f"{np.nanmax(s[m]):.2f}"  # noqa: E731
        print(f"| {cid} | {int((lab == 0).sum())} | {top(lab == 0)} | {top(lab == 1)} | {opened or '-'} | "
              f"{[i for i in opened if lab[i] == 0] or '-'} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
