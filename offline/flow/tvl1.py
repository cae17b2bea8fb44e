"""TV-L1 optical flow (Zach, Pock, Bischof 2007) in pure torch, batched, following OpenCV's DualTVL1 step by step.

Every stage mirrors `cv::optflow::DualTVL1OpticalFlow` (opencv_contrib, `modules/optflow/src/tvl1flow.cpp`) so the
two agree to a fraction of a pixel: an INTER_LINEAR pyramid with `scale_step` (sizes rounded as OpenCV rounds them),
bicubic warps with a zero border, centred image gradients, forward
differences for the flow, the thresholding step, the dual update, a 5x5 median of the flow at the start of every
outer iteration, and the stopping rule `sum |u_new - u|^2 <= epsilon^2 * H * W` per warp.

The batch is real parallelism: all B pairs run through the same kernels. A pair that has met the stopping rule is
frozen with a per-pair mask (no host round-trip per iteration on the GPU); the loop ends early once every pair in the
batch has stopped, which is checked every iteration on the CPU and once per outer iteration on CUDA. With
`fixed_schedule` it never checks: every call runs its whole schedule (warps x outer x inner), stopped pairs frozen by
the same masks, so the result is bit-identical and the call has no host sync at all, which a CUDA graph needs
(offline/flow/graphs.py).

Eager mode is launch-bound on a GPU (one kernel per torch op), so the eager path keeps the flow components and the
dual field stacked ((B, C, H, W) and (B, C, 2, H, W)), runs every op on all components at once, hoists what does
not change within a warp out of the inner loop, and writes shifts in place instead of padding (~3x fewer ops per
inner iteration, bit-identical: the same IEEE operations on the same values, only batched); off the CPU the median
is one sort over the gathered neighbours instead of a 226-op sorting network. With torch.compile the
per-component `tvl1_step` and the sorting-network median are compiled as before.

Over 350 lines on purpose: one solver, kept stage for stage beside OpenCV's so the two can be read side by side.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

FLT_EPSILON = float(np.finfo(np.float32).eps)


@dataclass(frozen=True)
class TVL1Params:
    """OpenCV's DualTVL1 parameters, with OpenCV's defaults (METHOD.md)."""

    tau: float = 0.25
    lambda_: float = 0.15
    theta: float = 0.3
    nscales: int = 5
    warps: int = 5
    epsilon: float = 0.01
    inner_iterations: int = 30
    outer_iterations: int = 10
    scale_step: float = 0.8
    gamma: float = 0.0
    median_filtering: int = 5


@dataclass
class TVL1Stats:
    """What a call actually ran: the pyramid sizes (finest first) and inner iterations per scale and pair."""

    sizes: list[tuple[int, int]] = field(default_factory=list)
    iterations: list[torch.Tensor] = field(default_factory=list)  # per scale, finest first: (B,) int64
    unfinished: torch.Tensor | None = None  # (B,) bool: the pair ran some warp's whole budget without meeting the rule

    def pixel_iterations(self) -> torch.Tensor:
        """(B,) sum over scales of inner iterations x pixels, the quantity the memory-bandwidth floor scales with."""
        return sum(it * (h * w) for (h, w), it in zip(self.sizes, self.iterations))


def pyramid_sizes(height: int, width: int, nscales: int, scale_step: float) -> list[tuple[int, int]]:
    """Sizes of OpenCV's pyramid, finest first: each level is round(size * scale_step), stopping below 16 pixels."""
    sizes = [(height, width)]
    for _ in range(1, nscales):
        h, w = sizes[-1]
        nh, nw = round(h * scale_step), round(w * scale_step)  # cvRound == round half to even
        if nh < 16 or nw < 16:
            break
        sizes.append((nh, nw))
    return sizes


def resize_matrix(n_in: int, n_out: int, scale: float, device=None) -> torch.Tensor:
    """(n_out, n_in) weights of OpenCV's INTER_LINEAR resize along one axis; `scale` maps destination to source."""
    d = np.arange(n_out, dtype=np.float64)
    s = ((d + 0.5) * scale - 0.5).astype(np.float32)
    s0 = np.floor(s)
    f = s - s0
    s0 = s0.astype(np.int64)
    low = s0 < 0
    high = s0 >= n_in - 1
    f[low | high] = 0.0
    s0[low] = 0
    s0[high] = n_in - 1
    m = np.zeros((n_out, n_in), dtype=np.float32)
    m[np.arange(n_out), s0] += 1.0 - f
    m[np.arange(n_out), np.minimum(s0 + 1, n_in - 1)] += f
    return torch.from_numpy(m).to(device)


