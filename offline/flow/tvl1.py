"""TV-L1 optical flow (Zach, Pock, Bischof 2007) in pure torch, batched, following OpenCV's DualTVL1 step by step.

Every stage mirrors `cv::optflow::DualTVL1OpticalFlow` (opencv_contrib, `modules/optflow/src/tvl1flow.cpp`) so the
two agree to a fraction of a pixel: an INTER_LINEAR pyramid with `scale_step` (sizes rounded as OpenCV rounds them),
bicubic warps with a zero border, centred image gradients, forward
differences for the flow, the thresholding step, the dual update, a 5x5 median of the flow at the start of every
outer iteration, and the stopping rule `sum |u_new - u|^2 <= epsilon^2 * H * W` per warp.

The batch is real parallelism: all B pairs run through the same kernels. A pair that has met the stopping rule is
frozen with a per-pair mask (no host round-trip per iteration on the GPU); the loop ends early once every pair in the
batch has stopped, which is checked every iteration on the CPU and once per outer iteration on CUDA.

Over 350 lines on purpose: one solver, kept stage for stage beside OpenCV's so the two can be read side by side.
"""
from __future__ import annotations

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


def resize_linear(x: torch.Tensor, size: tuple[int, int], scale: tuple[float, float] | None = None) -> torch.Tensor:
    """Bilinear resize of (B, H, W) as cv2.resize INTER_LINEAR does; `scale` (y, x) is dst->src, default in/out."""
    h, w = x.shape[-2:]
    oh, ow = size
    sy, sx = scale if scale is not None else (1.0 / (oh / h), 1.0 / (ow / w))
    my = resize_matrix(h, oh, sy, x.device)
    mx = resize_matrix(w, ow, sx, x.device)
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


