"""Network fault injectors on 127.0.0.1 only: a TCP proxy that can stall or cut streams, and a closed port.

- `FaultProxy(upstream_port)`: forwards TCP between clients and a real server (the GStreamer RTSP server).
  `stall()` stops moving bytes while keeping every connection open (the camera that accepts and then sends
  nothing: PyAV issues 584 / 1155 / 1243), `resume()` moves them again, `cut()` closes every connection,
  `corrupt(fraction)` flips bytes inside the RTP payloads of RTSP-over-TCP interleaved packets on their way to the
  client (the framing and RTP headers stay intact, so the session survives and the decoder sees damaged H.264:
  what a lossy camera link delivers), `corrupt(0)` stops; `FaultProxy(None)` accepts connections and never
  answers (a stall from the first byte).
- `closed_port()`: a loopback port with nothing listening (an unreachable camera: connection refused).
Nothing here ever connects to a non-loopback address.
"""
from __future__ import annotations

import random
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
        self.corrupted_packets = 0
        self._corrupt = 0.0  # share of interleaved RTP packets whose payload is damaged
        self._rng = random.Random(0)
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

    def corrupt(self, fraction: float) -> None:
        """Damage `fraction` of the RTP packets sent to clients from now on (0: stop)."""
        if not 0 <= fraction <= 1:
            raise ValueError(f"fraction must lie in [0, 1], got {fraction}")
        self._corrupt = fraction

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
        down = _Interleaved(self)
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
                    if s is upstream:
                        self.bytes_down += len(data)
                        data = down.feed(data)
                    peers[s].sendall(data)
        except (OSError, ValueError):
            return
        finally:
            with self._lock:
                self._pairs = [p for p in self._pairs if p[0] is not client]
            _close(client)
            _close(upstream)


class _Interleaved:
    """The server-to-client byte stream of one RTSP-over-TCP session, split into RTSP messages and `$`-framed
    interleaved packets so that payload bytes can be damaged without breaking the framing. Always parsed (a
    fault switched on mid-stream must know where the next packet starts); complete units pass on at once."""

    RTP_HEADER = 12

    def __init__(self, proxy: FaultProxy):
        self.proxy = proxy
        self.buf = b""
        self.lost = False  # not RTSP framing after all: pass bytes through untouched from here on

    def feed(self, data: bytes) -> bytes:
        if self.lost:
            return data
        self.buf += data
        if self.buf[:1] != b"$" and not b"RTSP/1.0".startswith(self.buf[:8]):  # neither a packet nor a reply
            self.lost, out, self.buf = True, self.buf, b""
            return out
        out = bytearray()
        while self.buf:
            if self.buf[:1] == b"$":
                if len(self.buf) < 4:
                    break
                end = 4 + int.from_bytes(self.buf[2:4], "big")
                if len(self.buf) < end:
                    break
                packet = bytearray(self.buf[:end])
                if self.proxy._corrupt and self.proxy._rng.random() < self.proxy._corrupt:
                    self._damage(packet)
                out += packet
            else:  # an RTSP message (a reply to a keep-alive): up to its blank line and body
                head = self.buf.find(b"\r\n\r\n")
                if head < 0:
                    break
                length = 0
                for line in self.buf[:head].split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                end = head + 4 + length
                if len(self.buf) < end:
                    break
                out += self.buf[:end]
            self.buf = self.buf[end:]
        return bytes(out)

    def _damage(self, packet: bytearray) -> None:
        start = 4 + self.RTP_HEADER + 4  # past the framing, the RTP header and the NAL/FU headers
        if len(packet) <= start:
            return
        for _ in range(max(1, (len(packet) - start) // 64)):
            packet[self.proxy._rng.randrange(start, len(packet))] ^= 0xFF
        self.proxy.corrupted_packets += 1


def _close(s: socket.socket) -> None:
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        s.close()
    except OSError:
        pass
