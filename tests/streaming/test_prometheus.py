"""streaming/prometheus.py: names, labels, counter syncing and cross-process merging, read back from the text format."""
from __future__ import annotations

import pickle
import urllib.request

import pytest
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.parser import text_string_to_metric_families

from streaming.prometheus import METRIC_NAMES, SnapshotCollector, VadMetrics, camera_label


def samples(body: bytes) -> dict[tuple[str, tuple], float]:
    """Parse an exposition into {(sample name, sorted labels): value}."""
    out = {}
    for fam in text_string_to_metric_families(body.decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(body: bytes, name: str, **labels) -> float:
    return samples(body)[(name, tuple(sorted(labels.items())))]


def test_every_declared_name_is_exposed_with_its_labels():
    m = VadMetrics(version="test")
    m.camera("door")
    m.scorer("cpu").observe_batch(2, 0.1)
    m.camera_bundle.labels("door").info({"bundle": "0123456789ab"})
    m.notify_sink("phone", "cpu")  # streaming/notify/: one sink's series
    fams = {f.name: f for f in text_string_to_metric_families(m.render()[0].decode())}
    exposed = {}
    for fam in fams.values():
        for s in fam.samples:
            base = s.name
            for suffix in ("_bucket", "_count", "_sum", "_created"):
                if base.endswith(suffix) and base.removesuffix(suffix) in METRIC_NAMES:
                    base = base.removesuffix(suffix)
            exposed.setdefault(base, set()).update(k for k in s.labels if k != "le")
    for name, labels in METRIC_NAMES.items():
        assert name in exposed, f"{name} not exposed"
        assert exposed[name] == set(labels), (name, exposed[name])
    for name in exposed:
        if name.endswith("_created"):
            continue
        assert name.startswith("vad_"), name
        assert name in METRIC_NAMES, f"{name} exposed but not declared in METRIC_NAMES"


def test_camera_helpers_update_the_right_series():
    m = VadMetrics()
    cam = m.camera("door")
    cam.frames_decoded.inc(5)
    cam.set_state("streaming")
    cam.observe_score(0.8, warm=False)
    cam.set_alert(True)
    cam.set_alert(True)  # still the same alert: counted once
    body = m.render()[0]
    assert value(body, "vad_frames_decoded_total", camera="door") == 5
    assert value(body, "vad_camera_up", camera="door") == 1
    assert value(body, "vad_camera_state", camera="door", vad_camera_state="streaming") == 1
    assert value(body, "vad_camera_state", camera="door", vad_camera_state="connecting") == 0
    assert value(body, "vad_anomaly_score", camera="door") == pytest.approx(0.8)
    assert value(body, "vad_normaliser_warm", camera="door") == 0
    assert value(body, "vad_alerts_total", camera="door") == 1
    cam.set_alert(False)
    cam.set_state("reconnecting")
    cam.set_alert(True)
    body = m.render()[0]
    assert value(body, "vad_alerts_total", camera="door") == 2
    assert value(body, "vad_camera_up", camera="door") == 0
    with pytest.raises(ValueError, match="door.*'paused'"):
        cam.set_state("paused")


def test_sync_totals_adds_deltas_and_survives_reporter_restart():
    m = VadMetrics()
    cam = m.camera("gate")
    cam.sync_totals(frames_decoded=100, reconnects=1, frames_dropped=16, corrupt_frames=2)
    cam.sync_totals(frames_decoded=150, reconnects=1)
    cam.sync_totals(frames_decoded=20)  # the actor restarted: its counter began again at 0
    body = m.render()[0]
    assert value(body, "vad_frames_decoded_total", camera="gate") == 170
    assert value(body, "vad_reconnects_total", camera="gate") == 1
    assert value(body, "vad_frames_dropped_total", camera="gate", reason="scorer_behind") == 16
    assert value(body, "vad_frames_dropped_total", camera="gate", reason="corrupt") == 2
    with pytest.raises(ValueError, match="gate.*'fps'"):
        cam.sync_totals(fps=3)
    with pytest.raises(ValueError, match="reconnects must be >= 0"):
        cam.sync_totals(reconnects=-1)


@pytest.mark.parametrize("bad", ["rtsp://user:pw@cam/stream", "admin@10.0.0.1", "", "  "])
def test_camera_label_refuses_urls_without_echoing_them(bad):
    with pytest.raises(ValueError) as err:
        camera_label(bad)
    if "pw" in bad:
        assert "pw" not in str(err.value)


def test_remove_camera_drops_all_its_series():
    m = VadMetrics()
    m.camera("a").set_state("streaming")
    m.camera("b").set_state("streaming")
    m.remove_camera("a")
    body = m.render()[0].decode()
    assert 'camera="a"' not in body
    assert 'camera="b"' in body
    assert m.cameras() == ["b"]
    m.remove_camera("a")  # idempotent


def test_scorer_metrics():
    m = VadMetrics()
    s = m.scorer("cpu")
    s.observe_batch(8, 0.5)
    s.observe_batch(3, 0.2)
    s.set_busy(1.7)
    body = m.render()[0]
    assert value(body, "vad_scorer_windows_total", scorer="cpu") == 11
    assert value(body, "vad_scorer_batch_size_count", scorer="cpu") == 2
    assert value(body, "vad_scorer_batch_size_bucket", scorer="cpu", le="4.0") == 1
    assert value(body, "vad_scorer_busy_ratio", scorer="cpu") == 1.0
    with pytest.raises(ValueError, match="batch size must be >= 1, got 0"):
        s.observe_batch(0, 0.1)


def test_snapshot_collector_merges_families_from_several_processes():
    """Two actors each own a camera; their pickled snapshots merge into one valid exposition."""
    actors = []
    for name in ("a", "b"):
        m = VadMetrics(version="x")
        m.camera(name).frames_decoded.inc(7 if name == "a" else 9)
        m.camera(name).score_latency.observe(0.3)
        actors.append(pickle.loads(pickle.dumps(m.snapshot())))
    app = VadMetrics(version="x")
    app.scorer("cpu").observe_batch(2, 0.1)
    merged = app.remote
    merged.update("actor-a", actors[0])
    merged.update("actor-b", actors[1])
    body = app.render()[0]
    assert value(body, "vad_frames_decoded_total", camera="a") == 7
    assert value(body, "vad_frames_decoded_total", camera="b") == 9
    assert value(body, "vad_score_latency_seconds_count", camera="b") == 1
    assert value(body, "vad_scorer_windows_total", scorer="cpu") == 2
    # one HELP/TYPE per family despite three sources (the app's own registry defines the same names)
    text = body.decode()
    assert text.count("# TYPE vad_frames_decoded_total counter") == 1
    assert text.count("# TYPE vad_build_info gauge") == 1
    merged.remove("actor-a")
    assert 'camera="a"' not in app.render()[0].decode()


def test_remote_series_win_over_the_apps_zero_children():
    """The app creates all of a camera's children at zero; the actor's real histogram must be what is shown."""
    actor = VadMetrics()
    for _ in range(5):
        actor.camera("door").decode_latency.observe(0.003)
    app = VadMetrics()
    app.camera("door").sync_totals(frames_decoded=80)
    app.remote.update("door-actor", [f for f in actor.snapshot() if f.name == "vad_decode_latency_seconds"])
    body = app.render()[0]
    assert value(body, "vad_decode_latency_seconds_count", camera="door") == 5
    assert value(body, "vad_frames_decoded_total", camera="door") == 80


def test_a_standalone_snapshot_collector_merges_sources():
    sc = SnapshotCollector()
    for name in ("a", "b"):
        m = VadMetrics()
        m.camera(name).reconnects.inc()
        sc.update(name, m.snapshot())
    fams = {f.name: f for f in sc.collect()}
    cams = {s.labels["camera"] for s in fams["vad_reconnects"].samples if s.name == "vad_reconnects_total"}
    assert cams == {"a", "b"}


def test_served_over_http_on_loopback():
    """prometheus_client's own server renders the registry; the exposition parses."""
    m = VadMetrics()
    m.camera("door").frames_scored.inc(16)
    server, thread = start_http_server(0, addr="127.0.0.1", registry=m.registry)
    try:
        port = server.server_port
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
        assert value(body, "vad_frames_scored_total", camera="door") == 16
    finally:
        server.shutdown()
        server.server_close()


def test_registries_are_independent():
    a, b = VadMetrics(), VadMetrics(registry=CollectorRegistry())
    a.camera("x").frames_decoded.inc()
    assert 'camera="x"' not in b.render()[0].decode()
