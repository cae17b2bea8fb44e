"""Scenario 9 at the scorer (no Ray): a bundle hot-swap lands between batches, refused bundles change nothing.

Two random bundles (seeded, 32x32, spatial AE only) give different reconstructions of the same window, so every
scored window can be traced to exactly one fully loaded model: its PSNR must equal A's or B's for those frames.
"""
from __future__ import annotations

import json
import pickle
import shutil
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from offline.scoring.bundle import BundleError, random_bundle
from offline.scoring.detector import Detector
from streaming.batching import to_model_input
from streaming.scorer_service import ScorerService
from tests.faults.tools import media
from tests.polling import wait_for

pytestmark = pytest.mark.slow
SIZE, T = 32, 16


class RecordingScorer(ScorerService):
    """The real ScorerService; it also keeps (bundle sha, camera, first index, raw w1) of every scored window."""

    def __init__(self, *a, **kw):
        self.seen: list[tuple[str | None, str, int, np.ndarray]] = []
        super().__init__(*a, **kw)

    def _after_scoring(self, r, bundle=None):
        self.seen.append((bundle, r.camera, int(r.indices[0]), np.asarray(r.raw["w1"])))
        super()._after_scoring(r, bundle)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bundles")
    return {
        "a": random_bundle(root / "a", size=SIZE, temporal=False, channels=(8, 16, 32), seed=0),
        "b": random_bundle(root / "b", size=SIZE, temporal=False, channels=(8, 16, 32), seed=1),
        "big": random_bundle(root / "big", size=64, temporal=False, channels=(8, 16, 32), seed=2),
    }


@pytest.fixture(scope="module")
def windows() -> list[SimpleNamespace]:
    frames = media.demo_frames(8 * T, size=(SIZE, SIZE), seed=4)
    return [SimpleNamespace(camera=f"cam{k % 2}", frames=frames[s:s + T], indices=np.arange(s, s + T),
                            wall_s=time.time() + np.arange(T) / 10) for k, s in enumerate(range(0, len(frames), T))]


def _psnr_by(path: Path, windows) -> dict[tuple[str, int], np.ndarray]:
    det = Detector.load(path)
    scores = det.score(to_model_input([w.frames for w in windows]))
    return {(w.camera, int(w.indices[0])): -scores.psnr[i] for i, w in enumerate(windows)}


def _sha(path: Path) -> str:
    return json.loads((path / "config.json").read_text())["weights_sha256"][:12]


def test_swap_lands_between_batches_and_no_window_is_scored_by_a_half_loaded_model(bundles, windows, tmp_path):
    svc = RecordingScorer("cpu", "cpu", str(bundles["a"]), {"path": str(tmp_path / "e.db")}, max_batch=2,
                          max_wait_ms=5, max_pending=64, torch_threads=1)
    try:
        for cam in ("cam0", "cam1"):
            svc.set_camera(cam)
        stop = threading.Event()

        def feed():
            n, t0 = len(windows) * T, time.time()
            for rnd in range(10_000):  # keep batches coming while the swap happens; time and indices move on
                if stop.is_set():
                    return
                for w in windows:
                    idx = w.indices + rnd * n
                    svc.submit(SimpleNamespace(camera=w.camera, frames=w.frames, indices=idx, wall_s=t0 + idx / 10))
                time.sleep(0.01)

        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()
        wait_for(lambda: len(svc.seen) >= 8, 60, "windows scored with bundle A")
        info = svc.prepare_bundle(str(bundles["b"]))
        assert info["sha256"] == _sha(bundles["b"]) and svc.bundle_info()["sha256"] == _sha(bundles["a"])  # staged only
        svc.commit_bundle(info["sha256"])
        n_at_commit = len(svc.seen)
        wait_for(lambda: len(svc.seen) >= n_at_commit + 8, 60, "windows scored with bundle B")
        stop.set()
        feeder.join(5)
        stats = svc.stats()
        assert stats["bundle_sha256"] == _sha(bundles["b"]) and stats["bundle_swaps"] == 1
        assert stats["errors"] == 0, stats["last_error"]
        assert {c["bundle"] for c in stats["cameras"].values()} == {_sha(bundles["b"])}
    finally:
        stop.set()
        svc.stop()

    ref = {_sha(bundles["a"]): _psnr_by(bundles["a"], windows), _sha(bundles["b"]): _psnr_by(bundles["b"], windows)}
    tags = []
    for sha, cam, start, w1 in list(svc.seen):
        for other, table in ref.items():
            matches = np.allclose(w1, table[(cam, start % (len(windows) * T))], atol=1e-3)
            assert matches == (other == sha), (sha, other, cam, start)  # exactly the model it is tagged with
        tags.append(sha)
    first_b = tags.index(_sha(bundles["b"]))
    assert set(tags[:first_b]) == {_sha(bundles["a"])} and set(tags[first_b:]) == {_sha(bundles["b"])}, tags
    assert first_b >= 8


