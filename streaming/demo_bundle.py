"""`vad demo-bundle`: build the demo model bundle reproducibly from the built-in demo feed's normal part.

The demo scene is learned the way a camera owner's scene is: its normal stretches are written as recording
segments and handed to `vad learn` (offline/learn.py: the same training, export and calibration code). The bundle
is small enough for a 2-core CPU: a spatial autoencoder with the paper's layout but narrow channels, at 64x64, no
temporal AE (TV-L1 flow costs ~0.3 s per frame pair on such a CPU) and no discriminator. Frames go through the
streaming path itself (demo feed at 25 fps -> FrameResampler to the analysis rate -> resize), so the model sees
exactly what the service will feed it. Stretches containing the feed's anomaly (a vehicle crossing) are left out;
a later stretch with anomalies measures the bundle as a camera scores it (frame AUC in the bundle's learn.json).
Same seed and torch build -> same weights.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from offline.data.decode import resize
from streaming.demo_feed import DemoFeed
from streaming.ring_buffer import FrameResampler

logger = logging.getLogger(__name__)

DEFAULT_PATH = Path("runs/demo/bundle")
DEMO_URL = "demo://street?seed=0"  # DemoStream defaults: 25 fps, 256x256, a vehicle crossing every 20 s
SOURCE_FPS, SOURCE_SIZE, ANOMALY_EVERY_S = 25.0, 256, 20.0


def demo_frames(seconds: float, fps: float, size: int, seed: int = 0, start_s: float = 0.0):
    """The demo feed as the service sees it: ((N, size, size, 3) uint8 frames, (N,) labels)."""
    feed = DemoFeed(seed=seed, fps=SOURCE_FPS, size=SOURCE_SIZE, anomaly_every_s=ANOMALY_EVERY_S)
    resampler = FrameResampler(fps)
    frames, labels = [], []
    first = int(round(start_s * SOURCE_FPS))
    for i in range(first, first + int(round(seconds * SOURCE_FPS))):
        if resampler.keep(i / SOURCE_FPS):
            frames.append(resize(feed.frame(i), size))
            labels.append(feed.is_anomalous(i))
    return np.stack(frames), np.asarray(labels, dtype=bool)


@contextlib.contextmanager
def torch_threads(n: int | None):
    """Run a block with `n` torch CPU threads, then restore the caller's setting (None: leave it)."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def normal_runs(labels: np.ndarray, min_len: int) -> list[tuple[int, int]]:
    """[start, end) of every stretch without the anomaly that is at least `min_len` frames long."""
    runs, start = [], None
    for i, bad in enumerate(np.append(labels, True)):
        if not bad and start is None:
            start = i
        elif bad and start is not None:
            if i - start >= min_len:
                runs.append((start, i))
            start = None
    return runs


def build_demo_bundle(
    path: str | Path = DEFAULT_PATH,
    *,
    seed: int = 0,
    fps: float = 10.0,
    size: int = 64,
    window: int = 16,
    channels: tuple[int, int, int] = (8, 16, 32),
    train_seconds: float = 180.0,
    steps: int = 200,
    batch_size: int = 8,
    lr: float = 1e-3,
    threads: int | None = 1,
) -> Path:
    """Learn the demo scene with `vad learn` (tiny schedule) from the demo feed's normal stretches; returns the path.

    The feed's normal stretches between vehicle crossings are written as recording segments (frames as the service
    sees them), then offline.learn trains, exports and calibrates exactly as for a real camera.

    Args:
        fps / size: the analysis frame rate and input size the bundle is built for (the camera's `fps`).
        train_seconds: seconds of feed used; its normal stretches are the footage (25 % of each calibrates).
        steps, batch_size, lr: the training steps (plain reconstruction, no pseudo-anomalies: the demo scene is
            simple and the build must take seconds).
        threads: torch CPU threads. 1 by default: the weights depend on it (float sums), and on a busy 2-core
            machine two OpenMP threads spin against other processes (measured 150 s instead of 14 s).
    """
    from offline.auc import micro_auc
    from offline.data.encode import write_video
    from offline.evaluate import stream_clip
    from offline.learn import learn
    from offline.scoring.detector import Detector

    t0 = time.monotonic()
    path = Path(path)
    work = path.with_name(path.name + ".build")
    with torch_threads(threads):
        frames, labels = demo_frames(train_seconds, fps, size, seed=0)
        runs = normal_runs(labels, 2 * window)
        for i, (a, b) in enumerate(runs):
            write_video(frames[a:b], work / "footage" / f"segment-{i:03d}.mp4", fps)
        logger.info("demo bundle: %d normal segments (%d frames) from %.0f s of feed", len(runs),
                    sum(b - a for a, b in runs), train_seconds)
        overrides = {
            "data.size": size, "data.window": window, "data.train_stride": 2, "model.channels": list(channels),
            "train.epochs": 1000, "train.max_steps": steps, "train.batch_size": batch_size, "train.lr": lr,
            "train.seed": seed, "pa.spatial": "none",
        }
        result = learn(work / "footage", path, schedule="tiny", eval_fraction=0.0, fps=fps, overrides=overrides,
                       scoring={"normaliser": "calibrated"}, work_dir=work / "run", temporal=False, progress=False)
        # A later stretch with three vehicle crossings measures the bundle as the service scores it.
        test, test_labels = demo_frames(60.0, fps, size, seed=0, start_s=train_seconds)
        scores = stream_clip(Detector.load(path, "cpu"), test)["score"]
        scored = np.isfinite(scores)
        auc = micro_auc({"demo": scores[scored]}, {"demo": test_labels[scored]})
    demo = {"demo": True, "source": DEMO_URL, "analysis_fps": fps, "seed": seed, "channels": list(channels),
            "steps": steps, "test_frame_auc": auc, "train_seconds": train_seconds, "build_s": round(time.monotonic() - t0, 1)}
    report = {**result.report, "demo": demo}
    (path / "learn.json").write_text(json.dumps(report, indent=2))
    logger.info("demo bundle written to %s (test frame AUC %.3f, %.0f s)", path, auc, time.monotonic() - t0)
    return path


def ensure_demo_bundle(path: str | Path, **kwargs) -> Path:
    """The bundle at `path`, built first when it is missing (the embedded default's first start)."""
    path = Path(path)
    if (path / "config.json").is_file() and (path / "model.safetensors").is_file():
        return path
    logger.warning("no model bundle at %s: building the demo bundle with vad learn (about 40 s on 2 CPU cores)", path)
    return build_demo_bundle(path, **kwargs)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`vad demo-bundle`'s arguments."""
    parser.add_argument("--out", type=Path, default=DEFAULT_PATH, help="bundle directory to write")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fps", type=float, default=10.0, help="analysis frame rate of the demo camera")
    parser.add_argument("--size", type=int, default=64, help="input size (frames are size x size)")
    parser.add_argument("--steps", type=int, default=200, help="training steps")
    parser.add_argument("--force", action="store_true", help="rebuild even when the bundle exists")


def run(args: argparse.Namespace) -> int:
    """`vad demo-bundle`: build the demo bundle (kept unless --force) and print its test-frame AUC."""
    if not args.force and (args.out / "config.json").is_file():
        print(f"{args.out}: exists (use --force to rebuild)")
        return 0
    out = build_demo_bundle(args.out, seed=args.seed, fps=args.fps, size=args.size, steps=args.steps)
    notes = json.loads((out / "learn.json").read_text())["demo"]
    print(f"{out}: demo bundle written; test frame AUC {notes['test_frame_auc']:.3f}, built in {notes['build_s']} s")
    return 0
