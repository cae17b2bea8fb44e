"""Does keeping the camera's aspect ratio help? TV-L1 flow magnitude on Ped2 (360x240, 3:2) squashed to a square
vs scaled to the same height keeping 3:2, the same 16-px block_max (with and without the window mean), raw pooled
micro/macro-AUC (16-frame windows, hop 16, no normaliser) and the flow's cost per frame pair on one thread.

    .venv/bin/python bench/aspect.py [--data ../shared/data/ped2] [--height 128] [--cache cache/raw-evidence]

Flow magnitude stands in for the motion evidence (the flow AE's input, and the best classical row): if the
square input loses nothing here, an H x W model input is cost without gain (issue 13, section 5).
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def aspect_width(frame: np.ndarray, height: int, block: int) -> int:
    """The width keeping the frame's aspect ratio at `height`, rounded to whole blocks."""
    return round(frame.shape[1] * height / frame.shape[0] / block) * block


def main(argv=None) -> int:
    import cv2

    from offline.auc import macro_auc, micro_auc
    from offline.data.readers import open_dataset, read_frames
    from offline.scoring.evidence import pool_frames, reduce_error

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "ped2")
    ap.add_argument("--height", type=int, default=128)
    ap.add_argument("--block", type=int, default=16)
    ap.add_argument("--cache", type=Path, default=Path("cache/raw-evidence"))
    args = ap.parse_args(argv)
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    args.cache.mkdir(parents=True, exist_ok=True)
    clips = [c for c in open_dataset(args.data).test if c.labels is not None]
    h = args.height
    print(f"{time.strftime('%Y-%m-%d %H:%M')} {platform.node()} {platform.machine()} cv2 {cv2.__version__}; "
          f"{args.data}: {len(clips)} test clips, height {h}, block {args.block}")
    tv = cv2.optflow.DualTVL1OpticalFlow_create()
    out = {}
    for name in ("square", "aspect"):
        mags, labels = {}, {}
        for c in clips:
            w = h if name == "square" else aspect_width(next(iter(read_frames(c, size=None))), h, args.block)
            path = args.cache / (f"{c.id}-{h}.npy" if name == "square" else f"{c.id}-{h}x{w}.npy")
            if path.is_file():
                flow = np.load(path)
            else:
                g = np.stack([cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA)[..., 0] for f in read_frames(c, size=None)])
                flow = np.stack([tv.calc(g[i], g[i + 1], None) for i in range(len(g) - 1)]).transpose(0, 3, 1, 2)
                flow = flow.astype(np.float16)
                np.save(path, flow)
            m = torch.from_numpy(np.sqrt((flow.astype(np.float32) ** 2).sum(1)))
            m = torch.cat([m, m[-1:]])
            n = len(m) // 16 * 16
            mags[c.id], labels[c.id] = m[:n], np.asarray(c.labels[:n])
        size = f"{h}x{h}" if name == "square" else f"{w}x{h} (WxH)"
        for pool in ("frame", "window"):
            # the bundle's own reduction and pooling (offline.scoring.evidence), on 16-frame windows at hop 16
            s = {k: pool_frames(reduce_error(v.view(-1, 16, *v.shape[1:]), "block_max", args.block), pool).flatten().numpy()
                 for k, v in mags.items()}
            out[f"{name} {size}, block_max {args.block}, pool {pool}"] = {
                "micro_auc": round(100 * micro_auc(s, labels), 2), "macro_auc": round(100 * macro_auc(s, labels), 2),
                "size": size}
    frames = list(read_frames(clips[0], size=None))[:41]  # the cost, both sizes timed now on the same frames
    for name, w in (("square", h), ("aspect", aspect_width(frames[0], h, args.block))):
        g = [cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA)[..., 0] for f in frames]
        t0 = time.perf_counter()
        for i in range(len(g) - 1):
            tv.calc(g[i], g[i + 1], None)
        out[f"{name} ms per flow pair (1 thread)"] = round(1000 * (time.perf_counter() - t0) / (len(g) - 1), 1)
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
