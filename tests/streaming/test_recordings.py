"""Recordings through the real service (local Ray + Serve, the GStreamer RTSP server with credentials): POST
/cameras/{name}/recordings and GET /recordings[/{id}], their 404 / 422 / 409 / 507 answers, scoring going on
meanwhile, the disk limit, and segments that the dataset readers read; plus the recordings config."""
from __future__ import annotations

from pathlib import Path

import pytest
import requests

from offline.config import ConfigError
from offline.data.readers import open_dataset, read_frames
from streaming.config import parse_service_config, resolve_paths
from tests.streaming.service_support import SERVE_PORT, demo_bundle, ensure_ray, wait_for

PASSWORD = "s3cr3t-pw"


def test_recordings_root_defaults_beside_the_events_and_bad_fields_are_named(tmp_path):
    cfg = resolve_paths(parse_service_config({"events": {"path": "data/events.db"}}), tmp_path)
    assert cfg.recordings.root == tmp_path / "data" / "recordings"
    cfg = resolve_paths(parse_service_config({"recordings": {"root": "rec"}}), tmp_path)
    assert cfg.recordings.root == tmp_path / "rec"
    with pytest.raises(ConfigError, match=r"recordings\.max_bytes: .*greater than or equal to 1"):
        parse_service_config({"recordings": {"max_bytes": 0}})
    with pytest.raises(ConfigError, match=r"recordings\.segment_minutes"):
        parse_service_config({"recordings": {"segment_minutes": 0}})


def test_earlier_recordings_are_listed_and_one_cut_short_by_a_stop_is_rescued(tmp_path):
    from streaming.demo_feed import DemoFeed
    from streaming.recording_dir import open_dir
    from streaming.recordings import past_recordings
    from streaming.segments import SegmentWriter

    feed = DemoFeed(seed=0, fps=10, size=(64, 96), anomaly_every_s=None)

    def segment(out, index, n):
        writer = SegmentWriter(out, index, fps=10, width=96, height=64)
        for i in range(n):
            writer.mux(writer.encode(feed.frame(i)))
        return writer

    for rid, state in (("door-1", "done"), ("door-2", "recording")):
        rec = open_dir(tmp_path / "door" / rid, fps=10, max_side=None)
        rec.segments.append(segment(rec.path, 1, 12).close())
        rec.state, rec.requested_s, rec.started_s = state, 6.0, {"door-1": 1.0, "door-2": 2.0}[rid]
        rec.source = f"rtsp://admin:{PASSWORD}@cam/x"
        rec.save()
    killed = segment(tmp_path / "door" / "door-2", 2, 25)  # the service was stopped while this one was open
    on_disk = killed.path.read_bytes()
    killed.abort()
    killed.path.write_bytes(on_disk)
    done, stopped = past_recordings(tmp_path)
    assert (done.id, done.camera, done.last["state"], done.last["recorded_s"], done.last["progress"]) == (
        "door-1", "door", "done", 1.2, 0.2)
    assert stopped.last["state"] == "stopped" and stopped.last["error"] == "the service stopped during the recording"
    assert stopped.last["segments"] == 2 and 2.2 <= stopped.last["recorded_s"] <= 3.7  # the open segment rescued
    assert stopped.view()["source"] == "rtsp://***@cam/x" and PASSWORD not in str(stopped.view())
    assert open_dir(tmp_path / "door" / "door-2", None, None).state == "stopped"