@functools.lru_cache(maxsize=128)
def _resize_matrix_cached(n_in: int, n_out: int, scale: float, device: torch.device) -> torch.Tensor:
    """resize_matrix kept on its device: building it per call is a host->device copy, i.e. a host sync, on CUDA."""
    return resize_matrix(n_in, n_out, scale, device)


def resize_linear(x: torch.Tensor, size: tuple[int, int], scale: tuple[float, float] | None = None) -> torch.Tensor:
    """Bilinear resize of (B, H, W) as cv2.resize INTER_LINEAR does; `scale` (y, x) is dst->src, default in/out."""
    h, w = x.shape[-2:]
    oh, ow = size
    sy, sx = scale if scale is not None else (1.0 / (oh / h), 1.0 / (ow / w))
    my = _resize_matrix_cached(h, oh, sy, x.device)
    mx = _resize_matrix_cached(w, ow, sx, x.device)
    return my @ x @ mx.T


def centered_gradient(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Central differences of (B, H, W), one-sided halves at the border (OpenCV's centeredGradient)."""
    p = F.pad(x.unsqueeze(1), (1, 1, 1, 1), mode="replicate").squeeze(1)
    dx = 0.5 * (p[:, 1:-1, 2:] - p[:, 1:-1, :-2])
    dy = 0.5 * (p[:, 2:, 1:-1] - p[:, :-2, 1:-1])
    return dx, dy


def forward_gradient(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward differences of (B, H, W), zero on the last column / row."""
    dx = F.pad(x[:, :, 1:] - x[:, :, :-1], (0, 1))
    dy = F.pad(x[:, 1:, :] - x[:, :-1, :], (0, 0, 0, 1))
    return dx, dy


def divergence(px: torch.Tensor, py: torch.Tensor) -> torch.Tensor:
    """Backward-difference divergence of the dual field, zero outside (the adjoint of forward_gradient)."""
    return px - F.pad(px[:, :, :-1], (1, 0)) + py - F.pad(py[:, :-1, :], (0, 0, 1, 0))


def _oddeven_merge_sort(n: int) -> list[tuple[int, int]]:
    """Batcher's odd-even merge sort comparators for n inputs (padded to a power of two, pads dropped)."""
    size = 1 << (n - 1).bit_length()
    pairs = []
    p = 1
    while p < size:
        k = p
        while k >= 1:
            for j in range(k % p, size - k, 2 * k):
                for i in range(min(k, size - j - k)):
                    a, b = i + j, i + j + k
                    if a // (2 * p) == b // (2 * p) and b < n:  # pads hold +inf: comparators touching them are no-ops
                        pairs.append((a, b))
            k //= 2
        p *= 2
    return pairs


def median_network(n: int) -> list[tuple[int, int]]:
    """Comparators of a sorting network for n values, pruned to those the middle output depends on."""
    needed = {n // 2}
    kept = []
    for a, b in reversed(_oddeven_merge_sort(n)):
        if a in needed or b in needed:
            kept.append((a, b))
            needed |= {a, b}
    return kept[::-1]


def _median_last_dim(v: torch.Tensor, by_sort: bool) -> torch.Tensor:
    """Middle value along the last (odd-sized) dimension: a sort and its middle element, or torch.median.

    Same value either way. On CUDA, median is a radix select with one 32-thread block per slice (one 25-value slice
    per pixel), while a sort of <= 32 (<= 128) values is a bitonic (warp merge) sort of many slices per block.
    """
    if by_sort:
        return v.sort(dim=-1).values[..., v.shape[-1] // 2]
    return v.median(dim=-1).values


def median_blur_gather(x: torch.Tensor, ksize: int, by_sort: bool = True) -> torch.Tensor:
    """k x k median of (..., H, W) with a replicated border, exact: pad, gather the k*k neighbours of every pixel
    into a last dimension, select the middle one. A handful of kernels whatever k is (the network is hundreds), at
    the price of moving k*k times the image through memory: the GPU's eager formulation.
    """
    r = ksize // 2
    h, w = x.shape[-2:]
    x3 = x.reshape(-1, h, w)
    p = F.pad(x3.unsqueeze(1), (r, r, r, r), mode="replicate").squeeze(1)
    windows = p.unfold(1, ksize, 1).unfold(2, ksize, 1).reshape(x3.shape[0], h, w, ksize * ksize)
    return _median_last_dim(windows, by_sort).reshape(x.shape)


def median_blur_network(x: torch.Tensor, ksize: int) -> torch.Tensor:
    """k x k median of (..., H, W) with a replicated border, exact: a pruned min/max sorting network over the k*k
    shifted views. Element-wise only, so torch.compile turns it into one kernel and the CPU runs it at memory speed
    (~7x faster there than median_blur_gather's per-pixel selection), but in eager mode on a GPU each of its 113
    comparators (5x5) is two kernel launches.
    """
    r = ksize // 2
    h, w = x.shape[-2:]
    x3 = x.reshape(-1, h, w)
    p = F.pad(x3.unsqueeze(1), (r, r, r, r), mode="replicate").squeeze(1)
    v = [p[:, dy : dy + h, dx : dx + w] for dy in range(ksize) for dx in range(ksize)]
    for a, b in median_network(ksize * ksize):
        v[a], v[b] = torch.minimum(v[a], v[b]), torch.maximum(v[a], v[b])
    return v[(ksize * ksize) // 2].reshape(x.shape)


def median_blur(x: torch.Tensor, ksize: int) -> torch.Tensor:
    """k x k median of (..., H, W) with a replicated border (cv2.medianBlur), exact, in the eager formulation that
    is fastest on x's device: the sorting network on the CPU, gather + sort elsewhere (few kernel launches).

    k*k is odd, so both return one of the inputs, the same value (only the sign of a zero can differ, between tied
    -0 and +0 neighbours, and no later operation of the solver tells those apart).
    """
    if x.device.type == "cpu":
        return median_blur_network(x, ksize)
    return median_blur_gather(x, ksize, by_sort=True)


def warp_bicubic(images: torch.Tensor, u1: torch.Tensor, u2: torch.Tensor) -> torch.Tensor:
    """Sample (B, C, H, W) at (x + u1, y + u2): bicubic (A = -0.75), zero outside, like cv2.remap INTER_CUBIC.

    OpenCV 5 samples float maps exactly (checked against cv2.remap: no 1/32-pixel quantisation).
    """
    b, _, h, w = images.shape
    ys = torch.arange(h, device=images.device, dtype=images.dtype).view(1, h, 1)
    xs = torch.arange(w, device=images.device, dtype=images.dtype).view(1, 1, w)
    mx = xs + u1
    my = ys + u2
    grid = torch.stack((mx * (2.0 / (w - 1)) - 1.0, my * (2.0 / (h - 1)) - 1.0), dim=-1)
    return F.grid_sample(images, grid, mode="bicubic", padding_mode="zeros", align_corners=True)


def threshold_coefficient(rho: torch.Tensor, grad: torch.Tensor, l_t: float) -> torch.Tensor:
    """TV-L1's thresholding step: the coefficient of the image gradient in the flow update, per pixel.

    l_t where rho < -l_t |grad|, -l_t where rho > l_t |grad|, else -rho / |grad| (0 where |grad| is ~0); OpenCV's
    rule, shared by the step with and without the illumination term.
    """
    lg = l_t * grad
    safe = torch.where(grad > FLT_EPSILON, grad, torch.ones_like(grad))
    return torch.where(
        rho < -lg,
        torch.full_like(rho, l_t),
        torch.where(rho > lg, torch.full_like(rho, -l_t), torch.where(grad > FLT_EPSILON, -rho / safe, torch.zeros_like(rho))),
    )


def tvl1_step(
    u1: torch.Tensor,
    u2: torch.Tensor,
    p11: torch.Tensor,
    p12: torch.Tensor,
    p21: torch.Tensor,
    p22: torch.Tensor,
    i1wx: torch.Tensor,
    i1wy: torch.Tensor,
    grad: torch.Tensor,
    rho_c: torch.Tensor,
    active: torch.Tensor,
    l_t: float,
    theta: float,
    taut: float,
):
    """One inner iteration for (B, H, W) state: thresholding, primal update, dual update, per-pair error.

    `active` (B, 1, 1) bool freezes pairs that already stopped. Returns the new state and the (B,) squared change.
    Written as plain element-wise and shift ops so torch.compile fuses it into a couple of kernels.
    """
    rho = rho_c + i1wx * u1 + i1wy * u2
    c = threshold_coefficient(rho, grad, l_t)
    n1 = u1 + c * i1wx + theta * divergence(p11, p12)
    n2 = u2 + c * i1wy + theta * divergence(p21, p22)
    n1 = torch.where(active, n1, u1)
    n2 = torch.where(active, n2, u2)
    d1, d2 = n1 - u1, n2 - u2
    err = (d1 * d1 + d2 * d2).sum(dim=(1, 2))
    u1x, u1y = forward_gradient(n1)
    u2x, u2y = forward_gradient(n2)
    ng1 = 1.0 + taut * torch.sqrt(u1x * u1x + u1y * u1y)
    ng2 = 1.0 + taut * torch.sqrt(u2x * u2x + u2y * u2y)
    q11 = torch.where(active, (p11 + taut * u1x) / ng1, p11)
    q12 = torch.where(active, (p12 + taut * u1y) / ng1, p12)
    q21 = torch.where(active, (p21 + taut * u2x) / ng2, p21)
    q22 = torch.where(active, (p22 + taut * u2y) / ng2, p22)
    return n1, n2, q11, q12, q21, q22, err


def tvl1_step_gamma(u1, u2, u3, p11, p12, p21, p22, p31, p32, i1wx, i1wy, grad, rho_c, active, l_t, theta, taut, gamma):
    """tvl1_step with OpenCV's illumination term gamma * u3 (used only when gamma != 0)."""
    rho = rho_c + i1wx * u1 + i1wy * u2 + gamma * u3
    c = threshold_coefficient(rho, grad, l_t)
    n1 = torch.where(active, u1 + c * i1wx + theta * divergence(p11, p12), u1)
    n2 = torch.where(active, u2 + c * i1wy + theta * divergence(p21, p22), u2)
    n3 = torch.where(active, u3 + c * gamma + theta * divergence(p31, p32), u3)
    d1, d2, d3 = n1 - u1, n2 - u2, n3 - u3
    err = (d1 * d1 + d2 * d2 + d3 * d3).sum(dim=(1, 2))
    out = []
    for n, (pa, pb) in ((n1, (p11, p12)), (n2, (p21, p22)), (n3, (p31, p32))):
        gx, gy = forward_gradient(n)
        ng = 1.0 + taut * torch.sqrt(gx * gx + gy * gy)
        out += [torch.where(active, (pa + taut * gx) / ng, pa), torch.where(active, (pb + taut * gy) / ng, pb)]
    return (n1, n2, n3, *out, err)


@dataclass
class _WarpConstants:
    """What the eager step needs from one warp, computed once per warp instead of once per inner iteration."""

    iw: torch.Tensor  # (B, C, H, W): i1wx, i1wy (and gamma): the coefficient of c in each component's update
    rho_c: torch.Tensor  # (B, H, W)
    lg: torch.Tensor  # l_t * grad
    neg_lg: torch.Tensor  # -(l_t * grad)
    flat: torch.Tensor  # not grad > FLT_EPSILON: c = 0 there
    neg_safe: torch.Tensor  # -grad where grad > FLT_EPSILON, else -1: rho / neg_safe == -rho / safe bit for bit
    grad: torch.Tensor  # for the compiled per-component step


def _step_stacked(u, p, k: _WarpConstants, active, work, l_t: float, theta: float, taut: float):
    """tvl1_step / tvl1_step_gamma on stacked state, for eager mode: every op covers all components.

    u (B, C, H, W) flow (C = 2, or 3 with the illumination term), p (B, C, 2, H, W) dual field (x, y parts),
    active (B, 1, 1, 1) bool, work (B, C, 2, H, W) scratch whose last column (x part) and last row (y part) are zero
    and stay zero. The same IEEE operations, operand for operand and in the same order, as tvl1_step, so the result
    is bit-identical; only the op count drops (33 kernel-launching ops per iteration instead of ~100).
    """
    comps = u.shape[1]
    prod = k.iw * u  # i1wx * u1, i1wy * u2 (, gamma * u3)
    rho = k.rho_c + prod[:, 0]
    for j in range(1, comps):
        rho += prod[:, j]
    # threshold_coefficient, later rules overwriting earlier ones as the nested where does
    c = torch.div(rho, k.neg_safe)
    c.masked_fill_(k.flat, 0.0)
    c.masked_fill_(rho > k.lg, -l_t)
    c.masked_fill_(rho < k.neg_lg, l_t)
    # n = u + c * i1w + theta * div(p): div = ((px - px shifted right) + py) - py shifted down, zero outside
    n = c.unsqueeze(1) * k.iw
    n += u
    px, py = p[:, :, 0], p[:, :, 1]
    div = torch.empty_like(n)
    div[..., 0] = px[..., 0]  # px - 0
    torch.sub(px[..., 1:], px[..., :-1], out=div[..., 1:])
    div += py
    div[..., 1:, :].sub_(py[..., :-1, :])  # not `div[...] -= ...`: that adds a copy of the view onto itself
    div *= theta
    n += div
    n = torch.where(active, n, u)
    d = n - u
    d *= d
    sq = d[:, 0] + d[:, 1]
    for j in range(2, comps):
        sq += d[:, j]
    err = sq.sum(dim=(1, 2))
    # dual update: q = (p + taut * grad n) / (1 + taut * |grad n|), forward differences written into `work`
    torch.sub(n[..., 1:], n[..., :-1], out=work[:, :, 0, :, :-1])
    torch.sub(n[..., 1:, :], n[..., :-1, :], out=work[:, :, 1, :-1, :])
    g2 = work * work
    ng = g2[:, :, 0] + g2[:, :, 1]
    ng.sqrt_()
    ng *= taut
    ng += 1.0
    q = work * taut
    q += p
    q /= ng.unsqueeze(2)
    q = torch.where(active.unsqueeze(-1), q, p)
    return n, q, err


def _step_split(step, u, p, k: _WarpConstants, active, l_t: float, theta: float, taut: float, gamma: float):
    """The per-component tvl1_step(_gamma) on stacked state (the compiled path): split, step, stack."""
    b, comps, h, w = u.shape
    us = [u[:, j] for j in range(comps)]
    ps = [p[:, j, a] for j in range(comps) for a in range(2)]
    a3 = active.view(b, 1, 1)
    extra = (gamma,) if comps == 3 else ()
    out = step(*us, *ps, k.iw[:, 0], k.iw[:, 1], k.grad, k.rho_c, a3, l_t, theta, taut, *extra)
    return torch.stack(out[:comps], dim=1), torch.stack(out[comps:-1], dim=1).view(b, comps, 2, h, w), out[-1]


_COMPILED: dict[object, object] = {}


def _compiled(fn):
    """One torch.compile wrapper per function for the whole process, so estimators share compiled kernels.

    Shapes become dynamic after the first recompile (pyramid levels, batch sizes); without fullgraph, hitting
    dynamo's recompile limit falls back to eager instead of failing.
    """
    if fn not in _COMPILED:
        _COMPILED[fn] = torch.compile(fn, dynamic=None)
    return _COMPILED[fn]


def as_batch(i0: torch.Tensor, i1: torch.Tensor, init: torch.Tensor | None):
    """(H, W) pairs (and (2, H, W) init) -> a batch of one, checked: (i0, i1, init, whether the input was one pair)."""
    squeeze = i0.dim() == 2
    if squeeze:
        i0, i1 = i0.unsqueeze(0), i1.unsqueeze(0)
        init = None if init is None else init.unsqueeze(0)
    if i0.shape != i1.shape or i0.dim() != 3:
        raise ValueError(f"frames must both be (B, H, W), got {tuple(i0.shape)} and {tuple(i1.shape)}")
    return i0, i1, init, squeeze


class TVL1:
    """Batched TV-L1 on any device: `TVL1(params)(i0, i1)` with (B, H, W) float in [0, 255] -> (B, 2, H, W) pixels.

    Args:
        params: OpenCV's parameters (TVL1Params).
        compile: fuse the inner iteration with torch.compile; None = only on CUDA.
        sync_every: check "all pairs stopped" every this many inner iterations; None = 1 on CPU, the inner
            iteration count on CUDA. It changes only when the loop may end, never the result.
        fixed_schedule: never check: run every warp's outer x inner iterations, pairs that met the stopping rule
            frozen by their masks (the same result, no host sync: capturable in a CUDA graph).
    """

    def __init__(self, params: TVL1Params = TVL1Params(), compile: bool | None = None, sync_every: int | None = None,
                 fixed_schedule: bool = False):
        if params.median_filtering > 1 and params.median_filtering % 2 == 0:
            raise ValueError(f"median_filtering must be 1 (off) or odd, got {params.median_filtering}")
        self.params = params
        self.compile = compile
        self.sync_every = sync_every
        self.fixed_schedule = fixed_schedule

    def _fn(self, name: str, device: torch.device):
        """The compiled per-component step / network median, or (eager) None for _step_stacked / median_blur."""
        if not self._use_compile(device):
            return {"step": None, "median": median_blur}[name]  # step None: _step_stacked
        step = tvl1_step_gamma if self.params.gamma else tvl1_step
        return _compiled({"step": step, "median": median_blur_network}[name])

    def _use_compile(self, device: torch.device) -> bool:
        return self.compile if self.compile is not None else device.type == "cuda"

    @torch.no_grad()
    def __call__(self, i0: torch.Tensor, i1: torch.Tensor, return_stats: bool = False, init: torch.Tensor | None = None):
        """Flow from i0 to i1, both (B, H, W) (or (H, W)) grayscale in [0, 255]; returns (B, 2, H, W) (u=x, v=y).

        `init` (B, 2, H, W) starts the solver from a flow instead of zero, as OpenCV's useInitialFlow does: it is
        resized down the pyramid (and scaled by scale_step per level) and the coarsest level starts from it.
        """
        i0, i1, init, squeeze = as_batch(i0, i1, init)
        if min(i0.shape[-2:]) < 3:
            raise ValueError(f"frames must be at least 3x3 pixels, got {tuple(i0.shape[-2:])}")
        p = self.params
        i0 = i0.float()
        i1 = i1.float()
        b, h, w = i0.shape
        sizes = pyramid_sizes(h, w, p.nscales, p.scale_step)
        i0s, i1s = [i0], [i1]
        for size in sizes[1:]:
            scale = (1.0 / p.scale_step, 1.0 / p.scale_step)
            i0s.append(resize_linear(i0s[-1], size, scale))
            i1s.append(resize_linear(i1s[-1], size, scale))
        stats = TVL1Stats(sizes=list(sizes))
        iterations: list[torch.Tensor] = [None] * len(sizes)  # type: ignore[list-item]
        unfinished = torch.zeros(b, dtype=torch.bool, device=i0.device)
        comps = 3 if p.gamma else 2
        u = torch.zeros((b, comps) + tuple(sizes[-1]), dtype=i0.dtype, device=i0.device)  # u1, u2 (, u3)
        if init is not None:
            if init.shape != (b, 2, h, w):
                raise ValueError(f"init must be (B, 2, H, W) = {(b, 2, h, w)}, got {tuple(init.shape)}")
            u[:, :2] = initial_flow(init.to(i0.device, i0.dtype), sizes, p.scale_step)
        for s in range(len(sizes) - 1, -1, -1):
            u, iterations[s], unf = self._one_scale(i0s[s], i1s[s], u)
            unfinished |= unf
            if s == 0:
                break
            up = sizes[s - 1]
            ups = [resize_linear(u[:, 0], up) * (1.0 / p.scale_step), resize_linear(u[:, 1], up) * (1.0 / p.scale_step)]
            if comps == 3:
                ups.append(resize_linear(u[:, 2], up))
            u = torch.stack(ups, dim=1)
        flow = u if comps == 2 else u[:, :2].contiguous()
        if squeeze:
            flow = flow[0]
        if return_stats:
            stats.iterations = iterations
            stats.unfinished = unfinished
            return flow, stats
        return flow

    def _one_scale(self, i0, i1, u):
        """procOneScale: warps x (median + inner iterations until the per-pair stopping rule); u (B, C, H, W)."""
        p = self.params
        b, h, w = i0.shape
        comps = u.shape[1]
        device = i0.device
        scaled_eps = p.epsilon * p.epsilon * h * w
        l_t, taut, theta = p.lambda_ * p.theta, p.tau / p.theta, p.theta
        step = self._fn("step", device)
        median = self._fn("median", device)
        sync_every = self.sync_every or (p.inner_iterations if device.type == "cuda" else 1)
        i1x, i1y = centered_gradient(i1)
        i1stack = torch.stack((i1, i1x, i1y), dim=1)
        duals = torch.zeros((b, comps, 2, h, w), dtype=u.dtype, device=device)
        work = torch.zeros_like(duals) if step is None else None
        count = torch.zeros(b, dtype=torch.int64, device=device)
        unfinished = torch.zeros(b, dtype=torch.bool, device=device)
        for _ in range(p.warps):
            u1, u2 = u[:, 0], u[:, 1]
            warped = warp_bicubic(i1stack, u1, u2)
            i1w, i1wx, i1wy = warped[:, 0], warped[:, 1], warped[:, 2]
            grad = i1wx * i1wx + i1wy * i1wy
            rho_c = i1w - i1wx * u1 - i1wy * u2 - i0
            iw = warped[:, 1:]
            if comps == 3:
                iw = torch.cat((iw, torch.full_like(i1w, p.gamma).unsqueeze(1)), dim=1)
            if step is None:
                lg = l_t * grad
                mask = grad > FLT_EPSILON
                flat = ~mask
                neg_safe = -torch.where(mask, grad, torch.ones_like(grad))
                k = _WarpConstants(iw, rho_c, lg, -lg, flat, neg_safe, grad)
            else:
                k = _WarpConstants(iw, rho_c, None, None, None, None, grad)
            active = torch.ones(b, dtype=torch.bool, device=device)
            a4 = active.view(b, 1, 1, 1)  # a view: follows the in-place updates of `active`
            n = 0
            for _outer in range(p.outer_iterations):
                if p.median_filtering > 1:
                    med = median(u[:, :2].reshape(b * 2, h, w), p.median_filtering).view(b, 2, h, w)
                    med = torch.where(a4, med, u[:, :2])
                    u = med if comps == 2 else torch.cat((med, u[:, 2:]), dim=1)
                stopped = False
                for _inner in range(p.inner_iterations):
                    count += active
                    if step is None:
                        u, duals, err = _step_stacked(u, duals, k, a4, work, l_t, theta, taut)
                    else:
                        u, duals, err = _step_split(step, u, duals, k, a4, l_t, theta, taut, p.gamma)
                    active &= err > scaled_eps
                    n += 1
                    if self.fixed_schedule:
                        continue
                    if n % sync_every == 0 and not bool(active.any()):
                        stopped = True
                        break
                # the inner loop checked at its last iteration when n % sync_every == 0: no second host sync then
                if self.fixed_schedule:
                    continue
                if stopped or (n % sync_every != 0 and not bool(active.any())):
                    break
            unfinished |= active  # still iterating when the warp's budget ran out
        return u, count, unfinished


def initial_flow(flow: torch.Tensor, sizes: list[tuple[int, int]], scale_step: float) -> torch.Tensor:
    """(B, 2, H, W) flow at the finest size -> the coarsest pyramid level: OpenCV's useInitialFlow resizes it level
    by level as the images (INTER_LINEAR, dst->src scale 1 / scale_step) and multiplies it by scale_step each time."""
    u = flow
    for size in sizes[1:]:
        scale = (1.0 / scale_step, 1.0 / scale_step)
        u = torch.stack([resize_linear(u[:, j], size, scale) * scale_step for j in range(2)], dim=1)
    return u


def tvl1_flow(i0: torch.Tensor, i1: torch.Tensor, params: TVL1Params = TVL1Params(), **kwargs) -> torch.Tensor:
    """Functional form of TVL1: (B, H, W) pairs in [0, 255] -> (B, 2, H, W) flow in pixels."""
    return TVL1(params, **kwargs)(i0, i1)


def bytes_per_iteration(batch: int, height: int, width: int) -> int:
    """Bytes one fused inner iteration must move at minimum for a (B, H, W) batch in fp32.

    Reads u (2), p (4), I1wx, I1wy, rho_c (3) and writes u (2), p (4): 15 floats per pixel; grad is recomputed
    from I1wx and I1wy. This is the floor's unit: iterations actually run x this / device copy bandwidth.
    """
    return 15 * 4 * batch * height * width


def iterations_floor_seconds(stats: TVL1Stats, bandwidth_bytes_per_s: float) -> float:
    """Memory-bandwidth floor (s) for the inner iterations a batch ran: each scale runs max over pairs iterations."""
    total = 0.0
    batch = int(stats.iterations[0].numel())
    for (h, w), it in zip(stats.sizes, stats.iterations):
        total += int(it.max()) * bytes_per_iteration(batch, h, w)
    return total / bandwidth_bytes_per_s


__all__ = [
    "TVL1",
    "TVL1Params",
    "TVL1Stats",
    "tvl1_flow",
    "pyramid_sizes",
    "initial_flow",
    "resize_linear",
    "median_blur",
    "median_blur_gather",
    "median_blur_network",
    "warp_bicubic",
    "bytes_per_iteration",
    "iterations_floor_seconds",
]
