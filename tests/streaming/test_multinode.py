"""Past one machine: the same app on a two-node Ray cluster (head + worker via `ray start`, on 127.0.0.1).

The scenario runs as a child process (this file with `--driver`) inside a private network namespace
(`unshare -n`, root only) when it can: Serve replicas open a gRPC port on every interface, and the cluster's
fixed ports then cannot clash with another Ray on the machine. The nodes are stopped by terminating their
`ray start --block` processes (never `ray stop`, which would stop every Ray on the machine).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.streaming.service_support import demo_bundle, netns_prefix

REPO = Path(__file__).resolve().parents[2]
GCS_PORT, SERVE_PORT = 26_390, 28_391
CAMERAS = 4


@pytest.mark.slow
def test_cameras_spread_over_two_nodes_and_all_score(tmp_path_factory):
    bundle = demo_bundle(tmp_path_factory.mktemp("mn"))
    out = tmp_path_factory.mktemp("mn-out")
    cmd = [*netns_prefix(), sys.executable, __file__, "--driver", "--bundle", str(bundle), "--out", str(out)]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=420, env=env, cwd=REPO)
    result_file = out / "result.json"
    assert result_file.is_file(), f"driver failed (rc {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    result = json.loads(result_file.read_text())
    assert result["nodes_alive"] == 2, result
    cams = result["cameras"]
    assert len(cams) == CAMERAS and all(c["windows_scored"] >= 1 and c["state"] == "streaming" for c in cams), cams
    assert len({c["node_id"] for c in cams}) == 2, cams  # camera actors on both nodes
    assert result["healthz"] == 200 and proc.returncode == 0


# ------------------------------------------------------------------------------------------------ driver
def _ray_node(args: list[str], temp_dir: Path, log: Path) -> subprocess.Popen:
    ray_bin = str(Path(sys.executable).with_name("ray"))
    return subprocess.Popen(
        [ray_bin, "start", "--block", "--node-ip-address=127.0.0.1", "--disable-usage-stats",
         f"--temp-dir={temp_dir}", *args],
        stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
    )


def driver(bundle: str, out: Path) -> int:
    import requests

    temp = Path(f"/tmp/ray-mn-{os.getpid()}")
    head = _ray_node(
        ["--head", f"--port={GCS_PORT}", "--num-cpus=1", "--include-dashboard=false",
         "--dashboard-agent-listen-port=26400", "--dashboard-agent-grpc-port=26401", "--runtime-env-agent-port=26402",
         "--metrics-export-port=26403", "--node-manager-port=26404", "--object-manager-port=26405"],
        temp, out / "head.log",
    )
    nodes = [head]
    try:
        time.sleep(3)
        nodes.append(_ray_node(
            [f"--address=127.0.0.1:{GCS_PORT}", "--num-cpus=1",
             "--dashboard-agent-listen-port=26410", "--dashboard-agent-grpc-port=26411", "--runtime-env-agent-port=26412",
             "--metrics-export-port=26413", "--node-manager-port=26414", "--object-manager-port=26415"],
            temp, out / "worker.log",
        ))
        import ray
        from ray import serve

        ray.init(address=f"127.0.0.1:{GCS_PORT}", log_to_driver=False)
        deadline = time.monotonic() + 60
        while len([n for n in ray.nodes() if n["Alive"]]) < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
        serve.start(http_options={"host": "127.0.0.1", "port": SERVE_PORT})
        from streaming.app import build_app

        args = {
            "cameras": [{"name": f"cam{i}", "url": f"demo://c{i}?seed={i}&size=128&anomaly_every_s=0", "fps": 5}
                        for i in range(CAMERAS)],
            "scorer": {"bundle": bundle, "build_demo_bundle": False, "num_cpus": 0.5},
            "events": {"path": str(out / "events.db")},
            "http": {"port": SERVE_PORT},
        }
        serve.run(build_app(args), name="vad", route_prefix="/")
        base = f"http://127.0.0.1:{SERVE_PORT}"
        cams: list[dict] = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            cams = requests.get(f"{base}/cameras", timeout=30).json()
            if all(c["windows_scored"] >= 1 for c in cams):
                break
            time.sleep(1)
        result = {
            "nodes_alive": len([n for n in ray.nodes() if n["Alive"]]),
            "cameras": cams,
            "healthz": requests.get(f"{base}/healthz", timeout=30).status_code,
        }
        (out / "result.json").write_text(json.dumps(result, indent=1))
        serve.shutdown()
        ray.shutdown()
        return 0
    finally:
        for p in reversed(nodes):
            p.terminate()
        for p in reversed(nodes):
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(temp, ignore_errors=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--driver", action="store_true", required=True)
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    sys.exit(driver(a.bundle, a.out))
