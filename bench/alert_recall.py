"""False alerts per hour on unseen normal footage, and the share of labelled anomalies that raise an alert, for a
learned bundle and the classical floor, as a camera would alert on them.

    .venv/bin/python bench/alert_recall.py --data ../shared/data/ped1 --eval-fraction 0.294 \
        --bundle runs/ped1-learn/bundle --classical frame-difference --classical-block 8 --json runs/ped1-alerts.json \
        --plot runs/ped1-alerts.png

The dataset's training clips are split as `vad learn` splits them (`--eval-fraction`: the last clips by time are
unseen; for Ped1 0.294 keeps 01-24 for learning and 25-34 unseen, so pass the bundle `vad learn` made with the
same fraction). Per detector: the calibration footage (the bundle's own; a classical detector is calibrated here
on the learning clips' held-out tails, `--calibration-fraction`, the share `vad learn` holds out), two thresholds:
the detector's default and the one `threshold_for_rate` chooses on that footage for `--max-false-alerts-per-hour`
(the service's `max_false_alerts_per_hour` rule, at `--fps`); then the unseen normal clips and every labelled test
clip streamed exactly as a camera scores them (`stream_clip`) and replayed through the service's alert rules:
false alerts per hour on the unseen clips, and on the test clips the anomalous ranges overlapped by an alert
(event recall) and the alerts that overlap no anomaly. The stream micro-AUC of the same test scores is printed
beside, on the whole set and on the selection split's halves. Over a grid of thresholds (0.50-1.00) the same
replays give the operating curve (`--plot`): event recall against false alerts per hour on the unseen footage,
and the lowest threshold the unseen footage stays quiet at, a bound on what a better calibration could reach.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CURVE_THRESHOLDS = np.round(np.arange(0.50, 1.0001, 0.01), 2)
sys.path.insert(0, str(REPO))


def classical_detector(kind: str, block: int, size: int, pool: str):
    """A classical detector scored like the cpu recipe (block_max, pooled), flow on the cpu schedule's budget."""
    from offline.baselines import ClassicalDetector
    from offline.config import FlowConfig
    from offline.scoring.bundle import ScoringSpec
    from offline.training.cli import CPU_FLOW_BUDGET

    scoring = ScoringSpec(weights=(1.0, 0.0, 0.0), normaliser="calibrated", reduction_spatial="block_max",
                          block=block, pool=pool)
    flow = FlowConfig(clip=20.0, **CPU_FLOW_BUDGET) if kind == "flow-magnitude" else None
    return ClassicalDetector(kind, size, 16, scoring, flow=flow)


def measure(name: str, detector, dataset, unseen: list, fps: float | None, rate: float, rules, split: str | None) -> dict:
    """Thresholds, unseen false alerts, test event recall and AUC of one calibrated detector."""
    from tqdm import tqdm

    from offline.data.readers import read_frames
    from offline.eval_split import SPLITS, half_micro_auc
    from offline.evaluate import stream_clip
    from offline.event_recall import event_recall, match_clips, operating_curve
    from offline.learn import evaluate_unseen
    from offline.scoring.alert_rules import threshold_for_rate

    cal = detector.config.calibration
    test = list(dataset.test)
    replay_fps = fps or float(np.median([c.fps for c in test]))
    choice = threshold_for_rate(cal.score_trace, replay_fps, rate, rules)
    thresholds = {"default": float(detector.config.scoring.threshold), "chosen": choice.threshold}
    grid = {f"{t:.2f}": float(t) for t in CURVE_THRESHOLDS}
    t0 = time.monotonic()
    unseen_report = evaluate_unseen(detector, unseen, rules, thresholds | grid, progress=False)
    series, labels = {}, {}
    for clip in tqdm(test, desc=f"{name}: test clips", unit="clip", leave=False):
        frames = np.stack(list(read_frames(clip, size=detector.size)))
        series[clip.id] = stream_clip(detector, frames)["score"]
        labels[clip.id] = np.asarray(clip.labels)[: len(frames)]
    per_threshold = {}
    for key, thr in thresholds.items():
        clips = match_clips(series, labels, replay_fps, thr, rules)
        per_threshold[key] = {
            "threshold": round(thr, 4), "unseen_alerts": unseen_report["false_alerts"][key]["alerts"],
            "unseen_per_hour": unseen_report["false_alerts"][key]["per_hour"],
            "test_event_recall": None if (r := event_recall(list(clips.values()))) is None else round(r, 3),
            "test_ranges": sum(c["ranges"] for c in clips.values()),
            "test_caught": sum(c["caught"] for c in clips.values()),
            "test_false_alerts": sum(c["false_alerts"] for c in clips.values()),
            "per_clip": clips,
        }
    curve = operating_curve(series, labels, replay_fps, grid.values(), rules,
                            {t: unseen_report["false_alerts"][k]["per_hour"] for k, t in grid.items()})
    quiet = [p for p in curve if p["unseen_per_hour"] == 0.0]
    aucs = {"whole": half_micro_auc(series, labels, list(series))}
    if split:
        aucs |= {half: half_micro_auc(series, labels, ids) for half, ids in SPLITS[split].items()}
    return {
        "calibration": {"frames": cal.frames, "samples": cal.samples},
        "threshold_choice": choice.to_dict(), "replay_fps": replay_fps,
        "unseen": {k: unseen_report[k] for k in ("clips", "seconds", "frames_scored", "score_quantiles")},
        "thresholds": per_threshold, "curve": curve,
        # chosen on the unseen footage itself: what a calibration that matched it would reach, not a deployable figure
        "lowest_quiet_on_unseen": quiet[0] if quiet else None,
        "stream_micro": aucs, "seconds": round(time.monotonic() - t0, 1),
    }


