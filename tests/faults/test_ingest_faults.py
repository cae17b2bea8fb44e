"""Faults at the camera edge (scenarios 1, 2, 3, 4), against streaming.ingest.IngestLoop with real sources:
the GStreamer RTSP server on 127.0.0.1, a loopback proxy that stalls or cuts the stream, damaged files.
The scenarios themselves live in tests/faults/scenarios.py (bench/faults.py runs them too); these tests assert."""
from __future__ import annotations

import pytest

from streaming.ingest import IngestLoop, IngestSettings
from streaming.sources import StreamTimeoutError
from tests.faults import scenarios
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


# ------------------------------------------------------------------------------------------- scenario 2: stall
def test_stall_before_first_byte_times_out_within_bound():
    """A server that accepts and then sends nothing: the open times out within its bound, then backoff."""
    r = scenarios.stall_before_first_byte(settings())
    assert isinstance(r.open_error, StreamTimeoutError), r.open_error
    assert OPEN_TIMEOUT_S * 0.8 <= r.open_s <= OPEN_TIMEOUT_S + 1.5, r.open_s
    assert "open_timeout_s" in str(r.open_error)
    assert "timed out" in r.reconnect_detail
    assert r.stopped, "stop() did not end the loop within the read timeout + 1 s"
    assert r.stop_s <= OPEN_TIMEOUT_S + 1.5
    assert not r.threads_left
    assert r.accepted >= 1


def test_midstream_stall_fires_read_timeout_and_recovers(rtsp_server_factory, fault_media):
    """A streaming camera whose bytes stop (connection still open): read timeout, reconnect, then streaming."""
    server = rtsp_server_factory({"cam": fault_media["clean"]})
    r = scenarios.midstream_stall(server.port, settings(), attempts=3)
    # the read timeout fires within its bound (plus one frame interval and scheduling slack)
    assert r.fired_after_s <= READ_TIMEOUT_S + 1.0, (r.fired_after_s, r.detail)
    assert "read_timeout_s" in r.detail or "timed out" in r.detail, r.detail
    assert r.disconnects >= 1
    # while stalled, new connections stall too: attempts keep failing, with a growing backoff
    assert r.retry_delays[1] > r.retry_delays[0], r.retry_delays
    assert r.stopped
    assert r.stop_s <= READ_TIMEOUT_S + 1.5
    assert not r.threads_left, "an ingest thread is still blocked after stop()"
    assert r.final_state == "stopped"


# ------------------------------------------------------------------------------------- scenario 3: corrupt
def test_corrupt_rtsp_stream_keeps_running(rtsp_server_factory, fault_media):
    """H.264 with flipped payload bytes, served over RTSP: frames are concealed or skipped and counted."""
    server = rtsp_server_factory({"bad": fault_media["corrupt"]})
    # the 12 s clip at 25 fps plays in real time; 6 s must give >= 100 frames whatever the damage
    r = scenarios.corrupt_stream(server.url("bad"), settings(fps=None), min_frames=100)
    assert r.running
    assert "error" not in r.states
    assert all(s == (4, 64, 64, 3) for s in r.window_shapes)
    assert r.stopped
    assert fault_media["corrupt_counts"]["damaged_packets"] > 10


def test_rtp_payloads_damaged_in_flight_keep_the_stream_running(rtsp_server_factory, fault_media):
    """A clean clip whose RTP payloads a lossy link damages on the way (the proxy flips bytes in 30 % of the
    interleaved packets, framing intact): the session survives, frames keep coming, nothing reconnects."""
    server = rtsp_server_factory({"clean": fault_media["clean"]})
    with FaultProxy(server.port) as proxy:
        proxy.corrupt(0.3)
        r = scenarios.corrupt_stream(proxy.url("clean"), settings(fps=None), min_frames=100)
        assert proxy.corrupted_packets > 10
        assert proxy.accepted == 1  # one session throughout: no reconnect
    assert r.running
    assert "error" not in r.states and "reconnecting" not in r.states
    assert all(s == (4, 64, 64, 3) for s in r.window_shapes)
    assert r.stopped


def test_truncated_file_ends_cleanly_and_loops(fault_media):
    """A file cut in half mid-packet: the readable half is decoded, then the loop restarts or stops cleanly."""
    r = scenarios.truncated_file(fault_media["truncated"], settings())
    assert 0 < r.readable < int(FAULT_CLIP_SECONDS * 25)
    assert r.decoded == r.readable
    assert r.states[-1] == "stopped" and "error" not in r.states
    assert r.looped_running
    assert r.looped_stopped


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
    r = scenarios.resolution_change(fault_media["resolution"], settings())
    assert len(set(r.source_shapes)) == 2
    assert r.decoded == len(r.source_shapes) == sum(fault_media["resolution_parts"])
    assert r.analysed == len(r.source_shapes)
    assert len(r.window_shapes) == len(r.source_shapes) // 4
    assert set(r.window_shapes) == {(4, 64, 64, 3)}
    assert "error" not in r.states


