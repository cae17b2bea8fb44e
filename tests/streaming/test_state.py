"""Persisted runtime changes (streaming/state.py): the merge rule, the state file, the bundle allow-list, and the
whole service keeping API changes across a redeploy (real Ray Serve)."""
from __future__ import annotations

import json
import logging
import os
import shutil
import stat
from functools import partial
from pathlib import Path

import pytest

from streaming.config import CameraConfig, ScorerConfig, ServiceConfig
from streaming.state import State, load, merge, record_bundle, record_camera, save


def cam(name: str, **kw) -> CameraConfig:
    return CameraConfig(name=name, url=f"demo://{name}?seed=0", **kw)


def config(*cams: CameraConfig, bundle: str = "/srv/bundles/a") -> ServiceConfig:
    return ServiceConfig(cameras=list(cams), scorer={"bundle": bundle})


A, B, X = cam("a"), cam("b"), cam("x")
A2, A3, B3, X2 = cam("a", fps=2), cam("a", fps=3), cam("b", fps=3), cam("x", fps=2)

CAMERA_CASES = [
    # (id, config at the API changes, API changes (name, camera or None = removed), config at the next start,
    #  cameras expected in order, names whose API change is dropped with a warning, names shown as source "api")
    ("add", [A], [("x", X)], [A], [A, X], set(), {"x"}),
    ("remove_config_camera", [A, B], [("b", None)], [A, B], [A], set(), set()),
    ("replace", [A], [("a", A2)], [A], [A2], set(), {"a"}),
    ("add_then_replace", [A], [("x", X), ("x", X2)], [A], [A, X2], set(), {"x"}),
    ("remove_then_add_back_changed", [A], [("a", None), ("a", A2)], [A], [A2], set(), {"a"}),
    ("replace_back_to_config_is_no_change", [A], [("a", A2), ("a", A)], [A], [A], set(), set()),
    ("added_then_removed_is_no_change", [A], [("x", X), ("x", None)], [A], [A], set(), set()),
    ("config_edited_after_replace", [A], [("a", A2)], [A3], [A3], {"a"}, set()),
    ("config_edited_after_removal", [A, B], [("b", None)], [A, B3], [A, B3], {"b"}, set()),
    ("config_dropped_camera_after_api_replace", [A], [("a", A2)], [], [], {"a"}, set()),
    ("api_added_then_config_added_same_name", [A], [("x", X)], [A, X2], [A, X2], {"x"}, set()),
    ("removed_in_api_then_readded_in_config", [A], [("x", X), ("x", None)], [A, X2], [A, X2], set(), set()),
    ("config_unchanged_removal_applies", [A, B], [("a", None)], [A, B], [B], set(), set()),
    ("api_additions_follow_config_order", [B], [("x", X), ("a", A)], [B], [B, X, A], set(), {"x", "a"}),
    ("unrelated_config_edit_keeps_api_change", [A, B], [("a", A2)], [A, B3], [A2, B3], set(), {"a"}),
]


@pytest.mark.parametrize("case", CAMERA_CASES, ids=[c[0] for c in CAMERA_CASES])
def test_merge_cameras_the_later_change_wins(case):
    _, then, changes, now, expected, dropped, from_api = case
    state = State()
    for t, (name, camera) in enumerate(changes):
        state = record_camera(state, config(*then), name, camera, now=1000.0 + t)
    state = State.model_validate(json.loads(state.model_dump_json()))  # as read back from the file
    merged = merge(config(*now), state)
    assert [c.model_dump() for c in merged.cameras] == [c.model_dump() for c in expected]
    warned = {n.message.split(":")[0].removeprefix("camera ") for n in merged.notes if n.level == logging.WARNING}
    assert warned == dropped, merged.notes
    assert merged.state.api_cameras() == from_api
    assert set(merged.state.cameras).isdisjoint(dropped)  # a stale change is gone for good
    assert merge(config(*now), merged.state).cameras == merged.cameras  # the pruned state merges the same way
    assert not [n for n in merge(config(*now), merged.state).notes if n.level >= logging.WARNING]


