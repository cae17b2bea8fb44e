"""Faults at the camera edge (scenarios 2, 3, 4), against streaming.ingest.IngestLoop with real sources:
the GStreamer RTSP server on 127.0.0.1, a loopback proxy that stalls or cuts the stream, damaged files."""
from __future__ import annotations

import logging
import threading
import time

import pytest

from streaming.ingest import IngestLoop, IngestSettings
from streaming.sources import StreamTimeoutError, open_stream
from tests.faults.conftest import FAULT_CLIP_SECONDS
from tests.faults.tools.net import FaultProxy, closed_port
from tests.faults.tools.watch import (
    CAM_PASSWORD,
    CAM_USER,
    WRONG_PASSWORD,
    StateRecorder,
    find_secrets,
)
from tests.polling import wait_for

pytestmark = pytest.mark.slow

READ_TIMEOUT_S = 2.0
OPEN_TIMEOUT_S = 3.0


def settings(**kw) -> IngestSettings:
    """Small, cheap analysis settings: 64x64 frames at 5 fps, 4-frame windows, fast backoff."""
    base = dict(fps=5.0, size=64, window=4, hop=4, open_timeout_s=OPEN_TIMEOUT_S, read_timeout_s=READ_TIMEOUT_S,
                backoff_initial_s=0.2, backoff_max_s=2.0)
    base.update(kw)
    return IngestSettings(**base)


class Windows:
    """on_window sink that records the windows' shapes and accepts everything."""

    def __init__(self) -> None:
        self.shapes: list[tuple] = []

    def __call__(self, window) -> bool:
        self.shapes.append(window.frames.shape)
        return True


def ingest_threads(camera: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"ingest-{camera}" and t.is_alive()]


# ------------------------------------------------------------------------------------------- scenario 2: stall
def test_stall_before_first_byte_times_out_within_bound():
    """A server that accepts and then sends nothing: the open times out within its bound, then backoff."""
    with FaultProxy(None) as stall:
        t0 = time.monotonic()
        with pytest.raises(StreamTimeoutError) as err:
            open_stream(stall.url("cam"), open_timeout_s=OPEN_TIMEOUT_S, read_timeout_s=READ_TIMEOUT_S)
        elapsed = time.monotonic() - t0
        assert OPEN_TIMEOUT_S * 0.8 <= elapsed <= OPEN_TIMEOUT_S + 1.5, elapsed
        assert "open_timeout_s" in str(err.value)

        rec = StateRecorder()
        loop = IngestLoop("stall0", stall.url("cam"), settings(), on_state=rec).start()
        try:
            t_reconnect, _, detail = rec.wait("reconnecting", OPEN_TIMEOUT_S + 3)
            assert "timed out" in detail
        finally:
            t_stop = time.monotonic()
            assert loop.stop(), "stop() did not end the loop within the read timeout + 1 s"
            assert time.monotonic() - t_stop <= OPEN_TIMEOUT_S + 1.5
        assert not ingest_threads("stall0")
        assert stall.accepted >= 1


def test_midstream_stall_fires_read_timeout_and_recovers(rtsp_server_factory, fault_media):
    """A streaming camera whose bytes stop (connection still open): read timeout, reconnect, then streaming."""
    server = rtsp_server_factory({"cam": fault_media["clean"]})
    with FaultProxy(server.port) as proxy:
        rec = StateRecorder()
        sink = Windows()
        loop = IngestLoop("stall1", proxy.url("cam"), settings(), on_window=sink, on_state=rec).start()
        try:
            rec.wait("streaming", 10)
            wait_for(lambda: sink.shapes, 5, "a first window")
            t_stall = time.monotonic()
            proxy.stall()
            t_rc, _, detail = rec.wait("reconnecting", READ_TIMEOUT_S + 3, after=t_stall)
            fired_after = t_rc - t_stall
            # the read timeout fires within its bound (plus one frame interval and scheduling slack)
            assert fired_after <= READ_TIMEOUT_S + 1.0, (fired_after, detail)
            assert "read_timeout_s" in detail or "timed out" in detail, detail
            assert loop.counters.disconnects >= 1
            # while stalled, new connections stall too: attempts keep failing, with a growing backoff
            wait_for(lambda: rec.count("reconnecting") >= 3, 4 * (OPEN_TIMEOUT_S + 2), "three reconnect attempts")
            delays = rec.retry_delays()
            assert delays[1] > delays[0], delays
            t_resume = time.monotonic()
            proxy.resume()
            t_back, _, _ = rec.wait("streaming", OPEN_TIMEOUT_S + 2.0 * 1.2 + 5, after=t_resume)
            n = len(sink.shapes)
            wait_for(lambda: len(sink.shapes) > n, 5, "windows after the stall")
        finally:
            t_stop = time.monotonic()
            assert loop.stop()
            assert time.monotonic() - t_stop <= READ_TIMEOUT_S + 1.5
        assert not ingest_threads("stall1"), "an ingest thread is still blocked after stop()"
        assert loop.counters.state == "stopped"


