"""Per-camera bundles (streaming/bundle_set.py through ScorerService, then the whole service): each camera scores
with its own bundle, a swap of one camera leaves the others alone, refusals change nothing, the loaded bundles are
reference-counted and bounded, and a camera's bundle survives a restart.

Small random bundles (spatial AE only, seeded) give different reconstructions of the same frames, so a camera's
scores identify the bundle that made them: they must equal that bundle's offline StreamScorer over the camera's
windows (up to batch-size float noise).
"""
from __future__ import annotations

import time
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from offline.scoring.bundle import BundleError, ScoringSpec, random_bundle
from offline.scoring.detector import Detector
from offline.scoring.stream import StreamScorer
from streaming.batching import to_model_input
from streaming.bundle_set import BundleLimitError
from streaming.scorer_service import ScorerService
from tests.faults.test_bundle_swap import damaged_bundle
from tests.faults.tools.media import demo_frames
from tests.polling import wait_for

T = 16
T0 = time.time() - 3600  # wall clock of a camera's first frame (10 fps)
SMALL = {"temporal": False, "channels": (8, 16, 32)}


def _bundle(path: Path, size: int, seed: int, threshold: float = 0.9) -> Path:
    return random_bundle(path, size=size, seed=seed, scoring=ScoringSpec(threshold=threshold, running_warmup=4), **SMALL)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bundles")
    return {"a": _bundle(root / "a", 32, 0), "b": _bundle(root / "b", 32, 1, threshold=0.95),
            "big": _bundle(root / "big", 64, 2, threshold=0.97), "a2": _bundle(root / "a2", 32, 3)}


def sha(path: Path) -> str:
    return Detector.load(path).config.weights_sha256[:12]


class Recording(ScorerService):
    """The real ScorerService; it also keeps (bundle sha, scored window) of every window it scores."""

    def __init__(self, *a, **kw):
        self.seen: list = []
        super().__init__(*a, **kw)

    def _after_scoring(self, r, bundle=None):
        self.seen.append((bundle, r))
        super()._after_scoring(r, bundle)


def windows(camera: str, n: int, size: int, seed: int, start: int = 0, after_s: float = 0.0) -> list[SimpleNamespace]:
    """`n` windows of demo footage; frame indices from `start`, wall clock `after_s` after T0 (10 fps)."""
    frames = demo_frames(n * T, size=(size, size), seed=seed)
    return [SimpleNamespace(camera=camera, frames=frames[k * T:(k + 1) * T], indices=np.arange(s, s + T),
                            wall_s=T0 + after_s + (k * T + np.arange(T)) / 10)
            for k, s in enumerate(range(start, start + n * T, T))]


def offline_scores(path: Path, ws: list) -> np.ndarray:
    """The bundle's offline StreamScorer over `ws` in order, one window at a time (a fresh normaliser)."""
    det = Detector.load(path)
    stream = StreamScorer(det.frame_scorer())
    out = []
    for w in ws:
        raw = det.score(to_model_input([w.frames])).raw(0)
        out.append(np.asarray(stream.push(w.indices, raw)[1]["score"]))
    return np.concatenate(out)


def service(bundle: Path, tmp_path: Path, **kw) -> Recording:
    return Recording("cpu", "cpu", str(bundle), {"path": str(tmp_path / "e.db")}, max_batch=4, max_wait_ms=5,
                     max_pending=64, torch_threads=1, **kw)


def scored(svc: Recording, camera: str) -> list:
    return [(b, r) for b, r in list(svc.seen) if r.camera == camera]


def feed(svc: Recording, ws: list) -> None:
    before = {c: len(scored(svc, c)) for c in {w.camera for w in ws}}
    for w in ws:
        svc.submit(w)
    for c, n in before.items():
        wait_for(lambda: len(scored(svc, c)) == n + sum(w.camera == c for w in ws), 60, f"{c}'s windows scored")


