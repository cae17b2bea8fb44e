"""Scoring and normalisation against hand-computed values; the running normaliser is chunking-invariant."""
import math

import numpy as np
import pytest
import torch

from offline.baselines import difference_maps
from offline.scoring.frame_scorer import FrameScorer
from offline.scoring.normalise import MinMaxNormaliser, RunningNormaliser, make_normaliser
from offline.scoring.evidence import aggregate, frame_mse, frame_psnr, reduce_error
from offline.scoring.weights import check_weights, renormalise_weights
from offline.data.windows import plan_windows


def test_psnr_and_mse_hand_computed():
    target = torch.zeros(1, 3, 2, 2, 2)
    recon = torch.zeros(1, 3, 2, 2, 2)
    recon[0, :, 0] = 0.5  # frame 0: every pixel off by 0.5 -> MSE 0.25
    recon[0, 0, 1, 0, 0] = 1.0  # frame 1: one of 12 values off by 1 -> MSE 1/12
    mse = frame_mse(recon, target)
    assert torch.allclose(mse, torch.tensor([[0.25, 1 / 12]]))
    psnr = frame_psnr(recon, target, max_val=2.0)
    assert torch.allclose(psnr, torch.tensor([[10 * math.log10(4 / 0.25), 10 * math.log10(4 * 12)]]), atol=1e-4)
    with pytest.raises(ValueError, match="shapes differ"):
        frame_mse(recon, target[:, :, :1])


def test_aggregate_hand_computed_and_weight_validation():
    w1, w2, w3 = np.array([0.0, 1.0]), np.array([1.0, 0.5]), np.array([0.2, 0.4])
    assert np.allclose(aggregate(w1, w2, w3, (0.65, 0.25, 0.1)), [0.27, 0.815])
    for bad in [(0.5, 0.25, 0.1), (0.7, 0.3, 0.1), (1.2, -0.2, 0.0)]:
        with pytest.raises(ValueError, match="sum to 1|lie in"):
            aggregate(w1, w2, w3, bad)
    with pytest.raises(ValueError, match="w3 is missing"):
        aggregate(w1, w2, None, (0.65, 0.25, 0.1))
    assert renormalise_weights((0.65, 0.25, 0.1), (True, True, False)) == pytest.approx((0.65 / 0.9, 0.25 / 0.9, 0.0))
    assert check_weights([0.45, 0.5, 0.05]) == (0.45, 0.5, 0.05)


@pytest.mark.parametrize(
    "values, expected",
    [([1.0, 3.0, 2.0], [0.0, 1.0, 0.5]), ([5.0, 5.0], [0.0, 0.0]), ([7.0], [0.0]), ([], [])],
)
def test_minmax_table(values, expected):
    assert np.allclose(MinMaxNormaliser().normalise(np.array(values)), expected)


def test_running_normaliser_chunking_invariant_and_causal():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(10, 1, 300), rng.normal(20, 1, 40), rng.normal(10, 1, 100)])
    whole = RunningNormaliser(halflife=100, warmup=20).normalise(x)
    for chunks in ([1] * len(x), [7, 100, 1, 3], [len(x)]):
        n = RunningNormaliser(halflife=100, warmup=20)
        parts, i, k = [], 0, 0
        while i < len(x):
            size = chunks[k % len(chunks)]
            parts.append(n.update(x[i : i + size])[0])
            i, k = i + size, k + 1
        assert np.array_equal(np.concatenate(parts), whole)
    # causal: changing the future does not change the past
    y = x.copy()
    y[320:] = 0
    assert np.array_equal(RunningNormaliser(halflife=100, warmup=20).normalise(y)[:320], whole[:320])
    # the anomalous stretch scores high all along (gated statistics do not absorb it)
    assert whole[300:340].min() > 0.99 and np.median(whole[30:300]) < 0.8


def test_running_normaliser_warmup_flag_and_prior():
    n = RunningNormaliser(warmup=5)
    _, warm = n.update(np.arange(8.0))
    assert warm.tolist() == [False] * 5 + [True] * 3
    p = RunningNormaliser(prior=(10.0, 1.0), warmup=1)
    s, _ = p.update(np.array([10.0, 14.0]))
    assert s[0] == pytest.approx(0.5) and s[1] > 0.95
    with pytest.raises(ValueError, match="unknown normaliser"):
        make_normaliser("zscore")
    with pytest.raises(TypeError):
        MinMaxNormaliser().update(np.zeros(3))


def test_frame_scorer_video_and_stream_share_code():
    rng = np.random.default_rng(1)
    raw = {"w1": rng.normal(size=50), "w2": rng.normal(size=50), "w3": rng.uniform(size=50)}
    mm = FrameScorer((0.65, 0.25, 0.1), "minmax").video(raw)
    assert np.allclose(mm["score"], 0.65 * MinMaxNormaliser().normalise(raw["w1"]) + 0.25 * MinMaxNormaliser().normalise(raw["w2"]) + 0.1 * raw["w3"])
    run = FrameScorer((0.65, 0.25, 0.1), "running", running={"halflife": 50, "warmup": 5})
    offline = run.video(raw)["score"]
    stream = FrameScorer((0.65, 0.25, 0.1), "running", running={"halflife": 50, "warmup": 5})
    parts = [stream.update({k: v[i : i + 16] for k, v in raw.items()})[0]["score"] for i in range(0, 50, 16)]
    assert np.allclose(np.concatenate(parts), offline)
    no_d = FrameScorer((0.65, 0.25, 0.1), "minmax", available=(True, True, False))
    assert no_d.weights == pytest.approx((0.65 / 0.9, 0.25 / 0.9, 0.0))
    with pytest.raises(ValueError, match="missing"):
        FrameScorer((0.65, 0.25, 0.1)).video({"w1": raw["w1"], "w2": None, "w3": raw["w3"]})


def test_frame_difference_hand_computed():
    f = np.zeros((3, 2, 2), np.uint8)
    f[1] = 4
    f[2, 0, 0] = 4
    maps = difference_maps(torch.from_numpy(f).float()[None])  # (1, T, H, W): frame 0 copies frame 1's map
    assert reduce_error(maps, "frame")[0].tolist() == [4.0, 4.0, 3.0]


@pytest.mark.parametrize("n, stride, mode", [(16, 16, "all"), (40, 16, "all"), (40, 5, "all"), (40, 1, "center"), (17, 16, "center")])
def test_plan_windows_covers_every_frame(n, stride, mode):
    starts, which, offset = plan_windows(n, 16, stride, mode)
    assert len(which) == n and starts.max() + 16 <= n and starts.min() >= 0
    assert np.array_equal(starts[which] + offset, np.arange(n))
    if mode == "center":
        inner = np.arange(8, n - 8)
        assert (offset[inner] == 8).all()
    with pytest.raises(ValueError, match="shorter"):
        plan_windows(10, 16)