# ------------------------------------------------------------------------------------- scenario 3: corrupt
def test_corrupt_rtsp_stream_keeps_running(rtsp_server_factory, fault_media):
    """H.264 with flipped payload bytes, served over RTSP: frames are concealed or skipped and counted."""
    server = rtsp_server_factory({"bad": fault_media["corrupt"]})
    rec = StateRecorder()
    sink = Windows()
    loop = IngestLoop("corrupt", server.url("bad"), settings(fps=None), on_window=sink, on_state=rec).start()
    try:
        rec.wait("streaming", 10)
        # the 12 s clip at 25 fps plays in real time; 6 s must give >= 100 frames whatever the damage
        wait_for(lambda: loop.counters.frames_decoded + loop.counters.corrupt_frames >= 100, 12, "100 frames")
        assert loop.running
        assert "error" not in rec.states()
        assert all(s == (4, 64, 64, 3) for s in sink.shapes)
    finally:
        assert loop.stop()
    assert fault_media["corrupt_counts"]["damaged_packets"] > 10


def test_truncated_file_ends_cleanly_and_loops(fault_media):
    """A file cut in half mid-packet: the readable half is decoded, then the loop restarts or stops cleanly."""
    from tests.faults.tools.media import frame_shapes

    media_frames = len(frame_shapes(fault_media["truncated"]))
    assert 0 < media_frames < int(FAULT_CLIP_SECONDS * 25)

    rec = StateRecorder()
    once = IngestLoop("trunc", str(fault_media["truncated"]), settings(fps=None, loop_files=False, realtime_files=False),
                      on_state=rec)
    once.run()  # returns at the end of the (truncated) file
    assert once.counters.frames_decoded == media_frames
    assert rec.states()[-1] == "stopped" and "error" not in rec.states()

    looped = IngestLoop("trunc2", str(fault_media["truncated"]), settings(fps=None, realtime_files=False)).start()
    try:
        wait_for(lambda: looped.counters.frames_decoded > 2 * media_frames, 20, "a second pass over the file")
        assert looped.running
    finally:
        assert looped.stop()


def test_unopenable_truncated_mp4_retries_with_backoff(fault_media):
    """An MP4 that lost its index (moov) cannot be opened: a named error, retries with backoff, no crash."""
    rec = StateRecorder()
    loop = IngestLoop("trunc_mp4", str(fault_media["truncated_mp4"]), settings(), on_state=rec).start()
    try:
        wait_for(lambda: rec.count("reconnecting") >= 3, 10, "three retries")
        assert "truncated.mp4" in (loop.counters.last_error or "")
        assert loop.running
    finally:
        assert loop.stop()
    delays = rec.retry_delays()
    assert delays == sorted(delays), delays


