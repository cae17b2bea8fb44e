"""TV-L1's iteration budget chosen by what it detects: ms per pair on one core and the classical flow-magnitude
row's stream micro-AUC on Ped2 and Ped1, for each point of a sweep over scales, warps, inner / outer iterations,
epsilon, the median filter, warm start and the input size.

    .venv/bin/python bench/flow_budget.py --out bench/results/flow_budget.json           # the whole sweep
    .venv/bin/python bench/flow_budget.py --points full,s3-w1-i10 --workers 1          # some points

Every point runs the project's own harness (offline.evaluate: the stream protocol, block_max, the window mean, the
calibrated normaliser fitted on the training clips' held-out tails), exactly `vad eval --baseline flow-magnitude
--reduction block_max --block B --size S --pool window --protocol stream` with the point's flow settings, on the
OpenCV backend with one thread per process (`--workers` processes run points side by side). The micro-AUC is
reported on the whole test set and on its two halves (the selection half a setting is chosen on, the report half
it is not; offline.eval_split.SPLITS). Timing: the same 24 real Ped2 pairs at the point's size, OpenCV and our
torch solver, both on one thread, median of 3 runs, measured in the same process as the reference "full" point's
timing when it is in the sweep. The model half of the budget question (a flow AE trained on each setting's flow)
is bench/flow_budget_model.py.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# The sweep: name -> (input size, FlowConfig overrides). "full" is OpenCV's defaults (the bundles' flow so far).
POINTS: dict[str, tuple[int, dict]] = {
    "full": (128, {}),
    "s3": (128, {"scales": 3}),
    "w2": (128, {"warps": 2}),
    "w1": (128, {"warps": 1}),
    "i10-o1": (128, {"inner_iterations": 10, "outer_iterations": 1}),
    "eps0.05": (128, {"epsilon": 0.05}),
    "med1": (128, {"median_filtering": 1}),
    "s3-w2-i10": (128, {"scales": 3, "warps": 2, "inner_iterations": 10, "outer_iterations": 1}),
    "s3-w1-i10": (128, {"scales": 3, "warps": 1, "inner_iterations": 10, "outer_iterations": 1}),
    "s3-w1-i5": (128, {"scales": 3, "warps": 1, "inner_iterations": 5, "outer_iterations": 1}),
    "s2-w1-i10-med1": (128, {"scales": 2, "warps": 1, "inner_iterations": 10, "outer_iterations": 1, "median_filtering": 1}),
    "s3-w1-i10-96": (96, {"scales": 3, "warps": 1, "inner_iterations": 10, "outer_iterations": 1}),
    "full-96": (96, {}),
    "s3-w1-i10-160": (160, {"scales": 3, "warps": 1, "inner_iterations": 10, "outer_iterations": 1}),
    "full-warm": (128, {"warm_start": True, "warm_scales": 5}),
    "full-warm1": (128, {"warm_start": True, "warm_scales": 1}),
    "s3-w1-i10-warm1": (128, {"scales": 3, "warps": 1, "inner_iterations": 10, "outer_iterations": 1, "warm_start": True}),
    "s3-w1-i5-warm1": (128, {"scales": 3, "warps": 1, "inner_iterations": 5, "outer_iterations": 1, "warm_start": True}),
    "s3-w1-i3-warm1": (128, {"scales": 3, "warps": 1, "inner_iterations": 3, "outer_iterations": 1, "warm_start": True}),
    "s2-w1-i5-med1-warm1": (128, {"scales": 2, "warps": 1, "inner_iterations": 5, "outer_iterations": 1,
                                  "median_filtering": 1, "warm_start": True}),
    "s3-w1-i5-warm1-96": (96, {"scales": 3, "warps": 1, "inner_iterations": 5, "outer_iterations": 1, "warm_start": True}),
}
BLOCK_AT_128 = 16  # the harness's block; other sizes keep the same share of the frame


def block_for(size: int) -> int:
    """block_max side at `size` px covering the same share of the frame as 16 px at 128."""
    return max(1, round(BLOCK_AT_128 * size / 128))


def _one_thread() -> None:
    import cv2
    import torch

    cv2.setNumThreads(1)
    torch.set_num_threads(1)


def time_point(size: int, overrides: dict, runs: int = 3) -> dict:
    """ms per pair on one thread, OpenCV and ours, on 24 real Ped2 pairs at `size` (chained as the stream chains them
    when the point warm-starts); and our solver's inner iterations per pair, in finest-level pixel units."""
    import numpy as np
    import torch

    from offline.config import FlowConfig
    from offline.flow import FlowEstimator
    from offline.flow.cache import clip_flow

    _one_thread()
    i0, i1 = timing_pairs(size)
    gray = torch.cat((i0, i1[-1:])).numpy()
    out = {}
    for backend in ("opencv", "torch"):
        est = FlowEstimator(FlowConfig(backend=backend, compile="off", **overrides))
        clip_flow(gray[:3], est, batch=24)  # warm-up
        times = []
        for _ in range(runs):
            t = time.perf_counter()
            clip_flow(gray, est, batch=24)
            times.append(time.perf_counter() - t)
        out[f"ms_per_pair_{backend}"] = round(1000 * statistics.median(times) / len(i0), 2)
    out["inner_iterations_per_pair"] = round(float(np.mean(pixel_iterations(gray, FlowConfig(**overrides)))), 1)
    return out


