"""One prepared GPU run: GPU tests, TV-L1 speed, scorer throughput, paper-size Ped2 training + eval, LDM speed.

    python bench/gpu_run.py                      # on the GPU machine (see ../shared/GPU.md), 8 minutes
    python bench/gpu_run.py --tiny --out /tmp/g  # CPU, toy sizes, about a minute (CI runs it: tests/bench)

GPU time is lent for 15 minutes at a time, machine start included, so this is one command that must be right the
first time. Each step runs in its own Python process under a timeout taken from what is left of `--budget-s`, so a
step that hangs or crashes costs only its own box; the training step's epochs are scaled to the time it is given,
and steps that no longer fit are skipped and say so. Results are merged into `$OUT/results.json` after every step
(what is there comes back even when the command is killed), all output goes to `$OUT/run.log`, and the trained
bundle comes back as bf16 safetensors under 16 MiB each in `$OUT/bundle/` (`--unpack` rebuilds it here).
`$OUT/flow_gpu.json` is bench/results/flow.json's "gpu" part (TV-L1 pairs/s, cameras at 25 fps, p99 latency):
merged into the checkout's file when run on a GPU; `--merge-flow` merges a returned one here.
The GPU machine has torch 2.11, no Ray and no opencv-contrib: nothing here imports them.
Over 350 lines on purpose: the whole prepared run is one file, so what travels to the GPU and what `--tiny` tests
in CI are the same code.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# (step, seconds it is planned to take on an H200 out of the 480 s budget); train gets what the others leave
STEPS: list[tuple[str, float]] = [("tests", 80), ("flow", 130), ("scorer", 130), ("train", 0), ("ldm", 40)]
RESERVE_S = 15.0  # kept back for the summary and the bundle's packing
GPU_TEST_FILES = ["tests/offline/flow/test_gpu.py", "tests/offline/training/test_train.py", "tests/offline/pa/test_inpaint.py"]


def default_data() -> Path:
    """The compact Ped2 copy: carried to the GPU machine in .carry/, or beside the checkout."""
    for p in (REPO / ".carry" / "data" / "ped2-256",
              Path(os.environ.get("VAD_SHARED_DATA", REPO.parent / "shared" / "data")) / "ped2-256"):
        if p.is_dir():
            return p
    return REPO / ".carry" / "data" / "ped2-256"


def machine() -> dict:
    """Where and when this ran: date, host, Python, torch, CPU count, GPU name."""
    import torch

    return {
        "date": datetime.datetime.now().isoformat(timespec="seconds"), "host": platform.node(),
        "python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }


# ---------------------------------------------------------------- timing helpers (CUDA events after a warm-up)
def sync(device) -> None:
    """Wait for the device (a no-op on the CPU), so a timing ends when the work does."""
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, runs: int) -> list[float]:
    """Seconds per call of fn(), `runs` calls after one warm-up; CUDA events on a GPU."""
    import torch

    fn()
    sync(device)
    out = []
    for _ in range(runs):
        if torch.device(device).type == "cuda":
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            torch.cuda.synchronize()
            out.append(a.elapsed_time(b) / 1000.0)
        else:
            t = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t)
    return out


# ---------------------------------------------------------------- step 1: the GPU tests
def step_tests(args) -> dict:
    """pytest -m gpu on the files that hold GPU tests; output streams into run.log, counts come from JUnit XML."""
    import xml.etree.ElementTree as ET

    files = [f for f in GPU_TEST_FILES if (REPO / f).is_file()]
    xml = Path(args.work) / "gpu-tests.xml"
    proc = subprocess.run([sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", "-rfEs",
                           "--durations=20", f"--junitxml={xml}", *files], cwd=REPO, timeout=args.timeout)
    counts = {}
    if xml.is_file():
        suite = ET.parse(xml).getroot()
        suite = suite if suite.tag == "testsuite" else suite[0]
        counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    summary = ", ".join(f"{v} {k}" for k, v in counts.items()) or f"exit {proc.returncode}"
    return {"files": files, "rc": proc.returncode, "summary": summary, **counts}


def save_partial(args, step: str, result: dict) -> None:
    """The step's result so far, where the orchestrator reads it even when the step is killed at its box."""
    Path(args.work).mkdir(parents=True, exist_ok=True)
    (Path(args.work) / f"{step}.json").write_text(json.dumps(result, indent=1, default=str))


