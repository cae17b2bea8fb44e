"""Observers for fault tests: record state changes, poll with deadlines, find secrets and listening sockets.

- `StateRecorder`: an `on_state` callback that keeps (monotonic time, state, detail) and can wait for a state.
- `wait_for(predicate, timeout_s)`: poll until true or fail with a message (never a blind sleep).
- `find_secrets(text, secrets)`: which test credentials leaked into some captured text.
- `listening_sockets(pid)`: (proto, address, port) of every listening TCP / bound UDP socket a process holds,
  read from /proc (Linux), to check that the project binds 127.0.0.1.
"""
from __future__ import annotations

import os
import re
import threading
import time
from pathlib import Path
from typing import Callable, Iterable

# Test credentials: distinctive strings so a grep over every captured output cannot miss them.
CAM_USER = "faultcam-user"
CAM_PASSWORD = "S3cr3t-fault-pw"
WRONG_PASSWORD = "Wr0ng-fault-pw"
API_TOKEN = "fault-api-token-7f3a"
SECRETS = (CAM_USER, CAM_PASSWORD, WRONG_PASSWORD)


class StateRecorder:
    """Collects `on_state(state, detail)` calls with their monotonic time."""

    def __init__(self) -> None:
        self.events: list[tuple[float, str, str]] = []
        self._cond = threading.Condition()

    def __call__(self, state: str, detail: str) -> None:
        with self._cond:
            self.events.append((time.monotonic(), state, detail))
            self._cond.notify_all()

    def states(self) -> list[str]:
        with self._cond:
            return [s for _, s, _ in self.events]

    def count(self, state: str) -> int:
        return self.states().count(state)

    def wait(self, state: str, timeout_s: float, after: float = 0.0) -> tuple[float, str, str]:
        """The first (t, state, detail) with time >= `after`; fails after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                for ev in self.events:
                    if ev[1] == state and ev[0] >= after:
                        return ev
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"no state {state!r} within {timeout_s:.1f}s; saw {[(s, d[:80]) for _, s, d in self.events][-8:]}"
                    )
                self._cond.wait(left)

    def retry_delays(self) -> list[float]:
        """The backoff delays announced in `reconnecting` details ("...; retry in 1.2s")."""
        out = []
        for _, s, d in list(self.events):
            m = re.search(r"retry in ([0-9.]+)s", d)
            if s == "reconnecting" and m:
                out.append(float(m.group(1)))
        return out

    def text(self) -> str:
        return "\n".join(f"{s} {d}" for _, s, d in list(self.events))


def find_secrets(text: str, secrets: Iterable[str] = SECRETS) -> list[str]:
    """The secrets that occur in `text` (plain or percent-encoded)."""
    from urllib.parse import quote

    return [s for s in secrets if s in text or quote(s, safe="") in text]


# ------------------------------------------------------------------------------------------------- sockets
def _inodes(pid: int) -> set[str]:
    out = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    try:
        entries = list(fd_dir.iterdir())
    except (FileNotFoundError, PermissionError):
        return out
    for fd in entries:
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            out.add(target[8:-1])
    return out


def _decode_addr(hex_addr: str, v6: bool) -> str:
    import ipaddress

    raw = bytes.fromhex(hex_addr)
    if not v6:
        return str(ipaddress.IPv4Address(raw[::-1]))
    # /proc/net/tcp6 stores four little-endian 32-bit words
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
    return str(ipaddress.IPv6Address(words))


def listening_sockets(pid: int, netns_pid: int | None = None) -> list[tuple[str, str, int]]:
    """(proto, address, port) of the TCP sockets in LISTEN and the bound UDP sockets held by process `pid`."""
    inodes = _inodes(pid)
    found = []
    ns = netns_pid or pid
    for proto, v6 in (("tcp", False), ("tcp6", True), ("udp", False), ("udp6", True)):
        table = Path(f"/proc/{ns}/net/{proto}")
        if not table.exists():
            continue
        for line in table.read_text().splitlines()[1:]:
            cols = line.split()
            local, state, inode = cols[1], cols[3], cols[9]
            if inode not in inodes:
                continue
            if proto.startswith("tcp") and state != "0A":  # 0A = LISTEN
                continue
            addr, port = local.split(":")
            found.append((proto, _decode_addr(addr, v6), int(port, 16)))
    return found


def is_loopback(addr: str) -> bool:
    import ipaddress

    ip = ipaddress.ip_address(addr)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out
