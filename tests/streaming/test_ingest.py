"""Decode and ingest against real sources: files, the shared vtest.avi, a real GStreamer RTSP server on 127.0.0.1,
and a TCP server that accepts and then stalls (the PyAV timeout traps of issues 584, 1155, 1243)."""
from __future__ import annotations

import logging
import threading
import time

import numpy as np
import pytest

from streaming.ingest import IngestLoop
from streaming.sources import StreamEndedError, StreamOpenError, StreamTimeoutError, StreamURLError, open_stream
from streaming.credentials import camera_env_prefix, resolve_credentials, scrub_url
from streaming.demo_feed import DemoFeed
from tests.streaming.rtsp_server import StallServer, free_port
from tests.polling import wait_for


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * np.log10(255.0**2 / max(mse, 1e-12))


# ----------------------------------------------------------------------------------------------- credentials
@pytest.mark.parametrize(
    "url, expected",
    [
        ("rtsp://admin:pa55@10.0.0.5:554/stream1", "rtsp://***@10.0.0.5:554/stream1"),
        ("rtsps://user@cam.local/live", "rtsps://***@cam.local/live"),
        ("rtsp://a%40b:p%3Aw@host/x?channel=1", "rtsp://***@host/x?channel=1"),
        ("rtsp://host/x?user=admin&password=hunter2&ch=2", "rtsp://host/x?user=***&password=***&ch=2"),
        ("rtsp://host:554/x", "rtsp://host:554/x"),
        ("/data/clip.mp4", "/data/clip.mp4"),
        ("demo://lobby?seed=1", "demo://lobby?seed=1"),
        # inside free text, e.g. an FFmpeg error message quoting the URL
        ("open failed: 'rtsp://u:secret@h/x'; retry", "open failed: 'rtsp://***@h/x'; retry"),
    ],
)
def test_scrub_url(url, expected):
    assert scrub_url(url) == expected


def test_resolve_credentials_from_environment():
    env = {"VAD_CAMERA_FRONT_DOOR_USER": "admin", "VAD_CAMERA_FRONT_DOOR_PASSWORD": "p@ss:w/rd"}
    prefix = camera_env_prefix("front door")
    assert prefix == "VAD_CAMERA_FRONT_DOOR"
    url = resolve_credentials("rtsp://10.0.0.5:554/s", prefix, env)
    assert url == "rtsp://admin:p%40ss%3Aw%2Frd@10.0.0.5:554/s"
    assert scrub_url(url) == "rtsp://***@10.0.0.5:554/s"
    # credentials in the URL win; non-RTSP URLs and unset variables are left alone
    assert resolve_credentials("rtsp://me:x@h/s", prefix, env) == "rtsp://me:x@h/s"
    assert resolve_credentials("/tmp/a.mp4", prefix, env) == "/tmp/a.mp4"
    assert resolve_credentials("rtsp://h/s", "VAD_CAMERA_OTHER", env) == "rtsp://h/s"


# ----------------------------------------------------------------------------------------------------- files
def test_file_source_decodes_every_frame(tmp_path):
    from streaming.demo_feed import write_demo_video

    path = tmp_path / "clip.mp4"
    write_demo_video(path, seconds=2.0, fps=25, size=(96, 128), seed=3)
    feed = DemoFeed(seed=3, fps=25, size=(96, 128))
    for url in (str(path), path.as_uri()):
        with open_stream(url) as stream:
            frames = list(stream)
        assert stream.fps == pytest.approx(25)
        assert len(frames) == 50
        assert [f.index for f in frames] == list(range(50))
        assert np.all(np.diff([f.pts_s for f in frames]) > 0)
        assert frames[7].rgb.shape == (96, 128, 3) and frames[7].rgb.dtype == np.uint8
        assert psnr(frames[7].rgb, feed.frame(7)) > 30  # the H.264 round trip keeps the picture


