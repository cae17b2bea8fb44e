"""One prepared GPU run: GPU tests, TV-L1 speed, scorer throughput, paper-size Ped2 training + eval, LDM speed.

    python bench/gpu_run.py                      # on the GPU machine (see ../shared/GPU.md), ~9 minutes
    python bench/gpu_run.py --tiny --out /tmp/g  # CPU, toy sizes, about a minute (CI runs it: tests/bench)

GPU time is lent for 15 minutes at a time, machine start included, so this is one command that must be right the
first time. Each step runs in its own Python process under a timeout taken from what is left of `--budget-s`, so a
step that hangs or crashes costs only its own box; the training step's epochs are scaled to the time it is given,
and steps that no longer fit are skipped and say so. Results are merged into `$OUT/results.json` after every step
(what is there comes back even when the command is killed), all output goes to `$OUT/run.log`, and the trained
bundle comes back as bf16 safetensors under 16 MiB each in `$OUT/bundle/` (`--unpack` rebuilds it here).
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
from dataclasses import asdict, replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# (step, seconds it is planned to take on an H200 out of the 540 s budget); train gets what the others leave
STEPS: list[tuple[str, float]] = [("tests", 75), ("flow", 60), ("scorer", 40), ("train", 0), ("ldm", 45)]
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
                           f"--junitxml={xml}", *files], cwd=REPO, timeout=args.timeout)
    counts = {}
    if xml.is_file():
        suite = ET.parse(xml).getroot()
        suite = suite if suite.tag == "testsuite" else suite[0]
        counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    summary = ", ".join(f"{v} {k}" for k, v in counts.items()) or f"exit {proc.returncode}"
    return {"files": files, "rc": proc.returncode, "summary": summary, **counts}


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
    """Step 2: TV-L1 pairs/s per batch, iterations run, distance from the bandwidth floor, iteration-budget sweep."""
    import torch

    from offline.flow.tvl1 import TVL1, TVL1Params, bytes_per_iteration

    dev, size = args.device, args.size
    batches = (1, 4) if args.tiny else (1, 16, 64, 256)
    runs = 2 if args.tiny else 5
    params = TVL1Params(nscales=3, warps=2, outer_iterations=3) if args.tiny else TVL1Params()
    compile_ = {"auto": None if dev == "cuda" else False, "on": True, "off": False}[args.flow_compile]
    g0, g1 = (t.to(dev) for t in load_pairs(max(batches), size))
    bw = copy_bandwidth(dev, (64 << 20) if args.tiny else (1 << 30))
    res: dict = {"size": size, "params": asdict(params), "copy_bandwidth_GBps": round(bw / 1e9, 1), "batches": [], "budget": []}
    est = TVL1(params, compile=compile_)
    full = None
    for b in batches:
        t0 = time.perf_counter()
        times = timed(lambda: est(g0[:b], g1[:b]), dev, runs)
        flow, stats = est(g0[:b], g1[:b], return_stats=True)
        moved = sum(int(it.max()) * bytes_per_iteration(b, h, w) for (h, w), it in zip(stats.sizes, stats.iterations))
        med = statistics.median(times)
        row = {"batch": b, "ms_per_call": round(med * 1000, 2), "pairs_per_s": round(b / med, 1),
               "iterations_per_scale": [int(it.max()) for it in stats.iterations],
               "floor_ms": round(moved / bw * 1000, 2), "measured_over_floor": round(med / (moved / bw), 2),
               "first_call_s": round(time.perf_counter() - t0 - sum(times), 1)}
        res["batches"].append(row)
        print(json.dumps(row), flush=True)
        full = flow
    b = max(batches)
    budgets = ((5, 10, 30), (5, 3, 30), (3, 3, 30), (3, 1, 30), (2, 1, 20), (1, 1, 20))
    for warps, outer, inner in budgets[:3] if args.tiny else budgets:
        cut = TVL1(replace(params, warps=warps, outer_iterations=outer, inner_iterations=inner), compile=compile_)
        med = statistics.median(timed(lambda: cut(g0, g1), dev, runs))
        epe = float(torch.linalg.vector_norm(cut(g0, g1) - full, dim=1).mean())
        row = {"warps": warps, "outer": outer, "inner": inner, "pairs_per_s": round(b / med, 1), "epe_vs_full_px": round(epe, 4)}
        res["budget"].append(row)
        print(json.dumps(row), flush=True)
    return res


# ---------------------------------------------------------------- step 3: the scorer on a paper-size bundle
def step_scorer(args) -> dict:
    """Step 3: Detector.score windows/s and latency per batch on a paper-size bundle (both AEs + torch TV-L1)."""
    import numpy as np
    import torch

    from offline.scoring.bundle import random_bundle
    from offline.scoring.detector import Detector

    dev = args.device
    channels = (8, 16, 32) if args.tiny else (96, 128, 256)
    batches = (1, 2) if args.tiny else (1, 2, 4, 8, 16, 32, 64)
    with tempfile.TemporaryDirectory() as tmp:
        path = random_bundle(Path(tmp) / "b", size=args.size, channels=channels)
        cfg = json.loads((path / "config.json").read_text())
        cfg["flow"]["compile"] = args.flow_compile
        if args.tiny:  # a toy flow budget: the tiny run checks the code path, not the speed
            cfg["flow"].update(nscales=2, warps=1, outer_iterations=1)
        (path / "config.json").write_text(json.dumps(cfg))
        det = Detector.load(path, dev, flow_backend="torch")
    hop = det.window  # the service's windows today: non-overlapping
    rows = []
    for b in batches:
        x = torch.rand(b, 3, det.window, det.size, det.size, device=dev) * 2 - 1
        times = timed(lambda: det.score(x), dev, 2 if args.tiny else 8)
        med = statistics.median(times)
        row = {"batch": b, "windows_per_s": round(b / med, 1), "cameras_at_25fps": round(b / med * hop / 25.0, 1),
               "latency_p50_ms": round(med * 1000, 1), "latency_p99_ms": round(float(np.percentile(times, 99)) * 1000, 1)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return {"size": args.size, "channels": channels, "window": det.window, "hop": hop, "flow": "torch TV-L1", "rows": rows,
            "latency": "from a complete window on the host to its per-frame scores on the host (one Detector.score call)"}


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
               ] + (["--tiny"] if args.tiny else [])
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
    print(summary(results))
    (out / "summary.md").write_text(summary(results) + "\n")
    return 0 if all(s.get("status") in ("ok", "skipped") for s in results["steps"].values()) else 1


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
        elif name == "flow" and e.get("batches"):
            b = e["batches"][-1]
            head = f"batch {b['batch']}: {b['pairs_per_s']} pairs/s, {b['measured_over_floor']}x the bandwidth floor"
        elif name == "scorer" and e.get("rows"):
            best = max(e["rows"], key=lambda r: r["windows_per_s"])
            head = f"best batch {best['batch']}: {best['windows_per_s']} windows/s = {best['cameras_at_25fps']} cameras at 25 fps"
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
                    help="wall time for all steps, training scales to what is left (default 540; --tiny: 900)")
    ap.add_argument("--out", default=os.environ.get("OUT", "runs/gpu_run"), help="results.json, run.log, summary.md, bundle/")
    ap.add_argument("--data", type=Path, default=None, help="Ped2 in the shared layout (default: the compact 256x256 copy)")
    ap.add_argument("--flow-compile", choices=["auto", "on", "off"], default="off",
                    help="torch TV-L1 with torch.compile (auto: on CUDA); off by default: on the H200 (2026-11-30) the first "
                    "compiled call had not finished after 60 s, in every fresh process")
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
    import torch

    args.data = args.data or default_data()
    args.device = args.device or ("cpu" if args.tiny or not torch.cuda.is_available() else "cuda")
    args.size = args.size or (32 if args.tiny else 256)
    args.budget_s = args.budget_s or (900.0 if args.tiny else 540.0)
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