def test_resolution_change_mid_stream_is_rescaled(fault_media):
    """A source whose frame size changes twice: every frame is decoded and resized to the analysis size."""
    from tests.faults.tools.media import frame_shapes

    shapes = frame_shapes(fault_media["resolution"])
    assert len(set(shapes)) == 2
    sink = Windows()
    rec = StateRecorder()
    loop = IngestLoop("reschange", str(fault_media["resolution"]), settings(fps=None, loop_files=False, realtime_files=False),
                      on_window=sink, on_state=rec)
    loop.run()
    assert loop.counters.frames_decoded == len(shapes) == sum(fault_media["resolution_parts"])
    assert loop.counters.frames_analysed == len(shapes)
    assert len(sink.shapes) == len(shapes) // 4
    assert set(sink.shapes) == {(4, 64, 64, 3)}
    assert "error" not in rec.states()


# ---------------------------------------------------------------------------- scenario 4: credentials, unreachable
@pytest.mark.parametrize("via", ["url", "env"])
def test_wrong_credentials_error_is_clear_scrubbed_and_backed_off(rtsp_server_factory, fault_media, caplog, monkeypatch, via):
    """A camera with the wrong password: per-camera error, no credential anywhere, growing backoff."""
    server = rtsp_server_factory({"cam": fault_media["clean"]}, user=f"{CAM_USER}:{CAM_PASSWORD}")
    caplog.set_level(logging.DEBUG)
    name = f"auth_{via}"
    if via == "url":
        url = f"rtsp://{CAM_USER}:{WRONG_PASSWORD}@127.0.0.1:{server.port}/cam"
    else:
        url = server.url("cam", credentials=False)
        monkeypatch.setenv(f"VAD_CAMERA_AUTH_{via.upper()}_USER", CAM_USER)
        monkeypatch.setenv(f"VAD_CAMERA_AUTH_{via.upper()}_PASSWORD", WRONG_PASSWORD)
    rec = StateRecorder()
    loop = IngestLoop(name, url, settings(), on_state=rec).start()
    try:
        t0 = time.monotonic()
        wait_for(lambda: rec.count("reconnecting") >= 4, 15, "four failed attempts")
        elapsed = time.monotonic() - t0
        stats = loop.stats()
    finally:
        assert loop.stop()
    # no tight loop: 4 attempts take at least the first three backoff delays (0.2 + 0.4 + 0.8 s, -20% jitter)
    assert elapsed >= 0.8 * (0.2 + 0.4 + 0.8) - 0.1, elapsed
    delays = rec.retry_delays()
    assert all(b > a for a, b in zip(delays[:4], delays[1:4])), delays
    assert stats["state"] == "reconnecting"
    assert "401" in stats["last_error"] or "nauthori" in stats["last_error"], stats["last_error"]
    assert "***@" in stats["url"] or via == "env"
    captured = "\n".join([rec.text(), repr(stats), caplog.text])
    assert not find_secrets(captured), find_secrets(captured)


def test_right_credentials_stream(rtsp_server_factory, fault_media, caplog, monkeypatch):
    """The same server with the right credentials (from the environment) streams: the auth fault was the cause."""
    server = rtsp_server_factory({"cam": fault_media["clean"]}, user=f"{CAM_USER}:{CAM_PASSWORD}")
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("VAD_CAMERA_AUTH_OK_USER", CAM_USER)
    monkeypatch.setenv("VAD_CAMERA_AUTH_OK_PASSWORD", CAM_PASSWORD)
    rec = StateRecorder()
    loop = IngestLoop("auth_ok", server.url("cam", credentials=False), settings(), on_state=rec).start()
    try:
        rec.wait("streaming", 10)
        stats = loop.stats()
    finally:
        assert loop.stop()
    assert not find_secrets("\n".join([rec.text(), repr(stats), caplog.text]))


