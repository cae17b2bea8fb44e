"""offline/scoring/stream.py and the per-AE reductions of offline/scoring/evidence.py.

StreamScorer: each frame is scored once, by the first window that holds it (a stream's first window gives all its
frames, later ones only their newest `hop`), and the scores do not depend on how the stream was cut into windows.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from offline.data.windows import window_starts
from offline.scoring.bundle import Calibration, ScoringSpec
from offline.scoring.evidence import block_means, error_map, frame_psnr, mse_to_psnr, reduce_error
from offline.scoring.frame_scorer import FrameScorer, build_frame_scorer
from offline.scoring.normalise import robust_stats
from offline.scoring.stream import StreamScorer

T = 16
AVAILABLE = (True, True, False)


def evidence(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Per-frame raw evidence of a synthetic stream: noise with a burst (frames 100-129) in both components."""
    rng = np.random.default_rng(seed)
    w1 = rng.normal(-30.0, 1.0, n)
    w2 = rng.gamma(3.0, 0.5, n)
    w1[100:130] += 8.0
    w2[100:130] += 5.0
    return {"w1": w1, "w2": w2}


def windows_of(ev: dict[str, np.ndarray], hop: int, first: int = 0):
    """(indices (T,), raw of that window) every `hop` frames, as a camera's ring buffer emits them."""
    n = len(ev["w1"])
    for s in window_starts(n, T, hop, cover_end=False):
        idx = np.arange(s, s + T)
        yield idx + first, {"w1": ev["w1"][idx], "w2": ev["w2"][idx], "w3": None}


def running_scorer() -> FrameScorer:
    return FrameScorer((0.65, 0.25, 0.1), "running", AVAILABLE, running={"halflife": 50.0, "warmup": 8})


def calibrated_scorer(ev: dict[str, np.ndarray]) -> FrameScorer:
    spec = ScoringSpec(normaliser="calibrated", adapt_halflife=40.0)
    cal = Calibration(robust={k: robust_stats(v[:100]) for k, v in ev.items()}, z_quantiles={"0.5": 0.0, "0.99": 2.5})
    fs = build_frame_scorer(spec, cal, AVAILABLE)
    assert fs.kind == "calibrated"
    return fs


def push_all(ss: StreamScorer, wins) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """Push windows; returns per window (mask, scored indices, scores)."""
    masks, scored, scores = [], [], []
    for idx, raw in wins:
        mask, out, warm = ss.push(idx, raw)
        assert mask.shape == (T,) and out["score"].shape == (int(mask.sum()),) and warm.shape == out["score"].shape
        masks.append(mask)
        scored.append(idx[mask])
        scores.append(out["score"])
    return masks, scored, scores



@pytest.mark.parametrize("hop", [16, 8, 4])
def test_every_frame_scored_once_in_order_first_window_whole_then_newest_hop(hop):
    n = 200
    ev = evidence(n)
    masks, scored, _ = push_all(StreamScorer(running_scorer()), windows_of(ev, hop))
    starts = window_starts(n, T, hop, cover_end=False)
    last = starts[-1] + T
    np.testing.assert_array_equal(np.concatenate(scored), np.arange(last))  # each frame once, in order
    assert masks[0].all()  # the stream's first window: all its frames
    for mask, s in zip(masks[1:], starts[1:]):
        expected = np.zeros(T, dtype=bool)
        expected[T - hop :] = True  # later windows: only the newest `hop`
        np.testing.assert_array_equal(mask, expected, err_msg=f"window at {s}")
    # the hop shapes which frames each window scores: hop 16 never reuses a window's frames, smaller hops do
    assert sum(int(m.sum()) for m in masks) == last and len(masks) == len(starts)


@pytest.mark.parametrize("hop", [16, 8, 4])
@pytest.mark.parametrize("make", [lambda ev: running_scorer(), calibrated_scorer], ids=["running", "calibrated"])
def test_scores_equal_one_frame_scorer_over_the_concatenated_evidence(hop, make):
    """Chunking independence: the windows' scores equal one FrameScorer fed every frame's evidence once, in order."""
    n = 200
    ev = evidence(n)
    _, scored, scores = push_all(StreamScorer(make(ev)), windows_of(ev, hop))
    idx = np.concatenate(scored)
    reference = make(ev).update({"w1": ev["w1"][idx], "w2": ev["w2"][idx], "w3": None})[0]["score"]
    np.testing.assert_array_equal(np.concatenate(scores), reference)


def test_different_hops_score_identically_where_both_scored():
    """Same frames, same evidence: the hop changes only which window delivers a frame, not its score."""
    n = 200
    ev = evidence(n)
    per_hop = {}
    for hop in (16, 8, 4):
        _, scored, scores = push_all(StreamScorer(calibrated_scorer(ev)), windows_of(ev, hop))
        per_hop[hop] = (np.concatenate(scored), np.concatenate(scores))
    common = min(len(i) for i, _ in per_hop.values())
    for hop, (idx, sc) in per_hop.items():
        np.testing.assert_array_equal(idx[:common], per_hop[16][0][:common])
        np.testing.assert_array_equal(sc[:common], per_hop[16][1][:common], err_msg=f"hop {hop}")
    # ...but the set of frames scored by the end of the clip depends on the hop (the tail waits for a window)
    assert len(per_hop[16][0]) == 192 and len(per_hop[8][0]) == 200 and len(per_hop[4][0]) == 200


