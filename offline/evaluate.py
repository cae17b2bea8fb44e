"""`vad eval`: frame-level micro/macro AUC of a bundle (or the frame-difference reference) on labelled clips.

Both normalisers (the paper's per-video min-max and our causal running one) are reported side by side, plus
each component alone; a JSON report and PNG plots (ROC, per-clip scores with ground truth shaded) are written.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from offline.config import ConfigError, load_config
from offline.baselines import frame_difference
from offline.scoring.frame_scorer import FrameScorer
from offline.auc import macro_auc, micro_auc, per_clip_auc, pooled_roc
from offline.plots import plot_clip_scores, plot_roc
from offline.data.windows import flow_pair_index
from offline.data.pixels import to_model_range
from offline.data.windows import plan_windows

logger = logging.getLogger(__name__)
NORMALISERS = ("minmax", "running")


def _frames_array(clip, size: int) -> np.ndarray:
    from offline.data.readers import read_frames

    frames = np.stack(list(read_frames(clip, size=size)))
    if clip.labels is not None and len(frames) != len(clip.labels):
        from offline.data.readers import DataError

        raise DataError(f"{clip.path}: decoded {len(frames)} frames but the labels have {len(clip.labels)}")
    return frames


def clip_flow(detector, x: torch.Tensor, batch: int = 64) -> torch.Tensor:
    """Encoded flow of every consecutive pair of a clip, once: (3, N, H, W) frames -> (3, N - 1, H, W).

    Overlapping windows (frame="center" scores one window per frame) then slice it instead of recomputing
    TV-L1 for every window; each window gets exactly the pairs `window_flow` would compute.
    """
    from offline.data.pixels import model_to_gray255
    from offline.flow import encode_flow
    from offline.flow.cache import clip_flow as pair_flow

    gray = model_to_gray255(x, channel_dim=0).numpy()  # (N, H, W) in [0, 255], window_flow's conversion
    raw = torch.from_numpy(pair_flow(gray, detector.flow_estimator, batch, dtype=np.float32))
    return encode_flow(raw, detector.config.flow.clip).permute(1, 0, 2, 3)


def window_of_flow(flow: torch.Tensor, start: int, window: int) -> torch.Tensor:
    """(3, T, H, W) window of clip flow: index t is flow t -> t+1, the last index repeats the previous one."""
    return flow[:, torch.from_numpy(flow_pair_index(start, window))]


def raw_components_detector(detector, frames: np.ndarray, stride: int, frame_mode: str, batch: int) -> dict[str, np.ndarray | None]:
    """Per-frame raw components of one clip, (N, H, W, 3) uint8, through Detector.score on planned windows."""
    starts, which, offset = plan_windows(len(frames), detector.window, stride, frame_mode)
    x = to_model_range(frames)  # (N, H, W, 3) uint8 -> (3, N, H, W) in [-1, 1]
    flow = clip_flow(detector, x) if detector.temporal is not None else None
    per_window: list = []
    for i in range(0, len(starts), batch):
        chunk = starts[i : i + batch]
        windows = torch.stack([x[:, s : s + detector.window] for s in chunk])
        flows = None if flow is None else torch.stack([window_of_flow(flow, s, detector.window) for s in chunk])
        per_window.append(detector.score(windows, flow=flows))
    names = {"w1": "psnr", "w2": "flow_error", "w3": "disc_prob"}
    out: dict[str, np.ndarray | None] = {}
    for comp, field in names.items():
        parts = [getattr(ws, field) for ws in per_window]
        if parts[0] is None:
            out[comp] = None
            continue
        allw = np.concatenate(parts)  # (W, T)
        vals = allw[which, offset]
        out[comp] = -vals if comp == "w1" else vals
    return out


def evaluate(
    clips,
    scorer_name: str,
    size: int,
    weights,
    detector=None,
    stride: int = 16,
    frame_mode: str = "all",
    batch: int = 4,
    running_params: dict | None = None,
) -> dict:
    """Score every clip, then normalise with both normalisers and compute AUCs. Returns the report dict."""
    labels: dict[str, np.ndarray] = {}
    raw: dict[str, dict[str, np.ndarray | None]] = {}
    t0 = time.perf_counter()
    n_frames = 0
    for clip in tqdm(clips, desc=f"scoring ({scorer_name})", unit="clip"):
        frames = _frames_array(clip, size)
        n_frames += len(frames)
        labels[clip.id] = np.asarray(clip.labels, dtype=np.int64)
        if detector is None:
            raw[clip.id] = {"w1": frame_difference(frames), "w2": None, "w3": None}
        else:
            raw[clip.id] = raw_components_detector(detector, frames, stride, frame_mode, batch)
    elapsed = time.perf_counter() - t0
    available = tuple(raw[next(iter(raw))][c] is not None for c in ("w1", "w2", "w3"))
    report: dict = {
        "scorer": scorer_name,
        "clips": list(raw),
        "frames": n_frames,
        "anomalous_frames": int(sum(v.sum() for v in labels.values())),
        "components_available": dict(zip(("w1", "w2", "w3"), available)),
        "weights_requested": list(weights),
        "scoring_seconds": round(elapsed, 2),
        "results": {},
        "series": {},
    }
    for norm in NORMALISERS:
        res: dict = {}
        scores: dict[str, np.ndarray] = {}
        comps: dict[str, dict[str, np.ndarray]] = {c: {} for c in ("w1", "w2", "w3")}
        for clip_id, comp in raw.items():
            scorer = FrameScorer(weights, norm, available, running=running_params)
            out = scorer.video(comp)
            scores[clip_id] = out["score"]
            for c in comps:
                if c in out:
                    comps[c][clip_id] = out[c]
            res["weights_effective"] = list(scorer.weights)
        res["micro_auc"] = micro_auc(scores, labels)
        res["macro_auc"] = macro_auc(scores, labels)
        res["per_clip_auc"] = per_clip_auc(scores, labels)
        res["components"] = {
            c: {"micro_auc": micro_auc(v, labels), "macro_auc": macro_auc(v, labels)} for c, v in comps.items() if v
        }
        report["results"][norm] = res
        report["series"][norm] = {k: v.tolist() for k, v in scores.items()}
    report["_labels"] = {k: v.tolist() for k, v in labels.items()}
    return report


def write_outputs(report: dict, out_dir: Path) -> dict[str, Path]:
    """Write the report (JSON), per-clip scores and the ROC / score plots to `out_dir`; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    labels = {k: np.asarray(v) for k, v in report.pop("_labels").items()}
    series = {n: {k: np.asarray(v) for k, v in s.items()} for n, s in report["series"].items()}
    curves = {}
    for norm in NORMALISERS:
        fpr, tpr = pooled_roc(series[norm], labels)
        curves[f"{norm} normaliser"] = (fpr, tpr, report["results"][norm]["micro_auc"])
    paths = {
        "roc": plot_roc(curves, out_dir / "roc.png", f"{report['scorer']}: pooled frame-level ROC"),
        "scores": plot_clip_scores(
            {c: {n: series[n][c] for n in NORMALISERS} for c in report["clips"]},
            labels,
            out_dir / "scores.png",
            f"{report['scorer']}: per-frame anomaly score",
        ),
    }
    report["plots"] = {k: str(v) for k, v in paths.items()}
    report["series"] = {n: {k: [round(x, 5) for x in v] for k, v in s.items()} for n, s in report["series"].items()}
    paths["report"] = out_dir / "report.json"
    paths["report"].write_text(json.dumps(report, indent=2, allow_nan=True) + "\n")
    return paths


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`vad eval`'s arguments."""
    parser.add_argument("--config", type=Path, default=None, help="YAML config (data, scoring); defaults otherwise")
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--bundle", type=Path, help="model bundle directory")
    src.add_argument("--random-bundle", action="store_true", help="freshly initialised AEs (exercises the chain)")
    src.add_argument("--frame-difference", action="store_true", help="the classical frame-difference reference")
    parser.add_argument("--data", type=Path, help="dataset root (overrides data.root)")
    parser.add_argument("--clips", help="comma-separated test clip ids (default: all)")
    parser.add_argument("--size", type=int, help="frame size for the frame-difference scorer / random bundle")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=4, help="windows per forward pass")
    parser.add_argument("--out", type=Path, default=Path("runs/eval"), help="output directory")