def test_real_footage_vtest(vtest):
    with open_stream(str(vtest)) as stream:
        frames = [f for f, _ in zip(stream, range(30))]
    assert stream.fps == pytest.approx(10)
    assert all(f.rgb.shape == (576, 768, 3) for f in frames)
    assert np.allclose(np.diff([f.pts_s for f in frames]), 0.1, atol=1e-3)
    assert np.abs(frames[0].rgb.astype(int) - frames[29].rgb.astype(int)).mean() > 1  # pedestrians moved


def test_realtime_file_pacing(tmp_path):
    from streaming.demo_feed import write_demo_video

    path = tmp_path / "clip.mp4"
    write_demo_video(path, seconds=0.6, fps=25, size=64)
    t0 = time.monotonic()
    with open_stream(str(path), realtime=True) as stream:
        n = sum(1 for _ in stream)
    assert n == 15
    assert time.monotonic() - t0 >= 14 / 25 - 0.02  # frames were not delivered faster than the clip's rate


@pytest.mark.parametrize(
    "url, error, match",
    [
        ("http://example.com/x.mp4", StreamURLError, "unsupported URL scheme 'http'"),
        ("/nonexistent/clip.mp4", StreamOpenError, "no such file: /nonexistent/clip.mp4"),
        ("demo://x?speed=3", StreamURLError, "unknown demo parameter"),
        ("demo://x?fps=abc", StreamURLError, "bad demo parameter"),
    ],
)
def test_bad_urls_name_the_problem(url, error, match):
    with pytest.raises(error, match=match):
        open_stream(url)


def test_bad_transport_and_timeouts_are_rejected():
    with pytest.raises(StreamURLError, match="transport"):
        open_stream("rtsp://127.0.0.1:1/x", transport="sctp")
    with pytest.raises(StreamURLError, match="read_timeout_s"):
        open_stream("rtsp://127.0.0.1:1/x", read_timeout_s=0)


def test_not_a_video_file(tmp_path):
    path = tmp_path / "junk.mp4"
    path.write_bytes(b"\x00not a video" * 100)
    with pytest.raises(StreamOpenError, match="junk.mp4"):
        open_stream(str(path))


def test_demo_source_is_paced_and_matches_the_feed():
    feed = DemoFeed(seed=2, fps=25, size=64)
    t0 = time.monotonic()
    with open_stream("demo://lobby?seed=2&fps=25&size=64") as stream:
        frames = [f for f, _ in zip(stream, range(10))]
    assert time.monotonic() - t0 >= 9 / 25 - 0.02
    for f in frames:
        np.testing.assert_array_equal(f.rgb, feed.frame(f.index))
    assert frames[-1].pts_s == pytest.approx(9 / 25)
    # start later in the feed (e.g. just before its anomaly), without pacing
    with open_stream("demo://lobby?seed=2&fps=25&size=64&start=100", realtime=False) as stream:
        first = next(iter(stream))
    np.testing.assert_array_equal(first.rgb, feed.frame(100))


# ------------------------------------------------------------------------------------------------------ RTSP
def test_rtsp_stream_decodes_the_served_clip(rtsp_server):
    feed = DemoFeed(seed=0, fps=25, size=256, anomaly_intervals=[(20.0, 21.6)])
    with open_stream(rtsp_server.url("demo"), open_timeout_s=5, read_timeout_s=3) as stream:
        assert stream.live
        frames = [f for f, _ in zip(stream, range(20))]
    assert [f.index for f in frames] == list(range(20))
    assert np.allclose(np.diff([f.pts_s for f in frames]), 0.04, atol=2e-3)
    # non-shared media: each client starts at the clip's first frame
    assert min(psnr(f.rgb, feed.frame(f.index)) for f in frames) > 30


