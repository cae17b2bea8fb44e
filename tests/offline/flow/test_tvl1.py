"""Unit tests of offline.flow: each TV-L1 building block against OpenCV's, the encoding, window_flow, the estimator.

Small images (<= 96 px) and eager torch keep this file at a few seconds; the real-footage accuracy tests live in
test_flow_accuracy.py.
"""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from offline.config import ConfigError, FlowConfig, load_config
from offline.flow import FlowEstimator, TVL1, TVL1Params, decode_flow, encode_flow, resolve_backend, window_flow
from offline.flow.opencv_backend import OpenCVTVL1, opencv_available
from offline.flow.tvl1 import (
    centered_gradient,
    divergence,
    forward_gradient,
    FLT_EPSILON,
    _step_split,
    _step_stacked,
    _WarpConstants,
    median_blur,
    median_blur_gather,
    median_blur_network,
    median_network,
    pyramid_sizes,
    resize_linear,
    tvl1_step,
    tvl1_step_gamma,
    warp_bicubic,
)

needs_contrib = pytest.mark.skipif(not opencv_available(), reason="needs opencv-contrib (cv2.optflow)")


def texture(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth random texture in [0, 255] (blurred noise), enough gradient everywhere for flow."""
    rng = np.random.default_rng(seed)
    x = cv2.GaussianBlur(rng.random((h, w)).astype(np.float32), (0, 0), 2.0)
    x = (x - x.min()) / (x.max() - x.min())
    return (x * 255).astype(np.float32)


def shifted(img: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """img moved by (dx, dy): out(x) = img(x - d), so the flow from img to out is +d."""
    h, w = img.shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    return cv2.remap(img, xs - dx, ys - dy, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)


@pytest.mark.parametrize("size", [(256, 256), (240, 360), (17, 20)])
def test_pyramid_sizes_follow_opencv_rounding(size):
    h, w = size
    sizes = pyramid_sizes(h, w, 5, 0.8)
    img = np.zeros(size, np.float32)
    for (ah, aw), (bh, bw) in zip(sizes, sizes[1:]):
        img = cv2.resize(np.zeros((ah, aw), np.float32), None, fx=0.8, fy=0.8, interpolation=cv2.INTER_LINEAR)
        assert img.shape == (bh, bw)
    assert all(min(s) >= 16 for s in sizes)
    if size == (256, 256):
        assert sizes == [(256, 256), (205, 205), (164, 164), (131, 131), (105, 105)]
    if size == (17, 20):
        assert sizes == [(17, 20)]  # the next level would be below 16 pixels


def test_resize_matches_cv2_down_and_up():
    x = texture(90, 70) + np.random.default_rng(1).random((90, 70)).astype(np.float32) * 30
    down = cv2.resize(x, None, fx=0.8, fy=0.8, interpolation=cv2.INTER_LINEAR)
    ours = resize_linear(torch.from_numpy(x)[None], down.shape, (1 / 0.8, 1 / 0.8))[0].numpy()
    np.testing.assert_allclose(ours, down, atol=1e-3)
    up = cv2.resize(down, (70, 90), interpolation=cv2.INTER_LINEAR)
    ours_up = resize_linear(torch.from_numpy(down)[None], (90, 70))[0].numpy()
    np.testing.assert_allclose(ours_up, up, atol=1e-3)


@pytest.mark.parametrize("k", [3, 5])
def test_median_blur_matches_cv2(k):
    x = np.random.default_rng(k).normal(size=(2, 33, 41)).astype(np.float32)
    ref = np.stack([cv2.medianBlur(xi, k) for xi in x])
    for f in (median_blur, median_blur_gather):
        np.testing.assert_array_equal(f(torch.from_numpy(x), k).numpy(), ref)


@pytest.mark.parametrize("k", [3, 5, 7])
def test_median_formulations_equal_numpy_median_of_the_edge_padded_window(k):
    """Gather + sort (the GPU's eager median), gather + torch.median, and the sorting network (the CPU's) against
    np.median over each k x k window of the edge-replicated image, bit for bit, on data with many ties (values on a
    coarse grid; no -0, whose tie with +0 may come out either way) and odd sizes, with extra leading dimensions."""
    rng = np.random.default_rng(10 + k)
    x = (np.round(rng.normal(size=(3, 19, 26)) * 4) / 4).astype(np.float32) + np.float32(0.0)  # + 0: no -0
    r = k // 2
    padded = np.pad(x, ((0, 0), (r, r), (r, r)), mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(padded, (k, k), axis=(1, 2)).reshape(*x.shape, k * k)
    ref = np.median(windows, axis=-1).astype(np.float32).view(np.int32)
    t = torch.from_numpy(x)
    formulations = (median_blur_gather(t, k), median_blur_gather(t, k, by_sort=False), median_blur_network(t, k))
    for ours in (*formulations, median_blur(t, k)):
        assert ours.dtype == torch.float32 and ours.shape == x.shape
        np.testing.assert_array_equal(ours.numpy().view(np.int32), ref)
    stacked = t.view(3, 1, 19, 26).expand(3, 2, 19, 26)
    for f in (median_blur_gather, median_blur_network):
        out = f(stacked, k)
        assert out.shape == (3, 2, 19, 26) and np.array_equal(out[:, 1].numpy().view(np.int32), ref)


@pytest.mark.parametrize("gamma", [0.0, 0.5])
def test_stacked_step_is_bit_identical_to_tvl1_step(gamma):
    """The eager step on stacked state (all components per op, warp constants hoisted, shifts in place) returns
    exactly tvl1_step's / tvl1_step_gamma's numbers, including for frozen pairs and flat (|grad| ~ 0) pixels."""
    g = torch.Generator().manual_seed(int(gamma * 10))
    b, h, w = 3, 11, 14
    comps = 3 if gamma else 2
    u = torch.randn(b, comps, h, w, generator=g)
    p = torch.randn(b, comps, 2, h, w, generator=g) * 0.3
    iw = torch.randn(b, 2, h, w, generator=g) * 20
    iw[:, :, :3] = 0.0  # grad == 0: the "else 0" branch
    iw[:, :, 3, :4] = 1e-4  # 0 < grad <= FLT_EPSILON
    grad = iw[:, 0] * iw[:, 0] + iw[:, 1] * iw[:, 1]
    assert bool(((grad > 0) & (grad <= FLT_EPSILON)).any())
    rho_c = torch.randn(b, h, w, generator=g) * 5
    if comps == 3:
        iw = torch.cat((iw, torch.full((b, 1, h, w), gamma)), dim=1)
    active = torch.tensor([True, False, True]).view(b, 1, 1, 1)
    l_t, theta, taut = 0.15 * 0.3, 0.3, 0.25 / 0.3
    lg = l_t * grad
    mask = grad > FLT_EPSILON
    k = _WarpConstants(iw, rho_c, lg, -lg, ~mask, -torch.where(mask, grad, torch.ones_like(grad)), grad)
    work = torch.zeros_like(p)
    for _ in range(3):  # a few iterations: the scratch's zero border must survive reuse
        step = tvl1_step_gamma if gamma else tvl1_step
        ref_u, ref_p, ref_err = _step_split(step, u, p, k, active, l_t, theta, taut, gamma)
        new_u, new_p, new_err = _step_stacked(u, p, k, active, work, l_t, theta, taut)
        for a, c in ((ref_u, new_u), (ref_p, new_p), (ref_err, new_err)):
            assert a.shape == c.shape and torch.equal(a.view(torch.int32), c.view(torch.int32))
        assert torch.equal(new_u[1], u[1]) and torch.equal(new_p[1], p[1]) and float(new_err[1]) == 0.0
        u, p = new_u, new_p


@pytest.mark.parametrize("n", [9, 25, 49])
def test_median_network_selects_the_median(n):
    vals = torch.randn(n, 500, dtype=torch.float64)
    v = list(vals)
    for a, b in median_network(n):
        v[a], v[b] = torch.minimum(v[a], v[b]), torch.maximum(v[a], v[b])
    assert torch.equal(v[n // 2], vals.median(dim=0).values)


def test_warp_bicubic_matches_cv2_remap_with_zero_border():
    rng = np.random.default_rng(3)
    img = (rng.random((48, 56)) * 255).astype(np.float32)
    u = (rng.standard_normal(img.shape) * 3).astype(np.float32)
    v = (rng.standard_normal(img.shape) * 3).astype(np.float32)
    ys, xs = np.mgrid[0:48, 0:56].astype(np.float32)
    ref = cv2.remap(img, xs + u, ys + v, cv2.INTER_CUBIC)  # BORDER_CONSTANT 0, as DualTVL1 calls it
    ours = warp_bicubic(torch.from_numpy(img)[None, None], torch.from_numpy(u)[None], torch.from_numpy(v)[None])
    np.testing.assert_allclose(ours[0, 0].numpy(), ref, atol=5e-3)


def test_divergence_is_minus_the_adjoint_of_forward_gradient():
    """<grad u, p> = -<u, div p> for dual fields that vanish where the forward gradient does (last column / row),
    which holds in the solver since p starts at 0 and is updated with that gradient."""
    g = torch.Generator().manual_seed(0)
    u = torch.randn(2, 13, 17, generator=g, dtype=torch.float64)
    px, py = torch.randn(2, 2, 13, 17, generator=g, dtype=torch.float64)
    px[..., -1] = 0
    py[..., -1, :] = 0
    ux, uy = forward_gradient(u)
    lhs = (ux * px + uy * py).sum()
    rhs = -(u * divergence(px, py)).sum()
    assert torch.allclose(lhs, rhs)


def test_centered_gradient_of_a_ramp_is_its_slope_inside_and_half_at_the_border():
    x = torch.arange(10, dtype=torch.float32).repeat(8, 1)[None] * 3.0  # d/dx = 3
    dx, dy = centered_gradient(x)
    assert torch.allclose(dx[0, :, 1:-1], torch.full((8, 8), 3.0))
    assert torch.allclose(dx[0, :, 0], torch.full((8,), 1.5))
    assert torch.count_nonzero(dy) == 0


@needs_contrib
@pytest.mark.parametrize(
    "overrides",
    [
        dict(nscales=1, warps=1, median_filtering=1, outer_iterations=1, inner_iterations=10),
        dict(nscales=1, warps=2, outer_iterations=2, inner_iterations=15),
        dict(nscales=3, warps=1, outer_iterations=1, inner_iterations=10, median_filtering=3),
        dict(nscales=1, warps=1, outer_iterations=1, inner_iterations=10, gamma=0.5),
    ],
)
def test_short_runs_match_opencv_to_float_precision(overrides):
    """With few iterations the solver has not yet amplified float noise: ours equals OpenCV's to ~1e-3 px."""
    a = texture(64, 80, seed=5)
    b = shifted(a, 1.3, -0.7)
    params = TVL1Params(**overrides)
    ref = OpenCVTVL1(params)(torch.from_numpy(a)[None], torch.from_numpy(b)[None])[0]
    ours = TVL1(params, compile=False)(torch.from_numpy(a)[None], torch.from_numpy(b)[None])[0]
    assert (ours - ref).abs().max() < 2e-3, (ours - ref).abs().max()


def test_translation_is_recovered_and_batch_is_independent():
    """A textured image moved by (1.5, -0.75) px: the interior flow is the shift; a pair's flow does not depend
    on what else is in the batch (per-pair stopping masks), nor on the inner loop's sync cadence."""
    a = texture(64, 64, seed=1)
    b = shifted(a, 1.5, -0.75)
    c = texture(64, 64, seed=2)
    d = shifted(c, -2.0, 0.5)
    params = TVL1Params(nscales=3, warps=3)
    est = TVL1(params, compile=False)
    alone = est(torch.from_numpy(a), torch.from_numpy(b))
    assert alone.shape == (2, 64, 64)
    inner = alone[:, 8:-8, 8:-8]
    assert abs(float(inner[0].mean()) - 1.5) < 0.05 and abs(float(inner[1].mean()) + 0.75) < 0.05
    batch, stats = TVL1(params, compile=False, sync_every=30)(
        torch.from_numpy(np.stack([c, a])), torch.from_numpy(np.stack([d, b])), return_stats=True
    )
    torch.testing.assert_close(batch[1], alone, atol=1e-4, rtol=0)
    assert len(stats.iterations) == len(stats.sizes) and stats.iterations[0].shape == (2,)
    assert int(stats.iterations[0].max()) <= 3 * 300


def test_encode_decode_round_trip_and_bounds():
    flow = torch.tensor([[[3.0, 0.0]], [[-12.0, 4.0]]])  # (2, H=1, W=2): pixels (3, -12) and (0, 4)
    enc = encode_flow(flow, clip=10.0)
    assert enc.shape == (3, 1, 2) and enc.min() >= -1 and enc.max() <= 1
    torch.testing.assert_close(enc[0, 0], torch.tensor([0.3, 0.0]))
    torch.testing.assert_close(enc[1, 0], torch.tensor([-1.0, 0.4]))  # -12 clipped to -10
    torch.testing.assert_close(enc[2, 0], torch.tensor([1.0, -0.2]))  # |(3, -12)| > 10 -> 1; |(0, 4)| = 4 -> -0.2
    torch.testing.assert_close(decode_flow(enc, clip=10.0)[:, 0], torch.tensor([[3.0, 0.0], [-10.0, 4.0]]))
    small = torch.randn(4, 2, 5, 6)
    torch.testing.assert_close(decode_flow(encode_flow(small, 10.0), 10.0), small)
    torch.testing.assert_close(encode_flow(torch.zeros(2, 3, 3))[2], torch.full((3, 3), -1.0))


@pytest.mark.parametrize(
    "bad, match",
    [(torch.zeros(3, 4, 4), "2, H, W"), (torch.zeros(4), "2, H, W")],
)
def test_encode_rejects_bad_shapes(bad, match):
    with pytest.raises(ValueError, match=match):
        encode_flow(bad)
    with pytest.raises(ValueError, match="3, H, W"):
        decode_flow(torch.zeros(2, 4, 4))


def test_window_flow_shape_order_and_last_index():
    """A clip translating right by 1 px per frame: every encoded u is 1/clip inside, and t=T-1 repeats t=T-2."""
    base = texture(48, 64, seed=7)
    frames = np.stack([shifted(base, float(t), 0.0) for t in range(4)])  # (T, H, W) in [0, 255]
    x = torch.from_numpy(frames / 127.5 - 1.0).float()[None, None].repeat(1, 3, 1, 1, 1)  # (1, 3, T, H, W)
    est = FlowEstimator(FlowConfig(backend="torch", compile="off", clip=5.0, scales=3, warps=2))
    enc = window_flow(x, est)
    assert enc.shape == (1, 3, 4, 48, 64)
    assert torch.equal(enc[:, :, 3], enc[:, :, 2])
    inner = enc[0, :, :3, 8:-8, 8:-8]
    assert abs(float(inner[0].mean()) - 1.0 / 5.0) < 0.02
    assert abs(float(inner[1].mean())) < 0.02
    with pytest.raises(ValueError, match="at least 2 frames"):
        window_flow(x[:, :, :1], est)


def test_estimator_backends_interface_and_errors():
    cpu = torch.device("cpu")
    assert resolve_backend("auto", torch.device("cuda")) == "torch"
    assert resolve_backend("auto", cpu) == ("opencv" if opencv_available() else "torch")
    est = FlowEstimator(FlowConfig(backend="torch", compile="off", scales=2, warps=1))
    a = texture(32, 32)
    out = est(a, a)  # numpy (H, W) in, (2, H, W) out
    assert out.shape == (2, 32, 32) and out.dtype == torch.float32 and out.abs().max() < 1e-3
    with pytest.raises(ValueError, match=r"same shape.*\(32, 32\).*\(32, 31\)"):
        est(a, a[:, :31])
    with pytest.raises(ValueError, match=r"\(B, H, W\)"):
        est(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8))
    assert est(torch.zeros(0, 8, 8), torch.zeros(0, 8, 8)).shape == (0, 2, 8, 8)


def test_flow_config_names_bad_fields():
    with pytest.raises(ConfigError, match="flow.median_filtering: must be 1 .* got 4"):
        load_config(overrides={"flow.median_filtering": 4})
    with pytest.raises(ConfigError, match="flow.backend"):
        load_config(overrides={"flow.backend": "cuda"})
    cfg = load_config(overrides={"flow.lambda": 0.2, "flow.nscales": 3})
    assert cfg.flow.lambda_ == 0.2 and cfg.flow.scales == 3


@needs_contrib
def test_opencv_backend_matches_torch_interface():
    a = texture(40, 48, seed=4)
    b = shifted(a, 0.8, 0.4)
    cfg = FlowConfig(backend="opencv", scales=2)
    out = FlowEstimator(cfg)(torch.from_numpy(np.stack([a, b])), torch.from_numpy(np.stack([b, a])))
    assert out.shape == (2, 2, 40, 48) and out.dtype == torch.float32
    assert abs(float(out[0, 0, 8:-8, 8:-8].mean()) - 0.8) < 0.1
    with pytest.raises(ValueError, match="median_filtering 1, 3 or 5"):
        OpenCVTVL1(TVL1Params(median_filtering=7))