def test_each_camera_scores_with_its_own_bundle_and_a_swap_leaves_the_other_alone(bundles, tmp_path):
    svc = service(bundles["a"], tmp_path)
    try:
        assert svc.set_camera("one") == {"size": 32, "window": T, "hop": T}
        assert svc.set_camera("two", bundle=str(bundles["b"])) == {"size": 32, "window": T, "hop": T}
        one, two = windows("one", 6, 32, seed=1), windows("two", 6, 32, seed=1)  # the same footage
        feed(svc, [w for pair in zip(one[:3], two[:3]) for w in pair])
        stats = svc.stats()
        assert stats["camera_bundles"] == {"one": {"path": str(bundles["a"]), "sha256": sha(bundles["a"]), "default": True},
                                           "two": {"path": str(bundles["b"]), "sha256": sha(bundles["b"]), "default": False}}
        assert stats["loaded_bundles"] == 2 and stats["max_bundles"] == 8
        assert [(b["path"], b["cameras"], b["default"]) for b in stats["bundles"]] == [
            (str(bundles["a"]), ["one"], True), (str(bundles["b"]), ["two"], False)]
        assert all(b["parameter_bytes"] > 10_000 for b in stats["bundles"])
        # the alert threshold left to the bundle is each camera's own bundle's scoring.threshold
        assert (svc._cams["one"].tracker.threshold, svc._cams["two"].tracker.threshold) == (0.9, 0.95)

        info = svc.swap_camera_bundle("two", str(bundles["big"]))
        assert info["input"] == {"size": 64, "window": T, "hop": T} and info["sha256"] == sha(bundles["big"])
        assert info["previous"] == {"path": str(bundles["b"]), "sha256": sha(bundles["b"]), "default": False}
        assert svc._cams["two"].tracker.threshold == 0.97
        stats = svc.stats()
        assert [b["path"] for b in stats["bundles"]] == [str(bundles["a"]), str(bundles["big"])]  # b unloaded
        dropped = stats["cameras"]["two"]["windows_dropped"]
        svc.submit(windows("two", 1, 32, seed=9, start=10_000, after_s=60)[0])  # cut before its ingest followed: dropped
        wait_for(lambda: svc.stats()["cameras"]["two"]["windows_dropped"] == dropped + 1, 30, "the stale window dropped")
        big = windows("two", 3, 64, seed=1, after_s=60)  # the camera's ingest restarts: indices from 0 again
        feed(svc, [w for pair in zip(one[3:], big) for w in pair])
        assert svc.stats()["errors"] == 0
    finally:
        svc.stop()

    got_one, got_two = scored(svc, "one"), scored(svc, "two")
    assert {b for b, _ in got_one} == {sha(bundles["a"])}  # every batch scored by the camera's own model
    assert [b for b, _ in got_two] == [sha(bundles["b"])] * 3 + [sha(bundles["big"])] * 3
    score = {c: np.concatenate([r.score for _, r in got]) for c, got in (("one", got_one), ("two", got_two))}
    # camera one's normaliser ran through camera two's swap untouched: one offline stream over all its windows
    np.testing.assert_allclose(score["one"], offline_scores(bundles["a"], one), atol=1e-3)
    # camera two: bundle b's stream, then big's from a fresh normaliser (its calibration)
    np.testing.assert_allclose(score["two"][: 3 * T], offline_scores(bundles["b"], two[:3]), atol=1e-3)
    np.testing.assert_allclose(score["two"][3 * T:], offline_scores(bundles["big"], big), atol=1e-3)
    assert np.abs(score["one"][: 3 * T] - score["two"][: 3 * T]).max() > 0.01  # two models, two score streams


def test_refusals_change_nothing_the_limit_holds_and_unused_bundles_unload(bundles, tmp_path):
    svc = service(bundles["a"], tmp_path, max_bundles=2)
    try:
        svc.set_camera("one")
        svc.set_camera("two", bundle=str(bundles["b"]))
        bad = damaged_bundle("checksum_mismatch", bundles["big"], tmp_path)
        with pytest.raises(BundleError, match=f"{bad}/model.safetensors: checksum mismatch"):
            svc.swap_camera_bundle("two", str(bad))
        with pytest.raises(KeyError, match="nobody"):
            svc.swap_camera_bundle("nobody", str(bundles["b"]))
        assert svc.stats()["camera_bundles"]["two"]["sha256"] == sha(bundles["b"])
        feed(svc, windows("two", 1, 32, seed=2))
        assert scored(svc, "two")[-1][0] == sha(bundles["b"])  # the running model still scores

        with pytest.raises(BundleLimitError, match=r"over the limit scorer\.max_bundles \(2\)"):
            svc.set_camera("three", bundle=str(bundles["big"]))  # a third bundle
        assert "three" not in svc.registered() and svc.stats()["loaded_bundles"] == 2
        svc.swap_camera_bundle("two", str(bundles["big"]))  # b goes as big comes: still two
        svc.set_camera("three", bundle=str(bundles["big"]))  # shared, not loaded again
        loaded = {b["path"]: b["cameras"] for b in svc.stats()["bundles"]}
        assert loaded == {str(bundles["a"]): ["one"], str(bundles["big"]): ["three", "two"]}

        # PUT /bundle's meaning: the default changes, cameras with their own bundle keep theirs
        svc.remove_camera("three")
        svc.commit_bundle(svc.prepare_bundle(str(bundles["a2"]))["sha256"])
        cams = svc.stats()["camera_bundles"]
        assert cams["one"]["sha256"] == sha(bundles["a2"]) and cams["two"]["sha256"] == sha(bundles["big"])
        assert {b["path"] for b in svc.stats()["bundles"]} == {str(bundles["a2"]), str(bundles["big"])}  # a unloaded

        svc.remove_camera("two")
        assert [b["path"] for b in svc.stats()["bundles"]] == [str(bundles["a2"])]  # the default stays
        svc.set_camera("two", bundle=str(bundles["b"]))
        svc.swap_camera_bundle("two", None)  # back to the default
        assert svc.stats()["camera_bundles"]["two"] == {"path": str(bundles["a2"]), "sha256": sha(bundles["a2"]),
                                                         "default": True}
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                   for f in svc.metric_families() for s in f.samples}
        assert samples[("vad_scorer_loaded_bundles", (("scorer", "cpu"),))] == 1
        assert samples[("vad_camera_bundle_info", (("bundle", sha(bundles["a2"])), ("camera", "two")))] == 1
    finally:
        svc.stop()


