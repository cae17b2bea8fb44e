"""`vad check-config FILE`: validate an offline config (offline.config) or a service config (streaming.config).

The one module that knows both kinds; it lives in streaming because the dependency runs one way (streaming uses
offline, offline never imports streaming). Neither half imports torch, PyAV, OpenCV or Ray: the check stays fast.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from offline.config import ConfigError, load_config, read_yaml
from streaming.config import load_service_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command's arguments: the file and, optionally, its kind."""
    parser.add_argument("file", type=Path, help="YAML file to validate")
    parser.add_argument(
        "--kind",
        choices=["offline", "service"],
        default=None,
        help="offline (vad config) or service (deploy/config.yaml); default: guessed from the keys",
    )


def run(args: argparse.Namespace) -> int:
    """Print OK or the errors (one line per bad field); exit status 2 on errors."""
    kind = args.kind
    try:
        if kind is None:
            data = read_yaml(args.file)
            kind = "service" if isinstance(data, dict) and ("cameras" in data or "applications" in data) else "offline"
        if kind == "service":
            load_service_config(args.file)
        else:
            load_config(args.file)
    except ConfigError as exc:
        print(exc)
        return 2
    print(f"{args.file}: OK ({kind} config)")
    return 0
