"""bench/gpu_run.py's CPU mode: every step of the prepared GPU run works at toy sizes, so it cannot rot between the
rare sessions that are lent a GPU; the bundle it sends back in bf16 rebuilds into a loadable bundle."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from offline.scoring.bundle import load_bundle

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, shared_data):
    out = tmp_path_factory.mktemp("gpu_run")
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "gpu_run.py"), "--tiny", "--out", str(out), "--data", str(shared_data / "ped2-256")],
        capture_output=True, text=True, timeout=1000, cwd=REPO,
    )
    return out, proc


def test_every_step_runs_and_reports(tiny_run):
    out, proc = tiny_run
    assert proc.returncode == 0, proc.stdout[-3000:] + (out / "run.log").read_text()[-5000:]
    results = json.loads((out / "results.json").read_text())
    steps = results["steps"]
    assert list(steps) == ["tests", "flow", "scorer", "train", "ldm"]
    assert all(s["status"] == "ok" for s in steps.values()), {k: v["status"] for k, v in steps.items()}
    flow = steps["flow"]
    for mode in ("eager", "graphed"):
        assert [r["batch"] for r in flow["rows"] if r["config"] == "128 chosen" and r["mode"] == mode] == [1, 4]
    assert all(r["epe_vs_eager_px"] == 0.0 for r in flow["rows"] if r["mode"] == "graphed" and r["config"] != "256 opencv outer=1")
    assert flow["pairs_per_s_128_chosen"] > 0 and flow["pairs_per_s_256_opencv"] > 0
    for kind in ("cpu", "paper"):  # a loaded 2-core machine may sustain few cameras, but the search must have run
        b = steps["scorer"]["bundles"][kind]
        assert b["trials"] and all("sustained" in t and t["latency_p50_s"] is not None for t in b["trials"]), b
    gpu = json.loads((out / "flow_gpu.json").read_text())["gpu"]
    assert {"device", "pairs_per_s_128_chosen", "pairs_per_s_256_opencv", "cameras_25fps", "p99_latency_s"} <= set(gpu)
    assert gpu["device"] is None  # a CPU run: and bench/results/flow.json is left alone
    train = steps["train"]
    assert train["spatial"]["steps"] > 0 and train["temporal"]["steps"] > 0
    assert all(train["eval"][row]["rc"] == 0 for row in ("model", "flow_magnitude", "frame_difference")), train["eval"]
    for protocol in ("stream", "paper"):
        assert 0.0 <= train["eval"]["model"][protocol]["micro_auc"] <= 1.0
        assert 0.5 < train["eval"]["frame_difference"][protocol]["micro_auc"] <= 1.0  # a real floor on real clips
    assert steps["ldm"]["rows"][0]["pas_per_s"] > 0
    assert "| train | ok |" in (out / "summary.md").read_text()


def test_bundle_comes_back_small_and_rebuilds(tiny_run, tmp_path):
    out, _ = tiny_run
    packed = out / "bundle"
    files = sorted(p.name for p in packed.iterdir())
    assert files == ["config.json", "spatial.bf16.safetensors", "temporal.bf16.safetensors"]
    assert all((packed / f).stat().st_size < 16 << 20 for f in files)
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_run.py"), "--unpack", str(packed), str(tmp_path / "b")],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    bundle = load_bundle(tmp_path / "b")
    assert bundle.temporal is not None and bundle.config.calibration is not None


def test_budget_skips_what_does_not_fit(tmp_path, shared_data):
    """With almost no time left every step is skipped and says why, instead of overrunning the lease."""
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "gpu_run.py"), "--tiny", "--budget-s", "20", "--out", str(tmp_path),
         "--data", str(shared_data / "ped2-256")], capture_output=True, text=True, timeout=120, cwd=REPO,
    )
    steps = json.loads((tmp_path / "results.json").read_text())["steps"]
    assert proc.returncode == 0 and steps and all(s["status"] == "skipped" and "left" in s["why"] for s in steps.values()), steps
