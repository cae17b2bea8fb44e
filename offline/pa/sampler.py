"""Feed pseudo-anomalies to an autoencoder with probability p (pure numpy/torch).

Each training item draws its own `numpy.random.Generator` from (seed, epoch, index), so a run is reproducible,
data-parallel ranks never share draws, and a resumed run sees exactly the PAs it would have seen. Whatever the
input, the target is the normal window (METHOD.md's loss).

Spatial kinds: "none", "ldm" (ours: object/random mask inpainted, LDM or the fallback inpainter), "patch" and
"skip_frame" (LNTRA), "gaussian", "learned_noise" (the noise comes from G in the trainer: the sampler only decides
which items get it). Temporal kinds: "none", "flow_mixup" (ours).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from offline.pa.baselines import gaussian_pa, lntra_patch, sample_skip_frame
from offline.pa.masks import fill_empty_with_random, mask_bbox, random_mask
from offline.pa.temporal import flow_mixup

if TYPE_CHECKING:
    from offline.config import PAConfig

SPATIAL_KINDS = ("none", "ldm", "patch", "skip_frame", "gaussian", "learned_noise")
TEMPORAL_KINDS = ("none", "flow_mixup")

# frames(indices) -> (3, len(indices), H, W) float in [-1, 1]
FrameGetter = Callable[[np.ndarray], torch.Tensor]
# images (N, 3, H, W) in [-1, 1], masks (N, H, W) bool -> (N, 3, H, W), e.g. offline.pa.inpaint.TeleaInpainter
Inpainter = Callable[..., torch.Tensor]


def item_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator of one training item: a pure function of (seed, epoch, index)."""
    return np.random.default_rng([int(seed), int(epoch), int(index)])


@dataclass
class Sample:
    """One training item: input (C, T, H, W), target (C, T, H, W) (the normal window), whether a PA was applied."""

    input: torch.Tensor
    target: torch.Tensor
    is_pa: bool


def window_masks(
    masks: np.ndarray | None, start: int, window: int, height: int, width: int, rng: np.random.Generator,
    min_coverage: float = 0.02, max_coverage: float = 0.3,
) -> np.ndarray:
    """Masks (T, H, W) for a window: the clip's object masks with empty frames filled by random masks, or one
    random mask repeated over the window when the clip has no object masks (mask kind "random")."""
    if masks is None:
        m = random_mask(height, width, rng, min_coverage, max_coverage)
        return np.repeat(m[None], window, axis=0)
    return fill_empty_with_random(masks[start : start + window], rng, min_coverage, max_coverage)[0]


