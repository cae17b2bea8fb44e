"""Learn each camera's normal through the real service: two cameras over the GStreamer RTSP server showing two real
scenes (a Ped2 walkway, vtest's pedestrians), each recorded (POST /cameras/{name}/recordings) and learned from its
own recording (POST /cameras/{name}/learn, tiny schedule, swapped in on success); each then scores with its own
bundle. Plus the learn route's refusals: 404, 422 naming the field, 409 without recordings and while learning."""
from __future__ import annotations

import pytest
import requests

from tests.streaming.service_support import SERVE_PORT, demo_bundle, ensure_ray, wait_for

FAST = {"train.epochs": 1, "pa.spatial": "none"}


@pytest.mark.slow
def test_two_cameras_each_learn_their_own_scene_and_score_with_it(rtsp_server_factory, ped2, vtest, tmp_path):
    server = rtsp_server_factory({"walkway": ped2 / "train" / "01.mkv", "hall": vtest})
    ensure_ray()
    from ray import serve

    from streaming.app import build_app

    default = demo_bundle(tmp_path)
    serve.run(build_app({
        "cameras": [{"name": n, "url": server.url(n), "fps": 10, "read_timeout_s": 3} for n in ("walkway", "hall")],
        "scorer": {"bundle": str(default), "build_demo_bundle": False, "num_cpus": 0.25,
                   "bundle_roots": [str(tmp_path)]},
        "events": {"path": str(tmp_path / "events.db")},
        "recordings": {"root": str(tmp_path / "recordings"), "segment_minutes": 0.1, "min_free_bytes": 0},
        "learn": {"schedule": "tiny", "num_cpus": 0.5, "eval_fraction": 0.25},
        "http": {"port": SERVE_PORT},
        "namespace": "vadlearn",
    }), name="vadlearn", route_prefix="/learn")
    url = f"http://127.0.0.1:{SERVE_PORT}/learn"

    def call(method: str, path: str, **kw) -> requests.Response:
        return requests.request(method, url + path, timeout=60, **kw)

    def camera(name: str) -> dict:
        return call("GET", f"/cameras/{name}").json()

    try:
        wait_for(lambda: all(camera(n)["windows_scored"] >= 1 for n in ("walkway", "hall")), 120, "both cameras scoring")
        # refusals: unknown camera, bad fields (named), a path in the overrides, nothing recorded yet
        assert call("POST", "/cameras/nobody/learn", json={}).status_code == 404
        r = call("POST", "/cameras/hall/learn", json={"schedule": "huge"})
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "body.schedule", r.text
        r = call("POST", "/cameras/hall/learn", json={"overrides": {"data.root": "/etc"}})
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "body.overrides", r.text
        r = call("POST", "/cameras/hall/learn", json={})
        assert r.status_code == 409 and "no recordings" in r.json()["detail"], r.text

        # record both scenes at once (24 s each, 6 s segments), then learn each from its own recording
        recs = {n: call("POST", f"/cameras/{n}/recordings", json={"minutes": 0.4}).json()["id"] for n in ("walkway", "hall")}
        for n, rid in recs.items():
            rec = wait_for(lambda: (p := call("GET", f"/recordings/{rid}").json())["state"] not in ("queued", "recording") and p,
                           120, f"{n}'s recording")
            assert rec["state"] == "done" and rec["segments"] >= 3, rec
        jobs = {}
        for n in ("walkway", "hall"):
            r = call("POST", f"/cameras/{n}/learn", json={"swap": True, "max_false_alerts_per_hour": 60, "overrides": FAST})
            assert r.status_code == 202, r.text
            jobs[n] = r.json()["id"]
        r = call("POST", "/cameras/hall/learn", json={"overrides": FAST})
        assert r.status_code == 409 and jobs["hall"] in r.json()["detail"]
        done = {}
        for n, jid in jobs.items():
            done[n] = wait_for(lambda: (j := call("GET", f"/jobs/{jid}").json())["state"] in ("done", "failed") and j,
                               240, f"{n}'s learn job")
            assert done[n]["state"] == "done", done[n]
            assert wait_for(lambda: call("GET", f"/jobs/{jid}").json()["swapped"], 60, f"{n}'s swap")
            assert done[n]["result"]["unseen"]["seconds"] > 0 and done[n]["result"]["train_clips"]
        assert [j["id"] for j in call("GET", "/jobs", params={"camera": "hall"}).json()] == [jobs["hall"]]

        # each camera now scores with the bundle learned from its own scene, at the threshold chosen for it
        shas = {}
        for n in ("walkway", "hall"):
            cam = camera(n)
            assert cam["bundle"]["path"] == done[n]["bundle"] and not cam["bundle"]["default"], cam["bundle"]
            assert cam["threshold"]["source"] == "bundle_learned", cam["threshold"]
            assert cam["threshold"]["threshold"] == pytest.approx(done[n]["result"]["threshold_choice"]["threshold"], abs=1e-4)
            shas[n] = cam["bundle"]["sha256"]
            before = cam["windows_scored"]
            wait_for(lambda: camera(n)["windows_scored"] > before + 1, 60, f"{n} scoring with its own bundle")
        assert len(set(shas.values())) == 2
        loaded = {b["path"]: b["cameras"] for s in call("GET", "/scorers").json().values() for b in s["bundles"]}
        assert loaded[done["walkway"]["bundle"]] == ["walkway"] and loaded[done["hall"]["bundle"]] == ["hall"]
    finally:
        serve.delete("vadlearn")
