"""`vad flow-cache`: TV-L1 flow for every consecutive frame pair of a dataset, computed once, stored outside the repo.

Layout: `<flow.cache_dir>/<key>/<split>/<clip id>.npy`, one float16 array (N - 1, 2, H, W) of raw flow in pixels
per clip (index t = flow from frame t to t + 1), plus `<key>/meta.json`. `key` hashes the dataset root, the frame
size and every TV-L1 parameter, so changing any of them starts a new cache instead of mixing results. Clips are
written atomically (temporary file, then rename): an interrupted run resumes at the first missing clip.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
from dataclasses import asdict
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from offline.data.pixels import rgb_to_gray255
from offline.flow.estimator import FlowEstimator, params_from_config

logger = logging.getLogger(__name__)

VERSION = 1


def cache_key(root: str | Path, size: int, cfg) -> str:
    """Short hash of what determines the cached flow: dataset root, frame size, TV-L1 parameters."""
    payload = {
        "version": VERSION,
        "root": str(Path(root).expanduser().resolve()),
        "size": size,
        "params": asdict(params_from_config(cfg)),
    }
    if getattr(cfg, "warm_start", False):  # only then: cold caches keep their keys
        payload["warm"] = [cfg.warm_scales, cfg.warm_chain]
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


@torch.no_grad()
def clip_flow(gray: np.ndarray, est: FlowEstimator, batch: int = 16, progress=None, dtype=np.float16) -> np.ndarray:
    """Flow of all consecutive pairs of (N, H, W) gray frames -> (N - 1, 2, H, W) `dtype`, `batch` pairs per call.

    The one batched pair loop: the flow cache (float16), training clips and `vad eval` (float32) all call it.
    """
    g = torch.from_numpy(np.ascontiguousarray(gray, dtype=np.float32))
    if getattr(est, "warm_start", False):
        from offline.flow.estimator import chained_flow

        # chains of warm_chain pairs from the clip's first frame: pair t starts cold where a stream window starts
        return chained_flow(est, g[:-1], g[1:], est.chain, batch, progress).float().cpu().numpy().astype(dtype)
    out = np.empty((max(len(g) - 1, 0), 2, *g.shape[1:]), dtype=dtype)
    for i in range(0, len(g) - 1, batch):
        j = min(i + batch, len(g) - 1)
        out[i:j] = est(g[i:j], g[i + 1 : j + 1]).float().cpu().numpy().astype(dtype)
        if progress is not None:
            progress.update(j - i)
    return out


class FlowCache:
    """Read and fill the flow cache of one dataset root, frame size and flow config."""

    def __init__(self, cache_dir: str | Path, root: str | Path, size: int, cfg):
        self.root = Path(root)
        self.size = size
        self.cfg = cfg
        self.key = cache_key(root, size, cfg)
        self.dir = Path(cache_dir) / self.key

    def path(self, clip) -> Path:
        """Where one clip's flow lives (clip ids may contain '/', kept as sub-folders)."""
        return self.dir / clip.split / f"{clip.id}.npy"

    def has(self, clip) -> bool:
        """True when the clip's flow is already cached (an interrupted run resumes after it)."""
        return self.path(clip).is_file()

    def load(self, clip) -> np.ndarray:
        """(N - 1, 2, H, W) float16 flow of a cached clip; a file of the wrong shape is an error naming it."""
        path = self.path(clip)
        try:
            flow = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path}: unreadable flow cache file ({exc}); delete it and re-run `vad flow-cache`") from None
        expected = (clip.num_frames - 1, 2, self.size, self.size)
        if flow.shape != expected:
            raise ValueError(f"{path}: flow of shape {flow.shape}, expected {expected} for clip {clip.id}; delete it")
        return flow

    def _write_meta(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        meta = {
            "version": VERSION,
            "root": str(self.root),
            "size": self.size,
            "params": asdict(params_from_config(self.cfg)),
            "layout": "<split>/<clip id>.npy: float16 (N-1, 2, H, W), pixels, t -> t+1",
        }
        (self.dir / "meta.json").write_text(json.dumps(meta, indent=1))

    def store(self, clip, flow: np.ndarray) -> Path:
        """Write atomically: a crash leaves either no file or a complete one."""
        path = self.path(clip)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as fh:
            np.save(fh, flow.astype(np.float16, copy=False))
        os.replace(tmp, path)
        return path

    def get(self, clip, est: FlowEstimator, batch: int = 16, progress=None) -> np.ndarray:
        """The clip's flow from the cache, computing and storing it first when missing."""
        if self.has(clip):
            return self.load(clip)
        from offline.data.readers import read_frames

        frames = np.stack(list(read_frames(clip, size=self.size)))
        flow = clip_flow(rgb_to_gray255(frames), est, batch, progress)
        self.store(clip, flow)
        return flow

    def fill(self, clips: Iterable, est: FlowEstimator, batch: int = 16, show_progress: bool = True) -> dict[str, int]:
        """Compute every missing clip (resumable); returns counts of clips computed and skipped."""
        from tqdm import tqdm

        clips = list(clips)
        self._write_meta()
        todo = [c for c in clips if not self.has(c)]
        pairs = sum(max(c.num_frames - 1, 0) for c in todo)
        logger.info("flow cache %s: %d of %d clips to compute (%d pairs)", self.dir, len(todo), len(clips), pairs)
        with tqdm(total=pairs, unit="pair", desc="flow", disable=not show_progress) as bar:
            for clip in todo:
                bar.set_postfix_str(f"{clip.split}/{clip.id}")
                self.get(clip, est, batch, bar)
        return {"computed": len(todo), "skipped": len(clips) - len(todo)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`vad flow-cache`'s arguments."""
    parser.add_argument("--config", type=Path, default=None, help="YAML config (sections data and flow)")
    parser.add_argument("--root", type=Path, default=None, help="dataset folder (overrides data.root)")
    parser.add_argument("--split", choices=["train", "test", "all"], default="train", help="which clips (default train)")
    parser.add_argument("--cache-dir", type=Path, default=None, help="overrides flow.cache_dir")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--backend", choices=["auto", "torch", "opencv"], default=None, help="overrides flow.backend")
    parser.add_argument("--batch", type=int, default=16, help="frame pairs per flow call")


def run(args: argparse.Namespace) -> int:
    """Fill the cache for the chosen split; prints where it is."""
    from offline.config import ConfigError, load_config
    from offline.data.readers import DataError, open_dataset

    overrides = {}
    if args.root is not None:
        overrides["data.root"] = str(args.root)
    if args.cache_dir is not None:
        overrides["flow.cache_dir"] = str(args.cache_dir)
    if args.backend is not None:
        overrides["flow.backend"] = args.backend
    try:
        cfg = load_config(args.config, overrides)
        ds = open_dataset(cfg.data.root, cfg.data.layout, clips=cfg.data.clips)
    except (ConfigError, DataError) as exc:
        print(exc)
        return 2
    clips = {"train": ds.train, "test": ds.test, "all": ds.clips}[args.split]
    est = FlowEstimator(cfg.flow, device=args.device)
    cache = FlowCache(cfg.flow.cache_dir, cfg.data.root, cfg.data.size, cfg.flow)
    counts = cache.fill(clips, est, batch=args.batch)
    print(f"{cache.dir}: {counts['computed']} clip(s) computed, {counts['skipped']} already cached ({est.backend} on {est.device})")
    return 0
