"""Scenario 7, load: N demo cameras on the real service for a bounded time, then 2N (N added at run time).

Each phase must keep: every camera streaming, /healthz 200 at every poll, no actor process replaced (none died),
resident memory of the actor processes within the stated bound after warm-up (tools.service_load), frame-to-score
latency bounded by the drop policy, and windows the scorer cannot take dropped and counted (not queued without
end): every window made is scored, dropped or in flight. The model is the paper's spatial AE (channels
96/128/256) at the paper's 256x256 with seeded random weights, 0.5-1.1 s per window on one core here, so the
scorer is the bottleneck: N = VAD_FAULTS_LOAD_CAMERAS (default 2) cameras at 5 fps (0.31 windows/s each) fit;
at 2N a scorer that falls behind must shed the excess by the drop policy (counted), not queue it. max_batch is 1:
the scorer's memory grows with max_batch x window size (measured: +2.2 GB with max_batch 16 at 256x256). With the tiny demo model the limit is memory instead (about
300 MB per camera actor process): bench/faults.py measures both. Each phase VAD_FAULTS_LOAD_S s (default 40).
"""
from __future__ import annotations

import os

import pytest
import requests

from tests.faults.tools.service_load import FPS, run_n_then_2n

pytestmark = pytest.mark.slow
N = int(os.environ.get("VAD_FAULTS_LOAD_CAMERAS", "2"))
SECONDS = float(os.environ.get("VAD_FAULTS_LOAD_S", "45"))
INFLIGHT_PER_CAMERA = 4  # the camera's default max_inflight_windows: windows on their way before it drops
LATENCY_BOUND_S = 15.0  # stated: window (3.2 s) + the scorer's queue (2 windows per camera, batched) + slack


def check_phase(r: dict, overloaded: bool) -> None:
    assert r["states"] == ["streaming"], r
    assert r["unhealthy_polls"] == 0 and r["actors_changed"] == [], r  # no actor died or restarted
    assert r["rss_growth_mb"] <= r["rss_bound_mb"], r  # memory flat after warm-up
    assert r["latency_max_s"] is not None and r["latency_max_s"] <= LATENCY_BOUND_S, r
    assert 0 <= r["in_flight_min"] and r["in_flight_max"] <= INFLIGHT_PER_CAMERA + 16, r  # camera in-flight limit + one batch
    if overloaded:
        # Falling behind first fills each camera's bounded in-flight allowance (latency grows, bounded above); once
        # the deficit is more than that can hold, the excess must be shed and counted. How far behind the scorer
        # falls depends on the machine's other load, so the test asks for drops only past that point.
        if r["windows_made"] - r["windows_scored"] > r["cameras"] * INFLIGHT_PER_CAMERA:
            assert r["windows_dropped"] > 0, r
    else:
        assert r["fps_scored_mean"] >= 0.7 * FPS, r  # functional bound on a shared, loaded machine


def test_n_then_2n_cameras_memory_flat_drops_counted_no_actor_dies(tmp_path):
    one, two = run_n_then_2n(tmp_path, N, SECONDS, "load", wait_s=120.0)
    print(f"\nload N={N}: {one}\nload 2N={2 * N}: {two}")
    check_phase(one, overloaded=False)
    check_phase(two, overloaded=True)
    assert one["cameras"] == N and two["cameras"] == 2 * N
