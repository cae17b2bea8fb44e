"""FlowEstimator: one call for TV-L1 flow on any device and backend, and window_flow for 16-frame windows.

Backends: "torch" (offline.flow.tvl1, CPU or CUDA, batched) and "opencv" (cv2.optflow DualTVL1 on the CPU).
"auto" picks torch on CUDA and OpenCV on the CPU when opencv-contrib is installed: on the 2-core CPU machines
OpenCV needs no compile warm-up and is at least as fast as our eager torch code (bench/RESULTS.md).
"""
from __future__ import annotations

import logging
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np
import torch

from offline.data.pixels import model_to_gray255
from offline.flow.encoding import encode_flow
from offline.flow.graphs import GraphedTVL1, compile_cache
from offline.flow.opencv_backend import OpenCVTVL1, opencv_available
from offline.flow.tvl1 import TVL1, TVL1Params

if TYPE_CHECKING:
    from offline.config import FlowConfig

logger = logging.getLogger(__name__)


def params_from_config(cfg: "FlowConfig") -> TVL1Params:
    """The TV-L1 parameters of a FlowConfig."""
    return TVL1Params(
        tau=cfg.tau,
        lambda_=cfg.lambda_,
        theta=cfg.theta,
        nscales=cfg.scales,
        warps=cfg.warps,
        epsilon=cfg.epsilon,
        inner_iterations=cfg.inner_iterations,
        outer_iterations=cfg.outer_iterations,
        scale_step=cfg.scale_step,
        gamma=cfg.gamma,
        median_filtering=cfg.median_filtering,
    )


def resolve_backend(backend: str, device: torch.device) -> str:
    """'auto' -> 'torch' on CUDA, 'opencv' on the CPU when cv2.optflow exists, else 'torch'."""
    if backend == "auto":
        return "torch" if device.type == "cuda" or not opencv_available() else "opencv"
    if backend not in ("torch", "opencv"):
        raise ValueError(f"flow.backend: expected 'auto', 'torch' or 'opencv', got {backend!r}")
    return backend


class FlowEstimator:
    """`est(frame0, frame1) -> (B, 2, H, W)` float32 flow in pixels (u = x, v = y), on `device`.

    Inputs are (B, H, W) (or (H, W)) grayscale in [0, 255], torch tensors on any device or numpy arrays.
    """

    def __init__(self, cfg: "FlowConfig | None" = None, device: str | torch.device = "cpu"):
        if cfg is None:
            from offline.config import FlowConfig

            cfg = FlowConfig()
        self.cfg = cfg
        self.device = torch.device(device)
        self.params = params_from_config(cfg)
        self.backend = resolve_backend(cfg.backend, self.device)
        self.clip = cfg.clip
        self.warm_start = cfg.warm_start
        self.chain = cfg.warm_chain
        self._impl = self._solver(self.params)
        self._warm_impl = self._solver(replace(self.params, nscales=min(cfg.warm_scales, self.params.nscales)))
        logger.debug("flow backend %s on %s", self.backend, self.device)

    def _solver(self, params: TVL1Params):
        if self.backend == "opencv":
            return OpenCVTVL1(params)
        if self.cfg.cuda_graphs and self.device.type == "cuda":
            return GraphedTVL1(params)
        compile_cache(self.cfg.compile_cache_dir)
        return TVL1(params, compile={"auto": None, "on": True, "off": False}[self.cfg.compile])

    def capture(self, height: int, width: int, max_batch: int) -> float:
        """With flow.cuda_graphs on CUDA: capture the graphs of every batch bucket up to `max_batch` pairs at this
        frame size now (scorer start) instead of on first use; returns the seconds (0 when there is nothing to capture)."""
        seconds = 0.0
        for impl, warm in ((self._impl, False), (self._warm_impl, True)):
            if isinstance(impl, GraphedTVL1) and (self.warm_start or not warm):
                seconds += impl.capture(height, width, max_batch, warm=warm, device=self.device)
        return seconds

    def __repr__(self) -> str:
        return f"FlowEstimator(backend={self.backend!r}, device={str(self.device)!r}, params={self.params})"

    @torch.no_grad()
    def __call__(self, frame0, frame1, init: torch.Tensor | None = None) -> torch.Tensor:
        """Flow of the pairs; `init` (B, 2, H, W): start each from that flow with the warm pyramid (warm_scales)."""
        f0, f1 = _as_tensor(frame0, "frame0"), _as_tensor(frame1, "frame1")
        if f0.shape != f1.shape:
            raise ValueError(f"frame0 and frame1 must have the same shape, got {tuple(f0.shape)} and {tuple(f1.shape)}")
        squeeze = f0.dim() == 2
        if squeeze:
            f0, f1 = f0.unsqueeze(0), f1.unsqueeze(0)
        if f0.dim() != 3:
            raise ValueError(f"frames must be (B, H, W) or (H, W) grayscale in [0, 255], got shape {tuple(f0.shape)}")
        if f0.shape[0] == 0:
            return torch.zeros((0, 2, *f0.shape[1:]), device=self.device)
        impl = self._impl if init is None else self._warm_impl
        if init is not None and squeeze:
            init = init.unsqueeze(0)
        if self.backend == "opencv":
            flow = (impl(f0, f1) if init is None else impl(f0, f1, init=init)).to(self.device)
        else:
            f0, f1 = f0.to(self.device, torch.float32), f1.to(self.device, torch.float32)
            flow = impl(f0, f1) if init is None else impl(f0, f1, init=init.to(self.device, torch.float32))
        return flow[0] if squeeze else flow