# ------------------------------------------------------------------------------------------- service
@pytest.mark.slow
def test_service_per_camera_bundles_swap_refusals_limit_and_restart(tmp_path):
    import requests
    from ray import serve

    from tests.streaming.service_support import SERVE_PORT, camera_rows, deploy_app, ensure_ray

    allowed, other = tmp_path / "bundles", tmp_path / "elsewhere"
    b = {k: _bundle(allowed / k, size, seed) for k, size, seed in (("a", 32, 0), ("b", 32, 1), ("c", 64, 2), ("d", 32, 3))}
    outside = _bundle(other / "e", 32, 4)
    bad = damaged_bundle("checksum_mismatch", b["c"], allowed)
    demo = "demo://street?seed={}&fps=10&size=32"
    args = {
        "cameras": [{"name": "one", "url": demo.format(0), "fps": 10},
                    {"name": "two", "url": demo.format(1), "fps": 10, "bundle": str(b["b"])}],
        "scorer": {"bundle": str(b["a"]), "build_demo_bundle": False, "devices": ["cpu"], "num_cpus": 0.25,
                   "torch_threads": 1, "max_bundles": 3},
        "events": {"path": str(tmp_path / "events.db")},
        "http": {"port": SERVE_PORT},
        "namespace": "vadbundles",
    }
    base = f"http://127.0.0.1:{SERVE_PORT}/bundles"
    deploy = partial(deploy_app, args, "vadbundles", "/bundles")
    cameras = partial(camera_rows, base)

    def scorer() -> dict:
        return requests.get(f"{base}/scorers", timeout=30).json()["cpu"]

    def put(name: str, path) -> requests.Response:
        return requests.put(f"{base}/cameras/{name}/bundle", json={"path": None if path is None else str(path)},
                            timeout=120)

    ensure_ray()
    try:
        deploy()
        wait_for(lambda: all(c["windows_scored"] >= 1 for c in cameras().values()), 60, "both cameras scored")
        cams = cameras()
        assert cams["one"]["bundle"] == {"path": str(b["a"]), "sha256": sha(b["a"]), "default": True}
        assert cams["two"]["bundle"] == {"path": str(b["b"]), "sha256": sha(b["b"]), "default": False}
        s = scorer()
        assert s["loaded_bundles"] == 2 and s["cameras"]["two"]["bundle"] == sha(b["b"])  # scored by its own
        assert [(x["sha256"], x["cameras"]) for x in s["bundles"]] == [(sha(b["a"]), ["one"]), (sha(b["b"]), ["two"])]
        text = requests.get(f"{base}/metrics", timeout=30).text
        assert 'vad_scorer_loaded_bundles{scorer="cpu"} 2.0' in text
        assert f'vad_camera_bundle_info{{bundle="{sha(b["b"])}",camera="two"}} 1.0' in text, text[-3000:]

        # refused: a damaged bundle (422 naming file and reason), outside the roots (403), an unknown camera (404)
        r = put("two", bad)
        assert r.status_code == 422 and "model.safetensors: checksum mismatch" in r.json()["detail"], r.text
        r = put("two", outside)
        assert r.status_code == 403 and f"scorer.bundle_roots: ['{allowed}']" in r.json()["detail"], r.text
        assert put("nobody", b["c"]).status_code == 404
        assert cameras()["two"]["bundle"]["sha256"] == sha(b["b"])

        # swap two to a 64x64 bundle: its windows follow; camera one keeps its actor, bundle and scoring
        before = cameras()
        r = put("two", b["c"])
        assert r.status_code == 200 and r.json()["input"] == {"size": 64, "window": T, "hop": T}, r.text
        assert r.json()["persisted"] is True and r.json()["previous"]["sha256"] == sha(b["b"])
        wait_for(lambda: scorer()["cameras"]["two"]["bundle"] == sha(b["c"]), 60, "two scored by bundle c")
        after = cameras()
        assert after["one"]["actor"] == before["one"]["actor"] and after["one"]["bundle"] == before["one"]["bundle"]
        wait_for(lambda: cameras()["one"]["windows_scored"] > after["one"]["windows_scored"], 30, "one goes on")
        assert scorer()["cameras"]["one"]["bundle"] == sha(b["a"]) and scorer()["errors"] == 0
        assert [x["sha256"] for x in scorer()["bundles"]] == [sha(b["a"]), sha(b["c"])]  # b unloaded

        # the limit (3): a camera with a third bundle runs, a fourth bundle is refused naming the limit
        r = requests.post(f"{base}/cameras", json={"name": "three", "url": demo.format(2), "fps": 10,
                                                   "bundle": str(b["b"])}, timeout=120)
        assert r.status_code == 201, r.text
        r = requests.post(f"{base}/cameras", json={"name": "four", "url": demo.format(3), "fps": 10,
                                                   "bundle": str(b["d"])}, timeout=120)
        assert r.status_code == 409 and "scorer.max_bundles (3)" in r.json()["detail"], r.text
        assert "four" not in cameras()
        assert requests.delete(f"{base}/cameras/three", timeout=60).status_code == 204
        assert scorer()["loaded_bundles"] == 2

        # two's bundle is persisted: a redeploy brings it back
        serve.delete("vadbundles")
        deploy()
        two = requests.get(f"{base}/cameras/two", timeout=30).json()
        assert two["bundle"] == {"path": str(b["c"]), "sha256": sha(b["c"]), "default": False}, two
        assert two["source"] == "api" and two["config"]["bundle"] == str(b["c"])
        wait_for(lambda: scorer()["cameras"].get("two", {}).get("bundle") == sha(b["c"]), 60, "two scored by c again")
    finally:
        serve.delete("vadbundles")


