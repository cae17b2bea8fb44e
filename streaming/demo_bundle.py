"""`vad demo-bundle`: build the demo model bundle reproducibly from the built-in demo feed's normal part.

The bundle is small enough for a 2-core CPU: a spatial autoencoder with the paper's layout but narrow
channels, at 64x64, no temporal AE (TV-L1 flow costs ~0.3 s per frame pair on such a CPU) and no
discriminator. Training frames go through the streaming path itself (demo feed at 25 fps -> FrameResampler
to the analysis rate -> resize), so the model sees exactly what the service will feed it. Windows
containing the feed's anomaly (a vehicle crossing) are left out of training; a later stretch with anomalies
measures the bundle (frame AUC, stored in the bundle's notes). Same seed and torch build -> same weights.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import time
from pathlib import Path

import numpy as np
import torch

from offline.models.autoencoder import Autoencoder
from offline.scoring.bundle import InputSpec, ScoringSpec, save_bundle
from offline.scoring.calibration import calibration_from_raw
from offline.data.decode import resize
from offline.scoring.evidence import frame_psnr
from streaming.demo_feed import DemoFeed
from streaming.ring_buffer import FrameResampler
from streaming.batching import to_model_input

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


def normal_windows(frames: np.ndarray, labels: np.ndarray, window: int, stride: int) -> np.ndarray:
    """Start indices of windows with no anomalous frame."""
    starts = [s for s in range(0, len(frames) - window + 1, stride) if not labels[s : s + window].any()]
    return np.asarray(starts, dtype=np.int64)


def frame_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC by the rank statistic (ties averaged)."""
    pos, neg = scores[labels], scores[~labels]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    order = np.argsort(np.concatenate([pos, neg]), kind="mergesort")
    ranks = np.empty(len(order))
    ranks[order] = np.arange(1, len(order) + 1)
    allv = np.concatenate([pos, neg])
    for v in np.unique(allv):  # average ranks of ties
        m = allv == v
        if m.sum() > 1:
            ranks[m] = ranks[m].mean()
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


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


@torch.no_grad()
def _psnr(model: Autoencoder, windows: np.ndarray, batch: int = 16) -> np.ndarray:
    """(N, T, H, W, 3) uint8 windows -> (N, T) PSNR of the model's reconstruction."""
    out = []
    for s in range(0, len(windows), batch):
        x = to_model_input(list(windows[s : s + batch]))
        out.append(frame_psnr(model(x), x).numpy())
    return np.concatenate(out)


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
    """Train the demo spatial AE on the demo feed's normal part and write a bundle; returns its path.

    Args:
        fps / size: the analysis frame rate and input size the bundle is built for (the camera's `fps`).
        train_seconds: seconds of feed used; windows with the anomaly are excluded, the last 20% of normal
            windows are held out for calibration.
        steps, batch_size, lr: Adam on the plain reconstruction loss (lr above the paper's 1e-4 to train in ~20 s).
        threads: torch CPU threads. 1 by default: the weights depend on it (float sums), and on a busy 2-core
            machine two OpenMP threads spin against other processes (measured 150 s instead of 14 s).
    """
    t0 = time.monotonic()
    with torch_threads(threads):
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        frames, labels = demo_frames(train_seconds, fps, size, seed=0)
        starts = normal_windows(frames, labels, window, stride=2)
        cut = int(len(starts) * 0.8)
        train, hold = starts[:cut], starts[cut:][:: window // 2]
        logger.info("demo bundle: %d training and %d held-out windows from %.0f s of feed", len(train), len(hold), train_seconds)
        model = Autoencoder(3, channels)
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        model.train()
        for step in range(steps):
            pick = rng.choice(train, size=batch_size, replace=False)
            x = to_model_input([frames[s : s + window] for s in pick])
            loss = torch.mean((model(x) - x) ** 2)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if step % 100 == 0 or step == steps - 1:
                logger.info("demo bundle: step %d/%d loss %.5f", step + 1, steps, loss.item())
        model.eval()

        held = _psnr(model, np.stack([frames[s : s + window] for s in hold]))
        scoring = ScoringSpec(weights=(1.0, 0.0, 0.0), normaliser="calibrated", running_halflife=600.0, running_warmup=16)
        calibration = calibration_from_raw({"demo": {"w1": -held.reshape(-1), "w2": None, "w3": None}}, scoring, (True, False, False))
        # A later stretch with three vehicle crossings measures the bundle (not used for anything else).
        test, test_labels = demo_frames(60.0, fps, size, seed=0, start_s=train_seconds)
        n = len(test) // window * window
        test_psnr = _psnr(model, test[:n].reshape(-1, window, *test.shape[1:])).reshape(-1)
        auc = frame_auc(-test_psnr, test_labels[:n])
        out = save_bundle(
            path,
            model,
            input_spec=InputSpec(size=size, window=window),
            scoring=scoring,
            calibration=calibration,
            discriminator_status="off: demo bundle (spatial AE only)",
            notes={
                "demo": True,
                "source": DEMO_URL,
                "analysis_fps": fps,
                "seed": seed,
                "channels": list(channels),
                "steps": steps,
                "final_loss": loss.item(),
                "test_frame_auc": auc,
                "train_seconds": train_seconds,
                "build_s": round(time.monotonic() - t0, 1),
            },
        )
        logger.info("demo bundle written to %s (test frame AUC %.3f, %.0f s)", out, auc, time.monotonic() - t0)
        return out


def ensure_demo_bundle(path: str | Path, **kwargs) -> Path:
    """The bundle at `path`, built first when it is missing (the embedded default's first start)."""
    path = Path(path)
    if (path / "config.json").is_file() and (path / "model.safetensors").is_file():
        return path
    logger.warning("no model bundle at %s: building the demo bundle (about 20 s on 2 CPU cores)", path)
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
    import json

    notes = json.loads((out / "config.json").read_text())["notes"]
    print(f"{out}: demo bundle written; test frame AUC {notes['test_frame_auc']:.3f}, built in {notes['build_s']} s")
    return 0