# ---------------------------------------------------------------- step 2: TV-L1 speed, floor, iteration budget
def load_pairs(n: int, size: int):
    """n real 256x256 pairs (the 3 stored OpenCV-reference pairs, repeated), resized to `size`."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    d = np.load(REPO / "tests" / "offline" / "flow" / "flow_ref.npz")
    reps = -(-n // len(d["i0"]))
    i0 = torch.from_numpy(np.tile(d["i0"], (reps, 1, 1))[:n]).float()
    i1 = torch.from_numpy(np.tile(d["i1"], (reps, 1, 1))[:n]).float()
    if size != i0.shape[-1]:
        i0, i1 = (F.interpolate(t[:, None], size=(size, size), mode="area")[:, 0] for t in (i0, i1))
    return i0, i1


def copy_bandwidth(device, nbytes: int) -> float:
    """Device copy bandwidth in bytes/s (read + write counted), median of 5."""
    import torch

    x = torch.empty(nbytes // 4, device=device)
    y = torch.empty_like(x)
    return 2 * nbytes / statistics.median(timed(lambda: y.copy_(x), device, 5))


def step_flow(args) -> dict:
    """Step 2: TV-L1 per solver mode (eager; the fixed schedule from CUDA graphs) and batch: the chosen budget at
    128 px and OpenCV's parameters at 256 px (and cut to one outer iteration, with its EPE against the full
    schedule): pairs/s, graph capture seconds, iterations the stopping rule needs, distance from the bandwidth floor."""
    from bench.flow import BATCHES, cuda_rows, default_budget, parse_budget
    from offline.flow.tvl1 import TVL1Params

    dev = args.device
    t0 = time.monotonic()
    box = args.timeout - 10
    bw = copy_bandwidth(dev, (64 << 20) if args.tiny else (1 << 30))
    budget = parse_budget(args.budget or default_budget())
    opencv = TVL1Params()
    if args.tiny:  # toy sizes and schedules: the code path, not the speed
        opencv = TVL1Params(nscales=3, warps=2, outer_iterations=3)
        plan = [("128 chosen", budget, 32, (1, 4), ("eager", "graphed"), 2, 0.4),
                ("256 opencv", opencv, 32, (1, 4), ("eager", "graphed"), 2, 0.8),
                ("256 opencv outer=1", replace(opencv, outer_iterations=1), 32, (4,), ("graphed",), 2, 1.0)]
    else:  # (label, params, size, batches, modes, timed runs, end of its time as a fraction of the box)
        plan = [("128 chosen", budget, 128, BATCHES, ("eager", "graphed"), 5, 0.3),
                ("256 opencv", opencv, 256, (1, 16, 64, 256), ("eager", "graphed"), 3, 0.8),
                ("256 opencv outer=1", replace(opencv, outer_iterations=1), 256, (64, 256), ("graphed",), 3, 1.0)]
    res: dict = {"copy_bandwidth_GBps": round(bw / 1e9, 1), "budget_128": asdict(budget), "opencv_256": asdict(opencv),
                 "rows": []}
    full_256: dict = {}

    def emit(row: dict) -> None:  # each row into the log and into the step's partial result (a killed step keeps it)
        print(json.dumps(row), flush=True)
        res["rows"].append(row)
        for key, label in (("pairs_per_s_128_chosen", "128 chosen"), ("pairs_per_s_256_opencv", "256 opencv")):
            done = [r for r in res["rows"] if r["config"] == label and "pairs_per_s" in r]
            best = max(done, key=lambda r: r["pairs_per_s"], default=None)
            res[key] = None if best is None else best["pairs_per_s"]
            res[key + "_at"] = None if best is None else {"mode": best["mode"], "batch": best["batch"]}
        save_partial(args, "flow", res)

    for label, params, size, batches, modes, runs, until in plan:
        cuda_rows(label, params, size, batches, runs, bw, modes=modes, emit=emit, deadline=t0 + until * box,
                  reference=full_256 if label.startswith("256") else None, device=dev)
    return res


# ---------------------------------------------------------------- step 3: the scorer fed by N cameras at 25 fps
@dataclass
class SyntheticWindow:
    """A window as the ring buffer hands it to the scorer (streaming.batching.WindowLike)."""

    camera: str
    frames: object  # (T, H, W, 3) uint8
    indices: object  # (T,)
    wall_s: object  # (T,) when each frame was "decoded"


def demo_windows(size: int, window: int, hop: int, frames: int = 160) -> list:
    """The demo scene's first `frames` frames (walkers, a textured background, sensor noise) cut into the windows a
    camera would send, looped: every camera plays them, each from its own offset."""
    import numpy as np

    from streaming.demo_feed import DemoFeed

    feed = DemoFeed(seed=0, fps=25.0, size=size, anomaly_every_s=None)
    pool = np.stack([feed.frame(i) for i in range(frames)])
    return [pool[(j * hop + np.arange(window)) % frames] for j in range(frames // hop)]


def run_cameras(det, windows: list, cameras: int, seconds: float, warmup_s: float, hop: int, max_batch: int,
                max_wait_s: float = 0.05, fps: float = 25.0) -> dict:
    """`cameras` synthetic 25 fps streams into the service's queue (PendingWindows: drop-oldest, 2 per camera), one
    scorer thread draining it through a fresh BatchScorer (per-camera normalisers start anew); frame-to-score
    latency (from a frame's decode time to its score), drops and scored frames over `seconds` after `warmup_s`.
    Cameras are staggered over one hop."""
    import heapq
    import threading

    import numpy as np

    from streaming.batching import BatchScorer, PendingWindows, frame_scorer_factory

    scorer = BatchScorer(det, frame_scorer_factory(det), max_batch=max_batch, return_maps=False)
    window = len(windows[0])
    queue = PendingWindows(max_pending=2)
    stop = threading.Event()
    t0 = time.time() + 0.05
    measure_from = t0 + warmup_s
    lat: list = []  # (decode time, latency) of each frame scored after measure_from

    def produce() -> None:
        offset = [c / cameras * hop / fps for c in range(cameras)]
        heap = [(t0 + offset[c] + (window - 1) / fps, c, window) for c in range(cameras)]  # (release, camera, end)
        while not stop.is_set():
            release, c, end = heapq.heappop(heap)
            wait = release - time.time()
            if wait > 0 and stop.wait(wait):
                return
            idx = np.arange(end - window, end)
            queue.put(SyntheticWindow(f"cam{c:03d}", windows[(end // hop + c) % len(windows)], idx, t0 + offset[c] + idx / fps))
            heapq.heappush(heap, (release + hop / fps, c, end + hop))

    def consume() -> None:
        while not stop.is_set():
            batch = queue.take(max_batch, max_wait_s, timeout_s=0.2)
            if not batch:
                continue
            results = scorer.score(batch)
            done = time.time()
            for r in results:
                wall = np.asarray(r.wall_s)[np.asarray(r.wall_s) >= measure_from]
                lat.extend(zip(wall.tolist(), (done - wall).tolist()))

    threads = [threading.Thread(target=f, daemon=True) for f in (produce, consume)]
    for t in threads:
        t.start()
    time.sleep(max(0.0, measure_from - time.time()))
    dropped0 = sum(queue.dropped.values())
    time.sleep(seconds)
    dropped = sum(queue.dropped.values()) - dropped0
    measure_end = time.time()
    stop.set()
    queue.close()
    for t in threads:
        t.join(timeout=30)
    # frames decoded early enough that a scorer keeping up (their window filled, one second to score it) has scored them
    cutoff = measure_end - window / fps - 1.0
    expected = cameras * fps * max(0.0, cutoff - measure_from)
    scored = sum(1 for wall, _ in lat if wall < cutoff)
    arr = np.asarray([latency for _, latency in lat])
    return {"cameras": cameras, "seconds": seconds, "dropped_windows": dropped, "scored_frames": scored,
            "expected_frames": round(expected), "max_batch": max_batch,
            "sustained": dropped == 0 and scored >= 0.95 * expected,
            "latency_p50_s": round(float(np.percentile(arr, 50)), 3) if arr.size else None,
            "latency_p99_s": round(float(np.percentile(arr, 99)), 3) if arr.size else None}


def largest_sustained(trial, deadline: float, start: int = 1, most: int = 1024, rows: list | None = None,
                      on_trial=None) -> dict | None:
    """The largest N whose trial(N) is sustained: doubling from `start`, then bisecting, until `deadline`. Each
    trial's row is appended to `rows`, then on_trial(best trial so far) is called."""
    rows = [] if rows is None else rows
    best, fail = None, None
    n = start
    while time.monotonic() < deadline and n <= most:
        r = trial(n)
        rows.append(r)
        print(json.dumps(r), flush=True)
        if r["sustained"]:
            best = r
        if on_trial is not None:
            on_trial(best)
        if r["sustained"]:
            if fail is None:
                n *= 2
                continue
        else:
            fail = n
        lo = best["cameras"] if best else 0
        if fail - lo <= max(1, lo // 8):
            break
        n = (lo + fail) // 2
    return best


def scorer_bundle(kind: str, tmp: Path, args) -> Path:
    """The two bundles measured: `cpu` (the cpu recipe's shape: 128 px, widths 48/64/128, CPU_RECIPE scoring, the
    cpu schedule's flow budget with warm start) and `paper` (both AEs 96/128/256 at 256 px, OpenCV's TV-L1
    parameters), untrained: speed does not depend on the weights. The torch TV-L1 on the device, from CUDA graphs
    or eager kernels (`--scorer-flow`; auto: graphs for the cpu budget, eager for OpenCV's schedule until the flow
    step's 256-px rows show graphs ahead there too)."""
    from offline.config import FlowConfig
    from offline.learn import CPU_RECIPE, CPU_RECIPE_WEIGHTS
    from offline.scoring.bundle import ScoringSpec, random_bundle
    from offline.training.cli import CPU_FLOW_BUDGET

    graphs = args.scorer_flow == "graphed" or (args.scorer_flow == "auto" and kind == "cpu")
    flow = dict(backend="torch", compile="off", cuda_graphs=graphs)
    if args.tiny:
        return random_bundle(tmp / kind, size=32, channels=(8, 16, 32), flow=FlowConfig(**flow, scales=2, warps=1,
                             outer_iterations=1, inner_iterations=5, warm_start=kind == "cpu"),
                             scoring=ScoringSpec(weights=CPU_RECIPE_WEIGHTS, **{**CPU_RECIPE, "block": 8}))
    if kind == "cpu":
        return random_bundle(tmp / kind, size=128, channels=(48, 64, 128), flow=FlowConfig(clip=5.0, **flow, **CPU_FLOW_BUDGET),
                             scoring=ScoringSpec(weights=CPU_RECIPE_WEIGHTS, **CPU_RECIPE))
    return random_bundle(tmp / kind, size=256, channels=(96, 128, 256), flow=FlowConfig(**flow))


def step_scorer(args) -> dict:
    """Step 3: the real scorer (streaming.batching's queue and BatchScorer over Detector) fed by N synthetic
    cameras at 25 fps, for the cpu-recipe bundle and the paper-size one: the largest N sustained without drops,
    p50 / p99 frame-to-score latency there, and the flow graphs' capture time at start."""
    import torch

    from offline.scoring.detector import Detector
    from streaming.batching import BatchScorer, frame_scorer_factory

    dev = args.device
    t_start = time.monotonic()
    kinds = ("cpu", "paper")
    share = {"cpu": 0.45, "paper": 1.0}  # end of each bundle's time as a fraction of the box
    res: dict = {"flow": args.scorer_flow, "fps": 25.0, "bundles": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in kinds:
            deadline = t_start + share[kind] * (args.timeout - 10)
            det = Detector.load(scorer_bundle(kind, Path(tmp), args), dev)
            hop = det.config.scoring.hop
            max_batch = 8 if args.tiny else {"cpu": 64, "paper": 16}[kind]
            t0 = time.perf_counter()
            capture_s = det.flow_estimator.capture(det.size, det.size, 256 if not args.tiny else 16)
            scorer = BatchScorer(det, frame_scorer_factory(det), max_batch=max_batch, return_maps=False)
            windows = demo_windows(det.size, det.window, hop, frames=32 if args.tiny else 160)
            b = 1
            while b <= max_batch and time.monotonic() < deadline:  # warm-up: cuDNN plans per batch size
                scorer.score([SyntheticWindow(f"w{i}", windows[0], list(range(det.window)), [0.0] * det.window)
                              for i in range(b)])
                b *= 2
            sync(dev)
            entry: dict = {"size": det.size, "hop": hop, "window": det.window, "flow_params": det.config.flow.model_dump(mode="json"),
                           "capture_s": round(capture_s, 2), "start_s": round(time.perf_counter() - t0, 1)}
            trial = lambda n: run_cameras(det, windows, n, 3.0 if args.tiny else 4.0, 0.5 if args.tiny else 1.5,  # noqa: E731
                                          hop, max_batch)
            start = 1 if args.tiny or kind == "paper" else 16
            res["bundles"][kind] = entry

            def on_trial(best: dict | None, entry=entry) -> None:
                entry["cameras_25fps"] = best["cameras"] if best else 0
                entry["latency_p50_s"] = best["latency_p50_s"] if best else None
                entry["latency_p99_s"] = best["latency_p99_s"] if best else None
                save_partial(args, "scorer", res)

            largest_sustained(trial, deadline, start=start, most=4 if args.tiny else 2048, rows=entry.setdefault("trials", []),
                              on_trial=on_trial)
            print(kind, json.dumps({k: v for k, v in entry.items() if k != "trials"}), flush=True)
            del det, scorer
            if dev == "cuda":
                torch.cuda.empty_cache()
    return res


# ---------------------------------------------------------------- step 4: paper-size training, export, eval
def train_one(cfg, budget_s: float, data):
    """Train until done or until `budget_s` has passed (the checkpoint is written either way)."""
    from offline.training.ae_loop import StopRequest, train_autoencoder

    stop, t0 = StopRequest(), time.perf_counter()

    def after_step(step: int) -> None:
        if time.perf_counter() - t0 > budget_s:
            stop.request("time budget")

    r = train_autoencoder(cfg, stop=stop, progress=False, data=data, after_step=after_step)
    return {"steps": r.step, "epochs_completed": r.epoch, "epochs_target": cfg.train.epochs,
            "stopped_by_budget": r.stopped, "seconds": round(time.perf_counter() - t0, 1),
            "final_loss": round(r.losses[-1], 6) if r.losses else None}


def bf16_round(run_dir: Path) -> None:
    """Round the run's weights to bf16 (kept as fp32): the bundle evaluated here is exactly the one that comes back."""
    import torch
    from safetensors.torch import load_file, save_file

    from offline.training.run_dir import WEIGHTS_FILE

    w = run_dir / WEIGHTS_FILE
    t = load_file(str(w))
    save_file({k: v.to(torch.bfloat16).float() if v.is_floating_point() else v for k, v in t.items()}, str(w))


def pack_bundle(bundle: Path, out: Path) -> list[str]:
    """bundle -> out/config.json + one bf16 safetensors file per model (each < 16 MiB for the transfer back)."""
    import torch
    from safetensors.torch import load_file, save_file

    from offline.scoring.bundle import CONFIG_FILE, WEIGHTS_FILE

    out.mkdir(parents=True, exist_ok=True)
    (out / CONFIG_FILE).write_text((bundle / CONFIG_FILE).read_text())
    tensors = load_file(str(bundle / WEIGHTS_FILE))
    names = ["config.json"]
    for prefix in sorted({k.split(".", 1)[0] for k in tensors}):
        part = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in tensors.items() if k.startswith(prefix + ".")}
        save_file(part, str(out / f"{prefix}.bf16.safetensors"))
        names.append(f"{prefix}.bf16.safetensors")
    return names


def unpack_bundle(packed: Path, out: Path) -> Path:
    """The reverse of pack_bundle: a normal fp32 bundle (its checksum recomputed, config otherwise unchanged)."""
    import hashlib

    import torch
    from safetensors.torch import load_file, save_file

    from offline.scoring.bundle import CONFIG_FILE, FORMAT, WEIGHTS_FILE, load_bundle

    tensors: dict = {}
    for f in sorted(packed.glob("*.bf16.safetensors")):
        tensors.update({k: v.to(torch.float32) if v.is_floating_point() else v for k, v in load_file(str(f)).items()})
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / WEIGHTS_FILE), metadata={"format": FORMAT})
    cfg = json.loads((packed / CONFIG_FILE).read_text())
    cfg["weights_sha256"] = hashlib.sha256((out / WEIGHTS_FILE).read_bytes()).hexdigest()
    cfg.setdefault("notes", {})["unpacked_from"] = str(packed)
    (out / CONFIG_FILE).write_text(json.dumps(cfg, indent=2) + "\n")
    load_bundle(out)  # validates the config and the checksum
    return out