@pytest.mark.parametrize("hop", [16, 8, 4])
def test_a_restarted_feed_starts_a_new_stream(hop):
    ev1, ev2 = evidence(80, seed=1), evidence(64, seed=2)
    ss = StreamScorer(running_scorer())
    _, scored1, scores1 = push_all(ss, windows_of(ev1, hop))
    masks2, scored2, scores2 = push_all(ss, windows_of(ev2, hop))  # indices back to 0
    assert masks2[0].all()  # the first window after the restart gives all its frames
    idx2 = np.concatenate(scored2)
    np.testing.assert_array_equal(idx2, np.arange(window_starts(64, T, hop, cover_end=False)[-1] + T))
    # the normaliser is not reset by a restart (the camera's scene is the same): one FrameScorer over both
    i1 = np.concatenate(scored1)
    joined = {k: np.concatenate([ev1[k][i1], ev2[k][idx2]]) for k in ("w1", "w2")}
    reference = running_scorer().update({**joined, "w3": None})[0]["score"]
    np.testing.assert_array_equal(np.concatenate(scores1 + scores2), reference)


def test_a_dropped_window_leaves_a_gap_and_the_next_window_gives_all_its_new_frames():
    ev = evidence(64)
    wins = list(windows_of(ev, 8))  # starts 0, 8, 16, ..., 48
    kept = [wins[0], wins[3], wins[4]]  # the scorer fell behind: windows at 8 and 16 were dropped
    masks, scored, _ = push_all(StreamScorer(running_scorer()), kept)
    np.testing.assert_array_equal(scored[1], np.arange(24, 40))  # frames 16..23 were never in a delivered window
    np.testing.assert_array_equal(scored[2], np.arange(40, 48))
    assert masks[1].all()


# -------------------------------------------------------------------------------------------- reductions
def test_reduce_error_frame_is_the_mean():
    maps = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    np.testing.assert_allclose(reduce_error(maps, "frame").numpy(), maps.numpy().mean(axis=(-2, -1)), rtol=1e-6)


@pytest.mark.parametrize("block", [1, 4, 8, 16, 32])
def test_reduce_error_block_max_equals_numpy_reference(block):
    maps = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(block))
    m = maps.numpy().astype(np.float64)
    b = m.reshape(2, 3, 32 // block, block, 32 // block, block).mean(axis=(3, 5))
    np.testing.assert_allclose(block_means(maps, block).numpy(), b, rtol=1e-5)
    np.testing.assert_allclose(reduce_error(maps, "block_max", block).numpy(), b.max(axis=(-2, -1)), rtol=1e-5)


def test_block_max_finds_a_small_anomaly_the_frame_mean_dilutes():
    maps = torch.zeros(1, 1, 64, 64)
    maps[0, 0, 8:16, 40:48] = 1.0  # one 8x8 block of 64
    assert reduce_error(maps, "frame").item() == pytest.approx(1 / 64)
    assert reduce_error(maps, "block_max", 8).item() == pytest.approx(1.0)
    assert reduce_error(maps, "block_max", 16).item() == pytest.approx(0.25)


@pytest.mark.parametrize("block", [0, 5, 64 + 1])
def test_bad_block_raises_naming_it(block):
    with pytest.raises(ValueError, match=rf"block.*got {block}\b"):
        reduce_error(torch.zeros(1, 1, 32, 32), "block_max", block)


def test_unknown_reduction_raises_naming_it():
    with pytest.raises(ValueError, match="'worst'"):
        reduce_error(torch.zeros(1, 1, 32, 32), "worst")


def test_mse_to_psnr_of_the_frame_mean_equals_frame_psnr():
    g = torch.Generator().manual_seed(0)
    target = torch.rand(2, 3, 16, 32, 32, generator=g) * 2 - 1
    recon = (target + 0.1 * torch.randn(target.shape, generator=g)).clamp(-1, 1)
    new = mse_to_psnr(reduce_error(error_map(recon, target), "frame"))
    old = frame_psnr(recon, target)
    assert new.shape == old.shape == (2, 16)
    torch.testing.assert_close(new, old, rtol=1e-5, atol=1e-4)


def test_pool_frames_window_gives_every_frame_its_windows_mean():
    from offline.scoring.evidence import pool_frames

    v = torch.tensor([[1.0, 2.0, 3.0, 6.0], [0.0, 0.0, 0.0, 4.0]])
    assert pool_frames(v, "frame") is v
    assert pool_frames(v, "window").tolist() == [[3.0] * 4, [1.0] * 4]
    with pytest.raises(ValueError, match="'median'"):
        pool_frames(v, "median")


def test_a_bundle_pooled_over_its_window_scores_each_window_with_the_mean_of_its_frames_evidence(tmp_path):
    """The pooling lives in Detector.score, so eval, calibration and the service all get it from the bundle."""
    from offline.scoring.bundle import random_bundle, update_scoring
    from offline.scoring.detector import Detector

    path = random_bundle(tmp_path / "b", size=32, temporal=True, channels=(4, 8, 8), seed=1)
    g = torch.Generator().manual_seed(0)
    frames = torch.rand(2, 3, 16, 32, 32, generator=g) * 2 - 1
    own = Detector.load(path).score(frames)
    update_scoring(path, pool="window")
    pooled = Detector.load(path).score(frames)
    for b in range(2):
        mse = 4.0 / 10 ** (own.psnr[b] / 10)  # back from PSNR (max_val 2) to each frame's error
        np.testing.assert_allclose(pooled.psnr[b], mse_to_psnr(torch.tensor(mse.mean())).item(), rtol=1e-4)
        np.testing.assert_allclose(pooled.flow_error[b], own.flow_error[b].mean(), rtol=1e-5)
    assert pooled.psnr.shape == own.psnr.shape == (2, 16)