@torch.no_grad()
def chained_flow(est, f0: torch.Tensor, f1: torch.Tensor, chain: int, batch: int | None = None, progress=None) -> torch.Tensor:
    """Flow of P pairs (P, H, W) cut into chains of `chain` consecutive pairs (the last may be shorter): a chain's
    first pair starts from zero, each later pair from the previous pair's flow (`est(..., init=)`, warm start).

    Step j computes pair j of every chain in one call (`batch` pairs at most), so chains of many windows or cameras
    still batch; only the pairs of one chain run one after another.
    """
    n = f0.shape[0]
    out: list[torch.Tensor | None] = [None] * n
    step = batch or n or 1
    for j in range(min(chain, n)):
        idx = list(range(j, n, chain))
        for c in range(0, len(idx), step):
            part = idx[c : c + step]
            init = None if j == 0 else torch.stack([out[i - 1] for i in part])
            flow = est(f0[part], f1[part], init=init) if init is not None else est(f0[part], f1[part])
            for i, f in zip(part, flow):
                out[i] = f
            if progress is not None:
                progress.update(len(part))
    return torch.stack(out) if n else torch.zeros((0, 2, *f0.shape[1:]))


def _as_tensor(x, name: str) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch tensor or numpy array, got {type(x).__name__}")
    return x.float() if not x.is_floating_point() else x


@torch.no_grad()
def window_flow(frames: torch.Tensor, est, clip: float | None = None, batch: int | None = None) -> torch.Tensor:
    """Encoded flow of windows: (B, 3 or 1, T, H, W) frames in [-1, 1] -> (B, 3, T, H, W) in [-1, 1].

    Index t is the flow from frame t to t + 1; the last index repeats the previous one. All B * (T - 1) pairs go
    to `est` in one batch (or chunks of `batch` pairs). `clip` defaults to est.clip (FlowConfig.clip).
    """
    if frames.dim() != 5:
        raise ValueError(f"frames must be (B, C, T, H, W), got {tuple(frames.shape)}")
    b, _, t, h, w = frames.shape
    if t < 2:
        raise ValueError(f"a window needs at least 2 frames for flow, got T={t}")
    clip = clip if clip is not None else getattr(est, "clip", 10.0)
    gray = model_to_gray255(frames, channel_dim=1)  # (B, T, H, W)
    f0 = gray[:, :-1].reshape(b * (t - 1), h, w)
    f1 = gray[:, 1:].reshape(b * (t - 1), h, w)
    if getattr(est, "warm_start", False):
        if t > est.chain:
            raise ValueError(f"flow.warm_chain ({est.chain}) must be the window ({t} frames): a window's flow is one chain")
        flow = chained_flow(est, f0, f1, t - 1, batch)  # each window one chain, as clip_flow's chains of `warm_chain`
    else:
        step = batch or f0.shape[0]
        flow = torch.cat([est(f0[i : i + step], f1[i : i + step]) for i in range(0, f0.shape[0], step)])
    enc = encode_flow(flow.to(frames.device), clip).reshape(b, t - 1, 3, h, w).permute(0, 2, 1, 3, 4)
    return torch.cat((enc, enc[:, :, -1:]), dim=2).contiguous()