# ---------------------------------------------------------------------------- scenario 4: credentials, unreachable
@pytest.mark.parametrize("via", ["url", "env"])
def test_wrong_credentials_error_is_clear_scrubbed_and_backed_off(rtsp_server_factory, fault_media, monkeypatch, via):
    """A camera with the wrong password: per-camera error, no credential anywhere, growing backoff."""
    server = rtsp_server_factory({"cam": fault_media["clean"]}, user=f"{CAM_USER}:{CAM_PASSWORD}")
    if via == "url":
        url = f"rtsp://{CAM_USER}:{WRONG_PASSWORD}@127.0.0.1:{server.port}/cam"
    else:
        url = server.url("cam", credentials=False)
        monkeypatch.setenv(f"VAD_CAMERA_AUTH_{via.upper()}_USER", CAM_USER)
        monkeypatch.setenv(f"VAD_CAMERA_AUTH_{via.upper()}_PASSWORD", WRONG_PASSWORD)
    r = scenarios.held_error(f"auth_{via}", url, settings(), attempts=4, within_s=15)
    assert r.stopped
    # no tight loop: 4 attempts take at least the first three backoff delays (0.2 + 0.4 + 0.8 s, -20% jitter)
    assert r.attempts_s >= 0.8 * (0.2 + 0.4 + 0.8) - 0.1, r.attempts_s
    delays = r.retry_delays
    assert all(b > a for a, b in zip(delays[:4], delays[1:4])), delays
    assert r.stats["state"] == "reconnecting"
    assert "401" in r.stats["last_error"] or "nauthori" in r.stats["last_error"], r.stats["last_error"]
    assert "***@" in r.stats["url"] or via == "env"
    assert not find_secrets(r.captured), find_secrets(r.captured)


def test_right_credentials_stream(rtsp_server_factory, fault_media, caplog, monkeypatch):
    """The same server with the right credentials (from the environment) streams: the auth fault was the cause."""
    import logging

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


def test_unreachable_host_retries_with_backoff_not_tight_loop():
    """Connection refused on a closed loopback port: named error, growing backoff, bounded attempt rate."""
    port = closed_port()
    url = f"rtsp://{CAM_USER}:{CAM_PASSWORD}@127.0.0.1:{port}/cam"
    r = scenarios.held_error("unreach", url, settings(backoff_initial_s=0.3, backoff_max_s=1.0), attempts=5,
                             within_s=10, extra_attempts=2)
    assert r.stopped
    assert r.rate_per_s <= 1 / (0.8 * 1.0) + 0.5, f"{r.rate_per_s:.1f} attempts/s at the 1 s backoff cap"
    delays = r.retry_delays
    assert delays[0] < delays[1] < delays[2], delays
    assert max(delays) <= 1.0 * 1.2 + 1e-6
    assert f"127.0.0.1:{port}" in r.stats["last_error"] and "***@" in r.stats["last_error"]
    assert not find_secrets(r.captured)


# ------------------------------------------------------------------------------ scenario 1: server restart
RECOVER_WITHIN_S = 5.0


def test_rtsp_server_killed_and_restarted_10s_later(rtsp_server_factory, fault_media):
    """Kill the RTSP server mid-stream, restart it 10 s later on the same port: `reconnecting` with a growing
    backoff, `streaming` within 5 s of its return, reconnects counted; a camera on another server never stalls."""
    victim = rtsp_server_factory({"cam": fault_media["demo"]})
    other = rtsp_server_factory({"cam": fault_media["demo"]})
    r = scenarios.server_restart(victim, other, outage_s=10.0)
    delays = r.retry_delays
    print(f"recovery {r.recovery_s:.2f}s after return; retry delays {delays}; bystander max gap "
          f"{r.bystander_max_gap_s:.2f}s")
    assert r.stopped
    assert len(delays) >= 3 and all(y > x for x, y in zip(delays[:3], delays[1:3])), delays
    assert r.reconnects >= 3
    assert r.recovery_s <= RECOVER_WITHIN_S, f"streaming {r.recovery_s:.1f}s after the server returned (retry delays {delays})"
    # 4-frame windows at 5 fps arrive every 0.8 s; the bystander never waited more than a few windows
    assert r.bystander_max_gap_s < 3.0, r.bystander_max_gap_s
