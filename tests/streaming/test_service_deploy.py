"""The README's main command: `serve run deploy/config.yaml` (the shipped file, only its port changed) from an
empty directory shows scores, then an alert and an event with a JPEG snapshot on the demo feed's vehicle.

Runs as a child process (this file with `--driver`) inside a private network namespace when possible:
`serve run` starts its own Ray (dashboard, GCS, gRPC ports) that must not meet the test session's Ray. The
session's demo bundle is copied to `runs/demo/bundle` to save the ~20 s build (tested in test_service_demo).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.streaming.service_support import (
    netns_prefix,
    shipped_config_dir,
    start_serve_run,
    stop_serve_run,
)

PORT = 28_392


@pytest.mark.slow
def test_serve_run_of_the_shipped_config_alerts_on_the_demo_anomaly(tmp_path_factory):
    work, env = shipped_config_dir(tmp_path_factory, PORT)
    cmd = [*netns_prefix(), sys.executable, __file__, "--driver", str(work)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=work)
    result_file = work / "result.json"
    log = (work / "serve.log").read_text()[-3000:] if (work / "serve.log").exists() else ""
    assert result_file.is_file(), f"driver failed (rc {proc.returncode}):\n{proc.stderr[-2000:]}\n{log}"
    r = json.loads(result_file.read_text())
    assert r["first_score_s"] is not None and r["first_score_s"] < 60, r
    (ev,) = r["events"][:1]
    assert ev["camera"] == "demo" and 195 <= ev["peak_frame"] <= 225, r  # the vehicle crosses at 20.0-21.6 s
    assert r["snapshot_magic"] == "ffd8" and r["healthz"] == 200, r
    assert r["stopped_by_sigterm"], r


def driver(work: Path) -> int:
    import requests

    base = f"http://127.0.0.1:{PORT}"
    result: dict = {"first_score_s": None, "events": [], "snapshot_magic": None, "healthz": None}
    t0 = time.monotonic()
    proc = start_serve_run(work, work / "serve.log")
    try:
        deadline = t0 + 180
        while time.monotonic() < deadline:
            time.sleep(1)
            try:
                cams = requests.get(f"{base}/cameras", timeout=5).json()
                if result["first_score_s"] is None and cams and cams[0]["last_score"] is not None:
                    result["first_score_s"] = round(time.monotonic() - t0, 1)
                events = requests.get(f"{base}/events", timeout=5).json()
            except (requests.RequestException, ValueError, KeyError, IndexError):
                continue
            if events:
                result["events"] = events
                snap = requests.get(f"{base}/events/{events[-1]['id']}/snapshot", timeout=10)
                result["snapshot_magic"] = snap.content[:2].hex()
                result["healthz"] = requests.get(f"{base}/healthz", timeout=10).status_code
                result["event_after_s"] = round(time.monotonic() - t0, 1)
                break
    finally:
        result["stopped_by_sigterm"] = stop_serve_run(proc, 60)
    (work / "result.json").write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--driver", action="store_true", required=True)
    ap.add_argument("work", type=Path)
    sys.exit(driver(ap.parse_args().work))
