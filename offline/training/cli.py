"""`vad train`: parse, build the config, call the loop (offline/training/ae_loop.py, offline/training/disc_loop.py).

Single process on CPU or one GPU; data-parallel with `torchrun --nproc_per_node N -m offline.cli train ...`.
Exit codes: 0 done, 130 stopped by Ctrl-C / SIGTERM (checkpoint written; `--resume` continues), 2 bad config.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import yaml

from offline.config import ConfigError, load_config

logger = logging.getLogger(__name__)


def parse_overrides(items: list[str]) -> dict:
    """["train.epochs=2", "data.size=64"] -> {"train.epochs": 2, "data.size": 64} (values parsed as YAML)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or "." not in key:
            raise ConfigError(f"--set {item!r}: expected section.key=value, e.g. train.epochs=2")
        out[key.strip()] = yaml.safe_load(value)
    return out


# Named schedules: what a person picks instead of ten fields (a schedule overrides the --config file; --set overrides both).
# cpu: 128 px, widths 48/64/128, bounded by a 50-minute training budget (train.max_minutes) so that `vad learn` ends
# within the hour on this project's 2-core machine: the spatial AE trains at ~3.5 windows/s there (bench/RESULTS.md,
# "Learning a camera"), about 10k windows in the budget; the temporal AE also needs TV-L1 flow at ~0.3 s per pair;
# paper: Rai et al.'s 256x256 schedule, for a GPU; tiny: seconds, for tests and the demo.
# The cpu schedule's TV-L1 budget, chosen by what it detects (bench/flow_budget.py, bench/flow_summary.py's rule,
# bench/RESULTS.md "TV-L1 budget"): the cheapest point whose flow-magnitude stream micro-AUC on the selection half
# of Ped2 and of Ped1 is within 0.5 of OpenCV's defaults (here: above them). The paper schedule keeps OpenCV's.
CPU_FLOW_BUDGET: dict = {"scales": 3, "warps": 1, "inner_iterations": 5, "outer_iterations": 1, "warm_start": True,
                         "warm_scales": 1}

SCHEDULES: dict[str, dict] = {
    "cpu": {"data.size": 128, "data.train_stride": 4, "train.epochs": 12, "train.batch_size": 8, "train.lr": 1e-3,
            "model.channels": [48, 64, 128], "flow.clip": 5.0, "train.max_minutes": 50.0,
            **{f"flow.{k}": v for k, v in CPU_FLOW_BUDGET.items()}},
    "paper": {"data.size": 256, "data.train_stride": 1, "train.epochs": 25, "train.batch_size": 24, "train.lr": 1e-4,
              "model.channels": [96, 128, 256], "flow.clip": 10.0},
    "tiny": {"data.size": 32, "data.train_stride": 8, "train.epochs": 2, "train.batch_size": 4, "train.lr": 1e-3,
             "model.channels": [8, 16, 32], "flow.clip": 2.5},
}

# Per-target refinements of a schedule, measured on Ped2 (bench/RESULTS.md, issue 13): the cpu schedule's temporal AE
# is best after ~9 epochs (stream micro-AUC of its flow error, frame mean: 94.3 after 9 epochs, 90.4 after 19: trained
# longer, it learns to reconstruct unusual motion as well, and its error stops telling it apart).
TARGET_SCHEDULES: dict[tuple[str, str], dict] = {("cpu", "temporal"): {"train.epochs": 9}}


def schedule_overrides(schedule: str | None, target: str) -> dict:
    """The schedule's fields for one training target (what a person sets goes on top of them)."""
    return {**SCHEDULES.get(schedule or "", {}), **TARGET_SCHEDULES.get((schedule or "", target), {})}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`vad train`'s arguments."""
    parser.add_argument("--config", type=Path, default=None, help="YAML config (sections data, flow, pa, model, train)")
    parser.add_argument("--target", choices=["spatial", "temporal", "discriminator"], help="overrides train.target")
    parser.add_argument("--data", type=Path, help="dataset root (overrides data.root)")
    parser.add_argument("--out", type=Path, help="run directory (overrides train.out_dir)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one config field, e.g. --set pa.spatial=patch --set data.size=64 (repeatable)")
    parser.add_argument("--schedule", choices=sorted(SCHEDULES), help="a named schedule (cpu, paper, tiny); --set wins over it")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt (same step, optimiser state)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (logs and JSONL only)")


def train_config(args: argparse.Namespace):
    """The Config `vad train` runs: --config, then the schedule (with its refinement for the target, which may come
    from --config), then --set / --target / --data / --out; ConfigError names a bad field."""
    given = parse_overrides(args.overrides)
    if args.target:
        given["train.target"] = args.target
    if args.data:
        given["data.root"] = str(args.data)
    if args.out:
        given["train.out_dir"] = str(args.out)
    schedule = getattr(args, "schedule", None)
    cfg = load_config(args.config, {**SCHEDULES.get(schedule or "", {}), **given})
    if TARGET_SCHEDULES.get((schedule or "", cfg.train.target)):
        cfg = load_config(args.config, {**schedule_overrides(schedule, cfg.train.target), **given})
    return cfg


def run(args: argparse.Namespace) -> int:
    """`vad train`: validate the config, run the chosen loop; 0 done, 130 stopped (resumable), 2 bad config."""
    try:
        cfg = train_config(args)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    if cfg.train.target == "discriminator":
        from offline.training.disc_loop import train_discriminator

        try:
            result = train_discriminator(cfg, progress=not args.no_progress)
        except (ValueError, FileNotFoundError) as exc:  # e.g. model.disc_spatial_run is not a finished spatial run
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"discriminator: {result.status} ({result.out_dir})")
        return 0
    from offline.training import ddp
    from offline.training.ae_loop import train_autoencoder

    try:
        result = train_autoencoder(cfg, resume=args.resume, progress=not args.no_progress)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        ddp.cleanup()
    if result.stopped:
        print(f"stopped at step {result.step}; checkpoint in {result.out_dir} (continue with --resume)")
        return 130
    print(f"{cfg.train.target} AE: {result.step} steps, {result.epoch} epochs -> {result.out_dir}")
    return 0
