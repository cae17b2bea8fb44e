"""Warm start along a stream (flow.warm_start): the initial flow in both TV-L1 backends, chains of pairs, and the
rule that makes a window's flow depend on that window alone (eval's clip-level chains = the camera's window chains).

Real Ped2 pairs at 64 px keep this file at a few seconds.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from offline.config import FlowConfig
from offline.data.pixels import to_model_range
from offline.data.readers import open_dataset, read_frames
from offline.flow import FlowEstimator, TVL1, TVL1Params, window_flow
from offline.flow.cache import cache_key, clip_flow
from offline.flow.estimator import chained_flow
from offline.flow.opencv_backend import OpenCVTVL1
from offline.scoring.bundle import BundleConfig
from offline.scoring.clip_windows import window_of_flow
from tests.offline.flow.frames import gray

BUDGET = {"scales": 3, "warps": 1, "inner_iterations": 10, "outer_iterations": 1}


@pytest.fixture(scope="module")
def cyclist(ped2) -> np.ndarray:
    """(33, 64, 64) gray frames of Ped2 test clip 01 from frame 60 (a cyclist among walkers)."""
    clip = next(c for c in open_dataset(ped2).test if c.id == "01")
    frames = np.stack(list(read_frames(clip, size=64)))[60:93]
    return gray(frames)


def test_torch_initial_flow_follows_opencv_use_initial_flow(cyclist):
    """Started from the previous pair's flow, ours and OpenCV's useInitialFlow agree as closely as they do cold, and
    the start changes the result (so the init is really used, in both)."""
    params = TVL1Params(nscales=3, warps=2)
    g = torch.from_numpy(cyclist)
    i0, i1 = g[1:5], g[2:6]
    init = OpenCVTVL1(params)(g[0:4], g[1:5])
    ours_cold, cv_cold = TVL1(params, compile=False)(i0, i1), OpenCVTVL1(params)(i0, i1)
    ours_warm, cv_warm = TVL1(params, compile=False)(i0, i1, init=init), OpenCVTVL1(params)(i0, i1, init=init)
    epe = lambda a, b: float((a - b).norm(dim=1).mean())  # noqa: E731
    assert epe(ours_warm, cv_warm) < 0.05 and epe(ours_cold, cv_cold) < 0.05
    assert epe(cv_warm, cv_cold) > 2 * epe(ours_warm, cv_warm)
    with pytest.raises(ValueError, match="init must be"):
        TVL1(params, compile=False)(i0, i1, init=init[:, :, :8])


def test_chained_flow_restarts_each_chain_cold_and_chains_the_rest(cyclist):
    est = FlowEstimator(FlowConfig(backend="opencv", warm_start=True, warm_scales=1, **BUDGET))
    g = torch.from_numpy(cyclist)
    f0, f1 = g[:-1], g[1:]  # 32 pairs
    flow = chained_flow(est, f0, f1, chain=16, batch=3)  # batch smaller than the chains: chunks too
    for start in (0, 16):  # each chain's first pair: the cold solver
        torch.testing.assert_close(flow[start], est(f0[start], f1[start]), rtol=0, atol=0)
    for t in (1, 7, 15, 17, 31):  # the others: the warm (one level) solver from the previous pair
        torch.testing.assert_close(flow[t], est(f0[t], f1[t], init=flow[t - 1]), rtol=0, atol=0)
    cold = FlowEstimator(FlowConfig(backend="opencv", **BUDGET))(f0, f1)
    assert not torch.allclose(flow[1:16], cold[1:16], atol=1e-3)


def test_eval_clip_chains_equal_the_camera_window_chains(cyclist):
    """clip_flow chains every warm_chain frames from the clip's first; window_flow chains each window: the windows
    a stream scores (hop = window = 16) get the identical flow either way."""
    from offline.data.pixels import model_to_gray255
    from offline.flow import encode_flow

    est = FlowEstimator(FlowConfig(backend="opencv", warm_start=True, **BUDGET))
    x = to_model_range(np.repeat(cyclist.round().astype(np.uint8)[..., None], 3, axis=-1))  # (3, N, H, W)
    raw = torch.from_numpy(clip_flow(model_to_gray255(x, channel_dim=0).numpy(), est, batch=8, dtype=np.float32))
    assert raw.shape == (32, 2, 64, 64)
    clip_enc = encode_flow(raw, est.clip).permute(1, 0, 2, 3)  # (3, N - 1, H, W): what vad eval slices
    live = window_flow(torch.stack([x[:, s : s + 16] for s in (0, 16)]), est)  # what the scorer computes
    for b, s in enumerate((0, 16)):
        torch.testing.assert_close(live[b], window_of_flow(clip_enc, s, 16), rtol=0, atol=0)


def test_a_window_longer_than_the_chain_is_refused(cyclist):
    est = FlowEstimator(FlowConfig(backend="opencv", warm_start=True, warm_chain=8, **BUDGET))
    x = to_model_range(np.repeat(cyclist[:16].astype(np.uint8)[..., None], 3, axis=-1)).unsqueeze(0)
    with pytest.raises(ValueError, match="warm_chain"):
        window_flow(x, est)


def test_warm_start_is_part_of_the_cache_key_and_needs_non_overlapping_windows(tmp_path):
    cold, warm = FlowConfig(), FlowConfig(warm_start=True)
    assert cache_key(tmp_path, 128, cold) != cache_key(tmp_path, 128, warm)
    assert cache_key(tmp_path, 128, cold) == cache_key(tmp_path, 128, FlowConfig(warm_scales=2))  # unused when off
    base = {"version": 1, "spatial": {"channels": [8, 16, 32]}, "weights_sha256": "x"}
    with pytest.raises(ValueError, match="flow.warm_start needs"):
        BundleConfig.model_validate({**base, "flow": {"warm_start": True}, "scoring": {"hop": 8}})
    assert BundleConfig.model_validate({**base, "flow": {"warm_start": True}, "scoring": {"hop": 16}}).flow.warm_start
