"""False alerts on normal footage of a new scene: `vad learn` on it, as a camera owner would after `vad record`.

    .venv/bin/python bench/false_alerts.py --video ../shared/data/vtest/vtest.avi --schedule cpu --out runs/false-alerts-cpu

The video (normal pedestrians) is cut into `--segments` clips in time order, like a recording's segments, and handed
to offline.learn: the first clips train the spatial and flow AEs (the named schedule; --no-temporal: spatial
only) and calibrate them, the last
`--eval-fraction` of them are scored exactly as a camera would (the bundle's hop, reductions, calibrated normaliser)
and replayed through the service's alert rules with the default settings. Prints the score quantiles on the unseen
part and the false alerts per hour at the bundle's threshold and, with `--max-false-alerts-per-hour`, at the
threshold chosen for that rate (with the footage's length: 0 alerts in 40 s is an upper bound, not 0). The
classical floor on the same split (`--classical`, default frame difference and TV-L1 flow magnitude, 16-px block_max
pooled over the window like the cpu recipe): calibrated on the same held-out tails, scored and replayed the same way;
`--classical-only` skips the learning.
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
sys.path.insert(0, str(REPO))


TINY_SCORING = ["reduction_spatial=block_max", "block=8", "hop=8"]  # what the tiny rows of bench/RESULTS.md used
TINY_SETS = ["pa.spatial=none"]


def classical_row(kind: str, footage: Path, eval_fraction: float, size: int = 128) -> dict:
    """A classical detector on the learn split: calibrated on the training clips' held-out tails (learn's share),
    the unseen clips streamed and replayed through the default alert rules, as `learn` does for the bundle."""
    from offline.baselines import ClassicalDetector
    from offline.data.readers import open_dataset
    from offline.evaluate import calibrate_classical
    from offline.learn import CALIBRATION_FRACTION, CPU_RECIPE, evaluate_unseen, split_clips
    from offline.scoring.alert_rules import AlertRules
    from offline.scoring.bundle import ScoringSpec

    train, unseen = split_clips(list(open_dataset(footage).train), eval_fraction)
    scoring = ScoringSpec(weights=(1.0, 0.0, 0.0), normaliser="calibrated", reduction_spatial="block_max",
                          block=CPU_RECIPE["block"], pool=CPU_RECIPE["pool"])
    det = ClassicalDetector(kind, size, 16, scoring)
    cal = calibrate_classical(det, train, CALIBRATION_FRACTION)
    unseen_report = evaluate_unseen(det, unseen, AlertRules(), {"default": scoring.threshold}, progress=False)
    return {"calibration": {"frames": cal.frames, "samples": cal.samples, "score_quantiles": cal.score_quantiles},
            "unseen": unseen_report}


def main(argv=None) -> int:
    """Cut the video into segments, learn, print and write result.json."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--video", type=Path, default=REPO.parent / "shared" / "data" / "vtest" / "vtest.avi")
    ap.add_argument("--schedule", default="tiny", help="vad train --schedule (tiny, cpu)")
    ap.add_argument("--segments", type=int, default=4, help="clips the video is cut into (a recording's segments)")
    ap.add_argument("--eval-fraction", type=float, default=0.5)
    ap.add_argument("--max-false-alerts-per-hour", type=float)
    ap.add_argument("--scoring", action="append", default=None,
                    help="vad export --scoring KEY=VALUE (repeatable; default: the schedule's recipe, for tiny "
                    f"{' '.join(TINY_SCORING)})")
    ap.add_argument("--set", dest="sets", action="append", default=None,
                    help=f"vad train --set (repeatable; default for tiny: {' '.join(TINY_SETS)})")
    ap.add_argument("--no-temporal", dest="temporal", action="store_false", help="the spatial AE alone (no flow AE)")
    ap.add_argument("--classical", nargs="*", default=["frame-difference", "flow-magnitude"],
                    help="classical detectors measured on the same split (none: --classical with no names)")
    ap.add_argument("--reuse", action="store_true",
                    help="reuse training runs in OUT/run that finished with the same config (export and measure again)")
    ap.add_argument("--classical-only", action="store_true", help="measure the classical rows only (no learning)")
    ap.add_argument("--out", type=Path, default=Path("runs/false-alerts"))
    args = ap.parse_args(argv)
    tiny = args.schedule == "tiny"
    args.scoring = args.scoring if args.scoring is not None else (TINY_SCORING if tiny else [])
    args.sets = args.sets if args.sets is not None else (TINY_SETS if tiny else [])

    from offline.data.decode import decode_video, probe_video
    from offline.data.encode import write_video
    from offline.training.cli import parse_overrides
    from offline.training.export import parse_scoring
    from offline.learn import learn, summary

    _, fps = probe_video(args.video)
    frames = np.stack(list(decode_video(args.video)))
    footage = args.out / "footage"
    for i, part in enumerate(np.array_split(frames, args.segments)):
        write_video(part, footage / f"segment-{i:03d}.mp4", fps)
    report = {"machine": platform.node(), "cpu": platform.processor() or platform.machine(), "date": time.strftime("%Y-%m-%d"),
              "video": str(args.video), "segments": args.segments}
    if not args.classical_only:
        t0 = time.monotonic()
        result = learn(footage, args.out / "bundle", schedule=args.schedule, eval_fraction=args.eval_fraction,
                       max_false_alerts_per_hour=args.max_false_alerts_per_hour, overrides=parse_overrides(args.sets),
                       scoring=parse_scoring(args.scoring), work_dir=args.out / "run", temporal=args.temporal,
                       reuse=args.reuse, progress=False)
        report |= {"seconds": round(time.monotonic() - t0, 1), **result.report}
        print(summary(result))
    report["classical"] = {kind: classical_row(kind, footage, args.eval_fraction) for kind in args.classical}
    for kind, row in report["classical"].items():
        print(f"{kind}: calibration {row['calibration']}; unseen quantiles {row['unseen']['score_quantiles']}, "
              f"false alerts {row['unseen']['false_alerts']}")
    (args.out / "result.json").write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
