"""streaming/notify/mqtt_sink.py and delivery.py against a real Mosquitto broker (password file; one with TLS)."""
from __future__ import annotations

import json
import logging

from streaming.notify.dispatcher import Notifier
from streaming.notify.messages import EventInfo
from streaming.notify.settings import NotifyConfig
from streaming.prometheus import VadMetrics
from tests.streaming.notify.conftest import PASSWORD, Listener, wait
from tests.streaming.notify.test_messages import REQUIRED


def mqtt_notifier(tmp_path, broker, metrics=None, **sink) -> Notifier:
    spec = {"type": "mqtt", "name": "home", "host": "127.0.0.1", "port": broker.port, "username_env": "VAD_MQTT_USER",
            "password_env": "VAD_MQTT_PASSWORD", "timeout_s": 3, **sink}
    cfg = NotifyConfig.model_validate({"sinks": [spec], "base_url": "http://vad.lan:8000"})
    return Notifier(cfg, tmp_path / "events.db", "cpu", metrics)


def test_events_states_and_discovery_reach_a_password_protected_broker(tmp_path, mosquitto, monkeypatch):
    broker = mosquitto()
    monkeypatch.setenv("VAD_MQTT_USER", broker.user)
    monkeypatch.setenv("VAD_MQTT_PASSWORD", broker.password)
    listener = Listener(broker, ["vad/#", "homeassistant/#"])
    metrics = VadMetrics()
    n = mqtt_notifier(tmp_path, broker, metrics, discovery=True)
    try:
        n.camera_state("gate", "streaming")
        n.event("opened", EventInfo(5, "gate", 100.0, 0.95, 100.0, 0.9), lambda: b"\xff\xd8snap", 100.0)
        n.score("gate", 0.95, 100.0)
        n.event("closed", EventInfo(5, "gate", 100.0, 0.95, 100.0, 0.9, end_s=102.0, reason="score"), lambda: b"", 102)
        wait(lambda: [m.json()["type"] for m in listener.on("vad/events")] == ["new", "end"], 20, "new and end")
        new, end = listener.on("vad/events")
        assert new.json()["links"]["snapshot"] == "http://vad.lan:8000/events/5/snapshot"
        assert new.content_type == "application/json" and new.props["origin"] == "cpu"
        assert int(new.props["seq"]) == new.json()["seq"] < end.json()["seq"] and end.json()["duration_s"] == 2.0
        (snap,) = listener.on("vad/gate/snapshot")
        assert snap.payload == b"\xff\xd8snap" and snap.props["event_id"] == "5" and snap.content_type == "image/jpeg"
        assert [m.payload for m in listener.on("vad/gate/anomaly")] == [b"OFF", b"ON", b"OFF"]
        assert [m.payload for m in listener.on("vad/gate/score")] == [b"0.9500"]
        assert [m.payload for m in listener.on("vad/gate/state")] == [b"streaming"]
        assert listener.on("vad/available")[-1].payload == b"online"
        configs = {m.topic: m for m in listener.messages if m.topic.startswith("homeassistant/")}
        assert len(configs) == 4  # sent when the camera appeared and again on each connection (birth)
        for m in configs.values():
            assert "seq" not in m.json()  # the payload is exactly Home Assistant's schema (the seq is a property)
            component = m.topic.split("/")[1]
            assert REQUIRED[component] <= set(m.json()) and m.json()["device"]["identifiers"] == ["vad_gate"]
        wait(lambda: n.status()["home"]["outbox"] == 0, 10, "outbox drained")
        assert n.status()["home"]["state"] == "up"
        text = metrics.render()[0].decode()
        assert 'vad_notify_outbox_depth{scorer="cpu",sink="home"} 0.0' in text
        assert 'vad_notify_sink_up{scorer="cpu",sink="home"} 1.0' in text
    finally:
        n.stop()
        listener.close()
    # a late subscriber sees the retained state topics, and the service marked offline at its stop
    late = Listener(broker, ["vad/#"], client_id="late")
    try:
        wait(lambda: late.on("vad/available") and late.on("vad/gate/snapshot"), 10, "retained topics")
        assert late.on("vad/available")[-1].payload == b"offline" and late.on("vad/gate/anomaly")[-1].payload == b"OFF"
        assert late.on("vad/gate/snapshot")[-1].retain
    finally:
        late.close()


