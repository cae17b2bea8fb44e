"""Notifications from the scorer (streaming/scorer_service.py, without Ray) on the demo feed, to a real Mosquitto
broker and a real HTTP receiver: an alert arrives as new / update / end with its snapshot; the broker killed
mid-alert (and the scorer restarted meanwhile) delivers everything once it is back, no sequence number twice; a
receiver that hangs does not slow scoring.

The demo bundle (built once per session, tests/streaming/service_support.py) alerts on the vehicle crossing at
20.0-21.6 s; the feed is cut at 10 fps from 12 s to 26.4 s (9 windows of 16 frames), as in test_scorer_service.py.
"""
from __future__ import annotations

import io
import logging
import time
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from streaming.demo_bundle import demo_frames
from streaming.scorer_service import ScorerService
from tests.streaming.notify.conftest import Listener, pause, wait
from tests.streaming.service_support import demo_bundle

FPS, T = 10.0, 16
START, STOP = 120, 264  # frames: 12.0 s to 26.4 s
ALERTS = {"threshold": 0.99, "min_duration_s": 0.5, "hysteresis": 0.1}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return demo_bundle(tmp_path_factory.mktemp("svc"))


def windows(size: int, t0: float | None) -> list[SimpleNamespace]:
    """The feed's windows; frame times from `t0`, or (None) stamped when each is submitted (a live camera)."""
    frames, _ = demo_frames(STOP / FPS, FPS, size)
    out = []
    for s in range(START, STOP, T):
        idx = np.arange(s, s + T)
        out.append(SimpleNamespace(camera="demo", frames=frames[s : s + T], indices=idx,
                                   wall_s=None if t0 is None else t0 + idx / FPS))
    return out


def feed(svc: ScorerService, wins: list, after=lambda i: None, live: bool = False) -> list[float]:
    """Submit the windows one at a time, each once the previous one is scored; returns each window's latency
    (now minus its newest frame's time, when scored). `live`: frames are stamped from now on at the feed's rate
    and each window is submitted when its newest frame is due, like a camera's."""
    latencies = []
    base = svc.stats()["cameras"].get("demo", {}).get("windows_scored", 0)
    t0 = time.time() + 0.1
    for i, w in enumerate(wins):
        if live:
            w = SimpleNamespace(**{**w.__dict__, "wall_s": t0 + (w.indices - START) / FPS})
            pause(max(0.0, w.wall_s[-1] - time.time()))  # the camera's frames arrive in real time
        svc.submit(w)
        wait(lambda: svc.stats()["cameras"].get("demo", {}).get("windows_scored", 0) == base + i + 1, 60, f"window {i}")
        latencies.append(svc.stats()["cameras"]["demo"]["latency_s"])
        after(i)
    return latencies


def service(bundle, tmp_path, sinks, **notify) -> ScorerService:
    svc = ScorerService("cpu", "cpu", str(bundle), {"path": str(tmp_path / "events.db"), "clip_seconds": 0}, ALERTS,
                        max_batch=4, max_wait_ms=10, notify={"sinks": sinks, "update_interval_s": 0.5, **notify})
    svc.set_camera("demo", fps=FPS)
    return svc


def mqtt_sink(broker, **extra) -> dict:
    return {"type": "mqtt", "name": "home", "host": "127.0.0.1", "port": broker.port, "username_env": "VAD_MQTT_USER",
            "password_env": "VAD_MQTT_PASSWORD", "timeout_s": 3, **extra}


@pytest.fixture
def mqtt_env(monkeypatch):
    def set_for(broker):
        monkeypatch.setenv("VAD_MQTT_USER", broker.user)
        monkeypatch.setenv("VAD_MQTT_PASSWORD", broker.password)
    return set_for


def assert_jpeg(data: bytes) -> None:
    img = Image.open(io.BytesIO(data))
    img.load()
    assert img.format == "JPEG" and img.width >= 64