def _checksum_mismatch(src: Path, dst: Path) -> None:
    weights = dst / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-100] ^= 0xFF  # one weight byte changed
    weights.write_bytes(bytes(data))


def _unknown_version(src: Path, dst: Path) -> None:
    cfg = json.loads((dst / "config.json").read_text())
    cfg["version"] = 99
    (dst / "config.json").write_text(json.dumps(cfg))


class _Trap:
    """Unpickling this creates a marker file: proof that a loader executed pickle code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _pickle_as_safetensors(src: Path, dst: Path) -> None:
    """model.safetensors replaced by a pickle, and config.json's checksum updated to match it (a careful attacker)."""
    import hashlib

    weights = dst / "model.safetensors"
    weights.write_bytes(pickle.dumps({"spatial.encoder.0.weight": _Trap(dst.parent / f"{dst.name}.UNPICKLED")}))
    cfg = json.loads((dst / "config.json").read_text())
    cfg["weights_sha256"] = hashlib.sha256(weights.read_bytes()).hexdigest()
    (dst / "config.json").write_text(json.dumps(cfg))


def _pickle_only(src: Path, dst: Path) -> None:
    (dst / "model.safetensors").rename(dst / "model.pt")


def _missing_dir(src: Path, dst: Path) -> None:
    shutil.rmtree(dst)


REFUSED = [
    # (id, damage, text the error must contain: the file and the reason)
    ("checksum_mismatch", _checksum_mismatch, "model.safetensors: checksum mismatch"),
    ("unknown_version", _unknown_version, "unsupported bundle version 99"),
    ("pickle_as_safetensors", _pickle_as_safetensors, "model.safetensors: not a safetensors file"),
    ("pickle_only", _pickle_only, "pickled checkpoints are refused"),
    ("missing_dir", _missing_dir, "not a bundle directory"),
]


def damaged_bundle(kind: str, src: Path, root: Path) -> Path:
    """A copy of bundle `src` under `root` with one of the REFUSED damages (shared with the service test)."""
    dst = root / f"refused-{kind}"
    shutil.copytree(src, dst)
    dict((c[0], c[1]) for c in REFUSED)[kind](src, dst)
    return dst


@pytest.mark.parametrize("case", REFUSED, ids=[c[0] for c in REFUSED])
def test_refused_bundle_names_file_and_reason_and_keeps_the_running_one(bundles, windows, tmp_path, case):
    kind, _, text = case
    bad = damaged_bundle(kind, bundles["b"], tmp_path)
    svc = ScorerService("cpu", "cpu", str(bundles["a"]), {"path": str(tmp_path / "e.db")}, max_wait_ms=5,
                        max_pending=64, torch_threads=1)
    try:
        svc.set_camera("cam0")
        with pytest.raises(BundleError) as err:
            svc.prepare_bundle(str(bad))
        assert text in str(err.value) and str(bad) in str(err.value), str(err.value)
        assert not (tmp_path / f"{bad.name}.UNPICKLED").exists()  # the pickle was never executed
        with pytest.raises(BundleError, match="no staged bundle"):
            svc.commit_bundle(_sha(bundles["b"]))
        svc.submit(windows[0])
        wait_for(lambda: svc.stats()["cameras"].get("cam0", {}).get("windows_scored", 0) >= 1, 30, "a scored window")
        stats = svc.stats()
        assert stats["bundle_sha256"] == _sha(bundles["a"]) and stats["bundle_swaps"] == 0 and stats["errors"] == 0
        assert stats["cameras"]["cam0"]["bundle"] == _sha(bundles["a"])
    finally:
        svc.stop()


def test_bundle_with_another_input_size_is_refused(bundles, tmp_path):
    svc = ScorerService("cpu", "cpu", str(bundles["a"]), {"path": str(tmp_path / "e.db")}, torch_threads=1)
    try:
        with pytest.raises(BundleError, match="input 16 frames x 64x64 differs from the running bundle's 16 x 32x32"):
            svc.prepare_bundle(str(bundles["big"]))
        assert svc.bundle_info()["sha256"] == _sha(bundles["a"])
    finally:
        svc.stop()


def test_bundle_with_another_hop_is_refused(bundles, tmp_path):
    """Cameras cut windows at the running bundle's hop: a bundle scoring at another hop needs a restart."""
    import json
    import shutil

    other = tmp_path / "other-hop"
    shutil.copytree(bundles["a"], other)
    cfg = json.loads((other / "config.json").read_text())
    cfg["scoring"]["hop"] = cfg["scoring"]["hop"] // 2
    (other / "config.json").write_text(json.dumps(cfg))
    svc = ScorerService("cpu", "cpu", str(bundles["a"]), {"path": str(tmp_path / "e.db")}, torch_threads=1)
    try:
        with pytest.raises(BundleError, match=r"or its hop: \d+ vs \d+ frames"):
            svc.prepare_bundle(str(other))
        assert svc.bundle_info()["sha256"] == _sha(bundles["a"])
    finally:
        svc.stop()
