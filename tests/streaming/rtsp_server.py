"""A real RTSP server for the tests: GStreamer's RTSP server on 127.0.0.1, TCP only, serving given files.

Two halves in one file:
- `main()` runs under Debian's system Python (`/usr/bin/python3`, where python3-gi lives), never the venv:
  `/usr/bin/python3 tests/streaming/rtsp_server.py --port 8554 --mount cam=/path/clip.mp4 [--mount ...]`.
  H.264 MP4/MKV files are passed through (nearly no CPU); anything else is re-encoded with x264. Each client
  gets its own pipeline (media not shared) so a clip always starts at frame 0 on connect, paced in real time.
  Prints `READY <port>` on stdout once it listens.
- `RtspServer` (venv side) starts/stops that process on a fixed port so a test can stop it mid-stream and
  restart it on the same port; `StallServer` accepts TCP connections and then sends nothing (the trap of
  PyAV issue 584), to check that open timeouts really fire.
"""
from __future__ import annotations

import argparse
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

SYSTEM_PYTHON = "/usr/bin/python3"
HOST = "127.0.0.1"

PASSTHROUGH = {
    ".mp4": "qtdemux name=d d.video_0 ! h264parse",
    ".mov": "qtdemux name=d d.video_0 ! h264parse",
    ".mkv": "matroskademux name=d d.video_0 ! h264parse",
}
REENCODE = (
    "decodebin ! videoconvert ! video/x-raw,format=I420 ! "
    "x264enc tune=zerolatency speed-preset=ultrafast key-int-max=10"
)


def launch_line(path: Path, reencode: bool = False) -> str:
    """GStreamer launch line serving `path` as RTP H.264 (payloader pay0)."""
    src = f'filesrc location="{path}"'
    body = PASSTHROUGH.get(path.suffix.lower())
    if reencode or body is None:
        body = REENCODE
    return f"( {src} ! {body} ! rtph264pay name=pay0 pt=96 config-interval=1 )"


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1 (small race, fine for tests)."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------------------------- system Python
def main(argv: list[str] | None = None) -> int:
    """Run the GStreamer RTSP server until SIGTERM/SIGINT (system Python only)."""
    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtsp", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstRtsp, GstRtspServer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mount", action="append", default=[], help="NAME=FILE, served at rtsp://host:port/NAME")
    parser.add_argument("--reencode", action="store_true", help="re-encode even H.264 containers")
    parser.add_argument("--user", default=None, help="require basic auth with USER:PASSWORD")
    args = parser.parse_args(argv)

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address(HOST)
    server.set_service(str(args.port))
    mounts = server.get_mount_points()
    if args.user:
        user, _, password = args.user.partition(":")
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, "user")
        auth.add_basic(GstRtspServer.RTSPAuth.make_basic(user, password), token)
        server.set_auth(auth)
    for spec in args.mount:
        name, _, file = spec.partition("=")
        path = Path(file).resolve()
        if not name or not path.is_file():
            print(f"bad --mount {spec!r}: want NAME=EXISTING_FILE", file=sys.stderr)
            return 2
        factory = GstRtspServer.RTSPMediaFactory()
        factory.set_launch(launch_line(path, args.reencode))
        factory.set_shared(False)
        factory.set_protocols(GstRtsp.RTSPLowerTrans.TCP)
        if args.user:
            perms = GstRtspServer.RTSPPermissions()
            perms.add_permission_for_role("user", GstRtspServer.RTSP_PERM_MEDIA_FACTORY_ACCESS, True)
            perms.add_permission_for_role("user", GstRtspServer.RTSP_PERM_MEDIA_FACTORY_CONSTRUCT, True)
            factory.set_permissions(perms)
        mounts.add_factory(f"/{name}", factory)

    loop = GLib.MainLoop()
    if server.attach(None) == 0:
        print(f"cannot listen on {HOST}:{args.port}", file=sys.stderr)
        return 1
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, loop.quit)
    print(f"READY {args.port}", flush=True)
    loop.run()
    return 0


