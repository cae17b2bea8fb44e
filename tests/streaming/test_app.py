"""The whole service on one local Ray: a real RTSP camera, the Serve control plane, alerts, events, reconnects.

The RTSP server (GStreamer, 127.0.0.1, TCP) serves a 40 s demo-feed clip with a vehicle crossing at
20.0-21.6 s; the camera is analysed at 10 fps, so the anomaly is analysed frames 200-215 of a connection.
"""
from __future__ import annotations

import io
import time

import pytest
import requests
from PIL import Image

from tests.streaming.service_support import SERVE_PORT, demo_bundle, ensure_ray, wait_for

pytestmark = pytest.mark.slow
BASE = f"http://127.0.0.1:{SERVE_PORT}"
TOKEN = "t0k3n-for-tests"


def deploy(name: str, route: str, args: dict):
    from ray import serve

    from streaming.app import build_app

    serve.run(build_app(args), name=name, route_prefix=route)
    return f"{BASE}{route}".rstrip("/")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return demo_bundle(tmp_path_factory.mktemp("svc"))


@pytest.fixture(scope="module")
def auth_app(bundle, tmp_path_factory):
    """A second application with a token, no cameras and its own events file."""
    ensure_ray()
    url = deploy(
        "vadauth",
        "/auth",
        {
            "scorer": {"bundle": str(bundle), "build_demo_bundle": False, "num_cpus": 0.25},
            "events": {"path": str(tmp_path_factory.mktemp("ev") / "auth.db")},
            "http": {"token": TOKEN, "port": SERVE_PORT},
            "namespace": "vadauth",
        },
    )
    yield url
    from ray import serve

    serve.delete("vadauth")


def cam(url: str, name: str, headers=None) -> dict:
    r = requests.get(f"{url}/cameras/{name}", headers=headers, timeout=30)
    r.raise_for_status()
    return r.json()


def test_rtsp_camera_scores_alerts_reconnects_and_cameras_come_and_go(rtsp_server, bundle, tmp_path):
    ensure_ray()
    url = deploy(
        "vad",
        "/",
        {
            "cameras": [{"name": "door", "url": rtsp_server.url("demo"), "fps": 10, "read_timeout_s": 3}],
            "scorer": {"bundle": str(bundle), "build_demo_bundle": False, "num_cpus": 0.5, "max_wait_ms": 50},
            "alerts": {"threshold": 0.99, "min_duration_s": 0.5, "hysteresis": 0.1},
            "events": {"path": str(tmp_path / "events.db")},
            "http": {"port": SERVE_PORT},
        },
    )
    from ray import serve

    try:
        # scores flow, the warm-up is reported as such, and no alert in the normal first 18 s
        first = wait_for(lambda: (s := cam(url, "door"))["windows_scored"] >= 2 and s, 60, "first scores")
        assert first["state"] == "streaming" and first["last_score"] is not None and "rtsp://" in first["url"]
        assert "warming_up" in first and first["scorer"] == "cpu"
        t_connect = time.time() - first["frames_scored"] / 10.0
        wait_for(lambda: cam(url, "door")["frames_scored"] >= 170, 60, "17 s of scored footage")
        assert requests.get(f"{url}/events", timeout=30).json() == []  # nothing during the normal part

        # the vehicle crossing opens exactly one alert, with a JPEG snapshot of the peak frame
        events = wait_for(lambda: requests.get(f"{url}/events?camera=door", timeout=30).json(), 40, "the alert")
        (ev,) = events
        assert 195 <= ev["peak_frame"] <= 225, ev
        assert 17.0 <= ev["start_s"] - t_connect <= 25.0, (ev, t_connect)
        snap = requests.get(f"{url}/events/{ev['id']}/snapshot", timeout=30)
        assert snap.status_code == 200 and snap.headers["content-type"] == "image/jpeg"
        assert Image.open(io.BytesIO(snap.content)).format == "JPEG"
        assert requests.get(f"{url}/events/{ev['id']}", timeout=30).json()["camera"] == "door"
        assert requests.get(f"{url}/events?min_score=1.0&camera=nobody", timeout=30).json() == []

        # a camera added at run time scores while "door" keeps going; removing it leaves "door" alone
        r = requests.post(f"{url}/cameras", json={"name": "extra", "url": "demo://x?seed=3&anomaly_every_s=0", "fps": 5}, timeout=60)
        assert r.status_code == 201, r.text
        assert requests.post(f"{url}/cameras", json={"name": "extra", "url": "demo://x"}, timeout=60).status_code == 409
        before = cam(url, "door")["frames_scored"]
        wait_for(lambda: cam(url, "extra")["windows_scored"] >= 1, 60, "the added camera's first score")
        assert cam(url, "door")["frames_scored"] > before
        names = [c["name"] for c in requests.get(f"{url}/cameras", timeout=30).json()]
        assert names == ["door", "extra"]
        r = requests.patch(f"{url}/cameras/extra", json={"threshold": 0.995}, timeout=60)
        assert r.status_code == 200 and r.json()["applied"] == "alerts", r.text
        assert requests.delete(f"{url}/cameras/extra", timeout=60).status_code == 204
        assert requests.get(f"{url}/cameras/extra", timeout=30).status_code == 404
        assert cam(url, "door")["state"] == "streaming"

        # the RTSP server dies mid-stream and comes back: the camera reconnects and scores again
        reconnects = cam(url, "door")["reconnects"]
        rtsp_server.stop()
        wait_for(lambda: cam(url, "door")["reconnects"] > reconnects, 30, "the camera to notice and reconnect")
        assert requests.get(f"{url}/healthz", timeout=30).status_code == 200  # a reconnecting camera is alive
        rtsp_server.start()
        scored = cam(url, "door")["frames_scored"]
        back = wait_for(
            lambda: (s := cam(url, "door"))["state"] == "streaming" and s["frames_scored"] > scored + 16 and s,
            60,
            "scores after the restart",
        )
        assert back["reconnects"] > reconnects and back["actor_alive"]

        # /metrics: per-camera series labelled by name, never the URL
        text = requests.get(f"{url}/metrics", timeout=30).text
        for series in ('vad_frames_decoded_total{camera="door"}', 'vad_reconnects_total{camera="door"}',
                       'vad_alerts_total{camera="door"} 1.0', 'vad_score_latency_seconds_bucket{camera="door"',
                       'vad_scorer_batch_size_count{scorer="cpu"}', 'vad_camera_up{camera="door"} 1.0'):
            assert series in text, series
        assert "rtsp://" not in text and 'camera="extra"' not in text
        assert requests.get(f"{url}/healthz", timeout=30).json()["ok"] is True
    finally:
        serve.delete("vad")