def test_an_alert_arrives_as_new_updates_end_and_its_snapshot(bundle, tmp_path, mosquitto, mqtt_env, receiver):
    broker = mosquitto()
    mqtt_env(broker)
    listener = Listener(broker, ["vad/#", "homeassistant/#"])
    svc = service(bundle, tmp_path, [mqtt_sink(broker, discovery=True),
                                     {"type": "webhook", "name": "hook", "url": receiver.url}],
                  base_url="http://vad.lan:8000")
    try:
        svc.camera_state("demo", "streaming")
        feed(svc, windows(svc.detector.size, time.time() - 60))
        (ev,) = svc.list_events(camera="demo")
        assert ev["status"] == "closed"
        wait(lambda: [m.json()["type"] for m in listener.on("vad/events")][-1:] == ["end"], 30, "the end over MQTT")
        msgs = [m.json() for m in listener.on("vad/events")]
        types = [m["type"] for m in msgs]
        assert types[0] == "new" and types[-1] == "end" and "update" in types and set(types[1:-1]) == {"update"}
        assert all(m["event_id"] == ev["id"] and m["camera"] == "demo" and m["threshold"] == 0.99 for m in msgs)
        assert msgs[-1]["peak_score"] == pytest.approx(ev["peak_score"], abs=1e-5)
        assert msgs[-1]["end_s"] == pytest.approx(ev["end_s"], abs=1e-3) and msgs[-1]["reason"] == "score"
        assert msgs[0]["links"]["clip"] == f"http://vad.lan:8000/events/{ev['id']}/clip"
        assert [m["duration_s"] for m in msgs] == sorted(m["duration_s"] for m in msgs)
        snaps = listener.on("vad/demo/snapshot")
        for s in snaps:
            assert_jpeg(s.payload)
        assert snaps[-1].payload == svc.get_snapshot(ev["id"])  # the last one sent is the event's own JPEG
        assert [m.payload for m in listener.on("vad/demo/anomaly")] == [b"OFF", b"ON", b"OFF"]
        assert listener.on("vad/demo/score") and listener.on("vad/demo/available")[-1].payload == b"online"
        assert {m.topic.split("/")[1] for m in listener.messages if m.topic.startswith("homeassistant/")} == {
            "binary_sensor", "sensor", "image"}

        wait(lambda: receiver.posts and receiver.posts[-1][0].get("x-vad-kind") in ("event", "snapshot")
             and any(b'"end"' in body for _, body in receiver.posts), 30, "the end over the webhook")
        posts = receiver.posts
        kinds = [h["x-vad-kind"] for h, _ in posts]
        assert set(kinds) == {"event", "snapshot"} and kinds[0] == "event"
        for h, body in posts:
            if h["x-vad-kind"] == "snapshot":
                assert h["content-type"] == "image/jpeg" and h["x-vad-event-id"] == str(ev["id"])
                assert_jpeg(body)
            else:
                assert h["content-type"] == "application/json"
        seqs = [int(h["x-vad-seq"]) for h, _ in posts]
        assert seqs == sorted(set(seqs))  # in order, none twice
        st = svc.stats()["notify"]
        wait(lambda: all(s["outbox"] == 0 for s in svc.stats()["notify"].values()), 10, "outboxes drained")
        assert st["home"]["state"] == "up" and st["hook"]["state"] == "up"
    finally:
        svc.stop()
        listener.close()


