"""Streaming fixtures: a real GStreamer RTSP server on 127.0.0.1 (TCP) and demo-feed clips to serve.

- `demo_video`: (path, labels) of a 40 s H.264 MP4 of the demo feed (seed 0, 25 fps, 256x256) with the vehicle
  crossing at 20.0-21.6 s (frames 500-539 anomalous); written once per session.
- `rtsp_server_factory(mounts, user=None)`: starts an `RtspServer` serving {name: file}; stopped at teardown.
- `rtsp_server`: a started server with mounts `demo` (the clip above) and `vtest` (the shared vtest.avi,
  re-encoded on the fly). `.url(name)`, `.stop()`, `.start()` (same port), `.pause()` / `.resume()`.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.streaming.rtsp_server import SYSTEM_PYTHON, RtspServer

DEMO_SECONDS = 40.0
DEMO_ANOMALY = (20.0, 21.6)


@pytest.fixture(scope="session")
def gst_available() -> None:
    probe = (
        "import gi; gi.require_version('GstRtspServer', '1.0'); "
        "from gi.repository import GstRtspServer"
    )
    result = subprocess.run([SYSTEM_PYTHON, "-c", probe], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.fail(
            f"{SYSTEM_PYTHON} cannot import GstRtspServer (install python3-gi gir1.2-gst-rtsp-server-1.0 "
            f"gstreamer1.0-plugins-good/-ugly/-libav, see INFRA.md): {result.stderr.strip()[-300:]}"
        )


@pytest.fixture(scope="session")
def demo_video(tmp_path_factory) -> tuple[Path, np.ndarray]:
    from streaming.demo_feed import write_demo_video

    path = tmp_path_factory.mktemp("demo") / "demo.mp4"
    labels = write_demo_video(path, DEMO_SECONDS, fps=25, size=256, seed=0, anomaly_intervals=[DEMO_ANOMALY])
    return path, labels


@pytest.fixture
def rtsp_server_factory(gst_available):
    servers: list[RtspServer] = []

    def make(mounts: dict[str, Path], user: str | None = None, port: int | None = None) -> RtspServer:
        server = RtspServer(mounts, port=port, user=user).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def rtsp_server(rtsp_server_factory, demo_video, vtest) -> RtspServer:
    return rtsp_server_factory({"demo": demo_video[0], "vtest": vtest})