BUNDLE_CASES = [
    # (id, scorer.bundle at the swaps, swaps, scorer.bundle at the next start, bundle expected, warning expected)
    ("no_swap", "/r/a", [], "/r/a", None, False),
    ("swap", "/r/a", ["/r/b"], "/r/a", "/r/b", False),
    ("two_swaps_the_last_counts", "/r/a", ["/r/b", "/r/c"], "/r/a", "/r/c", False),
    ("swap_back_to_config_is_no_change", "/r/a", ["/r/b", "/r/a"], "/r/a", None, False),
    ("config_bundle_edited_after_swap", "/r/a", ["/r/b"], "/r/c", None, True),
    ("config_bundle_set_to_swapped_one", "/r/a", ["/r/b"], "/r/b", None, True),
]


@pytest.mark.parametrize("case", BUNDLE_CASES, ids=[c[0] for c in BUNDLE_CASES])
def test_merge_bundle_the_later_change_wins(case):
    _, then, swaps, now, expected, warned = case
    state = State()
    for t, path in enumerate(swaps):
        state = record_bundle(state, config(bundle=then), path, now=2000.0 + t)
    merged = merge(config(A, bundle=now), state)
    assert merged.bundle == expected and merged.cameras == [A]
    assert any(n.level == logging.WARNING and n.message.startswith("bundle:") for n in merged.notes) == warned
    assert (merged.state.bundle is None) == (expected is None)


def test_save_is_atomic_private_and_round_trips(tmp_path):
    path = tmp_path / "runs" / "state.json"
    secret = CameraConfig(name="door", url="rtsp://admin:hunter2@10.0.0.9/live", fps=4)
    state = record_camera(State(), config(A), "door", secret, now=1.0)
    state = record_bundle(record_camera(state, config(A), "a", None, now=2.0), config(A), "/srv/bundles/b", now=3.0)
    path.parent.mkdir()
    path.write_text("{}")
    os.chmod(path, 0o644)
    save(path, state)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # camera URLs may carry credentials
    assert sorted(p.name for p in path.parent.iterdir()) == ["state.json"]  # no temporary file left behind
    back, notes = load(path)
    assert notes == [] and back == state
    assert back.cameras["door"].camera.url == secret.url and back.cameras["a"].op == "removed"
    merged = merge(config(A), back)
    assert [c.name for c in merged.cameras] == ["door"] and merged.bundle == "/srv/bundles/b"
    assert all("hunter2" not in n.message for n in merged.notes)


def test_missing_file_is_the_empty_state(tmp_path):
    assert load(tmp_path / "nothing.json") == (State(), [])


def _valid() -> dict:
    return json.loads(record_camera(State(), config(A), "x", X, now=5.0).model_dump_json())


def _with(**changes) -> str:
    data = _valid()
    data["cameras"]["x"].update(changes)
    return json.dumps(data)


BAD_FILES = [
    # (id, file content, text the ERROR must contain besides the file name)
    ("not_json", "{\"cameras\": ", "not JSON"),
    ("truncated_write", json.dumps(_valid())[:40], "not JSON"),
    ("bad_camera_field", _with(camera={"name": "x", "url": "rtsp://u:hunter2@h/x", "fps": -1}), "cameras.x.camera.fps"),
    ("unknown_key", _with(colour="red"), "cameras.x.colour"),
    ("bad_op", _with(op="renamed"), "cameras.x.op"),
    ("name_mismatch", _with(camera=cam("y").model_dump()), "cameras.x: holds camera 'y'"),
    ("future_version", json.dumps({**_valid(), "version": 2}), "version"),
    ("not_an_object", "[1, 2]", "(top level)"),
    ("not_utf8", b"\xff\xfe\x00garbage", "cannot be read"),
]


@pytest.mark.parametrize("case", BAD_FILES, ids=[c[0] for c in BAD_FILES])
def test_bad_state_file_is_moved_aside_and_named(tmp_path, case):
    _, content, text = case
    path = tmp_path / "state.json"
    (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)
    state, notes = load(path, now=0.0)
    assert state == State() and len(notes) == 1 and notes[0].level == logging.ERROR
    msg = notes[0].message
    assert str(path) in msg and text in msg and "starting from the config" in msg, msg
    assert "hunter2" not in msg
    (aside,) = [p for p in tmp_path.iterdir() if p.name.startswith("state.json.bad-")]
    assert not path.exists() and str(aside) in msg
    assert aside.read_bytes() == (content if isinstance(content, bytes) else content.encode())
    path.write_text(content if isinstance(content, str) else "x")  # a second bad file gets its own name
    load(path, now=0.0)
    assert len([p for p in tmp_path.iterdir() if p.name.startswith("state.json.bad-")]) == 2


