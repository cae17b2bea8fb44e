"""OpenCV's DualTVL1 (opencv-contrib, CPU) behind the same call as the torch backend (adapter).

cv2 is imported when the backend is built, never at module import: the GPU machine has no opencv-contrib.
Frames in [0, 255] are handed to OpenCV as float32 / 255, which it scales back by 255, so non-integer inputs
are not rounded to 8 bits.
"""
from __future__ import annotations

import numpy as np
import torch

from offline.flow.tvl1 import TVL1Params


def opencv_available() -> bool:
    """True when cv2.optflow.DualTVL1OpticalFlow_create exists (opencv-contrib installed)."""
    try:
        import cv2
    except ImportError:
        return False
    return hasattr(cv2, "optflow") and hasattr(cv2.optflow, "DualTVL1OpticalFlow_create")


def create_dualtvl1(params: TVL1Params):
    """A cv2.optflow.DualTVL1OpticalFlow with our parameters (the binding spells innnerIterations with 3 n)."""
    if not opencv_available():
        raise RuntimeError("flow.backend 'opencv' needs opencv-contrib-python(-headless): cv2.optflow is missing")
    import cv2

    return cv2.optflow.DualTVL1OpticalFlow_create(
        tau=params.tau,
        lambda_=params.lambda_,
        theta=params.theta,
        nscales=params.nscales,
        warps=params.warps,
        epsilon=params.epsilon,
        innnerIterations=params.inner_iterations,
        outerIterations=params.outer_iterations,
        scaleStep=params.scale_step,
        gamma=params.gamma,
        medianFiltering=params.median_filtering,
    )


class OpenCVTVL1:
    """`OpenCVTVL1(params)(i0, i1)`: (B, H, W) float in [0, 255] -> (B, 2, H, W) float32 on the CPU, pair by pair."""

    def __init__(self, params: TVL1Params = TVL1Params()):
        if params.median_filtering not in (1, 3, 5):
            raise ValueError(f"OpenCV's DualTVL1 supports median_filtering 1, 3 or 5 on float flow, got {params.median_filtering}")
        self.params = params
        self._tvl1 = create_dualtvl1(params)

    def __call__(self, i0: torch.Tensor, i1: torch.Tensor, init: torch.Tensor | None = None) -> torch.Tensor:
        """Pair by pair; `init` (B, 2, H, W) is each pair's initial flow (OpenCV's useInitialFlow)."""
        a = i0.detach().float().cpu().numpy() / np.float32(255.0)
        b = i1.detach().float().cpu().numpy() / np.float32(255.0)
        out = np.empty((a.shape[0], 2, *a.shape[1:]), dtype=np.float32)
        self._tvl1.setUseInitialFlow(init is not None)
        for k in range(a.shape[0]):
            start = None if init is None else np.ascontiguousarray(init[k].detach().float().cpu().numpy().transpose(1, 2, 0))
            flow = self._tvl1.calc(np.ascontiguousarray(a[k]), np.ascontiguousarray(b[k]), start)
            out[k] = flow.transpose(2, 0, 1)
        return torch.from_numpy(out)
