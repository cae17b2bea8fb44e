"""`scoring.block_norm: z`: each block's evidence in units of its own normal variation before the worst block is
taken (offline/scoring/evidence.py), its statistics from the calibration footage (offline/scoring/calibration.py),
the same in a bundle's Detector and in the classical rows.

The scene that motivates it: one region always moves (a road, trees, near people under perspective), another is
quiet; something small moving in the quiet region is the anomaly. The raw worst block is always the busy region,
so the anomaly is invisible; per-block z-scores see it.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from offline.baselines import ClassicalDetector
from offline.scoring.bundle import BundleConfig, BundleError, ScoringSpec, load_bundle, random_bundle, update_scoring
from offline.scoring.calibration import calibrate
from offline.scoring.detector import Detector
from offline.scoring.evidence import STD_FLOOR, block_stats, reduce_error

SIZE, T = 32, 16


def _scene(n: int, seed: int, intruder: bool = False) -> torch.Tensor:
    """(3, n, SIZE, SIZE) in [-1, 1]: the left half flickers strongly every frame (busy), the right half is still;
    with `intruder`, a 4x4 patch in the right half flickers at a third of the busy amplitude."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, SIZE, SIZE), np.float32)
    x[:, :, : SIZE // 2] = rng.uniform(-0.9, 0.9, (n, SIZE, SIZE // 2))
    if intruder:
        x[:, 20:24, 24:28] = rng.uniform(-0.3, 0.3, (n, 4, 4))
    return torch.from_numpy(np.repeat(x[None], 3, axis=0))


def _detector(block_norm: str) -> ClassicalDetector:
    scoring = ScoringSpec(normaliser="calibrated", reduction_spatial="block_max", block=8, block_norm=block_norm)
    return ClassicalDetector("frame-difference", SIZE, T, scoring)


def _evidence(det, x: torch.Tensor) -> np.ndarray:
    windows = torch.stack([x[:, s : s + T] for s in range(0, x.shape[1] - T + 1, T)])
    return det.score(windows).evidence.reshape(-1)


def test_block_stats_floor_the_std_of_blocks_that_never_change():
    blocks = torch.zeros(50, 2, 2)
    blocks[:, 0, 0] = torch.linspace(0, 10, 50)  # varies
    blocks[:, 0, 1] = torch.linspace(0, 1, 50)
    mean, std = block_stats(blocks)
    assert mean[0, 0] == pytest.approx(5.0) and std[0, 0] == pytest.approx(float(torch.linspace(0, 10, 50).double().std()), rel=1e-5)
    median = float(torch.tensor([blocks[:, 0, 0].std(), blocks[:, 0, 1].std(), 0.0, 0.0]).median())
    assert std[1, 1] == pytest.approx(max(STD_FLOOR * median, 1e-8))  # constant blocks get the floor, not 0
    with pytest.raises(ValueError, match="N >= 2"):
        block_stats(torch.zeros(1, 2, 2))


def test_reduce_error_with_stats_is_the_worst_block_z_score():
    maps = torch.zeros(1, 1, 4, 4)
    maps[..., :2, :2] = 10.0  # busy block at its usual level
    maps[..., 2:, 2:] = 1.0  # quiet block, well above its usual 0
    mean = torch.tensor([[10.0, 0.0], [0.0, 0.0]])
    std = torch.tensor([[5.0, 0.1], [0.1, 0.1]])
    assert float(reduce_error(maps, "block_max", 2)) == 10.0  # raw: the busy block
    assert float(reduce_error(maps, "block_max", 2, (mean, std))) == pytest.approx(10.0)  # z: (1 - 0) / 0.1
    with pytest.raises(ValueError, match="grid"):
        reduce_error(maps, "block_max", 1, (mean, std))


def test_per_block_z_sees_a_small_motion_in_a_quiet_region_that_the_raw_worst_block_misses():
    normal = [(f"n{i}", _scene(4 * T, seed=i)) for i in range(3)]
    test_normal, test_anomal = _scene(2 * T, seed=10), _scene(2 * T, seed=11, intruder=True)
    raw, z = _detector("none"), _detector("z")
    for det in (raw, z):
        det.config.calibration = calibrate(det, normal)
    assert "w1" in z.config.calibration.block_stats and not raw.config.calibration.block_stats
    mean, std = (np.asarray(g) for g in z.config.calibration.block_stats["w1"])
    assert mean.shape == std.shape == (SIZE // 8, SIZE // 8)
    assert mean[:, :2].min() > 10 * max(mean[:, 2:].max(), 1e-3)  # the busy half, learned per block
    # raw: the worst block is the busy half in both clips, the intruder does not show
    r_n, r_a = _evidence(raw, test_normal), _evidence(raw, test_anomal)
    assert r_a.mean() < r_n.max() * 1.2
    # z: the intruder's block is far outside its own normal variation; every anomalous frame above every normal one
    z_n, z_a = _evidence(z, test_normal), _evidence(z, test_anomal)
    assert z_a[1:].min() > z_n.max()


def test_a_bundle_calibrated_with_block_norm_z_carries_its_grids_and_scores_with_them(tmp_path):
    scoring = ScoringSpec(normaliser="calibrated", reduction_spatial="block_max", reduction_temporal="block_max",
                          block=8, block_norm="z")
    path = random_bundle(tmp_path / "b", size=SIZE, temporal=True, channels=(4, 8, 8), seed=1, scoring=scoring)
    det = Detector.load(path)
    cal = calibrate(det, [(f"n{i}", _scene(2 * T, seed=i)) for i in range(2)])
    assert set(cal.block_stats) == {"w1", "w2"}
    config = load_bundle(path).config.model_copy(update={"calibration": cal})
    reloaded = BundleConfig.model_validate(config.model_dump(mode="json"))
    assert reloaded.calibration.block_grid("w1")[0].shape == (SIZE // 8, SIZE // 8)
    det.config = reloaded
    windows = torch.stack([_scene(T, seed=5)])
    got = det.score(windows)
    assert np.isfinite(got.psnr).all() and np.isfinite(got.flow_error).all()
    # w1 is the worst block's z-score, not a PSNR: the same error maps through reduce_error with the grids
    maps = det.score(windows, return_maps=True).error_map
    want = reduce_error(torch.from_numpy(maps), "block_max", 8, reloaded.calibration.block_grid("w1"))
    assert -got.psnr == pytest.approx(want.numpy(), rel=1e-5)


def test_block_norm_z_is_refused_without_a_block_reduction_or_without_grids(tmp_path):
    path = random_bundle(tmp_path / "b", size=SIZE, temporal=False, channels=(4, 8, 8), seed=1,
                         scoring=ScoringSpec(reduction_spatial="block_max", block=8))
    with pytest.raises(BundleError, match="block_norm"):
        update_scoring(path, reduction_spatial="frame", block_norm="z")
    config = load_bundle(path).config
    cal = calibrate(Detector.load(path), [("n", _scene(2 * T, seed=0))])  # calibrated without block_norm: no grids
    bad = config.model_copy(update={"scoring": config.scoring.model_copy(update={"block_norm": "z"}), "calibration": cal})
    with pytest.raises(ValueError, match="block_stats has no w1"):
        BundleConfig.model_validate(bad.model_dump(mode="json"))
