"""TV-L1 flow benchmark: OpenCV DualTVL1 vs our torch TV-L1 (CPU, and CUDA when present) on 256x256 pairs.

    python bench/flow.py --quick        # CPU only, a couple of minutes on 2 cores
    python bench/flow.py                # more runs; on a CUDA machine adds batch 1/16/64/256, the bandwidth floor
                                        # and the iteration-budget sweep
    python bench/flow.py --cuda-eager   # the CUDA rows and sweep without torch.compile (eager kernels)
    python bench/flow.py --budget scales=3,warps=1,inner_iterations=10,outer_iterations=1   # the 128-px budget

On CUDA it prints, for the chosen budget at 128 px (`--budget`, flow: field names; default the cpu recipe's
CPU_FLOW_BUDGET) and OpenCV's parameters at 256 px, one row per solver mode and batch 1..256: `eager` (today's
CUDA path, stopping once all pairs stop), `fixed` (the fixed schedule, eager kernels: no host sync, every
iteration run) and `graphed` (CUDA graphs, offline/flow/graphs.py: a first pass cut to one outer iteration per
warp, the pairs it left unfinished again with the whole schedule: eager's flow), each with its distance from the
bandwidth floor of the iterations the stopping rule needs, and at 256 px graphed rows of OpenCV's parameters cut
to 2 and 1 outer iterations outright (no second pass) with their EPE against eager.

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

MODES = ("eager", "fixed", "graphed")
BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def parse_budget(text: str) -> TVL1Params:
    """'scales=3,warps=1,...' (flow: config names and values) -> the TV-L1 parameters; warm-start keys are ignored
    (they shape a chain of pairs, not one call)."""
    import yaml

    from offline.config import FlowConfig
    from offline.flow.estimator import params_from_config

    fields = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--budget: expected key=value items, got {item!r}")
        fields[key.strip()] = yaml.safe_load(value)
    fields = {k: v for k, v in fields.items() if not k.startswith("warm_")}
    return params_from_config(FlowConfig(backend="torch", **fields))


def default_budget() -> str:
    """The cpu recipe's flow budget (offline/training/cli.py CPU_FLOW_BUDGET) as a --budget string."""
    from offline.training.cli import CPU_FLOW_BUDGET

    return ",".join(f"{k}={v}" for k, v in CPU_FLOW_BUDGET.items() if not k.startswith("warm_"))


def solver_for(mode: str, params: TVL1Params, buckets: tuple[int, ...]):
    """The solver of a mode: eager CUDA, the fixed schedule on eager kernels, or the fixed schedule graphed."""
    from offline.flow.graphs import GraphedTVL1

    if mode == "graphed":
        return GraphedTVL1(params, buckets=buckets)
    return TVL1(params, compile=False, fixed_schedule=mode == "fixed")


