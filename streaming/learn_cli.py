"""`vad learn`: offline.learn's command, plus `--camera NAME --config deploy/config.yaml` to learn a configured
camera from its recordings (recordings.root/<camera>) into learn.bundles_root/<camera>/<time>, replaying its own
fps and alert rules. It lives in streaming because it reads the service config (offline never imports streaming).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from offline import learn as offline_learn
from offline.config import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """offline.learn's arguments, with --data/--out optional when --camera names a configured camera."""
    offline_learn.add_arguments(parser, paths_required=False)
    parser.add_argument("--camera", help="a camera of --config: learn it from its recordings")
    parser.add_argument("--config", type=Path, default=Path("deploy/config.yaml"), help="the service config (with --camera)")


def camera_arguments(args: argparse.Namespace) -> argparse.Namespace:
    """Fill --data, --out, --fps, the alert rules, the false-alert target and learn.temporal from the camera's
    config entry and the service's learn section (what the command line gives wins); ConfigError naming the camera or the config file."""
    from streaming.config import load_service_config, resolve_paths

    cfg = resolve_paths(load_service_config(args.config), Path(os.environ.get("VAD_HOME", os.getcwd())))
    cam = next((c for c in cfg.cameras if c.name == args.camera), None)
    if cam is None:
        raise ConfigError(f"{args.config}: no camera named {args.camera!r}; cameras: {[c.name for c in cfg.cameras]}")
    alerts = cam.alert_settings(cfg.alerts)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    filled = {
        "data": cfg.recordings.root / cam.name, "out": cfg.learn.bundles_root / cam.name / f"{cam.name}-{stamp}",
        "fps": cam.fps, "min_duration_s": alerts.min_duration_s, "hysteresis": alerts.hysteresis,
        "max_false_alerts_per_hour": alerts.max_false_alerts_per_hour, "temporal": cfg.learn.temporal,
    }
    return argparse.Namespace(**{**vars(args), **{k: v for k, v in filled.items() if getattr(args, k) is None}})


def run(args: argparse.Namespace) -> int:
    """`vad learn`: with --camera, fill the paths from the config and say how to put the bundle in."""
    if args.camera:
        try:
            args = camera_arguments(args)
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    elif args.data is None or args.out is None:
        print("error: give --data and --out, or --camera NAME (with --config)", file=sys.stderr)
        return 2
    code = offline_learn.run(args)
    if code == 0 and args.camera:
        print(f"put it in: curl -X PUT 127.0.0.1:8000/cameras/{args.camera}/bundle -H 'content-type: application/json' "
              f"-d '{{\"path\": \"{Path(args.out).resolve()}\"}}'")
    return code
