"""`vad learn`: one scene's normal footage -> a calibrated bundle, measured on footage it never saw.

The camera owner's path from recordings to a model (issue 14): the footage's clips (a folder `vad train --data`
reads, e.g. `vad record`'s segments) are split by time: the last `eval_fraction` of the clips is kept for the
evaluation, the rest trains the spatial autoencoder and (unless `temporal` is False) the flow autoencoder: the
motion evidence, issue 13's best model at ~35x the spatial AE's scoring cost with a named schedule (`vad train --schedule`) and
calibrates the bundle on each training clip's held-out tail (`vad export`, with the schedule's measured scoring
recipe unless `scoring` says otherwise). Clips under `feedback/` (false alarms the service
kept as normal footage, streaming/event_clips.py) always train and are never part of the unseen evaluation. The evaluation streams the unseen clips through the
bundle exactly as a camera would (offline.evaluate.stream_clip) and replays the scores through the alert rules:
score quantiles and false alerts per hour at the bundle's threshold. With `max_false_alerts_per_hour`, the alert
threshold is chosen on the calibration footage (offline.scoring.alert_rules.threshold_for_rate) and stored in the
bundle as `scoring.alert_threshold`. Everything measured goes into the bundle's `learn.json`.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from offline.scoring.alert_rules import AlertRules, count_alerts, threshold_for_rate

logger = logging.getLogger(__name__)

REPORT_FILE = "learn.json"
QUANTILES = (0.5, 0.9, 0.99, 1.0)
CALIBRATION_FRACTION = 0.25  # of each training clip; a threshold for N alerts/hour needs minutes of calibration
FEEDBACK_DIR = "feedback"  # <data>/feedback/: false alarms an operator labelled, kept as normal footage (always trained)
# The scoring measured best for the cpu schedule on Ped2's stream protocol (bench/RESULTS.md, issue 13): the spatial
# AE's error by 16-px block_max (73.8 vs 69.7 micro-AUC for the frame mean), the flow AE's by the frame mean (94.3 vs
# 91.1), both pooled over their window (spatial 78.9, flow 97.9), and the weights 0.2 / 0.8 (the cpu spatial AE
# carries little the flow AE does not). bfloat16 autocast on the CPU: ~2.7x faster autoencoders at the same AUC
# (bench/RESULTS.md, "Cameras per core").
CPU_RECIPE = {"reduction_spatial": "block_max", "reduction_temporal": "frame", "block": 16, "pool": "window",
              "cpu_precision": "bfloat16"}
CPU_RECIPE_WEIGHTS = (0.2, 0.8, 0.0)


class LearnError(ValueError):
    """The footage cannot be learned from (too little of it, unreadable); the message names the folder."""


@dataclass
class LearnResult:
    """Where the bundle went and what the unseen footage says about it (also written as learn.json)."""

    bundle: Path
    report: dict[str, Any] = field(default_factory=dict)


def is_feedback(clip) -> bool:
    """True for an operator's false alarm kept as normal footage (a clip under the data's `feedback/` folder)."""
    return clip.id.split("/", 1)[0] == FEEDBACK_DIR


def split_clips(clips: list, eval_fraction: float) -> tuple[list, list]:
    """(train, eval) by time: clips sorted by id (recordings are numbered in time order); the eval clips are the
    last ones whose frames come nearest to `eval_fraction` of the recorded frames (at least one clip held out, at
    least one kept for training). Feedback clips (`is_feedback`) always train and are never evaluated on: they are the scene's rare
    moments the model got wrong, not its typical time, so they would neither measure the false-alert rate fairly
    nor be learned if held out; they come last in the training list and count for no fraction."""
    if not 0 <= eval_fraction < 1:
        raise LearnError(f"eval_fraction must lie in [0, 1), got {eval_fraction}")
    feedback = sorted((c for c in clips if is_feedback(c)), key=lambda c: c.id)
    ordered = sorted((c for c in clips if not is_feedback(c)), key=lambda c: c.id)
    if eval_fraction == 0 or len(ordered) < 2:
        return ordered + feedback, []
    total = sum(c.num_frames for c in ordered)
    held, frames = [], 0
    while len(ordered) > 1 and (not held or frames + ordered[-1].num_frames / 2 <= eval_fraction * total):
        clip = ordered.pop()
        held.insert(0, clip)
        frames += clip.num_frames
    return ordered + feedback, held


def recipe_scoring(schedule: str, temporal: bool) -> dict[str, Any]:
    """The schedule's measured scoring (ScoringSpec fields) for `vad export`; {} keeps the bundle's defaults."""
    if schedule != "cpu":
        return {}
    return {**CPU_RECIPE, **({"weights": CPU_RECIPE_WEIGHTS} if temporal else {})}


def estimate_steps(cfg, clips: list) -> int:
    """Optimiser steps the training will take (windows of each clip's trained head, per epoch; max_steps caps)."""
    t = cfg.train
    windows = sum(max(0, (int(c.num_frames * (1 - t.holdout_fraction)) - cfg.data.window) // cfg.data.train_stride + 1)
                  for c in clips)
    steps = max(1, windows // t.batch_size) * t.epochs
    return max(1, min(steps, t.max_steps) if t.max_steps else steps)


@dataclass
class FinishedRun:
    """A training run found finished in the work directory (what `learn` reads of a TrainResult)."""

    step: int
    epoch: int


def finished_run(run: Path, cfg) -> FinishedRun | None:
    """The run in `run` if it finished (its log ends with an "end" event not caused by a stop) with exactly `cfg`
    and left its weights; else None."""
    from offline.training.export import read_run
    from offline.training.run_dir import CONFIG_FILE, LOG_FILE, WEIGHTS_FILE

    log = run / LOG_FILE
    if not all((run / f).is_file() for f in (LOG_FILE, CONFIG_FILE, WEIGHTS_FILE)):
        return None
    if read_run(run).model_dump(mode="json") != cfg.model_dump(mode="json"):
        return None
    lines = log.read_text().strip().splitlines()
    end = json.loads(lines[-1]) if lines else {}
    if end.get("event") != "end" or str(end.get("reason", "")).startswith("stopped"):
        return None
    return FinishedRun(int(end["step"]), int(end["epoch"]))


def evaluate_unseen(detector, clips: list, rules: AlertRules, thresholds: dict[str, float], progress: bool = True) -> dict:
    """Stream each unseen normal clip through the bundle as a camera does; quantiles and false alerts per hour."""
    from tqdm import tqdm

    from offline.data.readers import read_frames
    from offline.evaluate import stream_clip

    traces, seconds = [], 0.0
    for clip in tqdm(clips, desc="evaluate", unit="clip", disable=not progress, leave=False):
        frames = np.stack(list(read_frames(clip, size=detector.size)))
        traces.append((stream_clip(detector, frames)["score"], clip.fps))
        seconds += len(frames) / clip.fps
    scores = np.concatenate([t for t, _ in traces])
    scored = scores[np.isfinite(scores)]
    out: dict[str, Any] = {
        "clips": [c.id for c in clips], "seconds": round(seconds, 1), "frames_scored": int(scored.size),
        "score_quantiles": {str(q): round(float(np.quantile(scored, q)), 4) for q in QUANTILES} if scored.size else {},
        "false_alerts": {},
    }
    for name, thr in thresholds.items():
        n = sum(count_alerts([t], fps, thr, rules) for t, fps in traces)
        out["false_alerts"][name] = {"threshold": round(thr, 4), "alerts": n, "per_hour": round(n * 3600.0 / seconds, 2)}
    return out


def learn(
    data: str | Path, out: str | Path, *, schedule: str = "cpu", eval_fraction: float = 0.2,
    max_false_alerts_per_hour: float | None = None, rules: AlertRules = AlertRules(), fps: float | None = None,
    overrides: dict[str, Any] | None = None, scoring: dict[str, Any] | None = None, work_dir: str | Path | None = None,
    temporal: bool = True, reuse: bool = False, progress: bool = True,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
) -> LearnResult:
    """Train, export and evaluate a bundle of the scene in `data`; see the module docstring.

    Args:
        schedule: a `vad train --schedule` name; `overrides` (SECTION.KEY -> value) win over it.
        fps: the camera's analysis rate for replaying the calibration footage (None: the footage's own rate).
        scoring: fields of the bundle's ScoringSpec (hop, reductions, ...), as `vad export --scoring`; they win over
            the schedule's recipe (`recipe_scoring`).
        temporal: also train the temporal (flow) AE (the default: it is what sees unusual motion), with the same
            schedule and its own time budget; the bundle then needs TV-L1 flow per frame pair when it scores (~0.1 s
            per frame at 128 px on one core); False: the spatial AE alone (~3 ms per frame, far weaker).
        work_dir: where the training run goes (default: `out` + ".run"); kept, so a stopped learn can be inspected.
        reuse: skip training an autoencoder whose run in `work_dir` finished (not stopped) with exactly this config
            (`finished_run`): to calibrate and measure again after a failure there or a scoring change.
        on_progress: called with {"stage", "fraction", "step"} as the work moves on (a job's progress).
    """
    from offline.config import ConfigError, load_config
    from offline.data.readers import open_dataset
    from offline.scoring.bundle import update_scoring
    from offline.scoring.detector import Detector
    from offline.training.ae_loop import train_autoencoder
    from offline.training.cli import SCHEDULES, schedule_overrides
    from offline.training.export import export

    def stage(name: str, fraction: float, step: int | None = None) -> None:
        if on_progress is not None:
            on_progress({"stage": name, "fraction": round(fraction, 3), "step": step})

    data, out = Path(data), Path(out)
    if schedule not in SCHEDULES:
        raise LearnError(f"schedule {schedule!r}: unknown (valid: {', '.join(sorted(SCHEDULES))})")
    work = Path(work_dir) if work_dir else out.with_name(out.name + ".run")
    t0 = time.monotonic()
    stage("reading footage", 0.0)
    try:
        dataset = open_dataset(data)
    except Exception as exc:  # DataError and decoder errors name the file
        raise LearnError(f"{data}: cannot read the footage: {exc}") from exc
    clips = list(dataset.train)  # a labelled dataset's test clips are not normal footage
    if not clips:
        raise LearnError(f"{data}: no normal (training) clips found ({dataset.layout} layout)")
    train_clips, eval_clips = split_clips(clips, eval_fraction)
    targets = ("spatial", "temporal") if temporal else ("spatial",)
    try:
        cfgs = [load_config(None, {
            **schedule_overrides(schedule, target), "data.root": str(data), "data.clips": [c.id for c in train_clips],
            "train.target": target, "train.out_dir": str(work / target),
            "train.holdout_fraction": CALIBRATION_FRACTION, **(overrides or {}),
        }) for target in targets]
    except ConfigError as exc:
        raise LearnError(str(exc)) from exc
    results, reused = {}, []
    share = 0.75 / len(cfgs)  # of the progress bar, per autoencoder (training spans 0.05 .. 0.8)
    for k, cfg in enumerate(cfgs):
        target, base = cfg.train.target, 0.05 + k * share
        label = "training" if target == "spatial" else f"training {target}"
        stage(label, base, 0)
        total, started = estimate_steps(cfg, train_clips), time.monotonic()
        budget_s = cfg.train.max_minutes * 60.0 if cfg.train.max_minutes else math.inf

        def trained(step: int, total=total, started=started, budget_s=budget_s, base=base, label=label) -> None:
            if step % 10 == 0:  # the larger of steps done and time budget used
                done = max(step / total, (time.monotonic() - started) / budget_s)
                stage(label, base + share * min(1.0, done), step)

        finished = finished_run(Path(cfg.train.out_dir), cfg) if reuse else None
        if finished is not None:
            logger.info("%s: reusing the finished %s run (step %d, epoch %d)", cfg.train.out_dir, target, finished.step,
                        finished.epoch)
            results[target] = finished
            reused.append(target)
            continue
        result = train_autoencoder(cfg, progress=progress, after_step=trained)
        if result.stopped:
            raise LearnError(f"{target} training stopped at step {result.step} (resumable in {work / target})")
        results[target] = result
    result = results["spatial"]
    train_s = time.monotonic() - t0
    stage("calibrating", 0.8)
    export(work / "spatial", out, temporal_run=work / "temporal" if temporal else None,
           scoring={**recipe_scoring(schedule, temporal), **(scoring or {})})
    detector = Detector.load(out, "cpu")
    calibration = detector.config.calibration
    if calibration is None or not calibration.score_trace:
        raise LearnError(f"{data}: no held-out calibration footage (train.holdout_fraction={cfg.train.holdout_fraction})")
    replay_fps = fps or float(np.median([c.fps for c in train_clips]))
    report: dict[str, Any] = {
        "data": str(data), "schedule": schedule, "train_clips": [c.id for c in train_clips],
        "feedback_clips": [c.id for c in train_clips if is_feedback(c)],
        "train_minutes": round(train_s / 60.0, 2), "reused": reused, "steps": result.step, "epochs": result.epoch,
        "temporal": {"steps": results["temporal"].step, "epochs": results["temporal"].epoch} if temporal else None,
        "scoring": detector.config.scoring.model_dump(include={"weights", "reduction_spatial", "reduction_temporal", "block", "pool", "hop", "cpu_precision"}),
        "calibration": {"frames": calibration.frames, "samples": calibration.samples, "score_quantiles": calibration.score_quantiles},
        "rules": rules.__dict__, "replay_fps": replay_fps,
    }
    thresholds = {"bundle": detector.config.scoring.threshold}
    if max_false_alerts_per_hour is not None:
        choice = threshold_for_rate(calibration.score_trace, replay_fps, max_false_alerts_per_hour, rules)
        update_scoring(out, alert_threshold=choice.threshold)
        report["threshold_choice"] = choice.to_dict()
        thresholds["chosen"] = choice.threshold
        detector = Detector.load(out, "cpu")
    stage("evaluating", 0.9)
    if eval_clips:
        report["unseen"] = evaluate_unseen(detector, eval_clips, rules, thresholds, progress)
    else:
        report["unseen"] = None
        report["unseen_reason"] = f"{data}: one clip only; record several segments to measure the bundle on unseen footage"
    report["total_minutes"] = round((time.monotonic() - t0) / 60.0, 2)
    (out / REPORT_FILE).write_text(json.dumps(report, indent=2))
    stage("done", 1.0)
    return LearnResult(out, report)


def add_arguments(parser: argparse.ArgumentParser, paths_required: bool = True) -> None:
    """`vad learn`'s arguments (`paths_required` False: --data and --out may come from a camera's config)."""
    parser.add_argument("--data", type=Path, required=paths_required, help="the scene's normal footage (a folder `vad train --data` reads)")
    parser.add_argument("--out", type=Path, required=paths_required, help="bundle directory to write")
    parser.add_argument("--schedule", default="cpu", help="training schedule: cpu (default), tiny, paper (GPU)")
    parser.add_argument("--temporal", action=argparse.BooleanOptionalAction, default=None,
                        help="also train the flow autoencoder (default: yes; motion evidence, TV-L1 flow per frame when "
                        "scoring); --no-temporal: the spatial AE alone, ~35x cheaper to score, far weaker")
    parser.add_argument("--eval-fraction", type=float, default=0.2, help="last part of the footage kept unseen, for the evaluation")
    parser.add_argument("--max-false-alerts-per-hour", type=float, help="choose the alert threshold for this rate on the calibration footage")
    parser.add_argument("--fps", type=float, help="the camera's analysis rate (default: the footage's)")
    parser.add_argument("--min-duration-s", type=float, help=f"alert rule replayed (default {AlertRules.min_duration_s})")
    parser.add_argument("--hysteresis", type=float, help=f"alert rule replayed (default {AlertRules.hysteresis})")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a training config field (as vad train --set)")
    parser.add_argument("--scoring", action="append", default=[], metavar="KEY=VALUE", help="a bundle scoring field (as vad export --scoring)")
    parser.add_argument("--reuse", action="store_true",
                        help="skip training an autoencoder whose run in the work directory finished with the same config "
                        "(calibrate and measure again)")
    parser.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    """`vad learn`: print the bundle and what the unseen footage says; 2 on bad input."""
    from offline.training.cli import parse_overrides
    from offline.training.export import parse_scoring

    try:
        result = learn(
            args.data, args.out, schedule=args.schedule, eval_fraction=args.eval_fraction,
            max_false_alerts_per_hour=args.max_false_alerts_per_hour, fps=args.fps,
            rules=AlertRules(**{k: v for k, v in (("min_duration_s", args.min_duration_s), ("hysteresis", args.hysteresis))
                                if v is not None}),
            overrides=parse_overrides(args.overrides), scoring=parse_scoring(args.scoring), temporal=args.temporal is not False,
            reuse=args.reuse, progress=not args.no_progress,
        )
    except (LearnError, FileNotFoundError, ValueError) as exc:  # ConfigError and DataError are ValueErrors
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(summary(result))
    return 0


def summary(result: LearnResult) -> str:
    """A few lines a person reads after `vad learn`."""
    r = result.report
    models = "spatial + temporal AEs" if r.get("temporal") else "spatial AE"
    lines = [f"bundle {result.bundle} ({models}, {r['schedule']} schedule, {r['train_minutes']} min training)"]
    if "threshold_choice" in r:
        c = r["threshold_choice"]
        rate = f"{c['expected_per_hour']}/h" if c["resolved"] else f"< {c['bound_per_hour']}/h (footage too short to resolve the target)"
        lines.append(f"alert threshold {c['threshold']} for at most {c['target_per_hour']} false alerts/h: {rate} on calibration footage")
    if r.get("unseen"):
        u = r["unseen"]
        rates = ", ".join(f"{k} {v['threshold']}: {v['per_hour']}/h" for k, v in u["false_alerts"].items())
        lines.append(f"unseen footage ({u['seconds']} s): score quantiles {u['score_quantiles']}; false alerts {rates}")
    else:
        lines.append(r.get("unseen_reason", ""))
    return "\n".join(lines)
