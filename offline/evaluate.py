"""`vad eval`: frame-level micro/macro AUC of a bundle or a classical baseline on labelled clips, two protocols.

- `stream` (the headline): exactly what a camera computes. Each clip is fed from its first frame, windows every
  `scoring.hop` frames as the camera's ring buffer emits them, each frame scored once by the first window that
  holds it (offline.scoring.stream), with the bundle's reductions and its calibrated causal normaliser. Frames at
  a clip's end that no window reached yet are not scored (as on a camera) and are counted.
- `paper`: every frame is the centre of its own window, per-video min-max (Rai et al.): for comparison with the
  literature only; it needs the whole video, so no camera can compute it.

A JSON report, the ROC of both protocols and per-clip score plots (ground truth shaded) are written.
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

from offline.auc import macro_auc, micro_auc, per_clip_auc, pooled_roc
from offline.config import ConfigError, load_config
from offline.data.windows import plan_windows, window_starts
from offline.eval_split import split_aucs, split_of
from offline.plots import plot_clip_scores, plot_roc
from offline.scoring.clip_windows import prepare, score_windows
from offline.scoring.evidence import POOLS
from offline.scoring.frame_scorer import FrameScorer
from offline.scoring.stream import StreamScorer

logger = logging.getLogger(__name__)
PROTOCOLS = ("stream", "paper")
COMPONENTS = ("w1", "w2", "w3")


def _frames_array(clip, size: int) -> np.ndarray:
    from offline.data.readers import read_frames

    frames = np.stack(list(read_frames(clip, size=size)))
    if clip.labels is not None and len(frames) != len(clip.labels):
        from offline.data.readers import DataError

        raise DataError(f"{clip.path}: decoded {len(frames)} frames but the labels have {len(clip.labels)}")
    return frames


def stream_clip(detector, frames: np.ndarray, batch: int = 4, prepared=None) -> dict[str, np.ndarray]:
    """The stream protocol on one clip: {"score": (N,), "w1".. (N,) normalised components}; NaN = not scored."""
    x, flow = prepared or prepare(detector, frames)
    n, window = len(frames), detector.window
    starts = window_starts(n, window, detector.config.scoring.hop, cover_end=False)
    out: dict[str, np.ndarray] = {"score": np.full(n, np.nan)}
    ss = StreamScorer(detector.frame_scorer())
    for s, ws, b in score_windows(detector, x, flow, starts, batch):
        idx = np.arange(s, s + window)
        mask, norm, _ = ss.push(idx, ws.raw(b))
        for k, v in norm.items():
            out.setdefault(k, np.full(n, np.nan))[idx[mask]] = v
    return out


def raw_components_detector(detector, frames: np.ndarray, stride: int, frame_mode: str, batch: int, prepared=None) -> dict[str, np.ndarray | None]:
    """Per-frame raw components of one clip, (N, H, W, 3) uint8, through Detector.score on planned windows
    (frame_mode "center": every frame the centre of its own window, the paper's protocol)."""
    x, flow = prepared or prepare(detector, frames)
    starts, which, offset = plan_windows(len(frames), detector.window, stride, frame_mode)
    per_window = [None] * len(starts)
    pos = {int(s): i for i, s in enumerate(starts)}
    for s, ws, b in score_windows(detector, x, flow, starts, batch):
        per_window[pos[s]] = ws.raw(b)
    out: dict[str, np.ndarray | None] = {}
    for comp in COMPONENTS:
        if per_window[0][comp] is None:
            out[comp] = None
            continue
        allw = np.stack([np.asarray(r[comp]) for r in per_window])  # (W, T)
        out[comp] = allw[which, offset]
    return out


def paper_clip(detector, frames: np.ndarray, weights, batch: int = 4, prepared=None) -> dict[str, np.ndarray]:
    """The paper protocol on one clip: centre frame of its own window, per-video min-max, the given etas."""
    raw = raw_components_detector(detector, frames, detector.window, "center", batch, prepared)
    return FrameScorer(weights, "minmax", detector.available).video(raw)


def _summary(scores: dict[str, np.ndarray], comps: dict[str, dict[str, np.ndarray]], labels: dict[str, np.ndarray]) -> dict:
    """AUCs over the scored (finite) frames of every clip."""
    keep = {k: np.isfinite(v) for k, v in scores.items()}
    sc = {k: v[keep[k]] for k, v in scores.items()}
    lb = {k: labels[k][keep[k]] for k in scores}
    return {
        "micro_auc": micro_auc(sc, lb), "macro_auc": macro_auc(sc, lb), "per_clip_auc": per_clip_auc(sc, lb),
        "scored_frames": int(sum(m.sum() for m in keep.values())),
        "unscored_frames": int(sum((~m).sum() for m in keep.values())),
        "components": {
            c: {"micro_auc": micro_auc({k: v[keep[k]] for k, v in per.items()}, lb)} for c, per in comps.items() if per
        },
    }


def evaluate(clips, detector, name: str, protocols=PROTOCOLS, paper_weights=None, batch: int = 4) -> dict:
    """Score every clip under each protocol and compute AUCs; returns the report dict."""
    labels: dict[str, np.ndarray] = {}
    series: dict[str, dict[str, np.ndarray]] = {p: {} for p in protocols}
    comps: dict[str, dict[str, dict[str, np.ndarray]]] = {p: {c: {} for c in COMPONENTS} for p in protocols}
    weights = paper_weights or detector.config.scoring.weights
    t0 = time.perf_counter()
    n_frames = 0
    seconds = {p: 0.0 for p in protocols}  # per protocol, flow included (decoding not)
    for clip in tqdm(clips, desc=f"scoring ({name})", unit="clip"):
        frames = _frames_array(clip, detector.size)
        n_frames += len(frames)
        labels[clip.id] = np.asarray(clip.labels, dtype=np.int64)
        t_prep = time.perf_counter()
        prepared = prepare(detector, frames)
        t_prep = time.perf_counter() - t_prep
        for p in protocols:
            t_p = time.perf_counter()
            out = stream_clip(detector, frames, batch, prepared) if p == "stream" else paper_clip(detector, frames, weights, batch, prepared)
            seconds[p] += time.perf_counter() - t_p + t_prep
            series[p][clip.id] = out["score"]
            for c in COMPONENTS:
                if c in out:
                    comps[p][c][clip.id] = out[c]
    s = detector.config.scoring
    report: dict = {
        "scorer": name,
        "clips": list(labels),
        "frames": n_frames,
        "anomalous_frames": int(sum(v.sum() for v in labels.values())),
        "components_available": dict(zip(COMPONENTS, detector.available)),
        "scoring": {"hop": s.hop, "window": detector.window, "size": detector.size, "reduction_spatial": s.reduction_spatial,
                    "reduction_temporal": s.reduction_temporal, "block": s.block, "pool": s.pool, "normaliser": s.normaliser,
                    "weights": list(s.weights), "paper_weights": list(weights)},
        "flow": detector.config.flow.model_dump(mode="json", exclude={"cache_dir"}) if detector.needs_flow else None,
        "scoring_seconds": round(time.perf_counter() - t0, 2),
        "results": {p: {**_summary(series[p], comps[p], labels), "ms_per_frame": round(1000 * seconds[p] / max(n_frames, 1), 2),
                        "threads": torch.get_num_threads()} for p in protocols},
        "series": {p: {k: v.tolist() for k, v in series[p].items()} for p in protocols},
    }
    report["_labels"] = {k: v.tolist() for k, v in labels.items()}
    return report


def write_outputs(report: dict, out_dir: Path) -> dict[str, Path]:
    """Write the report (JSON) and the ROC / per-clip score plots to `out_dir`; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    labels = {k: np.asarray(v) for k, v in report.pop("_labels").items()}
    series = {p: {k: np.asarray(v, dtype=np.float64) for k, v in s.items()} for p, s in report["series"].items()}
    curves = {}
    for p, per in series.items():
        keep = {k: np.isfinite(v) for k, v in per.items()}
        fpr, tpr = pooled_roc({k: v[keep[k]] for k, v in per.items()}, {k: labels[k][keep[k]] for k in per})
        curves[f"{p} protocol"] = (fpr, tpr, report["results"][p]["micro_auc"])
    paths = {
        "roc": plot_roc(curves, out_dir / "roc.png", f"{report['scorer']}: pooled frame-level ROC"),
        "scores": plot_clip_scores(
            {c: {p: series[p][c] for p in series} for c in report["clips"]}, labels, out_dir / "scores.png",
            f"{report['scorer']}: per-frame anomaly score",
        ),
    }
    report["plots"] = {k: str(v) for k, v in paths.items()}
    report["series"] = {p: {k: [None if not math.isfinite(x) else round(x, 5) for x in v] for k, v in s.items()}
                        for p, s in report["series"].items()}
    paths["report"] = out_dir / "report.json"
    paths["report"].write_text(json.dumps(report, indent=2, allow_nan=True) + "\n")
    return paths


def calibrate_classical(detector, train_clips, holdout_fraction: float = 0.1, batch: int = 8):
    """A baseline's calibration from the tail `holdout_fraction` of each normal training clip (what a bundle's
    export uses, the same overlapping windows); sets and returns detector.config.calibration."""
    from offline.scoring.calibration import calibrate
    from offline.training.data import ClipData, holdout_tails

    tails = []
    for clip in tqdm(train_clips, desc="calibrating on normal footage", unit="clip"):
        data = ClipData(clip, _frames_array(clip, detector.size))
        if holdout_fraction >= 1:  # a baseline trains on nothing: its calibration may take the whole clips
            tails += [(clip.id, data.get(np.arange(len(data.frames))))] if len(data.frames) >= detector.window else []
        else:
            tails += holdout_tails([data], holdout_fraction, detector.window)
    if not tails:
        raise ValueError("no training clip is long enough to calibrate the baseline on its held-out tail")
    detector.config.calibration = calibrate(detector, tails, batch=batch)
    return detector.config.calibration


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`vad eval`'s arguments."""
    parser.add_argument("--config", type=Path, default=None, help="YAML config (data; scoring.weights for the paper protocol)")
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--bundle", type=Path, help="model bundle directory")
    src.add_argument("--random-bundle", action="store_true", help="freshly initialised AEs (exercises the chain)")
    src.add_argument("--baseline", choices=["frame-difference", "flow-magnitude"], help="a classical motion detector")
    src.add_argument("--frame-difference", action="store_true", help="same as --baseline frame-difference")
    parser.add_argument("--protocol", choices=["stream", "paper", "both"], default="both",
                        help="stream: what a camera computes (the headline); paper: centre frame, per-video min-max")
    parser.add_argument("--data", type=Path, help="dataset root (overrides data.root)")
    parser.add_argument("--clips", help="comma-separated test clip ids (default: all)")
    parser.add_argument("--size", type=int, help="frame size for a baseline / random bundle (default 128)")
    parser.add_argument("--reduction", choices=["frame", "block_max"], default="block_max", help="baseline: per-frame reduction")
    parser.add_argument("--block", type=int, default=16, help="baseline: block side in pixels (block_max)")
    parser.add_argument("--hop", type=int, default=16, help="baseline: a window every HOP frames (a bundle uses its own)")
    parser.add_argument("--pool", choices=POOLS, default="frame",
                        help="baseline: window = each frame takes its window's mean evidence (a bundle uses its own)")
    parser.add_argument("--flow-backend", choices=["auto", "torch", "opencv"], default="auto", help="flow-magnitude: TV-L1 backend")
    parser.add_argument("--flow", action="append", default=[], metavar="KEY=VALUE",
                        help="flow-magnitude: a TV-L1 setting (a flow config field, e.g. --flow scales=3 --flow warps=1); "
                        "--flow budget=cpu takes the cpu schedule's budget")
    parser.add_argument("--calibration-fraction", type=float, default=None,
                        help="baseline: tail fraction of every training clip its calibration reads (default "
                        "train.holdout_fraction, what a bundle holds out; 1 = the whole clips)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=4, help="windows per forward pass")
    parser.add_argument("--out", type=Path, default=Path("runs/eval"), help="output directory")


def flow_settings(items: list[str]) -> dict:
    """`--flow KEY=VALUE` items -> FlowConfig fields; `budget=cpu` expands to the cpu schedule's flow budget."""
    import yaml

    from offline.training.cli import CPU_FLOW_BUDGET

    out: dict = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--flow {item!r}: expected KEY=VALUE, e.g. scales=3")
        if key == "budget":
            if value not in ("cpu", "opencv"):
                raise ValueError(f"--flow budget={value!r}: expected cpu or opencv")
            out.update(CPU_FLOW_BUDGET if value == "cpu" else {})
        else:
            out[key.strip()] = yaml.safe_load(value)
    return out


def _build(args, cfg, dataset):
    """(detector, name) for the arguments: a bundle, a random bundle, or a calibrated classical baseline."""
    from offline.scoring.bundle import ScoringSpec, random_bundle
    from offline.scoring.detector import Detector

    baseline = "frame-difference" if args.frame_difference else args.baseline
    if baseline is None and not (args.bundle or args.random_bundle):
        baseline = "frame-difference"
    size = args.size or 128
    if baseline:
        from offline.baselines import ClassicalDetector
        from offline.config import FlowConfig

        scoring = ScoringSpec(weights=(1.0, 0.0, 0.0), normaliser="calibrated", hop=args.hop,
                              reduction_spatial=args.reduction, block=args.block, pool=args.pool)
        flow = FlowConfig(clip=20.0, backend=args.flow_backend, **flow_settings(args.flow))
        det = ClassicalDetector(baseline, size, cfg.data.window, scoring, flow=flow, device=args.device)
        fraction = cfg.train.holdout_fraction if args.calibration_fraction is None else args.calibration_fraction
        calibrate_classical(det, dataset.train, fraction)
        pooled = ", window mean" if args.pool == "window" else ""
        return det, f"{baseline} ({args.reduction}{'' if args.reduction == 'frame' else f' {args.block}px'}{pooled}, {size}px)"
    if args.random_bundle:
        path = random_bundle(Path(tempfile.mkdtemp(prefix="vad-random-bundle-")), size=args.size or 32, seed=cfg.train.seed)
        return Detector.load(path, args.device), "random-init AEs"
    return Detector.load(args.bundle, args.device), f"bundle {args.bundle.name}"


def run(args: argparse.Namespace) -> int:
    """`vad eval`: score a labelled dataset, print the AUCs, write the outputs; exit status 2 on bad input."""
    from offline.data.readers import DataError, open_dataset
    from offline.scoring.bundle import BundleError

    try:
        overrides = {"data.root": str(args.data)} if args.data else {}
        cfg = load_config(args.config, overrides)
        dataset = open_dataset(cfg.data.root, cfg.data.layout)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
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
    if args.calibration_fraction is not None and not 0 < args.calibration_fraction <= 1:
        print(f"error: --calibration-fraction: expected a fraction in (0, 1], got {args.calibration_fraction}", file=sys.stderr)
        return 2
    try:
        detector, name = _build(args, cfg, dataset)
    except (BundleError, DataError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    protocols = PROTOCOLS if args.protocol == "both" else (args.protocol,)
    paper_weights = cfg.scoring.weights if args.config else None
    logger.info("evaluating %s on %d clips of %s (%s)", name, len(clips), cfg.data.root, ", ".join(protocols))
    try:
        report = evaluate(clips, detector, name, protocols, paper_weights, args.batch)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    report["data_root"] = str(cfg.data.root)
    split = split_of(cfg.data.root)
    if split:  # settings are chosen on the select half: the report half is the figure that holds
        for p in protocols:
            report["results"][p]["split"] = {"dataset": split, **split_aucs(split, report, p)}
    report["machine"] = f"{platform.node()} {platform.machine()} torch {torch.__version__} device {args.device}"
    paths = write_outputs(report, args.out)
    fmt = lambda v: "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.2f}"  # noqa: E731
    print(f"{name} on {len(clips)} clips ({report['frames']} frames):")
    for p in protocols:
        r = report["results"][p]
        comps = ", ".join(f"{c} {fmt(v['micro_auc'])}" for c, v in r["components"].items())
        print(f"  {p:6s} micro-AUC {fmt(r['micro_auc'])}  macro-AUC {fmt(r['macro_auc'])}  "
              f"({r['scored_frames']} frames scored, {r['unscored_frames']} not yet; components: {comps})")
        if "split" in r:
            print(f"         {r['split']['dataset']} selection split: select half {r['split']['select']:.2f}, "
                  f"report half {r['split']['report']:.2f} (micro-AUC)")
    print(f"report: {paths['report']}  plots: {paths['roc']}, {paths['scores']}")
    return 0
