"""Raw pooled AUC of a temporal AE's flow-reconstruction error beside the magnitude of the same flow, per reduction.

    .venv/bin/python bench/raw_evidence.py --run RUN_DIR --data ../shared/data/ped2 [--cache DIR]

RUN_DIR is a `vad train --target temporal` run (its config.yaml gives size, widths and flow.clip). Test flow is
OpenCV TV-L1 on the clips at the run's size (cached as .npy in --cache). Windows of 16 frames at hop 16, no
normaliser: the micro-AUC equals the stream protocol's up to the calibrated mapping's slow adaptation; each
reduction also pooled over its window (`ScoringSpec.pool: window`). It asks one question: does the AE's error
carry more than its input's motion magnitude?
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(argv=None) -> int:
    """Print {evidence reduction: (micro-AUC, macro-AUC)} for the AE error and for the flow magnitude."""
    import cv2

    from offline.auc import macro_auc, micro_auc
    from offline.data.readers import open_dataset, read_frames
    from offline.flow import encode_flow
    from offline.scoring.evidence import pool_frames, reduce_error
    from offline.training.export import load_run_autoencoder

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "ped2")
    ap.add_argument("--cache", type=Path, default=Path("cache/raw-evidence"))
    ap.add_argument("--block", type=int, default=16)
    args = ap.parse_args(argv)
    model, cfg = load_run_autoencoder(args.run)
    size, clip = cfg.data.size, cfg.flow.clip
    args.cache.mkdir(parents=True, exist_ok=True)
    tv = cv2.optflow.DualTVL1OpticalFlow_create()
    errors, mags, labels = {}, {}, {}
    for c in [c for c in open_dataset(args.data).test if c.labels is not None]:
        path = args.cache / f"{c.id}-{size}.npy"
        if path.is_file():
            flow = np.load(path)
        else:
            g = np.stack(list(read_frames(c, size=size)))[..., 0]
            flow = np.stack([tv.calc(g[i], g[i + 1], None) for i in range(len(g) - 1)]).transpose(0, 3, 1, 2).astype(np.float16)
            np.save(path, flow)
        x = encode_flow(torch.from_numpy(flow.astype(np.float32)), clip)
        x = torch.cat([x, x[-1:]])
        n = len(x) // 16 * 16
        w = x[:n].view(-1, 16, 3, size, size).permute(0, 2, 1, 3, 4)
        with torch.no_grad():
            rec = torch.cat([model(w[i : i + 4]) for i in range(0, len(w), 4)])
        errors[c.id] = ((rec - w) ** 2).mean(1).reshape(n, size, size)
        mags[c.id] = ((w[:, 2] + 1) / 2 * clip).reshape(n, size, size)
        labels[c.id] = np.asarray(c.labels[:n])
    reductions = {"frame": "frame", f"block_max {args.block}": "block_max"}  # the bundle's reduce_error / pool_frames
    pools = {"": "frame", ", window mean": "window"}
    out = {}
    for name, src in (("temporal AE error", errors), ("flow magnitude", mags)):
        for red, reduction in reductions.items():
            for label, pool in pools.items():
                s = {k: pool_frames(reduce_error(v.view(-1, 16, size, size), reduction, args.block), pool).flatten().numpy()
                     for k, v in src.items()}
                out[f"{name}, {red}{label}"] = (round(100 * micro_auc(s, labels), 2), round(100 * macro_auc(s, labels), 2))
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
