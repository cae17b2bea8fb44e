"""Streaming benchmark: N concurrent 25 fps feeds through the scorer, batched vs one Detector call per camera.

    .venv/bin/python bench/stream.py feeds --feeds 16 --seconds 40            # end to end, both modes
    .venv/bin/python bench/stream.py scorer --batches 1,2,4,8,16,32,64        # the scorer core alone

`feeds`: each feed is an IngestLoop on a local H.264 file of the demo feed (256x256, 25 fps), played in real
time and looped, analysed at 25 fps, resized to the bundle's input size, cut into 16-frame windows; one scorer
thread drains a PendingWindows queue (drop-oldest, 2 windows per camera) through BatchScorer. `batched` uses
max_batch = number of feeds (max_wait 50 ms); `per-camera` uses max_batch = 1 (one Detector call per window).
Reports per camera: sustained scored fps, frame-to-score latency p50/p99 (from a frame's decode to its
score; a frame waits for its window to fill, up to 15 frames = 0.6 s at 25 fps) and dropped frames.
No Ray here: Ray adds a constant hop per window, the batching gain is the scorer's.

`scorer`: windows/s of `Detector.score` at each batch size on one device (`--device cuda` on a GPU machine,
where Ray is not available: this is the core the scorer actor runs). `--bundle paper` builds an untrained
bundle of the paper's size (both AEs, 256x256, flow computed from the frames) so speed needs no training.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from offline.scoring.bundle import random_bundle, update_scoring  # noqa: E402
from offline.scoring.detector import Detector  # noqa: E402
from streaming.batching import BatchScorer, PendingWindows, frame_scorer_factory  # noqa: E402


def _bundle(spec: str, tmp: Path) -> Path:
    if spec in ("cpu", "cpu-opencv"):
        # the cpu recipe's shape (128 px, widths 48/64/128, both AEs, CPU_RECIPE scoring), untrained: speed does
        # not depend on the weights; "cpu" computes the cpu schedule's flow budget, "cpu-opencv" OpenCV's defaults
        from offline.config import FlowConfig
        from offline.learn import CPU_RECIPE, CPU_RECIPE_WEIGHTS
        from offline.scoring.bundle import ScoringSpec
        from offline.training.cli import CPU_FLOW_BUDGET

        budget = CPU_FLOW_BUDGET if spec == "cpu" else {}
        return random_bundle(tmp / spec, size=128, temporal=True, channels=(48, 64, 128),
                             scoring=ScoringSpec(weights=CPU_RECIPE_WEIGHTS, **CPU_RECIPE),
                             flow=FlowConfig(clip=5.0, backend="opencv", **budget))
    if spec == "demo":
        from streaming.demo_bundle import ensure_demo_bundle

        return ensure_demo_bundle(REPO / "runs" / "demo" / "bundle")
    if spec == "paper":
        return random_bundle(tmp / "paper", size=256, temporal=True)
    if spec == "paper-spatial":
        return random_bundle(tmp / "paper-spatial", size=256, temporal=False)
    return Path(spec)


def run_feeds(detector: Detector, feeds: int, seconds: float, max_batch: int, video: Path, warmup_s: float = 5.0,
              fps: float = 25.0) -> dict:
    """One measurement: `feeds` real-time file feeds, one scorer thread; returns per-camera figures."""
    from streaming.ingest import IngestLoop, IngestSettings

    queue = PendingWindows(max_pending=2)
    scorer = BatchScorer(detector, frame_scorer_factory(detector), max_batch=max_batch)
    settings = IngestSettings(fps=fps, size=detector.size, window=detector.window, hop=detector.window,
                              realtime_files=True, loop_files=True)

    def accept(window) -> bool:
        queue.put(window)  # never refuses: the queue drops the camera's oldest window itself (counted there)
        return True

    loops = [IngestLoop(f"cam{i:02d}", str(video), settings, on_window=accept) for i in range(feeds)]
    stats = {f"cam{i:02d}": {"frames": 0, "latency": []} for i in range(feeds)}
    batches: list[int] = []
    busy = [0.0]
    stop = threading.Event()
    t_measure = [0.0]

    def score_loop() -> None:
        while not stop.is_set():
            batch = queue.take(max_batch, 0.05, timeout_s=0.2)
            if not batch:
                continue
            t0 = time.monotonic()
            results = scorer.score(batch)
            done = time.time()
            if t_measure[0] and done >= t_measure[0]:
                busy[0] += time.monotonic() - t0
                batches.append(len(batch))
                for r in results:
                    s = stats[r.camera]
                    s["frames"] += len(r.score)
                    s["latency"].extend((done - r.wall_s).tolist())

    for loop in loops:
        loop.start()
    worker = threading.Thread(target=score_loop, daemon=True)
    worker.start()
    time.sleep(warmup_s)
    dropped0 = dict(queue.dropped)
    t_measure[0] = time.time()
    time.sleep(seconds)
    elapsed = time.time() - t_measure[0]
    dropped = {k: queue.dropped.get(k, 0) - dropped0.get(k, 0) for k in stats}
    stop.set()
    for loop in loops:
        loop.stop(timeout_s=5)
    queue.close()
    worker.join(timeout=30)
    scored = [s["frames"] / elapsed for s in stats.values()]
    lat = np.concatenate([np.asarray(s["latency"]) for s in stats.values() if s["latency"]] or [np.zeros(0)])
    return {
        "feeds": feeds,
        "analysis_fps": fps,
        "max_batch": max_batch,
        "seconds": round(elapsed, 1),
        "scored_fps_per_camera_mean": round(float(np.mean(scored)), 2),
        "scored_fps_per_camera_min": round(float(np.min(scored)), 2),
        "total_scored_fps": round(float(np.sum(scored)), 1),
        "windows_per_s": round(float(np.sum(scored)) / detector.window, 2),
        "latency_p50_s": round(float(np.percentile(lat, 50)), 3) if lat.size else None,
        "latency_p99_s": round(float(np.percentile(lat, 99)), 3) if lat.size else None,
        "dropped_frames_per_camera_per_s": round(sum(dropped.values()) * detector.window / feeds / elapsed, 2),
        "mean_batch": round(float(np.mean(batches)), 2) if batches else 0.0,
        "scorer_busy": round(busy[0] / elapsed, 2),
    }


def run_scorer(detector: Detector, batches: list[int], seconds: float) -> list[dict]:
    """windows/s of Detector.score per batch size (random frames: speed does not depend on content)."""
    rows = []
    dev = detector.device
    for b in batches:
        x = torch.rand(b, 3, detector.window, detector.size, detector.size, device=dev) * 2 - 1
        detector.score(x)  # warm-up (allocations, cuDNN autotune)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds or n < 2:
            detector.score(x)
            n += 1
        if dev.type == "cuda":
            torch.cuda.synchronize()
        dt = (time.perf_counter() - t0) / n
        rows.append({"batch": b, "s_per_batch": round(dt, 4), "windows_per_s": float(f"{b / dt:.4g}"),
                     "cameras_at_25fps": float(f"{b / dt * detector.window / 25.0:.3g}")})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("feeds", help="N real-time feeds end to end, batched vs per-camera")
    f.add_argument("--feeds", default="16", help="cameras; a comma-separated list measures each count in turn")
    f.add_argument("--fps", type=float, default=25.0, help="each camera's analysis rate (frames scored per second)")
    f.add_argument("--cores", type=int, default=None,
                   help="pin the whole process (decoding, ingest, scoring) to this many CPU cores: cameras per core")
    f.add_argument("--seconds", type=float, default=40.0)
    f.add_argument("--modes", default="batched,per-camera")
    f.add_argument("--bundle", default="demo", help="demo | cpu | cpu-opencv | paper | paper-spatial | a bundle directory")
    s = sub.add_parser("scorer", help="Detector.score throughput per batch size")
    s.add_argument("--batches", default="1,2,4,8,16,32,64")
    s.add_argument("--seconds", type=float, default=5.0, help="per batch size")
    s.add_argument("--bundle", default="paper")
    s.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    s.add_argument("--flow-backend", default=None, help="override the bundle's flow backend (torch, opencv)")
    s.add_argument("--chunk", type=int, default=None,
                   help="windows per forward pass (default: Detector.CPU_CHUNK on CPU, whole batch on GPU; 0 = whole batch)")
    for p in (f, s):
        p.add_argument("--precision", choices=("float32", "bfloat16"), default=None,
                       help="override the bundle's scoring.cpu_precision (on a copy): the autoencoders on a CPU")
        p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
        p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args(argv)
    if getattr(args, "cores", None):
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[: args.cores])
        import cv2

        cv2.setNumThreads(args.cores)
        torch.set_num_threads(args.cores)
    if args.threads:
        torch.set_num_threads(args.threads)
    env = {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
           "cpu": platform.processor() or platform.machine(), "cores": sorted(os.sched_getaffinity(0)),
           "date": time.strftime("%Y-%m-%dT%H:%M:%S"), "load_avg_1m": os.getloadavg()[0],
           "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None}
    print(json.dumps({"env": env, "args": {k: str(v) for k, v in vars(args).items()}}), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        bundle = _bundle(args.bundle, Path(tmp))
        if args.precision:
            copy = Path(tmp) / "precision"
            shutil.copytree(bundle, copy)
            bundle = copy
            update_scoring(bundle, cpu_precision=args.precision)
        if args.cmd == "scorer":
            chunk = None if args.chunk is None else (args.chunk or 1 << 30)
            det = Detector.load(bundle, args.device, flow_backend=args.flow_backend, chunk=chunk)
            result = {"env": env, "bundle": args.bundle, "device": str(det.device), "chunk": det.chunk,
                      "cpu_precision": det.config.scoring.cpu_precision,
                      "rows": run_scorer(det, [int(b) for b in args.batches.split(",")], args.seconds)}
        else:
            from streaming.demo_feed import write_demo_video

            det = Detector.load(bundle, "cpu")
            video = Path(tmp) / "feed.mp4"
            write_demo_video(video, 30.0, fps=25, size=256, seed=0)
            result = {"env": env, "bundle": args.bundle, "cpu_precision": det.config.scoring.cpu_precision,
                      "chunk": det.chunk, "rows": []}
            result["flow"] = det.config.flow.model_dump(mode="json", include={"scales", "warps", "inner_iterations",
                                                                          "outer_iterations", "warm_start", "warm_scales"})
            for feeds in (int(n) for n in str(args.feeds).split(",")):
                for mode in args.modes.split(","):
                    mb = feeds if mode == "batched" else 1
                    row = {"mode": mode, **run_feeds(det, feeds, args.seconds, mb, video, fps=args.fps)}
                    print(json.dumps(row), flush=True)
                    result["rows"].append(row)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
