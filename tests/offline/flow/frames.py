"""Real 256x256 frame pairs for the flow tests (Ped2 clips and vtest.avi), read through offline.data.readers."""
from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np

from offline.data.pixels import LUMA

# (split, clip id, first frame, pairs): Ped2 test clips 01/02 start their bikes/carts at frames 60/94.
PED2_PAIRS = (("test", "01", 60, 4), ("test", "02", 94, 4), ("test", "05", 10, 4), ("train", "01", 0, 4))
VTEST_PAIRS = (100, 8)


def gray(frames_rgb: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) uint8 RGB -> (N, H, W) float32 luma in [0, 255] (what both flow backends receive)."""
    return (frames_rgb.astype(np.float32) @ np.asarray(LUMA, dtype=np.float32)).astype(np.float32)


def _consecutive(frames, start: int, pairs: int) -> np.ndarray:
    return np.stack(list(itertools.islice(frames, start, start + pairs + 1)))


def real_pairs(ped2: Path, vtest: Path, size: int = 256) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(i0 (N, H, W), i1 (N, H, W), names) for N = 24 consecutive-frame pairs: 16 from Ped2, 8 from vtest."""
    from offline.data.readers import open_dataset, read_frames
    from offline.data.decode import decode_video, resize

    ds = open_dataset(ped2)
    clips = {(c.split, c.id): c for c in ds.clips}
    i0, i1, names = [], [], []
    for split, cid, start, n in PED2_PAIRS:
        g = gray(_consecutive(read_frames(clips[(split, cid)], size=size), start, n))
        i0.append(g[:-1])
        i1.append(g[1:])
        names += [f"ped2/{split}/{cid}:{start + k}" for k in range(n)]
    start, n = VTEST_PAIRS
    g = gray(_consecutive((resize(f, size) for f in decode_video(vtest)), start, n))
    i0.append(g[:-1])
    i1.append(g[1:])
    names += [f"vtest:{start + k}" for k in range(n)]
    return np.concatenate(i0), np.concatenate(i1), names


def smooth_flow(h: int, w: int, seed: int, amplitude: float = 2.5) -> np.ndarray:
    """A smooth synthetic flow (2, H, W): a few low-frequency sinusoids plus a global shift, |flow| <~ 2 amplitude."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    out = np.zeros((2, h, w))
    for c in range(2):
        out[c] += rng.uniform(-0.5, 0.5) * amplitude
        for _ in range(3):
            fy, fx = rng.uniform(0.5, 2.0, size=2) * 2 * np.pi
            out[c] += rng.uniform(0.2, 0.5) * amplitude * np.sin(fy * y / h + fx * x / w + rng.uniform(0, 2 * np.pi))
    return out.astype(np.float32)