def eval_protocols(bundle: Path, data: Path, out: Path, device: str, clips: str | None, batch: int, size: int = 128) -> dict:
    """`vad eval` as the CLI runs it, both protocols (stream: what a camera computes; paper: centre frame, per-video
    min-max with the Ped2 etas of bench/ped2_eval.yaml), and the classical floor under the same protocols."""
    from offline.cli import main as vad

    pick = lambda rep: {p: {k: r.get(k) for k in ("micro_auc", "macro_auc", "components")}  # noqa: E731
                        for p, r in rep.get("results", {}).items()}
    runs = {"model": ["--bundle", str(bundle), "--config", str(REPO / "bench" / "ped2_eval.yaml"), "--device", device],
            "flow_magnitude": ["--baseline", "flow-magnitude", "--size", str(size), "--device", device,
                               "--flow-backend", "torch" if device == "cuda" else "opencv"],
            "frame_difference": ["--baseline", "frame-difference", "--size", str(size)]}
    result = {}
    for name, extra in runs.items():
        argv = ["eval", *extra, "--data", str(data), "--batch", str(batch), "--out", str(out / name)] + (
            ["--clips", clips] if clips else [])
        try:
            rc = vad(argv)
        except Exception as exc:  # a baseline's failure must not cost the model's figures
            result[name] = {"rc": -1, "error": repr(exc)}
            continue
        result[name] = {"rc": rc, **pick(json.loads((out / name / "report.json").read_text()) if rc == 0 else {})}
    return result


