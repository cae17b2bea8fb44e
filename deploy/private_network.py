"""Run the service in a private network namespace; only the ports named reach the host, on its loopback.

    sudo .venv/bin/python deploy/private_network.py --forward 8000 -- .venv/bin/serve run deploy/config.yaml

Why: Ray 2.60 opens internal ports (GCS, raylet, object manager, every Serve replica's gRPC server on `[::]:0`)
on all interfaces and cannot be told otherwise (README, Security). Inside a fresh network namespace the only
interface is loopback, so none of those ports exists on the host's interfaces; the control plane's port is
forwarded from the host's 127.0.0.1 by this process. How: the listening sockets are opened here, in the host's
namespace, *before* `unshare --net` starts the command's namespace; a socket keeps the namespace it was created
in, so the process inside accepts host connections on them and connects to the service on the namespace's own
127.0.0.1. No veth, no firewall rules, no iptables. Needs root (or unprivileged user namespaces, then
`--map-root-user` is added). Prometheus scrapes the forwarded port; `serve status` and Ray's dashboard are
reachable only from inside (`nsenter --net=/proc/<pid>/ns/net ...`). SIGTERM or Ctrl-C stops the command.
"""
from __future__ import annotations

import argparse
import fcntl
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading

SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
CONNECT_TIMEOUT_S = 5.0


def loopback_up() -> None:
    """Bring `lo` up in the current namespace (a new one has it down); ioctl, so no `ip` binary is needed."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sH", b"lo", 0)
        flags = struct.unpack("16sH", fcntl.ioctl(s, SIOCGIFFLAGS, req)[:18])[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH", b"lo", flags | IFF_UP))


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket in this (the host's) namespace, inheritable by the command's namespace."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind((host, port))
    except OSError as e:
        raise SystemExit(f"--forward {port}: cannot listen on {host}:{port} ({e.strerror})") from None
    s.listen(64)
    s.set_inheritable(True)
    return s


def _pump(src: socket.socket, dst: socket.socket) -> None:
    """Copy bytes one way until EOF or an error, then half-close the other side."""
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def _serve_connection(client: socket.socket, port: int) -> None:
    try:
        upstream = socket.create_connection(("127.0.0.1", port), timeout=CONNECT_TIMEOUT_S)
    except OSError:
        client.close()  # the service is not up yet (or stopped): the client sees a closed connection
        return
    upstream.settimeout(None)
    back = threading.Thread(target=_pump, args=(upstream, client), daemon=True)
    back.start()
    _pump(client, upstream)
    back.join()
    client.close()
    upstream.close()


def forward(listener: socket.socket, port: int) -> None:
    """Accept host connections on `listener` (host namespace) and relay each to 127.0.0.1:`port` here."""
    while True:
        try:
            client, _ = listener.accept()
        except OSError:
            return
        threading.Thread(target=_serve_connection, args=(client, port), daemon=True).start()


def inside(fds: list[tuple[int, int]], command: list[str]) -> int:
    """In the new namespace: loopback up, relays started, the command run; its exit status is returned."""
    loopback_up()
    for fd, port in fds:
        threading.Thread(target=forward, args=(socket.socket(fileno=fd), port), daemon=True).start()
    proc = subprocess.Popen(command, start_new_session=True)

    def _stop(signum, _frame):
        try:
            os.killpg(proc.pid, signal.SIGTERM)  # serve run stops cleanly on SIGTERM (it ignores SIGINT in background)
        except ProcessLookupError:
            pass

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    return proc.wait()


def unshare_prefix() -> list[str]:
    """`unshare --net` (as root) or `unshare --net --map-root-user` (unprivileged user namespaces)."""
    if not shutil.which("unshare"):
        raise SystemExit("private_network: `unshare` (util-linux) is not installed")
    return ["unshare", "--net"] + ([] if os.geteuid() == 0 else ["--map-root-user"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--forward", type=int, action="append", default=[], metavar="PORT",
                    help="a TCP port of the service to reach from the host's 127.0.0.1 (repeatable; default 8000)")
    ap.add_argument("--host", default="127.0.0.1", help="host address the forwarded ports listen on (default loopback)")
    ap.add_argument("--inside", default=None, help=argparse.SUPPRESS)  # "fd:port,fd:port": set by the outer call
    ap.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command, e.g. serve run deploy/config.yaml")
    args = ap.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        ap.error("a command is required after --")
    if args.inside is not None:
        pairs = [tuple(int(x) for x in item.split(":")) for item in args.inside.split(",") if item]
        return inside(pairs, command)
    for port in args.forward or [8000]:
        if not 0 < port < 65536:
            ap.error(f"--forward {port}: not a TCP port")
    listeners = [(listen(args.host, p), p) for p in (args.forward or [8000])]
    spec = ",".join(f"{s.fileno()}:{p}" for s, p in listeners)
    inner = [*unshare_prefix(), sys.executable, os.path.abspath(__file__), "--inside", spec, "--", *command]
    proc = subprocess.Popen(inner, pass_fds=[s.fileno() for s, _ in listeners])
    for s, _ in listeners:
        s.close()  # the namespace's process holds them now

    def _relay(signum, _frame):
        proc.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, _relay)
    signal.signal(signal.SIGINT, _relay)
    return proc.wait()


if __name__ == "__main__":
    sys.exit(main())
