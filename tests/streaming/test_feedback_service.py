"""Operator feedback through the real service on one local Ray: a demo alert's clip, labelled false_alarm, becomes
the camera's normal footage for its next learn (recordings.root/<camera>/feedback/), and anomaly takes it back.

The demo camera (`demo://street?seed=0`, analysed at 10 fps) shows a vehicle crossing at 20.0-21.6 s: one alert.
"""
from __future__ import annotations

import pytest
import requests

from offline.data.readers import open_dataset
from tests.streaming.service_support import SERVE_PORT, demo_bundle, ensure_ray, wait_for

pytestmark = pytest.mark.slow
PREFIX = "/fb"
URL = f"http://127.0.0.1:{SERVE_PORT}{PREFIX}"


def label(eid: int, verdict: str) -> dict:
    r = requests.post(f"{URL}/events/{eid}/label", json={"label": verdict}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    bundle = demo_bundle(tmp_path_factory.mktemp("fb"))  # once per test session, shared with the other service tests
    ensure_ray()
    return bundle


def test_a_false_alarms_clip_goes_to_the_cameras_next_learn_and_anomaly_takes_it_back(bundle, tmp_path):
    from ray import serve

    from streaming.app import build_app

    recordings = tmp_path / "recordings"
    args = {
        "cameras": [{"name": "demo", "url": "demo://street?seed=0", "fps": 10}],
        "scorer": {"bundle": str(bundle), "build_demo_bundle": False, "num_cpus": 0.5, "max_wait_ms": 50},
        "alerts": {"min_duration_s": 0.5, "hysteresis": 0.1},
        "events": {"path": str(tmp_path / "events.db"), "clip_seconds": 20},
        "recordings": {"root": str(recordings)},
        "http": {"port": SERVE_PORT},
        "namespace": "vadfeedback",
    }
    serve.run(build_app(args), name="vadfeedback", route_prefix=PREFIX)
    try:
        # labelled as soon as it is listed (the alert is most likely still open): kept once its clip is written
        (ev,) = wait_for(lambda: requests.get(f"{URL}/events?camera=demo", timeout=30).json(), 90, "the demo alert",
                         every_s=0.2)
        eid = ev["id"]
        early = label(eid, "false_alarm")
        assert early["label"] == "false_alarm" and early["footage"] in ("pending", "kept"), early
        kept = recordings / "demo" / "feedback" / f"event-{eid}.mkv"
        done = wait_for(lambda: (e := requests.get(f"{URL}/events/{eid}", timeout=30).json())["clip"] and e, 60,
                        "the event's clip")
        assert done["status"] == "closed"
        wait_for(kept.is_file, 30, "the false alarm's footage under the camera's recordings")

        again = label(eid, "false_alarm")
        assert again["footage"] == "kept" and again["footage_path"] == str(kept), again
        (clip,) = open_dataset(recordings / "demo").train  # what the camera's next learn reads
        assert clip.id == f"feedback/event-{eid}" and clip.fps == 10.0
        # a window of context, then the alert from pending to its close at 10 fps
        assert clip.num_frames >= (done["end_s"] - done["start_s"]) * 10 + 16, (clip.num_frames, done)

        r = requests.get(f"{URL}/events/{eid}/clip", timeout=30)
        assert r.status_code == 200 and r.headers["content-type"] == "video/x-matroska"
        assert r.content == kept.read_bytes()
        assert f"{PREFIX}/events/{eid}/clip" in requests.get(f"{URL}/ui/events/{eid}", timeout=30).text
        assert requests.get(f"{URL}/events/99999/clip", timeout=30).status_code == 404

        gone = label(eid, "anomaly")
        assert gone["footage"] == "removed" and gone["label"] == "anomaly" and not kept.exists()
        assert requests.get(f"{URL}/events/{eid}", timeout=30).json()["clip"] is True  # the event keeps its clip
        r = requests.post(f"{URL}/events/99999/label", json={"label": "false_alarm"}, timeout=30)
        assert r.status_code == 404
    finally:
        serve.delete("vadfeedback")
