"""Scenario 7 driver, shared by tests/faults/test_service_load.py and bench/faults.py: run a service's cameras
for a bounded time and sample what must stay bounded.

`observe(api, seconds)` polls `/cameras`, `/scorers` and `/healthz` every `every_s` and the resident memory
(RSS, from /proc) of every actor process of the app (camera actors and scorers, by the `pid` their status
reports), and returns one summary: memory at the end of the warm-up vs the largest later sample, frames scored
per second per camera, windows dropped (by the camera's in-flight limit and the scorer's drop-oldest queue),
frame-to-score latency (last frame of a window to its score), health failures, actor processes that changed
(a death or a restart) and the window accounting (made = scored + dropped + queued + in flight).
"""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

FPS = 5.0
PENDING_PER_CAMERA = 2  # the scorer's drop-oldest queue per camera (scorer.max_pending_per_camera)
SIZE, CHANNELS = 256, (96, 128, 256)  # the paper's spatial AE at 256x256: the scorer, not memory, is the bottleneck
MEMORY_BOUND_FRACTION = 0.10  # stated bound: growth after warm-up <= 10 % + 256 MiB (torch's CPU allocator
MEMORY_BOUND_MB = 256.0  # keeps buffers per batch shape it has seen, ~200 MB at 256x256; a leak grows without end)


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def observe(get: Callable[[str], object], seconds: float, warmup_s: float = 10.0, every_s: float = 2.0) -> dict:
    """Sample the service for `seconds`; `get(path)` returns a requests.Response (auth already applied)."""
    t0 = time.monotonic()
    samples: list[dict] = []
    unhealthy = 0
    while True:
        t = time.monotonic() - t0
        cams = {c["name"]: c for c in get("/cameras").json()}
        scorers = get("/scorers").json()
        unhealthy += get("/healthz").status_code != 200
        pids = {f"camera:{n}": c["pid"] for n, c in cams.items()} | {f"scorer:{n}": s.get("pid") for n, s in scorers.items()}
        rss = {k: rss_mb(p) for k, p in pids.items() if p}
        samples.append({"t": t, "cams": cams, "pids": pids, "rss": sum(v for v in rss.values() if v)})
        if t >= seconds:
            break
        time.sleep(max(0.0, every_s - (time.monotonic() - t0 - t)))
    first, last = samples[0], samples[-1]
    base = next((s for s in samples if s["t"] >= warmup_s), first)
    later = [s for s in samples if s["t"] >= base["t"]]
    span = last["t"] - base["t"]
    fps = {n: (last["cams"][n]["frames_scored"] - base["cams"][n]["frames_scored"]) / span for n in last["cams"]}
    dropped = sum(c["windows_dropped"] - base["cams"][n]["windows_dropped"] for n, c in last["cams"].items())
    sent = sum(c["frames_decoded"] - base["cams"][n]["frames_decoded"] for n, c in last["cams"].items())
    made = sum(c["windows_made"] - base["cams"][n]["windows_made"] for n, c in last["cams"].items())
    scored = sum(c["windows_scored"] - base["cams"][n]["windows_scored"] for n, c in last["cams"].items())
    latencies = [c["latency_s"] for s in later for c in s["cams"].values() if c["latency_s"] is not None]
    changed = sorted(k for k in last["pids"] if first["pids"].get(k) != last["pids"][k])
    # every window a camera made is scored, dropped (counted) or still on its way: none vanish
    unaccounted = {n: c["windows_made"] - c["windows_scored"] - c["windows_dropped"] - c["queue_depth"]
                   for n, c in last["cams"].items()}
    peak = max(s["rss"] for s in later)
    return {
        "cameras": len(last["cams"]),
        "seconds": round(span, 1),
        "fps_target": next(iter(last["cams"].values()))["fps_target"],
        "fps_scored_mean": round(sum(fps.values()) / len(fps), 2),
        "fps_scored_min": round(min(fps.values()), 2),
        "windows_made": made,
        "windows_scored": scored,
        "windows_dropped": dropped,
        "frames_decoded": sent,
        "latency_p50_s": round(sorted(latencies)[len(latencies) // 2], 2) if latencies else None,
        "latency_max_s": round(max(latencies), 2) if latencies else None,
        "rss_base_mb": round(base["rss"], 1),
        "rss_peak_mb": round(peak, 1),
        "rss_growth_mb": round(peak - base["rss"], 1),
        "rss_bound_mb": round(base["rss"] * MEMORY_BOUND_FRACTION + MEMORY_BOUND_MB, 1),
        "processes": len(last["pids"]),
        "unhealthy_polls": unhealthy,
        "actors_changed": changed,
        "states": sorted({c["state"] for c in last["cams"].values()}),
        "in_flight_max": max(unaccounted.values()),
        "in_flight_min": min(unaccounted.values()),
    }


def camera(k: int) -> dict:
    return {"name": f"load{k:02d}", "url": f"demo://street?seed={k}&fps=10&size={SIZE}", "fps": FPS}


def load_app_args(bundle, db, port: int, cameras: list[dict]) -> dict:
    return {
        "cameras": cameras,
        "scorer": {"bundle": str(bundle), "build_demo_bundle": False, "devices": ["cpu"], "max_batch": 1,
                   "max_wait_ms": 50, "max_pending_per_camera": PENDING_PER_CAMERA, "torch_threads": 1, "num_cpus": 0.25},
        "camera_num_cpus": 0.05,
        "events": {"path": str(db)},
        "http": {"host": "127.0.0.1", "port": port},
        "namespace": "vadload",
    }


def run_n_then_2n(work: Path, n: int, seconds: float, name: str, wait_s: float) -> tuple[dict, dict]:
    """Scenario 7 on the shared Ray: an app `name` with n cameras observed for `seconds`, then n more added at
    run time and observed again; returns the two `observe` summaries. The app is deleted afterwards."""
    import requests
    from ray import serve

    from offline.scoring.bundle import random_bundle
    from streaming.app import build_app
    from tests.polling import wait_for
    from tests.streaming.service_support import SERVE_PORT, ensure_ray

    bundle = random_bundle(work / "bundle", size=SIZE, temporal=False, channels=CHANNELS)
    ensure_ray()
    serve.run(build_app(load_app_args(bundle, work / "events.db", SERVE_PORT, [camera(k) for k in range(n)])),
              name=name, route_prefix=f"/{name}")
    base = f"http://127.0.0.1:{SERVE_PORT}/{name}"

    def get(path: str):
        return requests.get(base + path, timeout=30)

    try:
        wait_for(lambda: all(c["windows_scored"] >= 1 for c in get("/cameras").json()), wait_s, "every camera scored",
                 every_s=0.5)
        one = observe(get, seconds, warmup_s=20.0)
        for k in range(n, 2 * n):
            r = requests.post(base + "/cameras", json=camera(k), timeout=60)
            assert r.status_code == 201, r.text
        wait_for(lambda: all(c["windows_scored"] >= 1 for c in get("/cameras").json()), wait_s, "2N cameras scored",
                 every_s=0.5)
        two = observe(get, seconds, warmup_s=20.0)
    finally:
        serve.delete(name)
    return one, two