def main(argv=None) -> int:
    from offline.data.readers import open_dataset
    from offline.eval_split import split_of
    from offline.evaluate import calibrate_classical
    from offline.learn import CALIBRATION_FRACTION, CPU_RECIPE, split_clips
    from offline.scoring.alert_rules import AlertRules
    from offline.scoring.detector import Detector

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "ped1")
    ap.add_argument("--eval-fraction", type=float, default=0.294, help="as vad learn: the last training clips kept unseen")
    ap.add_argument("--bundle", action="append", default=[], metavar="[NAME=]DIR", help="a bundle learned on the same split (repeatable)")
    ap.add_argument("--classical", nargs="*", default=["frame-difference"], help="classical rows (none: --classical alone)")
    ap.add_argument("--classical-block", type=int, default=CPU_RECIPE["block"], help="block_max side for the classical rows")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--calibration-fraction", type=float, default=CALIBRATION_FRACTION,
                    help="classical rows: held-out tail of each learning clip calibrated on (1: whole clips)")
    ap.add_argument("--max-false-alerts-per-hour", type=float, default=1.0)
    ap.add_argument("--fps", type=float, help="the camera's analysis rate (default: the footage's)")
    ap.add_argument("--json", type=Path, help="write the report here")
    ap.add_argument("--plot", type=Path, help="write the operating curves here (PNG): event recall and unseen false "
                    "alerts per hour against the threshold, the default and chosen thresholds marked")
    args = ap.parse_args(argv)

    dataset = open_dataset(args.data)
    train, unseen = split_clips(list(dataset.train), args.eval_fraction)
    rules = AlertRules()
    report = {"machine": platform.node(), "date": time.strftime("%Y-%m-%d %H:%M"), "data": str(args.data),
              "learn_clips": [c.id for c in train], "unseen_clips": [c.id for c in unseen], "rules": rules.__dict__,
              "max_false_alerts_per_hour": args.max_false_alerts_per_hour, "rows": {}}
    detectors = []
    for item in args.bundle:
        name, sep, path = item.partition("=")
        name, path = (name, path) if sep else (Path(item).name, item)
        detectors.append((name, lambda p=path: Detector.load(p, "cpu")))
    for kind in args.classical:
        def build(kind=kind):
            det = classical_detector(kind, args.classical_block, args.size, CPU_RECIPE["pool"])
            calibrate_classical(det, train, args.calibration_fraction)
            return det
        detectors.append((f"{kind}-block{args.classical_block}", build))
    for name, build in detectors:
        row = measure(name, build(), dataset, unseen, args.fps, args.max_false_alerts_per_hour, rules, split_of(args.data))
        report["rows"][name] = row
        for key, t in row["thresholds"].items():
            print(f"{name} {key} threshold {t['threshold']}: unseen {row['unseen']['seconds']} s -> {t['unseen_alerts']} "
                  f"alerts ({t['unseen_per_hour']}/h); test event recall {t['test_caught']}/{t['test_ranges']} = "
                  f"{t['test_event_recall']}, {t['test_false_alerts']} alerts on normal frames only", flush=True)
        q = row["lowest_quiet_on_unseen"]
        if q:
            print(f"{name} lowest threshold quiet on the unseen footage (chosen on it: a bound, not a result) "
                  f"{q['threshold']}: test event recall {q['event_recall']}, {q['test_false_alerts']} alerts on normal "
                  f"frames only", flush=True)
        print(f"{name} stream micro-AUC {row['stream_micro']}", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1))
    if args.plot:
        plot_curves(report, args.plot)
    return 0


def plot_curves(report: dict, path: Path) -> None:
    """One panel per detector: event recall (left axis) and unseen false alerts per hour (right) by threshold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["rows"]
    fig, axes = plt.subplots(1, len(rows), figsize=(5.5 * len(rows), 4), squeeze=False)
    for ax, (name, row) in zip(axes[0], rows.items()):
        t = [p["threshold"] for p in row["curve"]]
        ax.plot(t, [p["event_recall"] for p in row["curve"]], color="tab:blue", label="test event recall")
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("alert threshold")
        ax.set_ylabel("event recall", color="tab:blue")
        rate = ax.twinx()
        rate.plot(t, [p["unseen_per_hour"] for p in row["curve"]], color="tab:red", label="unseen false alerts / h")
        rate.set_ylabel("false alerts / h on unseen normal footage", color="tab:red")
        for key, style in (("default", ":"), ("chosen", "--")):
            thr = row["thresholds"][key]["threshold"]
            ax.axvline(thr, color="black", linestyle=style, label=f"{key} {thr:.3f}")
        ax.set_title(f"{name}: stream micro-AUC {row['stream_micro']['whole']}")
        ax.legend(loc="lower left", fontsize=8)
    fig.suptitle(f"{Path(report['data']).name}: learned on {len(report['learn_clips'])} clips, "
                 f"{row['unseen']['seconds']:.0f} s unseen normal footage")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