def pixel_iterations(gray, cfg) -> list[float]:
    """Inner iterations of each pair of `gray` (N, H, W), summed over pyramid levels weighted by their pixels relative
    to the finest (the cost unit), with warm-started pairs chained as clip_flow chains them."""
    import torch

    from offline.flow.estimator import params_from_config
    from offline.flow.tvl1 import TVL1
    from dataclasses import replace

    g = torch.from_numpy(gray)
    cold = TVL1(params_from_config(cfg), compile=False)
    warm = TVL1(replace(params_from_config(cfg), nscales=min(cfg.warm_scales, cfg.scales)), compile=False)
    h, w = g.shape[-2:]
    prev, out = None, []
    for t in range(len(g) - 1):
        use_warm = cfg.warm_start and t % cfg.warm_chain != 0
        solver = warm if use_warm else cold
        prev, stats = solver(g[t : t + 1], g[t + 1 : t + 2], return_stats=True, init=prev if use_warm else None)
        out.append(float(stats.pixel_iterations()[0]) / (h * w))
    return out


def timing_pairs(size: int, data: Path | None = None):
    """24 consecutive real pairs of Ped2 test clip 01 (frames 60-84: people and a cyclist), gray, at `size`."""
    import numpy as np
    import torch

    from offline.data.readers import open_dataset, read_frames
    from offline.data.pixels import rgb_to_gray255

    root = data or Path(os.environ.get("VAD_SHARED_DATA", REPO.parent / "shared" / "data")) / "ped2"
    clip = next(c for c in open_dataset(root).test if c.id == "01")
    frames = np.stack([f for k, f in enumerate(read_frames(clip, size=size)) if 60 <= k <= 84])
    gray = torch.from_numpy(rgb_to_gray255(frames).astype(np.float32))
    return gray[:-1].contiguous(), gray[1:].contiguous()


def auc_point(size: int, overrides: dict, root: Path, dataset: str) -> dict:
    """The flow-magnitude row on one dataset with these flow settings: stream micro / macro, whole and halves."""
    from offline.config import FlowConfig
    from offline.data.readers import open_dataset
    from offline.eval_split import split_aucs
    from offline.evaluate import calibrate_classical, evaluate
    from offline.baselines import ClassicalDetector
    from offline.scoring.bundle import ScoringSpec

    _one_thread()
    ds = open_dataset(root)
    clips = [c for c in ds.test if c.labels is not None]
    scoring = ScoringSpec(weights=(1.0, 0.0, 0.0), normaliser="calibrated", hop=16, reduction_spatial="block_max",
                          block=block_for(size), pool="window")
    flow = FlowConfig(clip=20.0, backend="opencv", **overrides)
    det = ClassicalDetector("flow-magnitude", size, 16, scoring, flow=flow)
    calibrate_classical(det, ds.train)
    report = evaluate(clips, det, f"flow-magnitude {overrides}", ("stream",))
    r = report["results"]["stream"]
    return {"micro": round(100 * r["micro_auc"], 2), "macro": round(100 * r["macro_auc"], 2),
            "ms_per_frame": r["ms_per_frame"], **split_aucs(dataset, report)}


