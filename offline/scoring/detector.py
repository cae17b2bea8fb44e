"""The one scoring path: a model bundle plus windows -> per-frame evidence and scores.

`vad eval` and the streaming scorer actor both call `Detector.score` on batches of windows, then a
`FrameScorer` (built by `Detector.frame_scorer`) to normalise and aggregate. Preprocessing (size, value range,
flow settings) follows the bundle, so evaluation and streaming cannot drift apart.
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from offline.models.encoder_features import latent_features, slices_to_frames
from offline.scoring.bundle import Bundle, load_bundle
from offline.scoring.evidence import error_map, mse_to_psnr, pool_frames, reduce_error
from offline.scoring.frame_scorer import FrameScorer, build_frame_scorer

logger = logging.getLogger(__name__)


@dataclass
class WindowScores:
    """Per-frame evidence for a batch of windows; all arrays are numpy, (B, T) unless noted.

    psnr is the PSNR (dB) of the spatial AE's error after the bundle's reduction (the whole frame, or its worst
    block); flow_error the temporal AE's reduced flow error.
    """

    psnr: np.ndarray
    flow_error: np.ndarray | None = None
    disc_prob: np.ndarray | None = None
    error_map: np.ndarray | None = None  # (B, T, H, W) squared error of the spatial AE, mean over channels

    def raw(self, b: int, frames: slice | np.ndarray | None = None) -> dict[str, np.ndarray | None]:
        """Raw components (higher = more anomalous) of window b, for FrameScorer."""
        sel = slice(None) if frames is None else frames
        return {
            "w1": -self.psnr[b, sel],
            "w2": None if self.flow_error is None else self.flow_error[b, sel],
            "w3": None if self.disc_prob is None else self.disc_prob[b, sel],
        }


class Detector:
    """Scores windows with a bundle's models on one device.

    Args:
        bundle: a loaded bundle (or use `Detector.load(path)`).
        device: "cpu", "cuda", "cuda:1", ...
        flow_backend: override the bundle's flow backend ("torch", "opencv", "auto").
        chunk: most windows per forward pass; None = `CPU_CHUNK` on a CPU (`CPU_CHUNK_BF16` with the bundle's
            `scoring.cpu_precision: bfloat16`), the whole batch on a GPU.

    On a CPU, PyTorch runs a batch-1 3D convolution with its native im2col kernel and a larger batch with
    oneDNN, whose throughput per window peaks at a few windows and falls once the activations outgrow the
    caches (bench/RESULTS.md: demo bundle, 1 thread, 186 windows/s at batch 1, ~370 in chunks of 2-4,
    ~220 as one batch of 64). So CPU batches are scored in chunks of a few windows, channels-last. Under bfloat16
    autocast the peak is at 2-3 windows (the cpu recipe's AEs, one thread: 45 ms per window at 2, 66 at 4).
    """

    CPU_CHUNK = 4
    CPU_CHUNK_BF16 = 2

    def __init__(
        self,
        bundle: Bundle,
        device: str | torch.device = "cpu",
        flow_backend: str | None = None,
        chunk: int | None = None,
    ):
        if chunk is not None and chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {chunk}")
        self.bundle = bundle
        self.config = bundle.config
        self.device = torch.device(device)
        self.spatial = bundle.spatial.to(self.device).eval()
        self.temporal = bundle.temporal.to(self.device).eval() if bundle.temporal is not None else None
        self.discriminator = bundle.discriminator.to(self.device).eval() if bundle.discriminator is not None else None
        self.flow_estimator = None
        if self.temporal is not None:
            from offline.flow import FlowEstimator

            flow_cfg = self.config.flow if flow_backend is None else self.config.flow.model_copy(update={"backend": flow_backend})
            self.flow_estimator = FlowEstimator(flow_cfg, device=self.device)
        self.features = None
        # spatial_encoder: w3 reads the latent of the spatial AE's pass that gives w1, no second model
        self.encoder_features = self.discriminator is not None and self.config.discriminator_features == "spatial_encoder"
        if self.discriminator is not None and not self.encoder_features:
            if not self.config.clip_model_path:
                raise ValueError(f"{bundle.path}: the bundle has a discriminator but no clip_model_path for its features")
            from offline.models.clip_features import ClipFeatureExtractor

            self.features = ClipFeatureExtractor(self.config.clip_model_path, device=self.device)
        self.bf16 = self.device.type == "cuda" or self.config.scoring.cpu_precision == "bfloat16"
        if self.device.type == "cpu" and self.bf16 and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
            logger.warning("%s: scoring.cpu_precision is bfloat16 but this CPU has no native bfloat16 (AVX512-BF16 or "
                           "AMX): scores are the same, computed slower than in float32", bundle.path)
        if chunk is None and self.device.type == "cpu":
            chunk = self.CPU_CHUNK_BF16 if self.bf16 else self.CPU_CHUNK
        self.chunk = chunk
        self.spatial = self.spatial.to(memory_format=torch.channels_last_3d)
        if self.temporal is not None:
            self.temporal = self.temporal.to(memory_format=torch.channels_last_3d)

    @classmethod
    def load(
        cls, path: str | Path, device: str | torch.device = "cpu", flow_backend: str | None = None, chunk: int | None = None
    ) -> "Detector":
        """A Detector for the bundle at `path` (loaded and checked) on `device`."""
        return cls(load_bundle(path), device, flow_backend, chunk)

    @property
    def size(self) -> int:
        """Frame size (pixels, square) the bundle's models take."""
        return self.config.input.size

    @property
    def window(self) -> int:
        """Frames per window the bundle's models take."""
        return self.config.input.window

    @property
    def needs_flow(self) -> bool:
        """Whether `score` wants encoded flow (the temporal AE's input; `vad eval` computes it once per clip)."""
        return self.temporal is not None

    @property
    def available(self) -> tuple[bool, bool, bool]:
        """Which of (w1, w2, w3) this bundle provides (spatial AE always; temporal AE, discriminator optional)."""
        return (True, self.temporal is not None, self.discriminator is not None)

    def frame_scorer(self, normaliser: str | None = None, weights=None) -> FrameScorer:
        """A fresh per-video / per-camera scorer: the bundle's weights, normaliser and calibration (the one factory,
        `build_frame_scorer`; eval, export's calibration check and the service all come through here)."""
        if (normaliser or self.config.scoring.normaliser) == "calibrated" and (
            self.config.calibration is None or not self.config.calibration.robust
        ):
            logger.warning("%s: no calibrated statistics in the bundle: the running normaliser is used instead", self.bundle.path)
        return build_frame_scorer(self.config.scoring, self.config.calibration, self.available, normaliser, weights)

    def _check(self, frames: torch.Tensor) -> None:
        if frames.dim() != 5 or frames.shape[1] != 3:
            raise ValueError(f"frames must be (B, 3, T, H, W), got shape {tuple(frames.shape)}")
        t, h, w = frames.shape[2:]
        if (h, w) != (self.size, self.size) or t != self.window:
            raise ValueError(
                f"the bundle expects windows of T={self.window} frames at {self.size}x{self.size}, got T={t}, {h}x{w}"
            )

    @torch.inference_mode()
    def score(self, frames: torch.Tensor, flow: torch.Tensor | None = None, return_maps: bool = False) -> WindowScores:
        """frames (B, 3, T, H, W) in [-1, 1]; flow: encoded flow of the same shape, computed here when None."""
        self._check(frames)
        n = frames.shape[0]
        if self.chunk is None or n <= self.chunk:
            return self._score(frames, flow, return_maps)
        parts = [
            self._score(frames[s : s + self.chunk], None if flow is None else flow[s : s + self.chunk], return_maps)
            for s in range(0, n, self.chunk)
        ]
        return WindowScores(
            **{
                f: None if getattr(parts[0], f) is None else np.concatenate([getattr(p, f) for p in parts])
                for f in ("psnr", "flow_error", "disc_prob", "error_map")
            }
        )

    def _score(self, frames: torch.Tensor, flow: torch.Tensor | None, return_maps: bool) -> WindowScores:
        x = frames.to(self.device, torch.float32, non_blocking=True)
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16) if self.bf16 else contextlib.nullcontext()
        spec = self.config.scoring
        latent = None
        with autocast:
            if self.encoder_features:
                latent, recon = self.spatial.encode_decode(x)
                latent = latent.float()
            else:
                recon = self.spatial(x)
            recon = recon.float()
        emap = error_map(recon, x)
        reduced = pool_frames(reduce_error(emap, spec.reduction_spatial, spec.block), spec.pool)
        result = WindowScores(psnr=mse_to_psnr(reduced).cpu().numpy())
        if return_maps:
            result.error_map = emap.cpu().numpy()
        if self.temporal is not None:
            if flow is None:
                from offline.flow import window_flow

                flow = window_flow(x, self.flow_estimator)
            f = flow.to(self.device, torch.float32)
            with autocast:
                frecon = self.temporal(f).float()
            ferr = reduce_error(error_map(frecon, f), spec.reduction_temporal, spec.block)
            result.flow_error = pool_frames(ferr, spec.pool).cpu().numpy()
        if self.discriminator is not None:
            b, _, t = x.shape[:3]
            if latent is not None:
                logits = self.discriminator(latent_features(latent))  # (B, T', 1): one per latent slice
                prob = slices_to_frames(torch.sigmoid(logits.float()[..., 0]), t)
            else:
                per_frame = x.permute(0, 2, 1, 3, 4).reshape(b * t, 3, *x.shape[3:])
                logits = self.discriminator(self.features(per_frame))
                prob = torch.sigmoid(logits.float()).view(b, t)
            result.disc_prob = pool_frames(prob, spec.pool).cpu().numpy()
        return result