def test_broker_killed_mid_alert_then_back_delivers_everything_once(bundle, tmp_path, mosquitto, mqtt_env):
    broker = mosquitto()
    mqtt_env(broker)
    listener = Listener(broker, ["vad/#"], v5=False)  # its session (and what is queued for it) survives the restart
    svc = service(bundle, tmp_path, [mqtt_sink(broker, keepalive_s=5)])
    svc.notifier.sinks[0].delivery.backoff.max_s = 1.0  # retries every second at most, for the test's sake
    wins = windows(svc.detector.size, time.time() - 60)
    killed = []

    def kill_at_open(i: int) -> None:
        if not killed and svc.list_events(camera="demo", status="open"):
            wait(lambda: listener.on("vad/events"), 20, "the new message before the kill")
            broker.stop()
            killed.append(i)

    try:
        feed(svc, wins, after=kill_at_open)
        assert killed, "the alert never opened"
        (ev,) = svc.list_events(camera="demo")
        assert ev["status"] == "closed"
        wait(lambda: svc.stats()["notify"]["home"]["state"] == "down", 30, "the sink seen down")
        assert svc.stats()["notify"]["home"]["outbox"] >= 2  # at least the end and the anomaly OFF wait
    finally:
        svc.stop()
    # the scorer restarts while the broker is still down: the outbox is in the events database
    again = service(bundle, tmp_path, [mqtt_sink(broker)])
    try:
        assert again.stats()["notify"]["home"]["outbox"] >= 2
        pause(1.0)  # a few refused connections
        broker.start()
        wait(lambda: again.stats()["notify"]["home"]["outbox"] == 0, 60, "outbox drained after the broker returned")
        wait(lambda: "end" in [m.json()["type"] for m in listener.on("vad/events")], 30, "the end")
        events = [m.json() for m in listener.on("vad/events")]
        assert events[0]["type"] == "new" and {e["event_id"] for e in events} == {ev["id"]}
        # QoS 1 is at-least-once: a message the broker took just before it died (its acknowledgement lost with it)
        # comes again, with its sequence number. A receiver drops a seq it has seen: what is left is each message
        # once, in order. No two different messages share a sequence number.
        by_seq: dict[int, dict] = {}
        for e in events:
            assert by_seq.setdefault(e["seq"], e) == e, (e, by_seq[e["seq"]])
        once = [by_seq[s] for s in sorted(by_seq)]
        assert [e["type"] for e in once][0] == "new" and [e["type"] for e in once][-1] == "end"
        assert set(e["type"] for e in once[1:-1]) <= {"update"} and listener.on("vad/demo/snapshot")
        assert listener.on("vad/demo/anomaly")[-1].payload == b"OFF"
    finally:
        again.stop()
        listener.close()


def test_a_hanging_receiver_does_not_slow_scoring(bundle, tmp_path, receiver, caplog):
    caplog.set_level(logging.WARNING, logger="streaming.notify")
    receiver.hang.set()  # accepts each request and never answers
    svc = service(bundle, tmp_path, [{"type": "webhook", "name": "hook", "url": receiver.url, "timeout_s": 3}])
    try:
        latencies = feed(svc, windows(svc.detector.size, None), live=True)
        (ev,) = svc.list_events(camera="demo")
        st = svc.stats()["notify"]["hook"]
        assert st["outbox"] >= 2 and st["sent"] == 0
        # scoring never waited for the receiver: every window scored well within one webhook timeout
        assert max(latencies) < 2.0, latencies
        wait(lambda: svc.stats()["notify"]["hook"]["state"] == "slow", 20, "the sink seen slow")
        wait(lambda: svc.stats()["notify"]["hook"]["failures"] >= 2, 30, "a retry")  # retried ...
        said = [r.getMessage() for r in caplog.records if r.name.startswith("streaming.notify")]
        assert len([s for s in said if ": slow (" in s]) == 1, said  # ... and said once
        assert not any(receiver.url in s for s in said)
        receiver.hang.clear()
        receiver.release.set()
        wait(lambda: svc.stats()["notify"]["hook"]["outbox"] == 0, 60, "delivered once the receiver answers")
        seqs = [int(h["x-vad-seq"]) for h, _ in receiver.posts]
        assert seqs == sorted(set(seqs)) and any(b'"end"' in body for _, body in receiver.posts)
        assert all(b"event_id" in body for h, body in receiver.posts if h["x-vad-kind"] == "event")
        assert ev["id"] in {int(h["x-vad-event-id"]) for h, _ in receiver.posts}
    finally:
        svc.stop()