def test_threshold_for_a_false_alert_rate_per_camera_follows_its_bundle_and_fps(bundles, tmp_path):
    """alerts.max_false_alerts_per_hour: each camera's threshold is chosen on its own bundle's calibration trace,
    replayed at its own fps; a bare threshold wins; the stats say which and at what expected rate."""
    import json

    from offline.scoring.alert_rules import AlertRules, count_alerts
    from tests.offline.scoring.test_alert_rules import _normal_scores

    traced = tmp_path / "traced"
    _bundle(traced, 32, 5)
    cfg = json.loads((traced / "config.json").read_text())
    trace = _normal_scores(1800, 5.0, seed=7)
    cfg["calibration"] = {"score_trace": {"cal": [round(float(v), 4) for v in trace]}, "frames": len(trace)}
    (traced / "config.json").write_text(json.dumps(cfg))
    svc = service(bundles["a"], tmp_path)
    try:
        svc.set_camera("slow", {"max_false_alerts_per_hour": 20}, bundle=str(traced), fps=5.0)
        svc.set_camera("fast", {"max_false_alerts_per_hour": 20}, bundle=str(traced), fps=20.0)
        svc.set_camera("bare", {"max_false_alerts_per_hour": 20, "threshold": 0.8}, bundle=str(traced), fps=5.0)
        svc.set_camera("untraced", {"max_false_alerts_per_hour": 20})
        th = svc.stats()["camera_thresholds"]
        assert th["slow"]["source"] == th["fast"]["source"] == "max_false_alerts_per_hour"
        assert th["slow"]["expected_per_hour"] <= 20 and th["fast"]["expected_per_hour"] <= 20
        # the same footage replayed 4x faster is a quarter of the time: its alerts count 4x per hour
        assert th["fast"]["threshold"] > th["slow"]["threshold"]
        rules = AlertRules(0.5, 0.1)
        assert count_alerts([trace], 5.0, th["slow"]["threshold"], rules) * 2 == pytest.approx(th["slow"]["expected_per_hour"])
        assert (th["bare"]["threshold"], th["bare"]["source"]) == (0.8, "config")
        assert (th["untraced"]["threshold"], th["untraced"]["source"]) == (0.9, "bundle") and th["untraced"]["note"]
        feed(svc, windows("slow", 1, 32, seed=1))
        cam = wait_for(lambda: svc._cams.get("slow"), 10, "camera slow's alert state")
        assert cam.tracker.threshold == th["slow"]["threshold"]  # the tracker alerts at it
    finally:
        svc.stop()
