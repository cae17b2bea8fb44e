"""`vad make-pas`: pre-compute spatial PAs of a training set once (50 diffusion steps per frame is too slow inside
the training loop); resumable, seeded, stored under `pa.cache_dir`.

Cache layout:
    manifest.json                 the settings the PAs depend on; a resume with other settings is refused
    {clip_id}/masks.npz           `masks` (N, H, W) bool and `is_object` (N,) bool for the whole clip
    {clip_id}/{start:06d}.npz     `pa` (n, H, W, 3) uint8 RGB, frames start .. start+n-1
Chunks are written atomically (temp file + rename), so an interrupted run resumes at the first missing chunk.
Each chunk's seed derives from (pa.seed, clip id, start), so results do not depend on where a run was resumed.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import logging
import os
from pathlib import Path

import numpy as np
import torch

from offline.pa.masks import Segmenter, fill_empty_with_random, object_masks, random_mask

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"


def chunk_seed(seed: int, clip_id: str, start: int) -> int:
    """A stable 63-bit seed for one chunk (independent of Python's hash randomisation)."""
    digest = hashlib.sha256(f"{seed}/{clip_id}/{start}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def load_segmenter(spec: str | None) -> Segmenter | None:
    """`pa.segmenter` 'module:factory' -> the callable the factory returns (None: motion masks)."""
    if spec is None:
        return None
    module, _, name = spec.partition(":")
    if not module or not name:
        raise ValueError(f"pa.segmenter: expected 'module:factory', got {spec!r}")
    return getattr(importlib.import_module(module), name)()


def clip_masks(frames: np.ndarray, kind: str, rng: np.random.Generator, min_coverage: float, max_coverage: float,
               segmenter: Segmenter | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Masks for every frame of a clip (N, H, W, 3): object masks with random ones where a frame has no object,
    or random masks only. Returns (masks (N, H, W) bool, is_object (N,) bool)."""
    n, h, w, _ = frames.shape
    if kind == "random":
        return np.stack([random_mask(h, w, rng, min_coverage, max_coverage) for _ in range(n)]), np.zeros(n, bool)
    return fill_empty_with_random(object_masks(frames, segmenter), rng, min_coverage, max_coverage)


def to_images(frames: np.ndarray) -> torch.Tensor:
    """uint8 RGB (N, H, W, 3) -> float (N, 3, H, W) in [-1, 1] (exactly invertible by `from_images`)."""
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def from_images(images: torch.Tensor) -> np.ndarray:
    """float (N, 3, H, W) in [-1, 1] -> uint8 RGB (N, H, W, 3)."""
    return ((images.detach().cpu().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def _save_npz(path: Path, **arrays: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, path)


class PACache:
    """Reads and writes the pre-computed PAs of one cache directory."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def check_manifest(self, settings: dict, force: bool = False) -> None:
        """Write the manifest, or check an existing one matches (a resume with other settings would mix PAs)."""
        path = self.root / MANIFEST
        if path.is_file() and not force:
            old = json.loads(path.read_text())
            diff = {k: (old.get(k), v) for k, v in settings.items() if old.get(k) != v}
            if diff:
                shown = ", ".join(f"{k}: cached {a!r}, now {b!r}" for k, (a, b) in diff.items())
                raise ValueError(f"{path}: cache was made with other settings ({shown}); use another pa.cache_dir or --force")
        self.root.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n")

    def chunk_path(self, clip_id: str, start: int) -> Path:
        """The file of one clip's PA chunk starting at frame `start` (the cache resumes per chunk)."""
        return self.root / clip_id / f"{start:06d}.npz"

    def load(self, clip_id: str) -> tuple[np.ndarray, np.ndarray]:
        """(PAs (N, H, W, 3) uint8, masks (N, H, W) bool) of one clip; errors name the missing file."""
        mpath = self.root / clip_id / "masks.npz"
        if not mpath.is_file():
            raise FileNotFoundError(f"{mpath}: no pre-computed PAs for clip {clip_id!r} (run `vad make-pas`)")
        masks = np.load(mpath)["masks"]
        chunks, start = [], 0
        while start < len(masks):
            path = self.chunk_path(clip_id, start)
            if not path.is_file():
                raise FileNotFoundError(f"{path}: chunk missing for clip {clip_id!r} frame {start} (resume `vad make-pas`)")
            chunks.append(np.load(path)["pa"])
            start += len(chunks[-1])
        return np.concatenate(chunks), masks


def make_clip_pas(cache: PACache, clip_id: str, frames: np.ndarray, inpainter, seed: int, mask_kind: str,
                  coverage: tuple[float, float], chunk: int = 16, segmenter: Segmenter | None = None,
                  progress=None) -> int:
    """Compute the missing chunks of one clip (frames (N, H, W, 3) uint8); returns how many frames were computed."""
    clip_dir = cache.root / clip_id
    clip_dir.mkdir(parents=True, exist_ok=True)
    mpath = clip_dir / "masks.npz"
    if mpath.is_file():
        masks = np.load(mpath)["masks"]
    else:
        rng = np.random.default_rng(chunk_seed(seed, clip_id, -1))
        masks, is_object = clip_masks(frames, mask_kind, rng, *coverage, segmenter=segmenter)
        _save_npz(mpath, masks=masks, is_object=is_object)
    if len(masks) != len(frames):
        raise ValueError(f"{mpath}: {len(masks)} masks for {len(frames)} frames of clip {clip_id!r}")
    done = 0
    for start in range(0, len(frames), chunk):
        stop = min(start + chunk, len(frames))
        path = cache.chunk_path(clip_id, start)
        if not path.is_file():
            images = to_images(frames[start:stop])
            out = inpainter(images, torch.from_numpy(masks[start:stop]), seed=chunk_seed(seed, clip_id, start))
            pa = from_images(out)
            _save_npz(path, pa=pa)
            done += stop - start
        if progress is not None:
            progress.update(stop - start)
    return done


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`vad make-pas`'s arguments."""
    parser.add_argument("--config", type=Path, default=None, help="YAML config (data and pa sections)")
    parser.add_argument("--clips", nargs="*", default=None, help="only these training clip ids")
    parser.add_argument("--max-frames", type=int, default=None, help="only the first N frames of each clip (trials)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda for the LDM")
    parser.add_argument("--force", action="store_true", help="rewrite the manifest even if settings changed")


def run(args: argparse.Namespace) -> int:
    """`vad make-pas`: pre-compute the spatial PAs of the training clips into `pa.cache_dir`."""
    from tqdm import tqdm

    from offline.config import ConfigError, load_config
    from offline.data.readers import DataError, open_dataset, read_frames
    from offline.pa.inpaint import make_inpainter

    try:
        cfg = load_config(args.config)
        dataset = open_dataset(cfg.data.root, cfg.data.layout, clips=args.clips or cfg.data.clips)
    except (ConfigError, DataError) as exc:
        print(exc)
        return 2
    pa = cfg.pa
    settings = {
        "inpainter": str(pa.ldm_path) if pa.ldm_path else "telea-fallback", "steps": pa.ldm_steps, "seed": pa.seed,
        "size": cfg.data.size, "mask": pa.mask, "segmenter": pa.segmenter,
        "coverage": [pa.mask_min_coverage, pa.mask_max_coverage], "max_frames": args.max_frames,
    }
    cache = PACache(pa.cache_dir)
    try:
        cache.check_manifest(settings, args.force)
        inpainter = make_inpainter(pa.ldm_path, pa.ldm_steps, args.device, pa.ldm_batch_size)
        segmenter = load_segmenter(pa.segmenter)
    except (ValueError, FileNotFoundError, ImportError, AttributeError) as exc:
        print(exc)
        return 2
    clips = dataset.train
    total = sum(min(c.num_frames, args.max_frames or c.num_frames) for c in clips)
    computed = 0
    with tqdm(total=total, unit="frame", desc="spatial PAs") as bar:
        for clip in clips:
            n = min(clip.num_frames, args.max_frames or clip.num_frames)
            if all(cache.chunk_path(clip.id, s).is_file() for s in range(0, n, 16)) and (cache.root / clip.id / "masks.npz").is_file():
                bar.update(n)
                continue
            frames = np.stack(list(read_frames(clip, cfg.data.size)))[:n]
            computed += make_clip_pas(cache, clip.id, frames, inpainter, pa.seed, pa.mask,
                                      (pa.mask_min_coverage, pa.mask_max_coverage), segmenter=segmenter, progress=bar)
    print(f"{pa.cache_dir}: {computed} frames computed, {total - computed} already cached, {len(clips)} clips")
    return 0