def test_tls_with_a_self_signed_certificate(tmp_path, mosquitto, monkeypatch):
    broker = mosquitto(tls=True)
    monkeypatch.setenv("VAD_MQTT_USER", broker.user)
    monkeypatch.setenv("VAD_MQTT_PASSWORD", broker.password)
    listener = Listener(broker, ["vad/events"])
    n = mqtt_notifier(tmp_path, broker, tls=True, ca_file=str(broker.ca_file), qos=2)
    try:
        n.event("opened", EventInfo(1, "gate", 1.0, 0.95, 1.0, 0.9), lambda: None, 1.0)
        wait(lambda: listener.on("vad/events"), 20, "the event over TLS")
        assert listener.on("vad/events")[0].json()["event_id"] == 1
    finally:
        n.stop()
        listener.close()
    # without the CA the broker's certificate is not trusted: refused, said once, retried
    n = mqtt_notifier(tmp_path, broker, tls=True, name="untrusted")
    try:
        wait(lambda: n.status()["untrusted"]["state"] == "refusing", 20, "TLS refused")
        assert "TLS" in n.status()["untrusted"]["reason"]
    finally:
        n.stop()


def test_a_wrong_password_is_logged_once_without_credentials_and_nothing_is_lost(tmp_path, mosquitto, monkeypatch,
                                                                                 caplog):
    broker = mosquitto()
    monkeypatch.setenv("VAD_MQTT_USER", broker.user)
    monkeypatch.setenv("VAD_MQTT_PASSWORD", "wrong-password-123")
    metrics = VadMetrics()
    caplog.set_level(logging.INFO, logger="streaming.notify")
    n = mqtt_notifier(tmp_path, broker, metrics)
    n.sinks[0].delivery.backoff.initial_s = n.sinks[0].delivery.backoff.max_s = 0.1  # many attempts, quickly
    try:
        n.event("opened", EventInfo(9, "gate", 1.0, 0.95, 1.0, 0.9), lambda: b"JPEG", 1.0)
        wait(lambda: n.status()["home"]["failures"] >= 5, 30, "several refused attempts")
        st = n.status()["home"]
        assert st["state"] == "refusing" and "refused the connection" in st["reason"] and st["outbox"] == 3
        said = [r.getMessage() for r in caplog.records if "refusing" in r.getMessage()]
        assert len(said) == 1, said  # once per state change, not per attempt
        text = metrics.render()[0].decode()
        assert 'vad_notify_sink_up{scorer="cpu",sink="home"} 0.0' in text
        assert 'vad_notify_outbox_depth{scorer="cpu",sink="home"} 3.0' in text
        failures = [line for line in text.splitlines() if line.startswith("vad_notify_failures_total{")]
        assert failures and float(failures[0].split()[-1]) >= 5
        for secret in ("wrong-password-123", PASSWORD):
            assert all(secret not in r.getMessage() for r in caplog.records) and secret not in text
        # the right password: the waiting messages go out, each once
        listener = Listener(broker, ["vad/#"])
        monkeypatch.setenv("VAD_MQTT_PASSWORD", broker.password)
        wait(lambda: n.status()["home"]["outbox"] == 0, 30, "delivered after the fix")
        wait(lambda: listener.on("vad/gate/snapshot"), 10, "snapshot")
        seqs = [int(m.props["seq"]) for m in listener.messages if "seq" in m.props]
        assert sorted(seqs) == [1, 2, 3] and json.loads(listener.on("vad/events")[0].payload)["seq"] == 1
        assert any("delivering again (was refusing)" in r.getMessage() for r in caplog.records)
        listener.close()
    finally:
        n.stop()