# ------------------------------------------------------------------------------------------------- venv side
class RtspServer:
    """Starts/stops the GStreamer RTSP server process on a fixed port; `url(name)` gives the stream URL."""

    def __init__(self, mounts: dict[str, Path], port: int | None = None, user: str | None = None):
        self.mounts = {k: Path(v) for k, v in mounts.items()}
        self.port = port or free_port()
        self.user = user
        self.proc: subprocess.Popen | None = None

    def url(self, name: str, credentials: bool = True) -> str:
        auth = f"{self.user}@" if (self.user and credentials) else ""
        return f"rtsp://{auth}{HOST}:{self.port}/{name}"

    def start(self, timeout_s: float = 15.0) -> "RtspServer":
        """Start the server and wait for `READY`; retries briefly while the port is still held."""
        if self.proc is not None and self.proc.poll() is None:
            return self
        cmd = [SYSTEM_PYTHON, str(Path(__file__).resolve()), "--port", str(self.port)]
        for name, path in self.mounts.items():
            cmd += ["--mount", f"{name}={path}"]
        if self.user:
            cmd += ["--user", self.user]
        deadline = time.monotonic() + timeout_s
        last_err = ""
        while time.monotonic() < deadline:
            # stderr goes to a file: a full pipe would block the server mid-stream
            self._log = tempfile.TemporaryFile(mode="w+")
            self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._log, text=True, env=_clean_env())
            line = _readline(self.proc, deadline)
            if line.startswith("READY"):
                return self
            self.proc.kill()
            self.proc.wait()
            self._log.seek(0)
            last_err = self._log.read()
            self.proc = None
            time.sleep(0.2)
        raise RuntimeError(f"RTSP server on {HOST}:{self.port} did not start: {last_err.strip()[-500:]}")

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL); connected clients see their TCP connection close."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGCONT)  # in case a test paused it
            except ProcessLookupError:
                pass
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stdout:
            self.proc.stdout.close()
        self._log.close()
        self.proc = None

    def restart(self) -> "RtspServer":
        self.stop()
        return self.start()

    def pause(self) -> None:
        """SIGSTOP the server: connections stay open but no byte flows (a stalled camera)."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)

    def __enter__(self) -> "RtspServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class StallServer:
    """A TCP server on 127.0.0.1 that stalls: it accepts connections and then sends nothing (until closed).

    `handshake=True` first completes a plausible RTSP exchange (OPTIONS, DESCRIBE with an H.264 SDP, SETUP
    interleaved over TCP, PLAY: 200 OK each) and then sends no media: the camera of PyAV issue 584 that
    accepts a client but never streams.
    """

    SDP = (
        "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=stall\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        "m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=control:stream=0\r\n"
    )

    def __init__(self, handshake: bool = False):
        self.handshake = handshake
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((HOST, 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.requests: list[str] = []  # RTSP methods seen (handshake mode)
        self._conns: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="stall-server", daemon=True)
        self._thread.start()

    def url(self, name: str = "stall") -> str:
        return f"rtsp://{HOST}:{self.port}/{name}"

    def _serve(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.sock, *self._conns], [], [], 0.1)
            for s in ready:
                if s is self.sock:
                    conn, _ = self.sock.accept()
                    self._conns.append(conn)
                    self.accepted += 1
                elif self.handshake:
                    self._answer(s)

    def _answer(self, conn: socket.socket) -> None:
        try:
            data = conn.recv(65536).decode("latin-1")
        except OSError:
            data = ""
        if not data:
            self._conns.remove(conn)
            conn.close()
            return
        for request in data.split("\r\n\r\n"):
            lines = request.strip().split("\r\n")
            if not lines or not lines[0]:
                continue
            method = lines[0].split(" ")[0]
            self.requests.append(method)
            headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
            extra = ""
            body = ""
            if method == "OPTIONS":
                extra = "Public: OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN\r\n"
            elif method == "DESCRIBE":
                body = self.SDP
                extra = f"Content-Type: application/sdp\r\nContent-Base: {self.url()}/\r\n"
            elif method == "SETUP":
                extra = "Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\nSession: 12345678;timeout=60\r\n"
            elif method == "PLAY":
                extra = "Session: 12345678\r\n"
            reply = (
                f"RTSP/1.0 200 OK\r\nCSeq: {headers.get('cseq', '0')}\r\n{extra}"
                f"Content-Length: {len(body)}\r\n\r\n{body}"
            )
            conn.sendall(reply.encode("latin-1"))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        for c in self._conns:
            c.close()
        self.sock.close()

    def __enter__(self) -> "StallServer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _clean_env() -> dict[str, str]:
    """The system Python must not see the venv's site-packages."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.setdefault("GST_DEBUG", "0")
    return env


def _readline(proc: subprocess.Popen, deadline: float) -> str:
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return ""
        ready, _, _ = select.select([proc.stdout], [], [], 0.1)
        if ready:
            return proc.stdout.readline()
    return ""


if __name__ == "__main__":
    sys.exit(main())
