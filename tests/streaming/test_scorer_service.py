"""streaming/scorer_service.py and camera_alerts.py without Ray: demo feed -> batches -> running scores -> alerts -> SQLite events.

The demo bundle is trained on the demo feed's normal part; the feed has a vehicle crossing at 20.0-21.6 s
and 40.0-41.6 s. At 10 analysed fps those are frames 200-215 and 400-415.
"""
from __future__ import annotations

import io
import time
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from offline.data.readers import open_dataset, read_frames
from streaming.demo_bundle import demo_frames
from streaming.scorer_service import ScorerService
from streaming.snapshot import EVIDENCE_MIN_SIDE
from tests.streaming.service_support import demo_bundle, wait_for

FPS, T = 10.0, 16


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return demo_bundle(tmp_path_factory.mktemp("svc"))


def feed(service: ScorerService, camera: str, seconds: float, size: int, t0: float) -> np.ndarray:
    frames, labels = demo_frames(seconds, FPS, size)
    n = len(frames) // T * T
    for s in range(0, n, T):
        idx = np.arange(s, s + T)
        service.submit(SimpleNamespace(camera=camera, frames=frames[s : s + T], indices=idx, wall_s=t0 + idx / FPS))
    return labels[:n]


def test_alert_opens_on_the_anomaly_only_and_events_survive_a_restart(bundle, tmp_path):
    db = tmp_path / "events.db"
    alerts = {"threshold": 0.99, "min_duration_s": 0.5, "hysteresis": 0.1}
    svc = ScorerService("cpu", "cpu", str(bundle), {"path": str(db)}, alerts, max_batch=8, max_wait_ms=20, max_pending=64)
    svc.set_camera("demo", fps=FPS)  # the analysis rate the feed is cut at: the clips' frame rate
    t0 = time.time() - 60
    labels = feed(svc, "demo", 45.0, svc.detector.size, t0)
    n_windows = len(labels) // T
    wait_for(lambda: svc.stats()["cameras"]["demo"]["windows_scored"] == n_windows, 120, "all windows scored")
    stats = svc.stats()
    cam = stats["cameras"]["demo"]
    assert cam["frames_scored"] == len(labels) and cam["windows_dropped"] == 0 and cam["warm"]
    assert stats["batches"] >= 1 and stats["mean_batch"] >= 1 and stats["errors"] == 0, stats

    events = sorted(svc.list_events(camera="demo"), key=lambda e: e["start_s"])
    anomalous = np.flatnonzero(labels)
    assert len(events) == 2, events  # one per vehicle crossing, none in the normal footage
    for ev, lo in zip(events, (200, 400)):
        frame0 = round((ev["start_s"] - t0) * FPS)
        assert lo - 8 <= frame0 <= lo + 16 and lo <= ev["peak_frame"] < lo + 16, ev
        assert ev["peak_frame"] in anomalous and ev["peak_score"] >= 0.99 and ev["status"] == "closed"
        jpeg = svc.get_snapshot(ev["id"])
        img = Image.open(io.BytesIO(jpeg))
        side = svc.detector.size * -(-EVIDENCE_MIN_SIDE // svc.detector.size)  # enlarged (nearest) for viewing
        assert img.format == "JPEG" and img.width == side and img.height > side  # a header band above the frame

    # each event keeps the frames of the windows it covered (a window of context first) as an H.264 clip
    wait_for(lambda: all(svc.get_event(ev["id"])["clip"] for ev in events), 60, "the events' clips")
    frames, _ = demo_frames(45.0, FPS, svc.detector.size)
    for ev in events:
        (clip,) = open_dataset(svc.clips.path(ev["id"])).train
        got = np.stack(list(read_frames(clip, size=None))).astype(int)
        first = round((ev["start_s"] - t0) * FPS) - (T - 1)
        assert clip.fps == FPS and len(got) >= (ev["end_s"] - ev["start_s"]) * FPS + T, (len(got), ev)
        assert np.abs(got - frames[first : first + len(got)]).mean() < 3.0  # those very frames, in order
        assert svc.get_clip(ev["id"]) == svc.clips.path(ev["id"]).read_bytes()

    # the page's data: the live chart's recent scores, the live frame, each event's stored score trace
    hist = svc.score_history("demo", 600.0)
    t = np.array([p[0] for p in hist["points"]])
    assert hist["threshold"] == 0.99 and len(labels) - T <= len(t) <= len(labels)  # every warm frame
    assert np.all(np.diff(t) > 0) and t[-1] == pytest.approx(t0 + (len(labels) - 1) / FPS, abs=1e-3)
    assert len(svc.score_history("demo", 5.0)["points"]) == 0  # the feed's clock ended 15 s ago
    assert svc.score_history("nobody", 60.0) is None and svc.latest_frame("nobody") is None
    live = Image.open(io.BytesIO(svc.latest_frame("demo")))
    assert live.format == "JPEG" and live.width >= 256
    first, second = (svc.get_trace(ev["id"]) for ev in events)
    for ev, trace, after in ((events[0], first, 5.0), (events[1], second, 0.0)):  # the second closed near the end
        tt = [p[0] for p in trace["points"]]
        assert trace["threshold"] == 0.99 and max(p[1] for p in trace["points"]) == pytest.approx(ev["peak_score"], abs=1e-4)
        assert tt[0] == pytest.approx(ev["start_s"] - 10.0, abs=0.11)  # 10 s before the alert ...
        assert tt[-1] >= ev["end_s"] + after - 0.11, (ev, tt[-1])  # ... to 5 s after it once that is scored
    svc.stop()

    again = ScorerService("cpu", "cpu", str(bundle), {"path": str(db)}, alerts)
    try:
        assert again.close_dangling() == 0
        assert [e["id"] for e in sorted(again.list_events(), key=lambda e: e["start_s"])] == [e["id"] for e in events]
        assert again.get_snapshot(events[0]["id"]) == svc.get_snapshot(events[0]["id"])
    finally:
        again.stop()


def test_removed_camera_closes_its_open_alert(bundle, tmp_path):
    svc = ScorerService("cpu", "cpu", str(bundle), {"path": str(tmp_path / "e.db")}, {"threshold": 0.99}, max_pending=64)
    svc.set_camera("cam")
    t0 = time.time() - 30
    frames, _ = demo_frames(21.0, FPS, svc.detector.size)  # ends while the vehicle is still in view
    n = len(frames) // T * T
    for s in range(0, n, T):
        idx = np.arange(s, s + T)
        svc.submit(SimpleNamespace(camera="cam", frames=frames[s : s + T], indices=idx, wall_s=t0 + idx / FPS))
    wait_for(lambda: svc.stats()["cameras"]["cam"]["alert_open"], 60, "the alert to open")
    svc.remove_camera("cam")
    (ev,) = svc.list_events()
    assert ev["status"] == "closed" and ev["reason"] == "removed" and ev["has_snapshot"]
    assert "cam" not in svc.stats()["cameras"]
    svc.stop()
