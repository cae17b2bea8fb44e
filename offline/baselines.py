"""Classical motion detectors in the same harness as the models: frame difference and optical-flow magnitude.

They need no training, and they are the floor a learned model must beat. `ClassicalDetector` has the Detector's
scoring interface (`score`, `frame_scorer`, `size`, `window`, `config.scoring`, `config.calibration`), so
`vad eval` runs them through exactly the windows, reductions, normaliser and protocols a bundle gets; their
calibration comes from the dataset's normal training footage (`calibrate_classical`), as a bundle's does.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from offline.data.pixels import model_to_gray255
from offline.scoring.bundle import Calibration, ScoringSpec
from offline.scoring.evidence import pool_frames, reduce_error
from offline.scoring.frame_scorer import FrameScorer, build_frame_scorer

BASELINES = ("frame-difference", "flow-magnitude")


def difference_maps(gray: torch.Tensor) -> torch.Tensor:
    """(B, T, H, W) gray frames -> (B, T, H, W) |frame_t - frame_{t-1}|; frame 0 of a window copies frame 1's map."""
    d = (gray[:, 1:] - gray[:, :-1]).abs()
    return torch.cat((d[:, :1], d), dim=1)


def magnitude_maps(encoded_flow: torch.Tensor, clip: float) -> torch.Tensor:
    """(B, 3, T, H, W) encoded flow (offline.flow.encode_flow) -> (B, T, H, W) flow magnitude in pixels per frame."""
    return (encoded_flow[:, 2].float() + 1.0) * 0.5 * clip


@dataclass
class _Config:
    """The parts of a bundle config that scoring reads."""

    scoring: ScoringSpec
    calibration: Calibration | None
    flow: object | None = None


@dataclass
class ClassicalScores:
    """Per-frame evidence of a batch of windows, (B, T): the Detector's WindowScores interface for one component."""

    evidence: np.ndarray
    error_map: np.ndarray | None = None

    def raw(self, b: int, frames=None) -> dict[str, np.ndarray | None]:
        """Raw components of window b (w1 only: higher = more motion)."""
        sel = slice(None) if frames is None else frames
        return {"w1": self.evidence[b, sel], "w2": None, "w3": None}


class ClassicalDetector:
    """Frame difference or flow magnitude, reduced per frame like the AEs' errors ("frame" mean or "block_max").

    Args:
        kind: "frame-difference" or "flow-magnitude".
        size, window: frames are size x size, windows of `window` frames (as a bundle's input).
        scoring: windows every scoring.hop frames, reduction (`reduction_spatial`) and block, normaliser.
        flow: a FlowConfig for "flow-magnitude" (TV-L1 by default; its `clip` bounds the magnitude).
        device: where flow is computed.
    """

    def __init__(self, kind: str, size: int, window: int, scoring: ScoringSpec, flow=None, device: str = "cpu"):
        if kind not in BASELINES:
            raise ValueError(f"unknown baseline {kind!r}; valid: {', '.join(BASELINES)}")
        self.kind, self._size, self._window = kind, int(size), int(window)
        self.device = torch.device(device)
        self.flow_estimator = None
        if kind == "flow-magnitude":
            from offline.config import FlowConfig
            from offline.flow import FlowEstimator

            flow = flow or FlowConfig(clip=20.0)
            self.flow_estimator = FlowEstimator(flow, device=self.device)
        self.config = _Config(scoring=scoring, calibration=None, flow=flow)

    @property
    def size(self) -> int:
        """Frame size (pixels, square)."""
        return self._size

    @property
    def window(self) -> int:
        """Frames per window."""
        return self._window

    @property
    def needs_flow(self) -> bool:
        """Whether `score` wants encoded flow (computed once per clip by `vad eval`)."""
        return self.flow_estimator is not None

    @property
    def available(self) -> tuple[bool, bool, bool]:
        """One component, in the w1 slot."""
        return (True, False, False)

    def frame_scorer(self, normaliser: str | None = None, weights=None) -> FrameScorer:
        """A fresh per-clip / per-camera scorer (the same factory as a bundle's), weights (1, 0, 0)."""
        return build_frame_scorer(self.config.scoring, self.config.calibration, self.available, normaliser, (1.0, 0.0, 0.0))

    @torch.inference_mode()
    def score(self, frames: torch.Tensor, flow: torch.Tensor | None = None, return_maps: bool = False) -> ClassicalScores:
        """frames (B, 3, T, H, W) in [-1, 1]; flow: encoded flow (B, 3, T, H, W), computed here when None."""
        s = self.config.scoring
        if self.kind == "frame-difference":
            maps = difference_maps(model_to_gray255(frames.float(), channel_dim=1))
        else:
            if flow is None:
                from offline.flow import window_flow

                flow = window_flow(frames.to(self.device), self.flow_estimator)
            maps = magnitude_maps(flow, self.flow_estimator.clip)
        evidence = pool_frames(reduce_error(maps, s.reduction_spatial, s.block), s.pool)
        return ClassicalScores(evidence.cpu().numpy().astype(np.float64), maps.cpu().numpy() if return_maps else None)