def cuda_rows(label: str, params: TVL1Params, size: int, batches, runs: int, bw: float, modes=MODES,
              deadline: float | None = None, emit=print, reference: dict | None = None, device="cuda") -> list[dict]:
    """One row per (mode, batch) at `size`: ms per call, pairs/s, iterations per scale (needed by the stopping rule,
    max over pairs), the bandwidth floor of those iterations and measured / floor, the graph capture seconds and
    the EPE against eager at the same batch (`reference`: batch -> flow, filled by the eager rows; pass one dict to
    two calls to compare a cut budget with the full one). A row that would end past `deadline` (time.monotonic(),
    judged from the previous row's time scaled by the batch) is skipped."""
    import torch

    from bench.gpu_run import load_pairs

    dev = torch.device(device)
    g0, g1 = (t.to(dev) for t in load_pairs(max(batches), size))
    eager_flow: dict[int, torch.Tensor] = {} if reference is None else reference
    rows = []
    for mode in modes:
        est = solver_for(mode, params, tuple(batches))
        last = None  # (batch, seconds) of this mode's previous row
        for b in batches:
            guess = 0.0 if last is None else last[1] * max(1.0, b / last[0])
            if deadline is not None and time.monotonic() + guess > deadline:
                rows.append({"config": label, "mode": mode, "batch": b, "skipped": "out of time"})
                emit(rows[-1])
                continue
            t_row = time.monotonic()
            capture_s = est.capture(size, size, b, device=dev) if mode == "graphed" else 0.0
            times = timed(lambda: est(g0[:b], g1[:b]), dev, runs)
            before = getattr(est, "recomputed", 0)
            flow, stats = est(g0[:b], g1[:b], return_stats=True)
            moved = sum(int(it.max()) * bytes_per_iteration(b, h, w) for (h, w), it in zip(stats.sizes, stats.iterations))
            med = statistics.median(times)
            row = {"config": label, "mode": mode, "size": size, "batch": b, "ms_per_call": round(med * 1000, 2),
                   "pairs_per_s": round(b / med, 1), "iterations_per_scale": [int(it.max()) for it in stats.iterations],
                   "floor_ms": round(moved / bw * 1000, 3), "measured_over_floor": round(med / (moved / bw), 2),
                   "capture_s": round(capture_s, 2)}
            if mode == "graphed":  # pairs the cut first pass left unfinished, run again with the whole schedule
                row["recomputed_pairs"] = est.recomputed - before
            if mode == "eager":
                eager_flow[b] = flow
            elif b in eager_flow:
                row["epe_vs_eager_px"] = round(float(torch.linalg.vector_norm(flow - eager_flow[b], dim=1).mean()), 5)
            rows.append(row)
            emit(row)
            last = (b, time.monotonic() - t_row)
        del est
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def print_cuda_row(r: dict) -> None:
    """A cuda_rows row as a Markdown row of the table main prints."""
    if "skipped" in r:
        print(f"| {r['config']} {r['mode']} | {r['batch']} | - | - | skipped: {r['skipped']}")
        return
    extra = (f"iterations per scale {'/'.join(map(str, r['iterations_per_scale']))}; floor {r['floor_ms']} ms, "
             f"measured/floor {r['measured_over_floor']}" + (f"; capture {r['capture_s']} s" if r["capture_s"] else "")
             + (f"; EPE vs eager {r['epe_vs_eager_px']} px" if "epe_vs_eager_px" in r else ""))
    print(f"| {r['config']} {r['mode']:<8} | {r['batch']:>5} | {r['ms_per_call']:>10.1f} | {r['pairs_per_s']:>9.1f} | {extra}")



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
    ap.add_argument("--budget", default=None, help="the chosen budget at 128 px, flow: names: "
                    "'scales=3,warps=1,inner_iterations=10,outer_iterations=1' (default: the cpu recipe's)")
    args = ap.parse_args()
    budget = parse_budget(args.budget or default_budget())
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
        print(f"\nsolver modes (eager kernels unless graphed); chosen budget at 128 px: {asdict(budget)}")
        print("| config mode | batch | ms / call | pairs / s | notes")
        print("|---|---|---|---|---|")
        cuda_rows("128 chosen", budget, 128, BATCHES, runs, bw, emit=print_cuda_row)
        full_256: dict = {}
        cuda_rows("256 opencv", params, 256, BATCHES, runs, bw, emit=print_cuda_row, reference=full_256)
        for outer in (2, 1):
            cuda_rows(f"256 opencv outer={outer}", replace(params, outer_iterations=outer), 256, (16, 64, 256), runs, bw,
                      modes=("graphed",), emit=print_cuda_row, reference=full_256)
        est = TVL1(params, compile=cuda_compile)
        full = {}
        for batch in (1, 16, 64, 256):
            times = timed(lambda: est(g0[:batch], g1[:batch]), dev, runs)
            full[batch] = est(g0[:batch], g1[:batch])
            row(cuda_label, batch, times)
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
