"""`vad flow CLIP --out FILE`: TV-L1 flow of a few consecutive frames of a clip, as a PNG grid or an MP4 (adapter).

Each row (or video frame) shows the frame, its colour-coded flow to the next frame (hue = direction,
saturation = magnitude, one scale for the whole output, printed) and a colour-wheel legend.
"""
from __future__ import annotations

import argparse
import itertools
import logging
from pathlib import Path

import numpy as np
import torch

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`vad flow`'s arguments."""
    parser.add_argument("clip", type=Path, help="a video file or a folder of frame images")
    parser.add_argument("--out", type=Path, required=True, help="output .png (grid) or .mp4")
    parser.add_argument("--start", type=int, default=0, help="first frame (0-based)")
    parser.add_argument("--pairs", type=int, default=8, help="number of consecutive frame pairs")
    parser.add_argument("--size", type=int, default=256, help="frames are resized to size x size (0: keep)")
    parser.add_argument("--config", type=Path, default=None, help="YAML config (flow section)")
    parser.add_argument("--backend", choices=["auto", "torch", "opencv"], default=None, help="overrides flow.backend")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")


def read_clip(path: Path, start: int, count: int, size: int | None) -> np.ndarray:
    """(count, H, W, 3) uint8 RGB frames start..start+count-1 of a video or image folder."""
    from offline.data.readers import DataError
    from offline.data.decode import IMAGE_EXTENSIONS, decode_images, decode_video, resize

    if path.is_dir():
        files = tuple(sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS))
        source = decode_images(files)
    elif path.is_file():
        source = decode_video(path)
    else:
        raise DataError(f"{path}: no such video file or frame folder")
    frames = [resize(f, size) for f in itertools.islice(source, start, start + count)]
    if len(frames) < count:
        raise DataError(f"{path}: needs frames {start}..{start + count - 1}, the clip ends after {start + len(frames)}")
    return np.stack(frames)


def render_rows(frames: np.ndarray, flows: np.ndarray, max_mag: float) -> list[np.ndarray]:
    """One (H, 2W + legend, 3) uint8 panel per pair: frame | flow colours | wheel."""
    from offline.flow.visualize import colour_wheel, flow_to_rgb

    h = frames.shape[1]
    wheel = colour_wheel(min(h, 96))
    legend = np.full((h, wheel.shape[1], 3), 255, np.uint8)
    legend[: wheel.shape[0]] = wheel
    return [np.concatenate((f, flow_to_rgb(fl, max_mag), legend), axis=1) for f, fl in zip(frames, flows)]


def write_png(path: Path, rows: list[np.ndarray]) -> None:
    """Save a grid of flow visualisations as one PNG (for reading a clip's motion at a glance)."""
    from PIL import Image

    Image.fromarray(np.concatenate(rows, axis=0)).save(path)


def write_mp4(path: Path, rows: list[np.ndarray], fps: float = 5.0) -> None:
    """Save the flow visualisation frames as an MP4 (for watching the motion over a clip)."""
    import av

    h, w = rows[0].shape[:2]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=int(fps))
        stream.width, stream.height = w - w % 2, h - h % 2
        stream.pix_fmt = "yuv420p"
        for row in rows:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(row[: stream.height, : stream.width]), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


def run(args: argparse.Namespace) -> int:
    """`vad flow`: compute a clip's flow and write it as PNG or MP4."""
    from offline.config import ConfigError, load_config
    from offline.data.readers import DataError
    from offline.data.pixels import rgb_to_gray255
    from offline.flow.estimator import FlowEstimator

    suffix = args.out.suffix.lower()
    if suffix not in (".png", ".mp4"):
        print(f"--out: expected a .png or .mp4 file, got {args.out}")
        return 2
    if args.pairs < 1 or args.start < 0:
        print(f"--pairs must be >= 1 and --start >= 0, got {args.pairs} and {args.start}")
        return 2
    try:
        cfg = load_config(args.config, {"flow.backend": args.backend} if args.backend else None)
        frames = read_clip(args.clip, args.start, args.pairs + 1, args.size or None)
    except (ConfigError, DataError) as exc:
        print(exc)
        return 2
    est = FlowEstimator(cfg.flow, device=args.device)
    gray = torch.from_numpy(rgb_to_gray255(frames))
    flows = est(gray[:-1], gray[1:]).cpu().numpy()
    mag = np.hypot(flows[:, 0], flows[:, 1])
    max_mag = max(float(np.percentile(mag, 99.5)), 0.5)
    rows = render_rows(frames[:-1], flows, max_mag)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    (write_png if suffix == ".png" else write_mp4)(args.out, rows)
    print(
        f"{args.out}: {len(rows)} pair(s) from {args.clip} frame {args.start}, {est.backend} on {est.device}; "
        f"full saturation = {max_mag:.2f} px/frame, max |flow| = {mag.max():.2f} px"
    )
    return 0