@pytest.mark.slow
def test_recordings_through_the_service(rtsp_server_factory, demo_video, tmp_path):
    server = rtsp_server_factory({"demo": demo_video[0]}, user=f"admin:{PASSWORD}")
    ensure_ray()
    from ray import serve

    from streaming.app import build_app

    root = tmp_path / "recordings"
    max_bytes = 400 * 1024
    serve.run(build_app({
        "cameras": [{"name": "door", "url": server.url("demo"), "fps": 10, "read_timeout_s": 3}],
        "scorer": {"bundle": str(demo_bundle(tmp_path)), "build_demo_bundle": False, "num_cpus": 0.25},
        "events": {"path": str(tmp_path / "events.db")},
        "recordings": {"root": str(root), "segment_minutes": 0.02, "max_bytes": max_bytes, "min_free_bytes": 0},
        "http": {"port": SERVE_PORT},
        "namespace": "vadrec",
    }), name="vadrec", route_prefix="/rec")
    url = f"http://127.0.0.1:{SERVE_PORT}/rec"
    answers: list[str] = []

    def call(method: str, path: str, **kw) -> requests.Response:
        r = requests.request(method, url + path, timeout=30, **kw)
        answers.append(r.text)
        return r

    def recording(rid: str) -> dict:
        r = call("GET", f"/recordings/{rid}")
        assert r.status_code == 200, r.text
        return r.json()

    try:
        wait_for(lambda: call("GET", "/cameras/door").json()["windows_scored"] >= 1, 90, "the camera's first score")
        # refused requests: unknown camera, minutes out of range (naming the field), unknown fields
        assert call("POST", "/cameras/nobody/recordings", json={"minutes": 0.05}).status_code == 404
        for body in ({"minutes": 0}, {"minutes": -1}, {"minutes": 1441}, {"minutes": "a lot"}, {}):
            r = call("POST", "/cameras/door/recordings", json=body)
            assert r.status_code == 422 and [e["field"] for e in r.json()["errors"]] == ["body.minutes"], (body, r.text)
        r = call("POST", "/cameras/door/recordings", json={"minutes": 0.05, "fsp": 5})
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "body.fsp"
        assert call("GET", "/recordings/door-nope").status_code == 404

        # 3 s at 5 fps; the camera keeps scoring meanwhile; a second request for it is 409 while it records
        scored = call("GET", "/cameras/door").json()["frames_scored"]
        r = call("POST", "/cameras/door/recordings", json={"minutes": 0.05, "fps": 5})
        assert r.status_code == 202, r.text
        first = r.json()
        rid = first["id"]
        assert first["state"] in ("queued", "recording") and first["requested_s"] == 3.0
        r = call("POST", "/cameras/door/recordings", json={"minutes": 1})
        assert r.status_code == 409 and rid in r.json()["detail"]
        mid = wait_for(lambda: (p := recording(rid))["recorded_s"] > 0 and p, 60, "recording under way")
        assert mid["state"] in ("recording", "done") and 0 < mid["progress"] <= 1
        done = wait_for(lambda: (p := recording(rid))["state"] not in ("queued", "recording") and p, 60, "the recording")
        assert done["state"] == "done" and done["error"] is None, done
        assert (done["recorded_s"], done["progress"], done["segments"], done["fps"]) == (3.0, 1.0, 3, 5.0)
        assert call("GET", "/cameras/door").json()["frames_scored"] > scored + 16  # scoring went on
        listed = call("GET", "/recordings").json()
        assert [x["id"] for x in listed] == [rid] and listed[0]["state"] == "done"
        out = Path(done["dir"])
        assert out == root / "door" / rid
        dataset = open_dataset(root / "door")  # `vad train --data <root>/door`: every recording of the camera
        assert dataset.layout == "videos"
        assert [len(list(read_frames(c, size=None))) for c in dataset.train] == [6, 6, 3]
        assert done["bytes"] == sum(p.stat().st_size for p in out.glob("seg-*.mkv"))

        # the disk limit (all recordings under root together): reached mid-way, then refused before starting
        r = call("POST", "/cameras/door/recordings", json={"minutes": 1})
        assert r.status_code == 202, r.text
        second = r.json()["id"]
        failed = wait_for(lambda: (p := recording(second))["state"] not in ("queued", "recording") and p, 90,
                          "the disk limit to stop the second recording")
        assert failed["state"] == "failed" and failed["error"].startswith("recordings.max_bytes reached"), failed
        assert 0 < failed["recorded_s"] < 60 and failed["segments"] >= 1
        assert sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) <= max_bytes
        r = call("POST", "/cameras/door/recordings", json={"minutes": 1})
        assert r.status_code == 507 and r.json()["detail"].startswith("recordings.max_bytes: "), r.text
        for clip in open_dataset(root / "door").train:
            assert len(list(read_frames(clip, size=None))) == clip.num_frames
    finally:
        serve.delete("vadrec")
    # the camera's password: in no answer, no file name, no file, no log of this Ray session (every process)
    assert all(PASSWORD not in text for text in answers)
    for path in root.rglob("*"):
        assert PASSWORD not in str(path) and (path.is_dir() or PASSWORD.encode() not in path.read_bytes())
    import ray._private.worker

    logs = [p.read_bytes() for p in Path(ray._private.worker._global_node.get_logs_dir_path()).rglob("*") if p.is_file()]
    assert any(f"recording into {root / 'door' / second} failed".encode() in log for log in logs)  # (its warnings)
    assert not any(PASSWORD.encode() in log for log in logs)