# -------------------------------------------------------------------------------------------- allow-list
@pytest.fixture
def roots(tmp_path) -> dict[str, Path]:
    allowed, other = tmp_path / "bundles", tmp_path / "elsewhere"
    for d in (allowed / "a", allowed / "b", other / "c"):
        d.mkdir(parents=True)
    (allowed / "escape").symlink_to(other / "c")
    (allowed / "alias").symlink_to(allowed / "b")
    return {"allowed": allowed, "other": other}


def test_confine_resolves_links_and_dots_before_checking_the_roots(roots):
    allowed, other = roots["allowed"], roots["other"]
    scorer = ScorerConfig(bundle=allowed / "a")
    assert scorer.allowed_roots() == [allowed]
    assert scorer.confine(allowed / "b") == allowed / "b"
    assert scorer.confine(allowed / "alias") == allowed / "b"  # a link inside the roots is followed
    assert scorer.confine(f"{allowed}/a/../b") == allowed / "b"
    for bad in (other / "c", f"{allowed}/../elsewhere/c", allowed / "escape", Path("/etc")):
        with pytest.raises(PermissionError) as err:
            scorer.confine(bad)
        msg = str(err.value)
        assert "is outside the allowed bundle directories" in msg and f"scorer.bundle_roots: ['{allowed}']" in msg, msg
    assert ScorerConfig(bundle=allowed / "a", bundle_roots=[allowed, other]).confine(allowed / "escape") == other / "c"
    with pytest.raises(PermissionError):
        ScorerConfig(bundle=allowed / "a", bundle_roots=[]).confine(allowed / "b")  # [] turns hot-swaps off


def test_resolve_paths_gives_roots_and_state_file_their_defaults(tmp_path):
    from streaming.config import resolve_paths

    cfg = resolve_paths(ServiceConfig(scorer={"bundle": "models/a"}, events={"path": "runs/ev.db"}), tmp_path)
    assert cfg.scorer.bundle_roots == [tmp_path / "models"] and cfg.state_file() == tmp_path / "runs" / "state.json"
    cfg = resolve_paths(ServiceConfig(scorer={"bundle_roots": ["m", "/abs"]}, state={"path": "s/x.json"}), tmp_path)
    assert cfg.scorer.bundle_roots == [tmp_path / "m", Path("/abs")] and cfg.state_file() == tmp_path / "s" / "x.json"


