"""False alerts on normal footage of a new scene: learn it from its first part, replay the rest through the alert rules.

    .venv/bin/python bench/false_alerts.py --video ../shared/data/vtest/vtest.avi --schedule tiny --out runs/false-alerts

The first `--train-fraction` of the video (normal pedestrians) is written as a clip and learned with `vad train`
(spatial AE, the named schedule) and `vad export` (calibration on its held-out tail); the rest is scored exactly as
a camera would (`offline.evaluate.stream_clip`: the bundle's hop, reductions, calibrated normaliser) and replayed
through the service's AlertTracker with the default alert settings. Prints the score quantiles on the unseen
normal part and the false alerts per hour (with the footage's length: 0 alerts in 40 s is an upper bound, not 0).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def write_clip(frames: np.ndarray, path: Path, fps: float) -> Path:
    """(N, H, W, 3) uint8 -> an H.264 file at constant quality 0 (lossless luma), for `vad train --data`."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=int(round(fps)), options={"crf": "0", "preset": "veryfast"})
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv444p"
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def replay_alerts(scores: np.ndarray, fps: float, threshold: float, min_duration_s: float, hysteresis: float) -> list[dict]:
    """The service's alert rules over a score sequence: the alerts that opened, with their first frame and peak."""
    from offline.scoring.alert_rules import AlertTracker

    tracker = AlertTracker(threshold, min_duration_s, hysteresis, camera="bench")
    opened = []
    for i, s in enumerate(scores):
        for ev in tracker.update(i / fps, float(s), i):
            if ev.kind == "opened":
                opened.append({"frame": i, "peak_score": round(ev.peak_score, 3)})
    return opened


def main(argv=None) -> int:
    """Learn the first part, score the rest as a camera, replay the alert rules, print and write result.json."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--video", type=Path, default=REPO.parent / "shared" / "data" / "vtest" / "vtest.avi")
    ap.add_argument("--schedule", default="tiny", help="vad train --schedule (tiny, cpu)")
    ap.add_argument("--train-fraction", type=float, default=0.5)
    ap.add_argument("--scoring", action="append", default=["reduction_spatial=block_max", "block=8", "hop=8"],
                    help="vad export --scoring KEY=VALUE (repeatable)")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="vad train --set (repeatable)")
    ap.add_argument("--out", type=Path, default=Path("runs/false-alerts"))
    args = ap.parse_args(argv)

    from offline.data.decode import decode_video, probe_video
    from offline.evaluate import stream_clip
    from offline.scoring.detector import Detector
    from streaming.config import AlertConfig

    _, fps = probe_video(args.video)
    frames = np.stack(list(decode_video(args.video)))
    cut = int(len(frames) * args.train_fraction)
    write_clip(frames[:cut], args.out / "learn" / "first-part.mp4", fps)
    vad = [sys.executable, "-m", "offline.cli"]
    t0 = time.monotonic()
    subprocess.run([*vad, "train", "--schedule", args.schedule, "--target", "spatial", "--data", str(args.out / "learn"),
                    "--out", str(args.out / "run"), "--no-progress", "--set", "pa.spatial=none", *sum((["--set", s] for s in args.sets), [])],
                   check=True, cwd=REPO)
    train_s = time.monotonic() - t0
    export = [*vad, "export", "--spatial", str(args.out / "run"), "--out", str(args.out / "bundle")]
    subprocess.run(export + sum((["--scoring", s] for s in args.scoring), []), check=True, cwd=REPO)
    det = Detector.load(args.out / "bundle")
    from offline.data.decode import resize

    rest = np.stack([resize(f, det.size) for f in frames[cut:]])
    scores = stream_clip(det, rest)["score"]
    scored = scores[np.isfinite(scores)]
    alerts = AlertConfig()
    threshold = det.config.scoring.threshold if alerts.threshold is None else alerts.threshold
    opened = replay_alerts(scores, fps, threshold, alerts.min_duration_s, alerts.hysteresis)
    hours = len(rest) / fps / 3600
    result = {
        "video": str(args.video), "frames_learned": cut, "frames_replayed": len(rest), "fps": fps,
        "schedule": args.schedule, "train_s": round(train_s, 1), "scoring": det.config.scoring.model_dump(),
        "score_quantiles": {q: round(float(np.quantile(scored, float(q))), 3) for q in ("0.5", "0.9", "0.99", "1.0")},
        "threshold": threshold, "alerts": opened, "false_alerts": len(opened),
        "false_alerts_per_hour": round(len(opened) / hours, 1),
        "per_hour_upper_bound_if_zero": round(1 / hours, 1),
    }
    (args.out / "result.json").write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "scoring"}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
