"""`vad record URL --minutes M --out DIR`: record normal footage of a camera to train a model of its scene on.

A thin adapter over streaming/recorder.py: parse, show a progress bar, print where the footage is. Rerunning with
the same --out continues (numbering, and minutes already recorded count toward --minutes). Credentials: in the URL
or, better, in VAD_CAMERA_<NAME>_USER / _PASSWORD (--camera NAME); never written to DIR or printed.
Exit codes: 0 done, 1 stopped by a failure mid-way (stream lost for good, disk limit reached: closed segments are
kept), 2 refused before starting (disk limit, directory recorded with other settings), 130 Ctrl-C.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from streaming.config import CameraConfig
from streaming.credentials import camera_env_prefix
from streaming.disk_limit import DiskLimit, format_bytes, parse_bytes
from streaming.ingest import IngestSettings
from streaming.recorder import RecordSettings, Recorder

CAMERA = CameraConfig.model_fields  # decode defaults shared with the service's cameras


def _positive(kind: type):
    def parse(text: str):
        value = kind(text)
        if not (value > 0 and math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
        return value
    return parse


def _size(text: str) -> int:
    try:
        return parse_bytes(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`vad record`'s arguments."""
    parser.add_argument("url", help="rtsp://, rtsps://, a video file or demo://; credentials better in the environment")
    parser.add_argument("--minutes", type=_positive(float), required=True,
                        help="minutes of footage DIR should hold in all (earlier runs count), e.g. 30 or 0.5")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR",
                        help="recording directory (vad train --data DIR reads it)")
    parser.add_argument("--fps", type=_positive(float), default=None,
                        help=f"frames kept per second (default: as DIR was recorded, else the cameras' analysis rate, "
                             f"{CAMERA['fps'].default:g})")
    parser.add_argument("--max-side", type=int, default=None,
                        help="scale frames down to at most this many pixels on their longest side (0: full resolution, "
                             "the default for a new DIR)")
    parser.add_argument("--segment-minutes", type=_positive(float), default=5.0, help="minutes per segment file (5)")
    parser.add_argument("--camera", default="camera",
                        help="name for logs and credentials: VAD_CAMERA_<NAME>_USER / _PASSWORD (default: camera)")
    parser.add_argument("--credentials-env", default=None, metavar="PREFIX",
                        help="read PREFIX_USER / PREFIX_PASSWORD instead of VAD_CAMERA_<NAME>_...")
    parser.add_argument("--transport", choices=["tcp", "udp"], default=CAMERA["transport"].default)
    parser.add_argument("--open-timeout", type=_positive(float), default=CAMERA["open_timeout_s"].default, metavar="S")
    parser.add_argument("--read-timeout", type=_positive(float), default=CAMERA["read_timeout_s"].default, metavar="S")
    parser.add_argument("--max-reconnects", type=int, default=60,
                        help="give up after this many failed reconnects in a row (backoff up to 3 s; default 60)")
    parser.add_argument("--max-bytes", type=_size, default=None, metavar="SIZE",
                        help="most bytes DIR may hold in all, e.g. 20G (default: no limit but --min-free)")
    parser.add_argument("--min-free", type=_size, default=parse_bytes("1G"), metavar="SIZE",
                        help="free space to leave on DIR's disk (default 1G)")
    parser.add_argument("--crf", type=int, default=18, choices=range(0, 52), metavar="0-51",
                        help="x264 quality, lower is better (default 18, visually near lossless)")
    parser.add_argument("--realtime", action="store_true",
                        help="pace a video file or demo:// feed at its frame rate, as a camera (default: as fast as it "
                             "decodes; cameras are always live)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Record; print the result. Exit codes in the module docstring."""
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    if args.max_reconnects < 0:
        print(f"error: --max-reconnects: must be 0 or more, got {args.max_reconnects}", file=sys.stderr)
        return 2
    if args.max_side is not None and args.max_side < 0:
        print(f"error: --max-side: must be 0 (full resolution) or a number of pixels, got {args.max_side}", file=sys.stderr)
        return 2
    settings = RecordSettings(fps=args.fps, max_side=args.max_side, segment_s=args.segment_minutes * 60, crf=args.crf,
                              default_fps=CAMERA["fps"].default, names={"fps": "--fps", "max_side": "--max-side"})
    ingest = IngestSettings(
        transport=args.transport, open_timeout_s=args.open_timeout, read_timeout_s=args.read_timeout,
        backoff_initial_s=CAMERA["backoff_initial_s"].default, backoff_max_s=CAMERA["backoff_max_s"].default,
        max_reconnects=args.max_reconnects, loop_files=False, realtime_files=args.realtime,
    )
    limit = DiskLimit(args.out, args.max_bytes, args.min_free, names=("--max-bytes", "--min-free"))
    requested_s = args.minutes * 60
    bar = tqdm(total=round(requested_s, 1), unit="s", desc="record", disable=args.no_progress, dynamic_ncols=True,
               bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total:.1f} s [{elapsed}<{remaining}{postfix}]")

    def show(p: dict) -> None:
        bar.set_postfix_str(f"{p['segments']} segments, {format_bytes(p['bytes'])}, {p['ingest_state']}", refresh=False)
        bar.update(min(p["recorded_s"], bar.total) - bar.n)  # redraws at most every 0.1 s

    recorder = Recorder(args.url, args.out, requested_s, settings=settings, limit=limit, ingest=ingest,
                        camera=args.camera, credentials_env=args.credentials_env or camera_env_prefix(args.camera),
                        on_progress=show)
    with logging_redirect_tqdm(), bar:
        result = recorder.run()
    summary = (f"{args.out}: {result['state']}, {result['recorded_s'] / 60:.2f} of {args.minutes:g} min in "
               f"{result['segments']} segments ({format_bytes(result['bytes'])}, {result['fps']:g} fps)")
    if result["state"] == "done":
        print(f"{summary}; train with: vad train --data {args.out}")
        return 0
    if result["state"] == "stopped":
        print(f"{summary}; stopped (rerun the same command to continue)", file=sys.stderr)
        return 130
    print(f"error: {result['error']}", file=sys.stderr)
    print(summary, file=sys.stderr)
    return 2 if recorder.refused else 1