# ------------------------------------------------------------------------------------------- service
@pytest.mark.slow
def test_api_changes_survive_a_redeploy_and_bundle_swaps_stay_inside_the_roots(tmp_path, roots):
    import requests
    from ray import serve

    from offline.scoring.bundle import random_bundle
    from tests.streaming.service_support import SERVE_PORT, camera_rows, deploy_app, ensure_ray, wait_for

    allowed, other = roots["allowed"], roots["other"]
    small = {"size": 32, "temporal": False, "channels": (8, 16, 32)}
    bundle_a = random_bundle(allowed / "bundle-a", seed=0, **small)
    bundle_b = random_bundle(allowed / "bundle-b", seed=1, **small)
    outside = random_bundle(other / "bundle-c", seed=2, **small)
    (allowed / "link-c").symlink_to(outside)
    demo = "demo://street?seed={}&fps=10&size=32"
    args = {
        "cameras": [{"name": n, "url": demo.format(k), "fps": 2} for k, n in enumerate(("keep", "gone"))],
        "scorer": {"bundle": str(bundle_a), "build_demo_bundle": False, "devices": ["cpu"], "num_cpus": 0.25,
                   "torch_threads": 1},
        "events": {"path": str(tmp_path / "events.db")},
        "http": {"port": SERVE_PORT},
        "namespace": "vadstate",
    }
    base = f"http://127.0.0.1:{SERVE_PORT}/state"
    deploy = partial(deploy_app, args, "vadstate", "/state")
    cameras = partial(camera_rows, base)

    ensure_ray()
    try:
        deploy()
        assert {n: c["source"] for n, c in cameras().items()} == {"keep": "config", "gone": "config"}
        r = requests.post(f"{base}/cameras", json={"name": "added", "url": demo.format(2), "fps": 2}, timeout=60)
        assert r.status_code == 201 and r.json()["source"] == "api", r.text
        assert requests.delete(f"{base}/cameras/gone", timeout=60).status_code == 204
        r = requests.patch(f"{base}/cameras/keep", json={"threshold": 0.5}, timeout=60)
        assert r.status_code == 200 and r.json()["applied"] == "alerts", r.text

        for bad in (outside, f"{allowed}/../elsewhere/bundle-c", allowed / "link-c"):
            r = requests.put(f"{base}/bundle", json={"path": str(bad)}, timeout=60)
            assert r.status_code == 403, (bad, r.status_code, r.text)
            detail = r.json()["detail"]
            assert detail.startswith(f"body.path: {bad}") and f"scorer.bundle_roots: ['{allowed}']" in detail, detail
        assert requests.get(f"{base}/bundle", timeout=30).json()["path"] == str(bundle_a)
        r = requests.put(f"{base}/bundle", json={"path": str(bundle_b)}, timeout=120)
        assert r.status_code == 200 and r.json()["path"] == str(bundle_b), r.text

        state_file = tmp_path / "state.json"  # default: beside events.path
        assert stat.S_IMODE(state_file.stat().st_mode) == 0o600
        saved = json.loads(state_file.read_text())
        assert sorted(saved["cameras"]) == ["added", "gone", "keep"] and saved["bundle"]["path"] == str(bundle_b)

        serve.delete("vadstate")  # the replica's shutdown stops every camera: none of that is recorded
        assert json.loads(state_file.read_text()) == saved
        deploy()
        after = cameras()
        assert {n: c["source"] for n, c in after.items()} == {"added": "api", "keep": "api"}, after
        keep = requests.get(f"{base}/cameras/keep", timeout=30).json()
        assert keep["config"]["threshold"] == 0.5 and keep["source"] == "api"
        assert requests.get(f"{base}/bundle", timeout=30).json()["path"] == str(bundle_b)
        wait_for(lambda: cameras()["added"]["windows_scored"] >= 1, 60, "the restored camera's first score")
        assert cameras()["added"]["bundle"]["path"] == str(bundle_b)

        # the operator edits "keep" in the config afterwards (config wins) and bundle B disappears (config's bundle)
        serve.delete("vadstate")
        shutil.rmtree(bundle_b)
        args["cameras"][0]["fps"] = 3
        deploy()
        after = cameras()
        assert {n: c["source"] for n, c in after.items()} == {"added": "api", "keep": "config"}, after
        assert requests.get(f"{base}/cameras/keep", timeout=30).json()["config"]["threshold"] is None
        assert requests.get(f"{base}/bundle", timeout=30).json()["path"] == str(bundle_a)
        saved = json.loads(state_file.read_text())
        assert sorted(saved["cameras"]) == ["added", "gone"] and saved["bundle"] is None, saved
        r = requests.post(f"{base}/cameras", json={"name": "more", "url": demo.format(3), "fps": 2}, timeout=60)
        assert r.status_code == 201 and r.json()["persisted"] is True and r.json()["persist_error"] is None, r.text

        # a state file that cannot be written: every answer says so, /healthz names it, the changes still apply
        serve.delete("vadstate")
        blocker = tmp_path / "not-a-directory"
        blocker.write_text("")
        args["state"] = {"path": str(blocker / "state.json")}
        deploy()
        r = requests.post(f"{base}/cameras", json={"name": "unsaved", "url": demo.format(4), "fps": 2}, timeout=60)
        assert r.status_code == 201 and r.json()["persisted"] is False, r.text
        assert str(blocker / "state.json") in r.json()["persist_error"], r.text
        health = requests.get(f"{base}/healthz", timeout=30)
        assert health.status_code == 200 and "cannot save" in health.json()["state_error"], health.text
        r = requests.delete(f"{base}/cameras/unsaved", timeout=60)
        assert r.status_code == 204 and r.headers["X-VAD-Persisted"] == "false"
    finally:
        serve.delete("vadstate")
