"""Helpers shared by the service tests: the demo bundle (built once per session) and one local Ray + Serve."""
from __future__ import annotations

import atexit
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from tests import polling

_lock = threading.Lock()
_bundle: Path | None = None
_ray_started = False
# outside Ray's worker port range 10002-19999; VAD_TEST_SERVE_PORT lets two test runs share a machine
SERVE_PORT = int(os.environ.get("VAD_TEST_SERVE_PORT", "28180"))


def demo_bundle(root: Path) -> Path:
    """The demo bundle at its default settings, built once per test session under `root`."""
    global _bundle
    with _lock:
        if _bundle is None:
            from streaming.demo_bundle import build_demo_bundle

            _bundle = build_demo_bundle(root / "demo-bundle")
        return _bundle


def shipped_config_dir(tmp_path_factory, port: int) -> tuple[Path, dict]:
    """A working directory for `serve run config.yaml` of the shipped deploy/config.yaml, only its port changed,
    with the session's demo bundle where the config expects it (saves the ~20 s build); and the environment
    (no Ray token, no usage stats, this checkout importable) to run it with."""
    import yaml

    repo = Path(__file__).resolve().parents[2]
    bundle = demo_bundle(tmp_path_factory.mktemp("dep"))
    work = tmp_path_factory.mktemp("serve-run")
    shutil.copytree(bundle, work / "runs" / "demo" / "bundle")
    cfg = yaml.safe_load((repo / "deploy" / "config.yaml").read_text())
    cfg["http_options"]["port"] = cfg["applications"][0]["args"]["http"]["port"] = port
    (work / "config.yaml").write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": str(repo)}
    return work, env


def ensure_ray() -> None:
    """One local Ray (2 CPUs, loopback, no dashboard, no token) and Serve's HTTP proxy on 127.0.0.1."""
    global _ray_started
    with _lock:
        if _ray_started:
            return
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        import ray
        from ray import serve

        ray.init(
            num_cpus=2,
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
            log_to_driver=False,
            runtime_env={"env_vars": {"RAY_USAGE_STATS_ENABLED": "0"}},
        )
        serve.start(http_options={"host": "127.0.0.1", "port": SERVE_PORT})
        _ray_started = True

        def _shutdown() -> None:
            try:
                serve.shutdown()
            finally:
                ray.shutdown()

        atexit.register(_shutdown)


def deploy_app(args: dict, name: str, route_prefix: str) -> str:
    """`serve.run` the service built from `args` as application `name` under `route_prefix` (a redeploy when it
    runs already) and wait for its /healthz 200; returns its base URL."""
    import requests
    from ray import serve

    from streaming.app import build_app

    serve.run(build_app(args), name=name, route_prefix=route_prefix)
    base = f"http://127.0.0.1:{SERVE_PORT}{route_prefix}"
    wait_for(lambda: requests.get(f"{base}/healthz", timeout=10).status_code == 200, 120, "healthz 200")
    return base


def camera_rows(base: str) -> dict[str, dict]:
    """GET /cameras of the service at `base`, by camera name."""
    import requests

    return {c["name"]: c for c in requests.get(f"{base}/cameras", timeout=30).json()}


def wait_for(predicate: Callable[[], object], timeout_s: float, what: str, every_s: float = 0.5):
    """`tests.polling.wait_for` for services: polls every 0.5 s and keeps polling through errors of a service
    still starting (connection refused, 503 while an actor restarts)."""
    return polling.wait_for(predicate, timeout_s, what, every_s, retry_on=(Exception,))


def netns_prefix() -> list[str]:
    """A command prefix running the rest in a private network namespace with loopback up (`unshare -n`, root
    only), or [] where that is not allowed: Ray then runs on the host's loopback like everywhere else."""
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"):
        return []
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True)
    return ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$@"', "netns"] if probe.returncode == 0 else []


def start_serve_run(work: Path, log: Path) -> subprocess.Popen:
    """`serve run config.yaml` in `work` (this venv's `serve`), stdout and stderr to `log`."""
    serve_bin = str(Path(sys.executable).with_name("serve"))
    with log.open("w") as out:
        return subprocess.Popen([serve_bin, "run", "config.yaml"], cwd=work, stdout=out, stderr=subprocess.STDOUT)


def stop_serve_run(proc: subprocess.Popen, timeout_s: float) -> bool:
    """SIGTERM (a backgrounded `serve run` ignores SIGINT); True when it stopped by itself, else it is killed."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout_s)
        return True
    except subprocess.TimeoutExpired:
        proc.kill()
        return False