def test_rtsp_reencoded_real_footage(rtsp_server):
    with open_stream(rtsp_server.url("vtest"), open_timeout_s=8, read_timeout_s=5) as stream:
        frames = [f for f, _ in zip(stream, range(5))]
    assert all(f.rgb.shape == (576, 768, 3) for f in frames)


def test_transport_option_reaches_the_server(rtsp_server):
    """The test server offers TCP only: asking for UDP is refused by the server (461), proving the option is sent."""
    with pytest.raises(StreamOpenError, match="Protocol not supported"):
        open_stream(rtsp_server.url("demo"), transport="udp", open_timeout_s=3)


def test_connection_refused_is_an_open_error():
    url = f"rtsp://user:topsecret@127.0.0.1:{free_port()}/x"
    t0 = time.monotonic()
    with pytest.raises(StreamOpenError) as info:
        open_stream(url, open_timeout_s=5)
    assert time.monotonic() - t0 < 3
    assert isinstance(info.value, ConnectionError)
    assert "topsecret" not in str(info.value) and "***@127.0.0.1" in str(info.value)


@pytest.mark.parametrize("open_timeout_s", [1.0, 3.0])
def test_open_timeout_fires_on_a_server_that_accepts_then_stalls(open_timeout_s):
    """PyAV 584: the open hung forever; 1155/1243: FFmpeg's own socket timeout cut longer timeouts short."""
    with StallServer() as stall:
        url = stall.url().replace("rtsp://", "rtsp://cam:hunter2@")
        t0 = time.monotonic()
        with pytest.raises(StreamTimeoutError, match="open timed out") as info:
            open_stream(url, open_timeout_s=open_timeout_s, read_timeout_s=1.0)
        elapsed = time.monotonic() - t0
        assert stall.accepted >= 1
    assert open_timeout_s * 0.9 <= elapsed <= open_timeout_s + 1.0
    assert "hunter2" not in str(info.value)


def test_open_timeout_fires_when_the_rtsp_handshake_succeeds_but_no_media_comes():
    """PyAV 584's camera: OPTIONS/DESCRIBE/SETUP/PLAY all answered, then silence."""
    with StallServer(handshake=True) as stall:
        t0 = time.monotonic()
        with pytest.raises(StreamTimeoutError, match="no media within the open timeout"):
            open_stream(stall.url(), open_timeout_s=1.0, read_timeout_s=1.0)
        elapsed = time.monotonic() - t0
        assert stall.requests[:4] == ["OPTIONS", "DESCRIBE", "SETUP", "PLAY"]
    assert 0.9 <= elapsed <= 2.0


def test_read_timeout_fires_when_the_server_stalls_mid_stream(rtsp_server):
    """The server process is frozen (SIGSTOP): the TCP connection stays open but no byte arrives."""
    read_timeout_s = 1.0
    with open_stream(rtsp_server.url("demo"), open_timeout_s=5, read_timeout_s=read_timeout_s) as stream:
        it = iter(stream)
        for _ in range(5):
            next(it)
        rtsp_server.pause()
        t0 = time.monotonic()
        try:
            with pytest.raises(StreamTimeoutError, match="no data"):
                for _ in range(1000):  # frames already buffered still arrive, then the stall
                    next(it)
            elapsed = time.monotonic() - t0
        finally:
            rtsp_server.resume()
    # PyAV alone raises only after 2x the read timeout (a stale packet comes back after the first interrupt)
    assert elapsed <= read_timeout_s + 0.7


def test_server_stopped_mid_stream_ends_the_stream(rtsp_server):
    with open_stream(rtsp_server.url("demo"), open_timeout_s=5, read_timeout_s=2) as stream:
        it = iter(stream)
        next(it)
        rtsp_server.stop()
        t0 = time.monotonic()
        with pytest.raises((StreamEndedError, StreamTimeoutError)):
            for _ in range(1000):
                next(it)
    assert time.monotonic() - t0 < 3