class SpatialPA:
    """Applies one spatial PA kind with probability p to a window of a clip.

    Args:
        kind: one of SPATIAL_KINDS.
        p: probability that an item gets a PA (METHOD.md: 0.4 for ours; LNTRA 0.2; noise 0.5).
        window: frames per window.
        inpainter: fills masked regions for kind "ldm".
        intruders: (K, 3, h, w) images in [-1, 1] for kind "patch".
    """

    def __init__(
        self,
        kind: str,
        p: float,
        window: int = 16,
        *,
        inpainter: Inpainter | None = None,
        intruders: torch.Tensor | None = None,
        patch_max_size: float = 0.5,
        patch_max_speed: int = 10,
        skip_strides: list[int] | tuple[int, ...] = (2, 3, 4, 5),
        gaussian_sigma: float = 0.5,
        min_coverage: float = 0.02,
        max_coverage: float = 0.3,
    ):
        if kind not in SPATIAL_KINDS:
            raise ValueError(f"pa.spatial: unknown PA kind {kind!r}; expected one of {list(SPATIAL_KINDS)}")
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"PA probability must lie in [0, 1], got {p}")
        if kind == "ldm" and inpainter is None:
            raise ValueError("pa.spatial 'ldm' needs an inpainter (LDM or the fallback)")
        if kind == "patch" and (intruders is None or len(intruders) == 0):
            raise ValueError("pa.spatial 'patch' needs intruder images")
        self.kind, self.p, self.window = kind, p, window
        self.inpainter, self.intruders = inpainter, intruders
        self.patch_max_size, self.patch_max_speed = patch_max_size, patch_max_speed
        self.skip_strides = tuple(skip_strides)
        self.gaussian_sigma = gaussian_sigma
        self.coverage = (min_coverage, max_coverage)

    @classmethod
    def from_config(
        cls, cfg: "PAConfig", window: int, inpainter: Inpainter | None = None, intruders: torch.Tensor | None = None
    ) -> "SpatialPA":
        """The PA of `pa.spatial` with its paper probability: p_spatial for ours, the LNTRA flags for patch and
        skip-frame, p_spatial (set it to 0.5 as the paper does) for the noise PAs."""
        p = {"patch": cfg.patch_probability, "skip_frame": cfg.skip_probability, "none": 0.0}.get(cfg.spatial, cfg.p_spatial)
        return cls(
            cfg.spatial, p, window, inpainter=inpainter, intruders=intruders, patch_max_size=cfg.patch_max_size,
            patch_max_speed=cfg.patch_max_speed, skip_strides=cfg.skip_strides, gaussian_sigma=cfg.gaussian_sigma,
            min_coverage=cfg.mask_min_coverage, max_coverage=cfg.mask_max_coverage,
        )

    def __call__(
        self, frames: FrameGetter, num_frames: int, start: int, rng: np.random.Generator,
        masks: np.ndarray | None = None, force: bool = False,
    ) -> Sample:
        """PA (or not) for the window starting at `start`; `masks` are the clip's object masks (N, H, W) or None."""
        idx = np.arange(start, start + self.window)
        target = frames(idx)
        apply = self.kind != "none" and (force or rng.random() < self.p)
        if not apply:
            return Sample(target, target, False)
        if self.kind == "ldm":
            _, t, h, w = target.shape
            m = torch.from_numpy(window_masks(masks, start, t, h, w, rng, *self.coverage))
            flat = target.permute(1, 0, 2, 3)
            filled = self.inpainter(flat, m, seed=int(rng.integers(0, 2**31 - 1)))
            return Sample(filled.permute(1, 0, 2, 3).contiguous(), target, True)
        if self.kind == "patch":
            intruder = self.intruders[int(rng.integers(0, len(self.intruders)))]
            x, _ = lntra_patch(target, intruder, rng, self.patch_max_size, self.patch_max_speed)
            return Sample(x, target, True)
        if self.kind == "skip_frame":
            # windows with the stride must fit in the clip from some start; the target stays the normal window
            draw = sample_skip_frame(num_frames, self.window, self.skip_strides, rng)
            if draw is None:
                return Sample(target, target, False)
            s, stride = draw
            return Sample(frames(s + stride * np.arange(self.window)), frames(np.arange(s, s + self.window)), True)
        if self.kind == "gaussian":
            return Sample(gaussian_pa(target, self.gaussian_sigma, rng), target, True)
        return Sample(target, target, True)  # learned_noise: the trainer adds G(x) to flagged items


class TemporalPA:
    """Flow mix-up (Rai et al.) with probability p on a raw flow window (2, T, H, W) in pixels.

    The box p' is the bounding box of the object mask of the window's middle frame (a random LaMa-style mask's
    box when that frame has no object), mixed over every frame with a same-sized box elsewhere, lam ~ Beta(0.4, 0.4).
    """

    def __init__(self, kind: str, p: float, alpha: float = 0.4, min_coverage: float = 0.02, max_coverage: float = 0.3):
        if kind not in TEMPORAL_KINDS:
            raise ValueError(f"pa.temporal: unknown PA kind {kind!r}; expected one of {list(TEMPORAL_KINDS)}")
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"PA probability must lie in [0, 1], got {p}")
        self.kind, self.p, self.alpha = kind, p, alpha
        self.coverage = (min_coverage, max_coverage)

    @classmethod
    def from_config(cls, cfg: "PAConfig") -> "TemporalPA":
        """The temporal PA sampler of a `pa` config section (kind, probability, seed)."""
        return cls(cfg.temporal, cfg.p_temporal if cfg.temporal != "none" else 0.0,
                   min_coverage=cfg.mask_min_coverage, max_coverage=cfg.mask_max_coverage)

    def __call__(
        self, flow: torch.Tensor, rng: np.random.Generator, masks: np.ndarray | None = None, start: int = 0
    ) -> tuple[torch.Tensor, bool]:
        """flow (C, T, H, W) -> (flow with a PA or unchanged, is_pa); `masks` are the clip's (N, H, W) or None."""
        if self.kind == "none" or rng.random() >= self.p:
            return flow, False
        _, t, h, w = flow.shape
        box = None
        if masks is not None:
            box = mask_bbox(masks[min(start + t // 2, len(masks) - 1)])
        if box is None:
            box = mask_bbox(random_mask(h, w, rng, *self.coverage))
        mixed, _ = flow_mixup(flow, box, rng, self.alpha)
        return mixed, True
