"""The whole service on one local Ray with `notify:` sinks: the demo camera's alert reaches a real Mosquitto broker
(Home Assistant discovery, the camera's state from its actor) and a real webhook receiver, and /metrics shows the
sinks' outbox depth, state and deliveries, with no credential in it."""
from __future__ import annotations

import pytest
import requests

import os

from tests.streaming.notify.conftest import PASSWORD, USER, Listener
from tests.streaming.service_support import SERVE_PORT, demo_bundle, ensure_ray, wait_for

pytestmark = pytest.mark.slow

# The sinks read their credentials from the environment of Ray's workers, which inherit the environment the local
# Ray was started with; in the full suite an earlier test starts it, so these are set when the module is collected
# (before any test runs), not in the test.
os.environ.setdefault("VAD_MQTT_USER", USER)
os.environ.setdefault("VAD_MQTT_PASSWORD", PASSWORD)
os.environ.setdefault("VAD_HOOK_TOKEN", "hook-token-xyz")


def test_the_demo_cameras_alert_reaches_the_broker_and_the_webhook(tmp_path, tmp_path_factory, mosquitto, receiver,
                                                                  monkeypatch):
    broker = mosquitto()
    assert (os.environ["VAD_MQTT_USER"], os.environ["VAD_MQTT_PASSWORD"]) == (broker.user, broker.password)
    bundle = demo_bundle(tmp_path_factory.mktemp("svc"))
    ensure_ray()
    from ray import serve

    from streaming.app import build_app

    listener = Listener(broker, ["vadt/#", "homeassistant/#"])
    args = {
        "cameras": [{"name": "street", "url": "demo://street?seed=0&anomaly_every_s=20", "fps": 10}],
        "scorer": {"bundle": str(bundle), "build_demo_bundle": False, "num_cpus": 0.5, "max_wait_ms": 50},
        "alerts": {"threshold": 0.99, "min_duration_s": 0.5, "hysteresis": 0.1},
        "events": {"path": str(tmp_path / "events.db")},
        "http": {"port": SERVE_PORT},
        "namespace": "vadnotify",
        "notify": {"base_url": f"http://127.0.0.1:{SERVE_PORT}/notify", "sinks": [
            {"type": "mqtt", "name": "home", "host": "127.0.0.1", "port": broker.port, "topic_prefix": "vadt",
             "username_env": "VAD_MQTT_USER", "password_env": "VAD_MQTT_PASSWORD", "discovery": True},
            {"type": "webhook", "name": "hook", "url": receiver.url, "headers_env": {"Authorization": "VAD_HOOK_TOKEN"}},
        ]},
    }
    serve.run(build_app(args), name="vadnotify", route_prefix="/notify")
    url = f"http://127.0.0.1:{SERVE_PORT}/notify"
    try:
        wait_for(lambda: [m.payload for m in listener.on("vadt/street/state")][-1:] == [b"streaming"], 90,
                 "the camera's state from its actor")
        assert [m.payload for m in listener.on("vadt/street/available")][-1] == b"online"
        assert listener.on("homeassistant/binary_sensor/vadt/street_anomaly/config")
        wait_for(lambda: any(m.json()["type"] == "end" for m in listener.on("vadt/events")), 120, "the alert's end")
        (ev,) = requests.get(f"{url}/events?camera=street", timeout=30).json()[:1]
        types = [m.json()["type"] for m in listener.on("vadt/events") if m.json()["event_id"] == ev["id"]]
        assert types[0] == "new" and types[-1] == "end"
        snap = listener.on("vadt/street/snapshot")[-1].payload
        assert snap[:2] == b"\xff\xd8"
        link = listener.on("vadt/events")[0].json()["links"]["snapshot"]
        assert requests.get(link, timeout=30).content[:2] == b"\xff\xd8"  # the link leads to the event's JPEG
        wait_for(lambda: any(b'"end"' in body for _, body in receiver.posts), 30, "the webhook's end")
        assert all(h["authorization"] == "hook-token-xyz" for h, _ in receiver.posts)
        metrics = wait_for(lambda: (t := requests.get(f"{url}/metrics", timeout=30).text)
                           and 'vad_notify_sent_total{scorer="cpu",sink="hook"}' in t and t, 30, "notify metrics")
        assert 'vad_notify_outbox_depth{scorer="cpu",sink="home"}' in metrics
        for secret in (broker.password, "hook-token-xyz", receiver.url):
            assert secret not in metrics
        assert 'vad_notify_sink_up{scorer="cpu",sink="home"} 1.0' in metrics
    finally:
        serve.delete("vadnotify")
        listener.close()

