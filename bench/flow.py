"""TV-L1 flow benchmark: OpenCV DualTVL1 vs our torch TV-L1 (CPU, and CUDA when present) on 256x256 pairs.

    python bench/flow.py --quick        # CPU only, a couple of minutes on 2 cores
    python bench/flow.py                # more runs; on a CUDA machine adds batch 1/16/64/256, the bandwidth floor
                                        # and the iteration-budget sweep
    python bench/flow.py --cuda-eager   # the CUDA rows and sweep without torch.compile (eager kernels)

Frames: the 3 real pairs stored in tests/offline/flow/flow_ref.npz (2 Ped2, 1 vtest; they travel to the GPU
machine with the repo), repeated to fill a batch. Pairs/s are medians over runs after a warm-up call; CUDA timings
use CUDA events. Record the printed table in bench/RESULTS.md.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from offline.flow.opencv_backend import create_dualtvl1, opencv_available  # noqa: E402
from bench.gpu_run import copy_bandwidth, load_pairs, timed  # noqa: E402  (one timing and pair loader for both benches)
from offline.flow.tvl1 import TVL1, TVL1Params, bytes_per_iteration  # noqa: E402



def row(name: str, batch: int, times: list[float], extra: str = "") -> None:
    """One Markdown row: median ms per call and pairs per second."""
    med = statistics.median(times)
    print(f"| {name:<34} | {batch:>5} | {med * 1000:>10.1f} | {batch / med:>9.1f} | {extra}")


def main() -> int:
    """Print the TV-L1 table: OpenCV and ours on the CPU, and the CUDA rows when a GPU exists."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="CPU rows with few runs (CI-free smoke run)")
    ap.add_argument("--runs", type=int, default=None, help="timed runs per row (default 2 quick, 5 full)")
    ap.add_argument("--cpu-batch", type=int, default=16)
    ap.add_argument("--cuda-eager", action="store_true", help="CUDA rows and sweep in eager mode (no torch.compile)")
    args = ap.parse_args()
    runs = args.runs or (2 if args.quick else 5)
    params = TVL1Params()
    cuda = torch.cuda.is_available()

    print(f"# TV-L1 flow benchmark, {datetime.datetime.now().isoformat(timespec='seconds')}")
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads)" + (f", GPU {torch.cuda.get_device_name()}" if cuda else ", no GPU"))
    if opencv_available():
        import cv2

        print(f"opencv {cv2.__version__}")
    print(f"parameters: {asdict(params)}; frames 256x256 (3 real pairs repeated), runs {runs} after a warm-up")
    print("| backend | batch | ms / call | pairs / s | notes")
    print("|---|---|---|---|---|")

    i0, i1 = load_pairs(max(args.cpu_batch, 256 if cuda else 1), 256)
    if opencv_available():
        import cv2

        tv = create_dualtvl1(params)
        a, b = (i0[0].numpy() / 255.0).astype(np.float32), (i1[0].numpy() / 255.0).astype(np.float32)
        default_threads = cv2.getNumThreads()
        cv2.setNumThreads(1)
        row("OpenCV DualTVL1, 1 thread", 1, timed(lambda: tv.calc(a, b, None), "cpu", runs))
        cv2.setNumThreads(default_threads)
        row(f"OpenCV DualTVL1, {default_threads} threads", 1, timed(lambda: tv.calc(a, b, None), "cpu", runs))
    else:
        print("| OpenCV DualTVL1 | - | - | - | cv2.optflow missing (no opencv-contrib)")

    for compile in (False, True):
        est = TVL1(params, compile=compile)
        label = "ours CPU " + ("compiled" if compile else "eager")
        for batch in (1, args.cpu_batch):
            if batch > 1 and not compile and args.quick:
                continue  # eager batches are slow on 2 cores and say nothing new
            t0 = time.perf_counter()
            times = timed(lambda: est(i0[:batch], i1[:batch]), "cpu", 1 if batch > 1 and args.quick else runs)
            row(label, batch, times, f"first call incl. compile {time.perf_counter() - t0 - sum(times):.1f} s" if compile else "")

    if cuda:
        dev = torch.device("cuda")
        bw = copy_bandwidth(dev, 1 << 30)
        print(f"\ndevice copy bandwidth: {bw / 1e9:.0f} GB/s (read + write)")
        g0, g1 = i0.to(dev), i1.to(dev)
        cuda_compile = not args.cuda_eager
        cuda_label = "ours CUDA " + ("compiled" if cuda_compile else "eager")
        est = TVL1(params, compile=cuda_compile)
        full = {}
        for batch in (1, 16, 64, 256):
            times = timed(lambda: est(g0[:batch], g1[:batch]), dev, runs)
            flow, stats = est(g0[:batch], g1[:batch], return_stats=True)
            full[batch] = flow
            moved = sum(int(it.max()) * bytes_per_iteration(batch, h, w) for (h, w), it in zip(stats.sizes, stats.iterations))
            floor = moved / bw
            iters = "/".join(str(int(it.max())) for it in stats.iterations)
            row(cuda_label, batch, times,
                f"iterations per scale {iters}; floor {floor * 1000:.1f} ms ({moved / 1e9:.1f} GB), measured/floor "
                f"{statistics.median(times) / floor:.2f}")
        print("\niteration budget (CUDA, batch 256): pairs/s and mean EPE against the full-iteration flow")
        print("| warps | outer x inner | pairs / s | EPE vs full (px) |")
        print("|---|---|---|---|")
        for warps, outer, inner in ((5, 10, 30), (5, 3, 30), (3, 3, 30), (3, 1, 30), (2, 1, 20), (1, 1, 20)):
            cut = replace(params, warps=warps, outer_iterations=outer, inner_iterations=inner)
            e = TVL1(cut, compile=cuda_compile)
            times = timed(lambda: e(g0, g1), dev, runs)
            err = torch.linalg.vector_norm(e(g0, g1) - full[256], dim=1).mean()
            print(f"| {warps} | {outer} x {inner} | {256 / statistics.median(times):.0f} | {float(err):.4f} |")
    else:
        print("\nno CUDA device: GPU rows, the bandwidth floor and the iteration-budget sweep are skipped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