def temporal_budget_auc(bundle: Path, data: Path, device: str, size: int, clips: str | None, tiny: bool) -> list[dict]:
    """Raw temporal evidence (flow error, 16-frame windows at hop 16) micro-AUC and flow time per TV-L1 budget."""
    import numpy as np
    import torch

    from offline.auc import micro_auc
    from offline.data.readers import open_dataset, read_frames
    from offline.flow import FlowEstimator, encode_flow
    from offline.flow.cache import clip_flow
    from offline.scoring.detector import Detector

    det = Detector.load(bundle, device, flow_backend="torch")
    if det.temporal is None:
        return []
    test = [c for c in open_dataset(data).test if c.labels is not None and (not clips or c.id in clips.split(","))]
    gray = {c.id: np.stack(list(read_frames(c, size=size))).astype(np.float32).mean(-1) for c in test}  # (N, H, W)
    base = det.config.flow.model_copy(update={"backend": "torch"})
    budgets = ((5, 10, 30), (3, 3, 30), (2, 1, 20)) if not tiny else ((base.warps, base.outer_iterations, base.inner_iterations),)
    rows = []
    for warps, outer, inner in budgets:
        est = FlowEstimator(base.model_copy(update={"warps": warps, "outer_iterations": outer, "inner_iterations": inner}), device)
        scores, labels, t_flow = {}, {}, 0.0
        for c in test:
            t0 = time.perf_counter()
            flow = torch.from_numpy(clip_flow(gray[c.id], est, 256, dtype=np.float32))  # the one batched pair loop
            t_flow += time.perf_counter() - t0
            enc = encode_flow(flow, det.config.flow.clip)  # index t: flow t -> t + 1, the last repeated (window_flow)
            enc = torch.cat([enc, enc[-1:]]).to(device)
            n = (len(enc) // det.window) * det.window
            win = enc[:n].view(-1, det.window, 3, size, size).permute(0, 2, 1, 3, 4)
            x = torch.zeros_like(win)
            err = det.score(x, flow=win).flow_error.reshape(-1)
            scores[c.id], labels[c.id] = err, np.asarray(c.labels[:n])
        pairs = sum(len(v) - 1 for v in gray.values())
        rows.append({"warps": warps, "outer": outer, "inner": inner, "flow_pairs_per_s": round(pairs / t_flow, 1),
                     "raw_temporal_micro_auc": round(100 * micro_auc(scores, labels), 2)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def step_train(args) -> dict:
    """Step 4: the paper schedule (or tiny) for both AEs in the time given, export, pack, eval both protocols."""
    from offline.config import load_config
    from offline.data.readers import open_from_config
    from offline.training.export import export
    from offline.training.ae_loop import build_windows

    t_start = time.perf_counter()
    tiny = args.tiny
    work = Path(args.work)
    common = {
        "data.root": str(args.data), "data.size": args.size, "data.train_stride": 4 if tiny else 1,
        "train.epochs": 25, "train.batch_size": 4 if tiny else 24, "train.lr": 1e-3 if tiny else 1e-4,
        "train.num_workers": 0 if tiny else max(1, min(14, (os.cpu_count() or 2) - 2)), "train.log_every": 20,
        "train.device": args.device, "flow.compile": args.flow_compile,
    }
    if tiny:
        common.update({"model.channels": [8, 16, 32], "data.clips": ["01", "02"], "train.epochs": 3, "flow.nscales": 2, "flow.warps": 1,
                       "flow.outer_iterations": 1, "flow.clip": 2.5})
    res: dict = {"schedule": "tiny" if tiny else "paper (256x256, stride 1, batch 24, lr 1e-4, bf16 autocast, channels-last-3d)"}
    # of the step's time: 45 % to the spatial AE (its PAs are made on the CPU: data-bound), 35 % to the temporal AE
    # (decode and flow included in each), the rest to export and evaluation
    share = {"spatial": 0.45, "temporal": 0.35}
    data = None
    for target, extra in (("spatial", {"pa.spatial": "ldm", "pa.mask": "object"}), ("temporal", {"pa.temporal": "flow_mixup"})):
        t0 = time.perf_counter()
        cfg = load_config(None, {**common, **extra, "train.target": target, "train.out_dir": str(work / target)})
        if data is None:
            clips = open_from_config(cfg.data).train
            _, data = build_windows(cfg, cfg.train.device if cfg.train.device != "auto" else "cpu", clips=clips, progress=False)
        elif target == "temporal":
            _, data = build_windows(cfg, __import__("torch").device(args.device), data=data, progress=False)
        prep = time.perf_counter() - t0
        budget = min(args.timeout * share[target], 15.0) if tiny else args.timeout * share[target]
        res[target] = {"prepare_s": round(prep, 1), **train_one(cfg, budget - prep, data)}
        res[target]["pa"] = extra
        print(target, json.dumps(res[target]), flush=True)
        bf16_round(work / target)
    bundle = export(work / "spatial", work / "bundle", work / "temporal", device=args.device, data=data)
    res["export_s"] = round(time.perf_counter() - t_start - sum(res[t]["prepare_s"] + res[t]["seconds"] for t in ("spatial", "temporal")), 1)
    res["packed"] = pack_bundle(bundle, Path(args.out) / "bundle")
    clips = "01,02" if tiny else None
    res["eval"] = eval_protocols(bundle, args.data, work / "eval", args.device, clips, 4 if tiny else 32, 32 if tiny else 128)
    try:
        res["temporal_budget"] = temporal_budget_auc(bundle, args.data, args.device, args.size, clips, tiny)
    except Exception as exc:  # a secondary figure: never lose the table for it
        res["temporal_budget_error"] = repr(exc)
    res["total_s"] = round(time.perf_counter() - t_start, 1)
    return res


# ---------------------------------------------------------------- step 5: LDM inpainting speed, random weights
def step_ldm(args) -> dict:
    """Step 5: LDM inpainting PAs/s with random weights of the real size (skipped when diffusers is missing)."""
    import torch

    try:
        from offline.pa.inpaint import LDMInpainter, build_ldm, compvis_unet_config, compvis_vq_config
    except ImportError as exc:
        return {"skipped": f"diffusers not importable here: {exc}"}
    sys.path.insert(0, str(REPO / "bench"))
    from pas import time_ldm

    if args.tiny:
        unet_cfg = compvis_unet_config(model_channels=32, channel_mult=(1, 2), num_res_blocks=1, attention_levels=(1,),
                                       sample_size=64, head_dim=8)
        vq_cfg = compvis_vq_config(ch=32, ch_mult=(1, 2, 4), num_res_blocks=1, n_embed=16)
        batches, steps, dtypes, heads = (1,), 2, (torch.float32,), 2
    else:
        unet_cfg, vq_cfg = compvis_unet_config(), compvis_vq_config()
        batches, steps, dtypes, heads = (1, 8, 16), 50, (torch.bfloat16,), 8
    unet, vqvae, sched = build_ldm(unet_cfg, vq_cfg, num_heads=heads)
    res = {"unet_params_M": round(sum(p.numel() for p in unet.parameters()) / 1e6, 1), "steps": steps, "rows": []}
    for dtype in dtypes:
        ldm = LDMInpainter(unet, vqvae, sched, steps=steps, device=args.device, dtype=dtype, num_heads=heads)
        for b in batches:
            t = time_ldm(ldm, b, steps, repeats=1 if args.tiny else 2)
            row = {"dtype": str(dtype)[6:], "batch": b, "s_per_batch": round(t, 3), "pas_per_s": round(b / t, 2)}
            res["rows"].append(row)
            print(json.dumps(row), flush=True)
    return res


STEP_FUNCS = {"tests": step_tests, "flow": step_flow, "scorer": step_scorer, "train": step_train, "ldm": step_ldm}


# ---------------------------------------------------------------- the orchestrator
def run_all(args) -> int:
    """The orchestrator: each step in its own time-boxed process, results merged after every step, a table last."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work or tempfile.mkdtemp(prefix="gpu_run-"))
    log = (out / "run.log").open("a")
    results: dict = {"machine": machine(), "args": {k: str(v) for k, v in vars(args).items()}, "steps": {}}
    # fixed boxes, the training step gets what the others leave; --tiny checks code paths, not speed, so its boxes
    # are wide enough for a loaded 2-core CI machine
    planned = {name: box * (3 if args.tiny else 1) for name, box in STEPS}
    t_start = time.monotonic()

    def save() -> None:
        (out / "results.json").write_text(json.dumps(results, indent=1))

    save()
    for i, (name, _) in enumerate(STEPS):
        if args.only and name not in args.only:
            continue
        left = args.budget_s - (time.monotonic() - t_start) - RESERVE_S
        later = sum(planned[n] for n, _ in STEPS[i + 1 :] if not args.only or n in args.only)
        box = planned[name] if name != "train" else left - later
        box = min(box, left)
        if box < (10 if args.tiny else 30):
            results["steps"][name] = {"status": "skipped", "why": f"{left:.0f} s left, not enough for this step"}
            print(f"## {name}: skipped ({left:.0f} s left)", flush=True)
            save()
            continue
        part = work / f"{name}.json"
        cmd = [sys.executable, __file__, "--step", name, "--timeout", f"{box:.0f}", "--out", str(out), "--work", str(work),
               "--data", str(args.data), "--device", args.device, "--size", str(args.size), "--flow-compile", args.flow_compile,
               "--scorer-flow", args.scorer_flow] + (["--tiny"] if args.tiny else []) + (
               ["--budget", args.budget] if args.budget else [])
        print(f"## {name}: up to {box:.0f} s", flush=True)
        log.write(f"\n## {name} ({datetime.datetime.now().isoformat(timespec='seconds')}), box {box:.0f} s\n")
        log.flush()
        t0 = time.monotonic()
        try:
            proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, timeout=box + 5, cwd=REPO,
                                  env={**os.environ, "PYTHONUNBUFFERED": "1", "TQDM_DISABLE": "1"})
            status = "ok" if proc.returncode == 0 else f"failed (exit {proc.returncode}, see run.log)"
        except subprocess.TimeoutExpired:
            status = f"timed out after {box:.0f} s"
        entry = {"status": status, "seconds": round(time.monotonic() - t0, 1)}
        if part.is_file():
            entry.update(json.loads(part.read_text()))
        results["steps"][name] = entry
        print(f"## {name}: {status} in {entry['seconds']} s", flush=True)
        save()
    results["total_s"] = round(time.monotonic() - t_start, 1)
    save()
    gpu = flow_gpu_part(results)
    (out / "flow_gpu.json").write_text(json.dumps({"gpu": gpu}, indent=1) + "\n")
    if not args.tiny and results["machine"]["gpu"]:  # a CPU smoke run never overwrites the recorded figures
        merge_flow_json(gpu, FLOW_JSON)
    print(summary(results))
    (out / "summary.md").write_text(summary(results) + "\n")
    return 0 if all(s.get("status") in ("ok", "skipped") for s in results["steps"].values()) else 1


FLOW_JSON = REPO / "bench" / "results" / "flow.json"


def flow_gpu_part(results: dict) -> dict:
    """bench/results/flow.json's "gpu" part from a run's results: TV-L1 pairs/s (128 px with the chosen budget, 256 px
    with OpenCV's parameters; the best mode and batch) and the cpu-recipe bundle's cameras at 25 fps without drops
    and its p99 frame-to-score latency (the paper-size bundle's beside them); null where not measured."""
    m, s = results["machine"], results["steps"]
    flow, scorer = s.get("flow", {}), s.get("scorer", {}).get("bundles", {})
    cpu, paper = scorer.get("cpu", {}), scorer.get("paper", {})
    return {"device": m.get("gpu"), "date": m.get("date"), "torch": m.get("torch"),
            "pairs_per_s_128_chosen": flow.get("pairs_per_s_128_chosen"),
            "pairs_per_s_128_chosen_at": flow.get("pairs_per_s_128_chosen_at"), "budget_128": flow.get("budget_128"),
            "pairs_per_s_256_opencv": flow.get("pairs_per_s_256_opencv"),
            "pairs_per_s_256_opencv_at": flow.get("pairs_per_s_256_opencv_at"),
            "cameras_25fps": cpu.get("cameras_25fps"), "p99_latency_s": cpu.get("latency_p99_s"),
            "cameras_25fps_paper": paper.get("cameras_25fps"), "p99_latency_s_paper": paper.get("latency_p99_s"),
            "command": "python3 bench/gpu_run.py " + " ".join(sys.argv[1:])}


def merge_flow_json(gpu: dict, path: Path) -> None:
    """Write `gpu` as the file's "gpu" key, keeping every other key (the budget sweep's, the CPU figures)."""
    data = json.loads(path.read_text()) if path.is_file() else {}
    data["gpu"] = gpu
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")


def summary(results: dict) -> str:
    """A short Markdown table of the headline figures."""
    s = results["steps"]
    m = results["machine"]
    lines = [f"# gpu_run {m['date']} on {m['gpu'] or 'CPU'} ({m['host']}, torch {m['torch']}), {results.get('total_s')} s",
             "| step | status | headline |", "|---|---|---|"]
    pct = lambda v: "n/a" if v is None or v != v else f"{100 * v:.1f}"  # noqa: E731
    for name, e in s.items():
        head = ""
        if name == "tests":
            head = e.get("summary", "")
        elif name == "flow" and e.get("rows"):
            at = lambda k: e.get(k + "_at") or {}  # noqa: E731
            head = "; ".join(f"{label}: {e.get(k)} pairs/s ({at(k).get('mode')}, batch {at(k).get('batch')})" for k, label in
                             (("pairs_per_s_128_chosen", "128 px chosen budget"), ("pairs_per_s_256_opencv", "256 px OpenCV")))
        elif name == "scorer" and e.get("bundles"):
            head = "; ".join(f"{k} bundle: {b.get('cameras_25fps')} cameras at 25 fps, p50 {b.get('latency_p50_s')} s, "
                             f"p99 {b.get('latency_p99_s')} s" for k, b in e["bundles"].items())
        elif name == "train" and e.get("eval"):
            ev = e["eval"]
            m, fm, fd = ev.get("model", {}), ev.get("flow_magnitude", {}), ev.get("frame_difference", {})
            head = (f"spatial {e['spatial']['epochs_completed']} / temporal {e['temporal']['epochs_completed']} epochs; micro-AUC "
                    f"stream {pct(m.get('stream', {}).get('micro_auc'))}, paper {pct(m.get('paper', {}).get('micro_auc'))}; "
                    f"classical (stream): flow magnitude {pct(fm.get('stream', {}).get('micro_auc'))}, "
                    f"frame difference {pct(fd.get('stream', {}).get('micro_auc'))}")
        elif name == "ldm" and e.get("rows"):
            head = ", ".join(f"batch {r['batch']} {r['pas_per_s']} PAs/s" for r in e["rows"])
        lines.append(f"| {name} | {e.get('status')} | {head or e.get('why', e.get('skipped', ''))} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments; run one step (internal), unpack a bundle, or the whole prepared run."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="CPU, toy sizes: checks every step in about a minute")
    ap.add_argument("--budget-s", type=float, default=None,
                    help="wall time for all steps, training scales to what is left (default 480; --tiny: 900)")
    ap.add_argument("--out", default=os.environ.get("OUT", "runs/gpu_run"), help="results.json, run.log, summary.md, bundle/")
    ap.add_argument("--data", type=Path, default=None, help="Ped2 in the shared layout (default: the compact 256x256 copy)")
    ap.add_argument("--flow-compile", choices=["auto", "on", "off"], default="off",
                    help="torch TV-L1 with torch.compile (auto: on CUDA); off by default: on the H200 (2026-11-30) the first "
                    "compiled call had not finished after 60 s, in every fresh process")
    ap.add_argument("--budget", default=None, help="the chosen TV-L1 budget at 128 px, flow: names, "
                    "'scales=3,warps=1,inner_iterations=10,outer_iterations=1' (default: the cpu recipe's)")
    ap.add_argument("--scorer-flow", choices=["auto", "graphed", "eager"], default="auto",
                    help="the scorer step's torch TV-L1: CUDA graphs or eager kernels (auto: graphs for the cpu bundle's "
                    "budget, eager for the paper bundle's OpenCV schedule)")
    ap.add_argument("--merge-flow", type=Path, metavar="FLOW_GPU_JSON",
                    help="merge a run's OUT/flow_gpu.json into bench/results/flow.json here and exit")
    ap.add_argument("--only", nargs="*", choices=[n for n, _ in STEPS], help="run only these steps")
    ap.add_argument("--unpack", nargs=2, metavar=("PACKED", "BUNDLE"), help="rebuild a bundle from OUT/bundle and exit")
    ap.add_argument("--step", choices=list(STEP_FUNCS), help=argparse.SUPPRESS)
    ap.add_argument("--timeout", type=float, default=600.0, help=argparse.SUPPRESS)
    ap.add_argument("--work", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--device", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--size", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.unpack:
        print(unpack_bundle(Path(args.unpack[0]), Path(args.unpack[1])))
        return 0
    if args.merge_flow:
        merge_flow_json(json.loads(args.merge_flow.read_text())["gpu"], FLOW_JSON)
        print(f"{FLOW_JSON}: gpu part from {args.merge_flow}")
        return 0
    import torch

    args.data = args.data or default_data()
    args.device = args.device or ("cpu" if args.tiny or not torch.cuda.is_available() else "cuda")
    args.size = args.size or (32 if args.tiny else 256)
    args.budget_s = args.budget_s or (900.0 if args.tiny else 480.0)
    if args.step:
        torch.manual_seed(0)
        result = STEP_FUNCS[args.step](args)
        Path(args.work).mkdir(parents=True, exist_ok=True)
        (Path(args.work) / f"{args.step}.json").write_text(json.dumps(result, indent=1, default=str))
        return 0
    if not args.data.is_dir():
        print(f"error: --data {args.data}: not found (run ../shared/tools/device-pack, or pass --data)", file=sys.stderr)
        return 2
    return run_all(args)


if __name__ == "__main__":
    sys.exit(main())