def test_unreachable_host_retries_with_backoff_not_tight_loop(caplog):
    """Connection refused on a closed loopback port: named error, growing backoff, bounded attempt rate."""
    caplog.set_level(logging.DEBUG)
    port = closed_port()
    rec = StateRecorder()
    url = f"rtsp://{CAM_USER}:{CAM_PASSWORD}@127.0.0.1:{port}/cam"
    loop = IngestLoop("unreach", url, settings(backoff_initial_s=0.3, backoff_max_s=1.0), on_state=rec).start()
    try:
        wait_for(lambda: rec.count("reconnecting") >= 5, 10, "five attempts")
        t0 = time.monotonic()
        n0 = loop.counters.reconnects
        wait_for(lambda: loop.counters.reconnects >= n0 + 2, 5, "two more attempts")
        rate = (loop.counters.reconnects - n0) / (time.monotonic() - t0)
        stats = loop.stats()
    finally:
        assert loop.stop()
    assert rate <= 1 / (0.8 * 1.0) + 0.5, f"{rate:.1f} attempts/s at the 1 s backoff cap"
    delays = rec.retry_delays()
    assert delays[0] < delays[1] < delays[2], delays
    assert max(delays) <= 1.0 * 1.2 + 1e-6
    assert f"127.0.0.1:{port}" in stats["last_error"] and "***@" in stats["last_error"]
    assert not find_secrets("\n".join([rec.text(), repr(stats), caplog.text]))


# ------------------------------------------------------------------------------ scenario 1: server restart
def camera_settings(cam) -> IngestSettings:
    """IngestSettings exactly as streaming.camera_actor.CameraActor builds them from a CameraConfig."""
    from streaming.config import CameraConfig

    cfg = cam if isinstance(cam, CameraConfig) else CameraConfig.model_validate(cam)
    return IngestSettings.for_camera(cfg, size=64, window=4)


OUTAGE_S = 10.0
RECOVER_WITHIN_S = 5.0


def test_rtsp_server_killed_and_restarted_10s_later(rtsp_server_factory, fault_media):
    """Kill the RTSP server mid-stream, restart it 10 s later on the same port: `reconnecting` with a growing
    backoff, `streaming` within 5 s of its return, reconnects counted; a camera on another server never stalls."""
    victim = rtsp_server_factory({"cam": fault_media["demo"]})
    other = rtsp_server_factory({"cam": fault_media["demo"]})
    rec = StateRecorder()
    sink_a, sink_b = Windows(), Windows()
    gaps_b: list[float] = []
    last_b = [time.monotonic()]

    def on_b(window) -> bool:
        now = time.monotonic()
        gaps_b.append(now - last_b[0])
        last_b[0] = now
        return sink_b(window)

    a = IngestLoop("victim", victim.url("cam"), camera_settings({"name": "victim", "url": victim.url("cam")}),
                   on_window=sink_a, on_state=rec).start()
    b = IngestLoop("bystander", other.url("cam"), camera_settings({"name": "bystander", "url": other.url("cam")}),
                   on_window=on_b).start()
    try:
        rec.wait("streaming", 10)
        wait_for(lambda: sink_b.shapes, 10, "the bystander's first window")
        gaps_b.clear()
        reconnects0 = a.counters.reconnects
        t_kill = time.monotonic()
        victim.stop()
        rec.wait("reconnecting", READ_TIMEOUT_S + 6, after=t_kill)
        # the outage lasts 10 s by the definition: wait for it, polling that A keeps retrying
        wait_for(lambda: time.monotonic() - t_kill >= OUTAGE_S, OUTAGE_S + 1, "the 10 s outage", every_s=0.2)
        victim.start()
        t_back = time.monotonic()
        t_stream, _, _ = rec.wait("streaming", 30, after=t_back)
        n = len(sink_a.shapes)
        wait_for(lambda: len(sink_a.shapes) > n, 5, "windows after the restart")
    finally:
        assert a.stop() and b.stop()
    recovery = t_stream - t_back
    delays = rec.retry_delays()
    print(f"recovery {recovery:.2f}s after return; retry delays {delays}; bystander max gap {max(gaps_b):.2f}s")
    assert len(delays) >= 3 and all(y > x for x, y in zip(delays[:3], delays[1:3])), delays
    assert a.counters.reconnects - reconnects0 >= 3
    assert recovery <= RECOVER_WITHIN_S, f"streaming {recovery:.1f}s after the server returned (retry delays {delays})"
    # 4-frame windows at 5 fps arrive every 0.8 s; the bystander never waited more than a few windows
    assert gaps_b and max(gaps_b) < 3.0, max(gaps_b)