def test_credentials_from_environment_reach_the_server(rtsp_server_factory, demo_video, monkeypatch, caplog):
    server = rtsp_server_factory({"demo": demo_video[0]}, user="admin:s3cr3t-pw")
    # without credentials: refused (401), and the error says so
    with pytest.raises(StreamOpenError, match="401"):
        open_stream(server.url("demo", credentials=False), open_timeout_s=5)
    monkeypatch.setenv("VAD_CAMERA_GATE_USER", "admin")
    monkeypatch.setenv("VAD_CAMERA_GATE_PASSWORD", "s3cr3t-pw")
    url = resolve_credentials(server.url("demo", credentials=False), camera_env_prefix("gate"))
    with open_stream(url, open_timeout_s=5) as stream:
        first = next(iter(stream))
    assert first.rgb.shape == (256, 256, 3)
    # a wrong password: the error is scrubbed
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(StreamOpenError) as info:
            open_stream(server.url("demo").replace("s3cr3t-pw", "wrong-pw"), open_timeout_s=5)
    assert "wrong-pw" not in str(info.value) and "wrong-pw" not in caplog.text


# ------------------------------------------------------------------------------------------------ ingest loop
class Recorder:
    """Collects what IngestLoop reports; `accept=False` simulates a consumer that is behind."""

    def __init__(self, accept: bool = True):
        self.accept = accept
        self.windows = []
        self.states: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def on_window(self, window):
        with self.lock:
            self.windows.append(window)
        return self.accept

    def on_state(self, state, detail):
        with self.lock:
            self.states.append((state, detail))

    def state_names(self):
        with self.lock:
            return [s for s, _ in self.states]


def test_ingest_loop_on_a_file_resamples_resizes_and_windows(tmp_path):
    from streaming.demo_feed import write_demo_video

    path = tmp_path / "clip.mp4"
    write_demo_video(path, seconds=4.0, fps=25, size=(120, 160), seed=1)
    rec = Recorder()
    settings = {"fps": 10, "size": 64, "window": 16, "hop": 16, "loop_files": False, "realtime_files": False}
    loop = IngestLoop("lobby", str(path), settings, rec.on_window, rec.on_state)
    loop.run()  # a non-looped file: returns at its end
    stats = loop.stats()
    assert stats["frames_decoded"] == 100
    assert stats["frames_analysed"] == 40 and stats["frames_skipped"] == 60
    assert len(rec.windows) == 2 and stats["windows_emitted"] == 2
    w = rec.windows[1]
    assert w.camera == "lobby" and w.frames.shape == (16, 64, 64, 3) and w.frames.dtype == np.uint8
    np.testing.assert_array_equal(w.indices, np.arange(16, 32))
    assert rec.state_names() == ["connecting", "streaming", "stopped"]


def test_fps_in_reads_the_source_rate():
    # the demo source is paced in real time at 25 fps (the operator's page shows fps_in next to fps scored)
    loop = IngestLoop("lobby", "demo://lobby?seed=1&fps=25&size=64", {"fps": 10, "size": 64}).start()
    try:
        wait_for(lambda: loop.stats()["frames_decoded"] >= 40, 20, "1.6 s of the demo feed")
        assert 15 <= loop.stats()["fps_in"] <= 40, loop.stats()
    finally:
        loop.stop()


def test_consumer_refusing_windows_is_counted_not_blocking(tmp_path):
    from streaming.demo_feed import write_demo_video

    path = tmp_path / "clip.mp4"
    write_demo_video(path, seconds=2.0, fps=25, size=64)
    rec = Recorder(accept=False)
    loop = IngestLoop("c", str(path), {"fps": None, "size": 64, "loop_files": False, "realtime_files": False},
                      rec.on_window, rec.on_state)
    loop.run()
    stats = loop.stats()
    assert stats["windows_dropped"] == 3 and stats["frames_dropped"] == 48 and stats["windows_emitted"] == 0


