"""Network fault injectors on 127.0.0.1 only: a TCP proxy that can stall or cut streams, and a closed port.

- `FaultProxy(upstream_port)`: forwards TCP between clients and a real server (the GStreamer RTSP server).
  `stall()` stops moving bytes while keeping every connection open (the camera that accepts and then sends
  nothing: PyAV issues 584 / 1155 / 1243), `resume()` moves them again, `cut()` closes every connection,
  `FaultProxy(None)` accepts connections and never answers (a stall from the first byte).
- `closed_port()`: a loopback port with nothing listening (an unreachable camera: connection refused).
Nothing here ever connects to a non-loopback address.
"""
from __future__ import annotations

import select
import socket
import threading
import time

HOST = "127.0.0.1"


def closed_port() -> int:
    """A loopback TCP port that was free a moment ago and has no listener (connections are refused)."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class FaultProxy:
    """A loopback TCP proxy with switchable faults; `url(path)` is the RTSP URL through it.

    Args:
        upstream_port: port of the real server on 127.0.0.1; None: accept and never send a byte.
        port: listening port (0: any free one).
    """

    def __init__(self, upstream_port: int | None, port: int = 0):
        self.upstream_port = upstream_port
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((HOST, port))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.bytes_down = 0  # server -> client
        self._stalled = threading.Event()
        if upstream_port is None:
            self._stalled.set()
        self._pairs: list[tuple[socket.socket, socket.socket | None]] = []
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._threads: list[threading.Thread] = []
        self._spawn(self._accept_loop, "fault-proxy-accept")

    def url(self, path: str = "stream", userinfo: str = "") -> str:
        auth = f"{userinfo}@" if userinfo else ""
        return f"rtsp://{auth}{HOST}:{self.port}/{path}"

    # ------------------------------------------------------------------------------------------- faults
    def stall(self) -> None:
        """Stop forwarding in both directions; connections stay open."""
        self._stalled.set()

    def resume(self) -> None:
        self._stalled.clear()

    @property
    def stalled(self) -> bool:
        return self._stalled.is_set()

    def cut(self) -> int:
        """Close every open connection (a network drop); returns how many were cut."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for a, b in pairs:
            for s in (a, b):
                if s is not None:
                    _close(s)
        return len(pairs)

    def connections(self) -> int:
        with self._lock:
            return len(self._pairs)

    def close(self) -> None:
        self._closing.set()
        self.cut()
        _close(self.sock)
        for t in self._threads:
            t.join(2)

    def __enter__(self) -> "FaultProxy":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---------------------------------------------------------------------------------------- plumbing
    def _spawn(self, target, name: str, *args) -> None:
        t = threading.Thread(target=target, args=args, name=name, daemon=True)
        t.start()
        self._threads.append(t)

    def _accept_loop(self) -> None:
        while not self._closing.is_set():
            try:
                ready, _, _ = select.select([self.sock], [], [], 0.1)
                if not ready:
                    continue
                client, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            upstream = None
            if self.upstream_port is not None:
                try:
                    upstream = socket.create_connection((HOST, self.upstream_port), timeout=5)
                except OSError:
                    _close(client)  # the server is down: the client sees the connection close
                    continue
            with self._lock:
                self._pairs.append((client, upstream))
            if upstream is not None:
                self._spawn(self._pump, "fault-proxy-pump", client, upstream)

    def _pump(self, client: socket.socket, upstream: socket.socket) -> None:
        peers = {client: upstream, upstream: client}
        try:
            while not self._closing.is_set():
                if self._stalled.is_set():
                    time.sleep(0.02)
                    continue
                ready, _, _ = select.select(list(peers), [], [], 0.1)
                for s in ready:
                    if self._stalled.is_set():
                        break
                    data = s.recv(65536)
                    if not data:
                        return
                    peers[s].sendall(data)
                    if s is upstream:
                        self.bytes_down += len(data)
        except (OSError, ValueError):
            return
        finally:
            with self._lock:
                self._pairs = [p for p in self._pairs if p[0] is not client]
            _close(client)
            _close(upstream)


def _close(s: socket.socket) -> None:
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        s.close()
    except OSError:
        pass
