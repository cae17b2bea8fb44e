"""The README's recipe for Ray's all-interface ports: `deploy/private_network.py` runs `serve run` of the shipped
config in a private network namespace and forwards only the control plane's port to the host's loopback.

Checked for real: the service answers on the host's 127.0.0.1 through the forward and scores the demo camera;
inside the namespace Ray listens on non-loopback addresses (so the check below can fail); on the host the only
listening socket of any process of the service is the forwarded one on 127.0.0.1, and connecting from the host
to the ports Ray opened inside is refused, on loopback and on the host's own address; SIGTERM stops it all.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.faults.tools.watch import is_loopback, listening_sockets
from tests.streaming.service_support import shipped_config_dir, wait_for

REPO = Path(__file__).resolve().parents[2]
PORT = 28_417


def _can_unshare() -> bool:
    if not shutil.which("unshare"):
        return False
    flags = ["--net"] + ([] if os.geteuid() == 0 else ["--map-root-user"])
    return subprocess.run(["unshare", *flags, "true"], capture_output=True).returncode == 0


def _netns(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/net")
    except OSError:
        return None


def _processes_in(ns: str) -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and _netns(int(p.name)) == ns]


def _children(pid: int) -> list[int]:
    """Direct children of `pid` (the recipe's process inside the namespace is one: unshare execs it)."""
    out = []
    for p in Path("/proc").iterdir():
        try:
            if p.name.isdigit() and int((p / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(p.name))
        except (OSError, IndexError, ValueError):
            continue
    return out


def _host_tcp_ports() -> set[int]:
    """Every TCP port listened on in the host's namespace, whoever holds it (not to be mistaken for Ray's)."""
    ports = set()
    for proto in ("tcp", "tcp6"):
        for line in Path(f"/proc/{os.getpid()}/net/{proto}").read_text().splitlines()[1:]:
            cols = line.split()
            if cols[3] == "0A":
                ports.add(int(cols[1].rsplit(":", 1)[1], 16))
    return ports


def _host_address() -> str | None:
    """This host's primary non-loopback IPv4 address (no packet is sent), or None without a route."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))
            addr = s.getsockname()[0]
        return None if is_loopback(addr) else addr
    except OSError:
        return None


def _refused(addr: str, port: int) -> bool:
    try:
        socket.create_connection((addr, port), timeout=2).close()
        return False
    except OSError:
        return True


@pytest.mark.slow
@pytest.mark.skipif(not _can_unshare(), reason="no network namespaces here (unshare --net refused)")
def test_private_network_recipe_hides_rays_ports_and_keeps_the_service(tmp_path_factory):
    work, env = shipped_config_dir(tmp_path_factory, PORT)
    serve_bin = str(Path(sys.executable).with_name("serve"))
    log = (work / "serve.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "deploy" / "private_network.py"), "--forward", str(PORT), "--",
         serve_bin, "run", "config.yaml"],
        cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{PORT}"
    try:
        cams = wait_for(lambda: (c := requests.get(f"{base}/cameras", timeout=5).json()) and c[0]["last_score"] is not None and c,
                        180, "the demo camera scored through the forwarded port")
        assert cams[0]["name"] == "demo"
        assert requests.get(f"{base}/healthz", timeout=10).status_code == 200

        ns = next((n for c in _children(proc.pid) if (n := _netns(c)) != _netns(os.getpid())), None)
        assert ns, "the service is not in a namespace of its own"
        members = _processes_in(ns)
        inside = {s for p in members for s in listening_sockets(p) if s[0].startswith("tcp")}
        exposed_inside = sorted({(a, port) for _, a, port in inside if not is_loopback(a)})
        assert exposed_inside, f"Ray opened no all-interface port inside: the check below proves nothing {inside}"

        on_host = {s for p in members for s in listening_sockets(p, netns_pid=os.getpid())}
        assert on_host == {("tcp", "127.0.0.1", PORT)}, f"service sockets on the host: {on_host}"

        host_ports = _host_tcp_ports()
        addrs = ["127.0.0.1"] + ([a] if (a := _host_address()) else [])
        probed = [(a, port) for _, port in exposed_inside if port not in host_ports for a in addrs]
        assert probed
        reachable = [(a, port) for a, port in probed if not _refused(a, port)]
        assert not reachable, f"Ray's ports inside the namespace reachable from the host: {reachable}"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail("the recipe did not stop within 60 s of SIGTERM")
        log.close()
    deadline = time.monotonic() + 30
    while (left := _processes_in(ns)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not left, f"processes left in the namespace 30 s after SIGTERM: {left}"