def test_corrupt_packets_are_counted_and_decoding_goes_on(tmp_path):
    from streaming.demo_feed import write_demo_video

    path = tmp_path / "clip.mkv"
    write_demo_video(path, seconds=4.0, fps=25, size=128)
    data = bytearray(path.read_bytes())
    rng = np.random.default_rng(0)
    for pos in rng.integers(len(data) // 4, 3 * len(data) // 4, 300):  # damage the middle of the file
        data[pos] = rng.integers(0, 256)
    bad = tmp_path / "damaged.mkv"
    bad.write_bytes(bytes(data))
    loop = IngestLoop("c", str(bad), {"fps": None, "size": 64, "loop_files": False, "realtime_files": False})
    loop.run()
    stats = loop.stats()
    assert stats["corrupt_frames"] > 0
    assert stats["frames_decoded"] > 25  # frames before and after the damage still arrive
    assert stats["state"] == "stopped"


def test_unusable_url_ends_in_error_state():
    rec = Recorder()
    loop = IngestLoop("c", "ftp://user:pw@host/x", None, rec.on_window, rec.on_state)
    loop.run()
    assert rec.state_names()[-1] == "error"
    assert "unsupported URL scheme" in rec.states[-1][1] and ":pw@" not in rec.states[-1][1]


def test_ingest_reconnects_after_the_rtsp_server_restarts(rtsp_server, caplog):
    rec = Recorder()
    settings = {"fps": 25, "size": 64, "read_timeout_s": 1.5, "open_timeout_s": 3, "backoff_initial_s": 0.2,
                "backoff_max_s": 1.0}
    url = rtsp_server.url("demo").replace("rtsp://", "rtsp://viewer:pw-xyz@")  # the server ignores it
    loop = IngestLoop("yard", url, settings, rec.on_window, rec.on_state)
    with caplog.at_level(logging.DEBUG):
        loop.start()
        try:
            wait_for(lambda: len(rec.windows) >= 1, 10, "a first window")
            rtsp_server.stop()
            wait_for(lambda: loop.stats()["state"] == "reconnecting", 5, "state reconnecting")
            n_before = len(rec.windows)
            rtsp_server.start()  # same port
            wait_for(lambda: len(rec.windows) > n_before, 15, "windows after the restart")
            stats = loop.stats()
            assert stats["state"] == "streaming"
            assert stats["reconnects"] >= 1 and stats["disconnects"] == 1
            assert stats["last_error"] and "pw-xyz" not in stats["last_error"]
            assert stats["url"] == scrub_url(url)
        finally:
            t0 = time.monotonic()
            assert loop.stop()
            assert time.monotonic() - t0 < settings["read_timeout_s"] + 1
    names = rec.state_names()
    assert names[:2] == ["connecting", "streaming"]
    assert "reconnecting" in names and names[-2:] == ["streaming", "stopped"]
    assert "pw-xyz" not in caplog.text and all("pw-xyz" not in d for _, d in rec.states)
    # windows never span the gap: indices inside each window are consecutive
    assert all(np.all(np.diff(w.indices) == 1) for w in rec.windows)


def test_stop_returns_within_the_read_timeout_while_the_stream_stalls(rtsp_server):
    rec = Recorder()
    settings = {"fps": 25, "size": 64, "read_timeout_s": 1.5, "open_timeout_s": 3}
    loop = IngestLoop("yard", rtsp_server.url("demo"), settings, rec.on_window, rec.on_state).start()
    try:
        wait_for(lambda: loop.stats()["frames_decoded"] > 5, 10, "frames")
        rtsp_server.pause()
        time.sleep(0.3)  # let the loop block inside the demuxer
        t0 = time.monotonic()
        assert loop.stop()
        assert time.monotonic() - t0 <= settings["read_timeout_s"] + 0.7
    finally:
        rtsp_server.resume()
    assert rec.state_names()[-1] == "stopped"
    assert not loop.running
