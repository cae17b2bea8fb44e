"""`vad flow-cache` (resumable flow cache) and `vad flow` (visualisation) on small synthetic clips and real frames."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from offline.cli import main
from offline.config import FlowConfig
from offline.data.readers import open_dataset
from offline.flow import FlowEstimator
from offline.data.pixels import rgb_to_gray255
from offline.flow.cache import FlowCache, clip_flow
from offline.flow.visualize import colour_wheel, flow_to_rgb

FAST = dict(backend="torch", compile="off", scales=2, warps=2)


def make_frames_dataset(root, clips=("01", "02"), n=4, size=40):
    """root/training/frames/<id>/NNN.png: a texture drifting 1 px right per frame."""
    rng = np.random.default_rng(0)
    base = cv2.GaussianBlur((rng.random((size, size + n)) * 255).astype(np.float32), (0, 0), 1.5)
    base = cv2.normalize(base, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    for cid in clips:
        d = root / "training" / "frames" / cid
        d.mkdir(parents=True)
        for t in range(n):
            cv2.imwrite(str(d / f"{t:03d}.png"), base[:, n - t : n - t + size])
    return root


def test_cache_fills_resumes_and_rejects_changed_params(tmp_path):
    root = make_frames_dataset(tmp_path / "data")
    ds = open_dataset(root, "frames")
    cfg = FlowConfig(**FAST)
    est = FlowEstimator(cfg)
    cache = FlowCache(tmp_path / "cache", root, 40, cfg)
    assert cache.fill(ds.train, est, batch=2, show_progress=False) == {"computed": 2, "skipped": 0}
    flow = cache.load(ds.train[0])
    assert flow.shape == (3, 2, 40, 40) and flow.dtype == np.float16
    assert abs(float(flow[:, 0, 8:-8, 8:-8].mean()) - 1.0) < 0.1  # drifting right by 1 px/frame
    meta = json.loads((cache.dir / "meta.json").read_text())
    assert meta["size"] == 40 and meta["params"]["warps"] == 2
    # resume: a clip deleted (as if the run was interrupted) is the only one recomputed
    cache.path(ds.train[1]).unlink()
    assert cache.fill(ds.train, est, show_progress=False) == {"computed": 1, "skipped": 1}
    # other parameters -> another key, nothing reused
    other = FlowCache(tmp_path / "cache", root, 40, FlowConfig(**{**FAST, "warps": 3}))
    assert other.key != cache.key and not other.has(ds.train[0])
    # a corrupt file is named in the error
    np.save(cache.path(ds.train[0]), np.zeros((2, 2, 40, 40), np.float16))
    with pytest.raises(ValueError, match=r"01\.npy: flow of shape"):
        cache.load(ds.train[0])


def test_flow_cache_command(tmp_path, capsys):
    root = make_frames_dataset(tmp_path / "data", clips=("07",), n=3)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("data:\n  size: 40\n  layout: frames\nflow:\n  backend: torch\n  compile: 'off'\n  nscales: 2\n  warps: 1\n")
    argv = ["flow-cache", "--config", str(cfg), "--root", str(root), "--cache-dir", str(tmp_path / "c"), "--device", "cpu"]
    assert main(argv) == 0
    assert "1 clip(s) computed" in capsys.readouterr().out
    assert main(argv) == 0
    assert "1 already cached" in capsys.readouterr().out
    assert len(list((tmp_path / "c").rglob("07.npy"))) == 1
    assert main(["flow-cache", "--root", str(tmp_path / "nowhere"), "--cache-dir", str(tmp_path / "c")]) == 2


def test_clip_flow_matches_estimator_on_real_frames(ped2):
    """The cache stores exactly what the estimator returns (float16), pair t = frame t -> t+1."""
    from offline.data.readers import read_frames
    import itertools

    clip = open_dataset(ped2).test[0]
    frames = np.stack(list(itertools.islice(read_frames(clip, size=64), 3)))
    est = FlowEstimator(FlowConfig(**FAST))
    g = rgb_to_gray255(frames)
    flow = clip_flow(g, est, batch=1)
    direct = est(torch.from_numpy(g[1:2]), torch.from_numpy(g[2:3]))[0].numpy()
    np.testing.assert_allclose(flow[1].astype(np.float32), direct, atol=1e-2)


def test_colour_coding():
    right = np.zeros((2, 2, 2), np.float32)
    right[0] = 1.0
    rgb = flow_to_rgb(right, max_magnitude=1.0)
    assert tuple(rgb[0, 0]) == (255, 0, 0)  # full-saturation red = moving right
    assert tuple(flow_to_rgb(np.zeros((2, 2, 2)), 1.0)[0, 0]) == (255, 255, 255)  # no motion = white
    wheel = colour_wheel(33)
    assert wheel.shape == (33, 33, 3) and tuple(wheel[0, 0]) == (255, 255, 255)
    with pytest.raises(ValueError, match=r"\(2, H, W\)"):
        flow_to_rgb(np.zeros((3, 2, 2)))


@pytest.mark.parametrize("suffix", [".png", ".mp4"])
def test_vad_flow_writes_a_visualisation(tmp_path, ped2, suffix, capsys):
    out = tmp_path / f"viz{suffix}"
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("flow:\n  backend: torch\n  compile: 'off'\n  nscales: 2\n  warps: 1\n")
    argv = ["flow", str(ped2 / "test" / "01.mkv"), "--start", "60", "--pairs", "2", "--size", "64", "--out", str(out)]
    assert main([*argv, "--config", str(cfg), "--device", "cpu"]) == 0
    assert out.stat().st_size > 1000 and "2 pair(s)" in capsys.readouterr().out
    if suffix == ".png":
        from PIL import Image

        assert Image.open(out).size[1] == 2 * 64
    assert main(["flow", str(tmp_path / "missing.mkv"), "--out", str(out)]) == 2
    assert "no such video" in capsys.readouterr().out