def run(args: argparse.Namespace) -> int:
    """`vad eval`: score a labelled dataset, print the AUCs, write the outputs; exit status 2 on bad input."""
    from offline.data.readers import DataError, open_dataset

    try:
        overrides = {"data.root": str(args.data)} if args.data else {}
        cfg = load_config(args.config, overrides)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    try:
        dataset = open_dataset(cfg.data.root, cfg.data.layout)
    except (DataError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    clips = [c for c in dataset.test if c.labels is not None]
    wanted = args.clips.split(",") if args.clips else cfg.data.clips
    if wanted:
        unknown = sorted(set(wanted) - {c.id for c in clips})
        if unknown:
            print(f"error: --clips: unknown test clip id(s) {unknown}; have {[c.id for c in clips]}", file=sys.stderr)
            return 2
        clips = [c for c in clips if c.id in wanted]
    if not clips:
        print(f"error: {cfg.data.root}: no labelled test clips", file=sys.stderr)
        return 2
    detector = None
    weights = cfg.scoring.weights
    running = {"halflife": cfg.scoring.running_halflife, "warmup": cfg.scoring.running_warmup}
    size = args.size or cfg.data.size
    if args.frame_difference or not (args.bundle or args.random_bundle):
        name, weights = "frame-difference", (1.0, 0.0, 0.0)
    else:
        from offline.scoring.bundle import BundleError, random_bundle
        from offline.scoring.detector import Detector

        try:
            if args.random_bundle:
                tmp = Path(tempfile.mkdtemp(prefix="vad-random-bundle-"))
                path = random_bundle(tmp, size=size, seed=cfg.train.seed)
                name = "random-init AEs"
            else:
                path, name = args.bundle, f"bundle {args.bundle.name}"
            detector = Detector.load(path, args.device)
        except BundleError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        size = detector.size
        if not args.config:
            weights = detector.config.scoring.weights
    logger.info("evaluating %s on %d clips of %s at %dx%d", name, len(clips), cfg.data.root, size, size)
    try:
        report = evaluate(
            clips, name, size, weights, detector, cfg.scoring.window_stride, cfg.scoring.frame, args.batch, running
        )
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    report["data_root"] = str(cfg.data.root)
    report["size"] = size
    report["machine"] = f"{platform.node()} {platform.machine()} torch {torch.__version__} device {args.device}"
    paths = write_outputs(report, args.out)
    print(f"{name} on {len(clips)} clips ({report['frames']} frames):")
    for norm in NORMALISERS:
        r = report["results"][norm]
        fmt = lambda v: "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.2f}"  # noqa: E731
        comps = ", ".join(f"{c} {fmt(v['micro_auc'])}" for c, v in r["components"].items())
        print(f"  {norm:8s} micro-AUC {fmt(r['micro_auc'])}  macro-AUC {fmt(r['macro_auc'])}  (components: {comps})")
    print(f"report: {paths['report']}  plots: {paths['roc']}, {paths['scores']}")
    return 0