def median_blur(x: torch.Tensor, ksize: int) -> torch.Tensor:
    """k x k median of (B, H, W) with a replicated border (cv2.medianBlur), exact.

    A pruned min/max sorting network over the k*k shifted views: element-wise only, so torch.compile turns it into
    one kernel (a sort over an unfolded (B, H, W, k*k) tensor would move k*k times the image through memory).
    """
    r = ksize // 2
    h, w = x.shape[-2:]
    p = F.pad(x.unsqueeze(1), (r, r, r, r), mode="replicate").squeeze(1)
    v = [p[:, dy : dy + h, dx : dx + w] for dy in range(ksize) for dx in range(ksize)]
    for a, b in median_network(ksize * ksize):
        v[a], v[b] = torch.minimum(v[a], v[b]), torch.maximum(v[a], v[b])
    return v[(ksize * ksize) // 2]


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


_COMPILED: dict[object, object] = {}


def _compiled(fn):
    """One torch.compile wrapper per function for the whole process, so estimators share compiled kernels.

    Shapes become dynamic after the first recompile (pyramid levels, batch sizes); without fullgraph, hitting
    dynamo's recompile limit falls back to eager instead of failing.
    """
    if fn not in _COMPILED:
        _COMPILED[fn] = torch.compile(fn, dynamic=None)
    return _COMPILED[fn]


class TVL1:
    """Batched TV-L1 on any device: `TVL1(params)(i0, i1)` with (B, H, W) float in [0, 255] -> (B, 2, H, W) pixels.

    Args:
        params: OpenCV's parameters (TVL1Params).
        compile: fuse the inner iteration with torch.compile; None = only on CUDA.
        sync_every: check "all pairs stopped" every this many inner iterations; None = 1 on CPU, the inner
            iteration count on CUDA. It changes only when the loop may end, never the result.
    """

    def __init__(self, params: TVL1Params = TVL1Params(), compile: bool | None = None, sync_every: int | None = None):
        if params.median_filtering > 1 and params.median_filtering % 2 == 0:
            raise ValueError(f"median_filtering must be 1 (off) or odd, got {params.median_filtering}")
        self.params = params
        self.compile = compile
        self.sync_every = sync_every

    def _fn(self, name: str, device: torch.device):
        """The plain function, or its torch.compile'd version."""
        fn = {"step": tvl1_step_gamma if self.params.gamma else tvl1_step, "median": median_blur}[name]
        use = self.compile if self.compile is not None else device.type == "cuda"
        return _compiled(fn) if use else fn

    @torch.no_grad()
    def __call__(self, i0: torch.Tensor, i1: torch.Tensor, return_stats: bool = False):
        """Flow from i0 to i1, both (B, H, W) (or (H, W)) grayscale in [0, 255]; returns (B, 2, H, W) (u=x, v=y)."""
        squeeze = i0.dim() == 2
        if squeeze:
            i0, i1 = i0.unsqueeze(0), i1.unsqueeze(0)
        if i0.shape != i1.shape or i0.dim() != 3:
            raise ValueError(f"frames must both be (B, H, W), got {tuple(i0.shape)} and {tuple(i1.shape)}")
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
        u1 = torch.zeros_like(i0s[-1])
        u2 = torch.zeros_like(i0s[-1])
        u3 = torch.zeros_like(i0s[-1]) if p.gamma else None
        for s in range(len(sizes) - 1, -1, -1):
            u1, u2, u3, iterations[s] = self._one_scale(i0s[s], i1s[s], u1, u2, u3)
            if s == 0:
                break
            up = sizes[s - 1]
            u1 = resize_linear(u1, up) * (1.0 / p.scale_step)
            u2 = resize_linear(u2, up) * (1.0 / p.scale_step)
            if u3 is not None:
                u3 = resize_linear(u3, up)
        flow = torch.stack((u1, u2), dim=1)
        if squeeze:
            flow = flow[0]
        if return_stats:
            stats.iterations = iterations
            return flow, stats
        return flow

    def _one_scale(self, i0, i1, u1, u2, u3):
        """procOneScale: warps x (median + inner iterations until the per-pair stopping rule)."""
        p = self.params
        b, h, w = i0.shape
        device = i0.device
        scaled_eps = p.epsilon * p.epsilon * h * w
        l_t, taut, theta = p.lambda_ * p.theta, p.tau / p.theta, p.theta
        step = self._fn("step", device)
        median = self._fn("median", device)
        sync_every = self.sync_every or (p.inner_iterations if device.type == "cuda" else 1)
        i1x, i1y = centered_gradient(i1)
        i1stack = torch.stack((i1, i1x, i1y), dim=1)
        duals = [torch.zeros_like(u1) for _ in range(6 if u3 is not None else 4)]
        count = torch.zeros(b, dtype=torch.int64, device=device)
        for _ in range(p.warps):
            warped = warp_bicubic(i1stack, u1, u2)
            i1w, i1wx, i1wy = warped[:, 0], warped[:, 1], warped[:, 2]
            grad = i1wx * i1wx + i1wy * i1wy
            rho_c = i1w - i1wx * u1 - i1wy * u2 - i0
            active = torch.ones(b, dtype=torch.bool, device=device)
            n = 0
            for _outer in range(p.outer_iterations):
                a3 = active.view(b, 1, 1)
                if p.median_filtering > 1:
                    u1 = torch.where(a3, median(u1, p.median_filtering), u1)
                    u2 = torch.where(a3, median(u2, p.median_filtering), u2)
                for _inner in range(p.inner_iterations):
                    count += active
                    if u3 is None:
                        u1, u2, *duals, err = step(u1, u2, *duals, i1wx, i1wy, grad, rho_c, a3, l_t, theta, taut)
                    else:
                        u1, u2, u3, *duals, err = step(
                            u1, u2, u3, *duals, i1wx, i1wy, grad, rho_c, a3, l_t, theta, taut, p.gamma
                        )
                    active = active & (err > scaled_eps)
                    a3 = active.view(b, 1, 1)
                    n += 1
                    if n % sync_every == 0 and not bool(active.any()):
                        break
                if not bool(active.any()):
                    break
        return u1, u2, u3, count


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
    "resize_linear",
    "median_blur",
    "warp_bicubic",
    "bytes_per_iteration",
    "iterations_floor_seconds",
]