def run_point(name: str, data: dict[str, Path]) -> dict:
    """Timing and both datasets' AUCs of one point (in a worker process)."""
    size, overrides = POINTS[name]
    t = time.perf_counter()
    row = {"name": name, "size": size, "settings": overrides, "block": block_for(size), **time_point(size, overrides)}
    for ds, root in data.items():
        row[f"{ds}_stream_micro"] = {"classical": auc_point(size, overrides, root, ds)}
    row["wall_s"] = round(time.perf_counter() - t, 1)
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", default=",".join(POINTS), help=f"comma-separated sweep points (default all: {', '.join(POINTS)})")
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("VAD_SHARED_DATA", REPO.parent / "shared" / "data")),
                    help="shared data folder holding ped2/ and ped1/")
    ap.add_argument("--datasets", default="ped2,ped1")
    ap.add_argument("--workers", type=int, default=2, help="points measured side by side, one thread each")
    ap.add_argument("--out", type=Path, default=None, help="JSON with every row (merged into an existing file)")
    ap.add_argument("--timing-only", action="store_true",
                    help="re-measure only ms per pair and iterations, every point in this one process, one after another "
                    "(the AUC runs of a loaded machine time each other; this is the fair comparison)")
    args = ap.parse_args()
    names = [n for n in args.points.split(",") if n]
    unknown = sorted(set(names) - set(POINTS))
    if unknown:
        print(f"error: --points: unknown {unknown}; have {list(POINTS)}", file=sys.stderr)
        return 2
    data = {d: args.data / d for d in args.datasets.split(",")}
    for d, root in data.items():
        if not root.is_dir():
            print(f"error: --data: {root} is not a directory (dataset {d})", file=sys.stderr)
            return 2
    import torch

    print(f"# TV-L1 budget sweep, {datetime.datetime.now().isoformat(timespec='seconds')}")
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}; "
          f"{args.workers} worker(s), 1 thread each; datasets {list(data)}")
    rows = []
    if args.timing_only:
        for name in names:
            size, overrides = POINTS[name]
            rows.append({"name": name, "size": size, "settings": overrides, "block": block_for(size),
                         **time_point(size, overrides, runs=5), "timed": datetime.datetime.now().isoformat(timespec="seconds"),
                         "load_avg_1m": round(os.getloadavg()[0], 2)})
            print(json.dumps(rows[-1]), flush=True)
            if args.out:
                save(args.out, rows)
        return 0
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        for row in pool.map(run_point, names, [data] * len(names)):
            rows.append(row)
            print(format_row(row, list(data)), flush=True)
            if args.out:
                save(args.out, rows)
    return 0


def format_row(row: dict, datasets: list[str]) -> str:
    """One Markdown row: point, size, settings, ms per pair (OpenCV / ours), iterations, AUCs (whole, sel / rep)."""
    aucs = " | ".join(
        f"{row[f'{d}_stream_micro']['classical']['micro']:.2f} ({row[f'{d}_stream_micro']['classical']['select']:.2f} / "
        f"{row[f'{d}_stream_micro']['classical']['report']:.2f})" for d in datasets)
    return (f"| {row['name']} | {row['size']} | {row['settings'] or 'OpenCV defaults'} | {row['ms_per_pair_opencv']:.1f} / "
            f"{row['ms_per_pair_torch']:.1f} | {row['inner_iterations_per_pair']:.0f} | {aucs} |")


def save(path: Path, rows: list[dict]) -> None:
    """Merge rows into path's "budget" list by point name (other keys of the file are kept)."""
    doc = json.loads(path.read_text()) if path.is_file() else {}
    by_name = {r["name"]: r for r in doc.get("budget", [])}
    for r in rows:
        old = by_name.get(r["name"], {})
        by_name[r["name"]] = {**old, **r, **{k: {**old.get(k, {}), **v} for k, v in r.items() if k.endswith("_stream_micro")}}
    doc["budget"] = list(by_name.values())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    sys.exit(main())