def test_requests_are_validated_authorised_and_dead_actors_fail_healthz(auth_app):
    import ray

    h = {"Authorization": f"Bearer {TOKEN}"}
    assert requests.get(f"{auth_app}/cameras", timeout=30).status_code == 401
    assert requests.get(f"{auth_app}/cameras", headers={"Authorization": "Bearer wrong"}, timeout=30).status_code == 401
    assert requests.get(f"{auth_app}/cameras", headers=h, timeout=30).json() == []
    assert requests.get(f"{auth_app}/healthz", timeout=30).status_code == 200  # probes need no token

    bad = {"name": "x", "url": "rtsp://admin:hunter2@10.9.9.9/live", "fps": -1, "transport": "carrier-pigeon"}
    r = requests.post(f"{auth_app}/cameras", json=bad, headers=h, timeout=30)
    assert r.status_code == 422
    fields = {e["field"] for e in r.json()["errors"]}
    assert fields == {"body.fps", "body.transport"} and "hunter2" not in r.text
    r = requests.post(f"{auth_app}/cameras", json={"name": "x", "url": "ftp://h/x"}, headers=h, timeout=30)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "body.url"
    r = requests.get(f"{auth_app}/events?limit=0", headers=h, timeout=30)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "query.limit"
    r = requests.patch(f"{auth_app}/cameras/none", json={"fps": 2}, headers=h, timeout=30)
    assert r.status_code == 404 and "none" in r.json()["detail"]

    r = requests.post(f"{auth_app}/cameras", json={"name": "victim", "url": "demo://v?seed=1", "fps": 5}, headers=h, timeout=60)
    assert r.status_code == 201, r.text
    r = requests.patch(f"{auth_app}/cameras/victim", json={"fps": "fast"}, headers=h, timeout=30)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "body.fps"
    actor = ray.get_actor(r2 := cam(auth_app, "victim", h)["actor"], namespace="vadauth")
    ray.kill(actor)
    body = wait_for(lambda: (x := requests.get(f"{auth_app}/healthz", timeout=30)).status_code == 503 and x.json(), 30, "503")
    assert f"camera:victim" in body["dead"] and not body["ok"], (body, r2)
    assert cam(auth_app, "victim", h)["actor_alive"] is False
    assert requests.delete(f"{auth_app}/cameras/victim", headers=h, timeout=60).status_code == 204
    assert requests.get(f"{auth_app}/healthz", timeout=30).status_code == 200
