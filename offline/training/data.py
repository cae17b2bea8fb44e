"""Training windows (adapter): decode normal clips once, keep uint8 frames (and flow, masks), serve items with PAs.

The tail `holdout_fraction` of every training clip is held out: never trained on, used by `vad export` to
calibrate scores on normal footage. Items are (input, target, is_pa, index); the PA draw of an item is a pure
function of (seed, epoch, index) (`offline.pa_sampler.item_rng`).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from offline.pa.sampler import SpatialPA, TemporalPA, item_rng
from offline.data.clips import Clip
from offline.data.windows import flow_pair_index, window_starts
from offline.data.pixels import model_to_gray255, scale_uint8

logger = logging.getLogger(__name__)


@dataclass
class ClipData:
    """One decoded clip: frames (N, H, W, C) uint8 (C = 1 for gray footage), optional masks and raw flow."""

    clip: Clip
    frames: np.ndarray
    masks: np.ndarray | None = None  # (N, H, W) bool object masks
    flow: np.ndarray | None = None  # (N - 1, 2, H, W) float16, pixels, flow from frame i to i + 1

    def get(self, idx: np.ndarray) -> torch.Tensor:
        """Frames at `idx` -> (3, len, H, W) float32 in [-1, 1]."""
        f = scale_uint8(self.frames[idx])  # (L, H, W, C)
        if f.shape[-1] == 1:
            f = f.expand(*f.shape[:-1], 3)
        return f.permute(3, 0, 1, 2).contiguous()

    def flow_window(self, start: int, window: int) -> torch.Tensor:
        """Raw flow of a window (2, T, H, W): index t is flow t -> t+1, the last index repeats the previous one."""
        idx = flow_pair_index(start, window)
        return torch.from_numpy(self.flow[idx].astype(np.float32)).permute(1, 0, 2, 3).contiguous()


def holdout_split(num_frames: int, fraction: float, window: int) -> int:
    """Frames [0, cut) train, [cut, N) are held out; the held-out tail keeps at least one window when fraction > 0."""
    if fraction <= 0:
        return num_frames
    tail = max(window, int(math.ceil(fraction * num_frames)))
    return max(0, num_frames - tail) if num_frames - tail >= window else num_frames


def holdout_tails(data: list[ClipData], fraction: float, window: int) -> list[tuple[str, torch.Tensor]]:
    """(clip id, (3, L, H, W) in [-1, 1]) of every clip's held-out tail (what TrainWindows' "holdout" part cuts)."""
    tails = []
    for d in data:
        n = len(d.frames)
        cut = holdout_split(n, fraction, window)
        if n - cut >= window:
            tails.append((d.clip.id, d.get(np.arange(cut, n))))
    return tails


def gray255(frames: np.ndarray) -> torch.Tensor:
    """(N, H, W, C) uint8 -> (N, H, W) float luma in [0, 255], the flow package's conversion (as at inference)."""
    return model_to_gray255(scale_uint8(frames), channel_dim=-1)


def add_flow(data: ClipData, flow_estimator, batch: int = 16) -> ClipData:
    """Raw flow of every consecutive frame pair, stored as float16: (N - 1, 2, H, W)."""
    from offline.flow.cache import clip_flow

    data.flow = clip_flow(gray255(data.frames).numpy(), flow_estimator, batch)
    return data


def load_clips(
    clips: list[Clip], size: int, *, masks: str | None = None, flow_estimator=None, progress: bool = True,
    desc: str = "decode",
) -> list[ClipData]:
    """Decode clips at `size`; masks "object" (motion masks) / "random" (None stored) / None; flow when an
    estimator `est(f0 (B, H, W), f1) -> (B, 2, H, W)` is given."""
    from offline.data.readers import read_frames
    from offline.pa.masks import motion_masks

    out = []
    for clip in tqdm(clips, desc=desc, unit="clip", leave=False, disable=not progress):
        frames = np.stack(list(read_frames(clip, size=size)))
        if (frames[..., :1] == frames[..., 1:]).all():
            frames = np.ascontiguousarray(frames[..., :1])
        data = ClipData(clip, frames)
        if masks == "object":
            data.masks = motion_masks(gray255(frames))
        if flow_estimator is not None:
            add_flow(data, flow_estimator)
        out.append(data)
    return out


class TrainWindows(torch.utils.data.Dataset):
    """Windows of decoded clips with PAs for the spatial or the temporal AE.

    Args:
        data: decoded clips (see load_clips); temporal needs `flow`.
        window, stride: window length and the step between training windows.
        part: "train" (head of each clip) or "holdout" (the tail, no PAs).
        spatial: the spatial PA sampler (spatial target), temporal: the flow PA sampler (temporal target).
        encode: raw flow (T, 2, H, W) -> encoded (T, 3, H, W) in [-1, 1] (temporal target).
    """

    def __init__(
        self,
        data: list[ClipData],
        window: int,
        stride: int,
        *,
        target: str = "spatial",
        part: str = "train",
        holdout_fraction: float = 0.0,
        spatial: SpatialPA | None = None,
        temporal: TemporalPA | None = None,
        encode=None,
        seed: int = 0,
    ):
        if target not in ("spatial", "temporal"):
            raise ValueError(f"train.target must be 'spatial' or 'temporal' for autoencoder windows, got {target!r}")
        if target == "temporal" and (encode is None or any(d.flow is None for d in data)):
            raise ValueError("temporal windows need flow for every clip and a flow encoder")
        self.data, self.window, self.target = data, window, target
        self.spatial, self.temporal, self.encode = spatial, temporal, encode
        self.seed, self.epoch = seed, 0
        self.index: list[tuple[int, int]] = []
        for ci, d in enumerate(data):
            n = len(d.frames)
            cut = holdout_split(n, holdout_fraction, window)
            if part == "train":
                starts = window_starts(cut, window, stride, cover_end=False)
            else:
                starts = [cut + s for s in window_starts(n - cut, window, window, cover_end=False)] if cut < n else []
            self.index.extend((ci, s) for s in starts)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose PA draws items get (draws are a function of seed, epoch and index)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.index)

    def keys(self) -> list[tuple[str, int]]:
        """(clip id, start frame) of every window, in order."""
        return [(self.data[ci].clip.id, s) for ci, s in self.index]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, bool, int]:
        ci, start = self.index[i]
        d = self.data[ci]
        rng = item_rng(self.seed, self.epoch, i)
        if self.target == "spatial":
            if self.spatial is None:
                x = d.get(np.arange(start, start + self.window))
                return x, x, False, i
            s = self.spatial(d.get, len(d.frames), start, rng, d.masks)
            return s.input, s.target, s.is_pa, i
        raw = d.flow_window(start, self.window)  # (2, T, H, W)
        pa, is_pa = (raw, False) if self.temporal is None else self.temporal(raw, rng, d.masks, start)
        target = self.encode(raw.permute(1, 0, 2, 3)).permute(1, 0, 2, 3).contiguous()
        x = target if not is_pa else self.encode(pa.permute(1, 0, 2, 3)).permute(1, 0, 2, 3).contiguous()
        return x, target, is_pa, i
