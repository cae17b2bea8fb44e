"""`vad pa-gallery`: a PNG grid of every PA type on real frames, so a person can look at them.

One row per PA type; columns: frame, mask, spatial PA, flow (of the normal frame pair) and temporal PA (ours:
the flow mix-up under the mask's box; baselines: the flow of the PA frames, what a temporal AE would see).
Flow comes from offline.flow's FlowEstimator when it exists, else OpenCV Farneback (colour wheel rendering).
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import torch

from offline.pa.baselines import gaussian_pa, learned_noise_pa, lntra_patch, sample_skip_frame
from offline.pa.masks import fill_empty_with_random, mask_bbox, object_masks, random_mask
from offline.pa.precompute import from_images, to_images
from offline.pa.temporal import flow_mixup

logger = logging.getLogger(__name__)

COLUMNS = ("frame", "mask", "spatial PA", "flow", "temporal PA")


def estimate_flow(frame0: np.ndarray, frame1: np.ndarray) -> np.ndarray:
    """Flow (2, H, W) in pixels between two RGB uint8 frames: FlowEstimator if available, else Farneback."""
    try:
        from offline.config import FlowConfig
        from offline.flow import FlowEstimator  # type: ignore[attr-defined]

        est = FlowEstimator(FlowConfig(), device="cpu")
        g = [torch.from_numpy(f.astype(np.float32).mean(axis=2))[None] for f in (frame0, frame1)]
        return est(g[0], g[1])[0].numpy()
    except ImportError:
        import cv2

        g0, g1 = (cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in (frame0, frame1))
        return cv2.calcOpticalFlowFarneback(g0, g1, None, 0.5, 4, 15, 3, 5, 1.2, 0).transpose(2, 0, 1)


def flow_to_rgb(flow: np.ndarray, max_mag: float = 4.0) -> np.ndarray:
    """(2, H, W) flow -> (H, W, 3) uint8 colour wheel: hue = direction, brightness = magnitude / max_mag."""
    import cv2

    u, v = flow
    mag, ang = cv2.cartToPolar(u.astype(np.float32), v.astype(np.float32))
    hsv = np.zeros((*u.shape, 3), np.uint8)
    hsv[..., 0] = (ang * 90 / np.pi).astype(np.uint8)
    hsv[..., 1] = 255
    hsv[..., 2] = np.clip(mag / max_mag * 255, 0, 255).astype(np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def _gray(mask: np.ndarray) -> np.ndarray:
    m = (np.clip(mask, 0, 1) * 255).astype(np.uint8)
    return np.repeat(m[..., None], 3, axis=2)


def _label(img: np.ndarray, text: str) -> np.ndarray:
    import cv2

    out = np.ascontiguousarray(img.copy())
    cv2.rectangle(out, (0, 0), (out.shape[1], 16), (0, 0, 0), -1)
    cv2.putText(out, text, (3, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (255, 255, 0), 1, cv2.LINE_AA)
    return out


def gallery_rows(frames: np.ndarray, t: int, inpainter, intruders: torch.Tensor, rng: np.random.Generator,
                 segmenter=None, noise_generator=None) -> list[tuple[str, list[np.ndarray], str]]:
    """Rows (title, 5 RGB images, what the temporal column shows) for frame t of a clip (N, H, W, 3) uint8; t+5 < N."""
    h, w = frames.shape[1:3]
    f0, f1 = frames[t], frames[t + 1]
    flow = estimate_flow(f0, f1)
    flow_img = flow_to_rgb(flow)
    rows = []
    obj = object_masks(frames, segmenter)
    for title, mask in (("ours: object mask", fill_empty_with_random(obj[t : t + 1], rng)[0][0]),
                        ("ours: random mask", random_mask(h, w, rng, 0.02, 0.3))):
        pa = from_images(inpainter(to_images(f0[None]), torch.from_numpy(mask[None]), seed=int(rng.integers(1 << 31))))[0]
        mixed, mix = flow_mixup(torch.from_numpy(flow)[:, None], mask_bbox(mask), rng)
        rows.append((title, [f0, _gray(mask), pa, flow_img, flow_to_rgb(mixed[:, 0].numpy())], f"flow mixup lam={mix.lam:.2f}"))
    clip = to_images(frames[t : t + 16]).permute(1, 0, 2, 3)  # (3, T, H, W)
    patched, alpha = lntra_patch(clip, intruders[int(rng.integers(len(intruders)))], rng)
    p = from_images(patched[:, :2].permute(1, 0, 2, 3))
    rows.append(("LNTRA patch", [f0, _gray(alpha[0].numpy()), p[0], flow_img, flow_to_rgb(estimate_flow(p[0], p[1]))], "flow of PA"))
    _, stride = sample_skip_frame(len(frames) - t, 2, (2, 3, 4, 5), rng) or (0, 2)
    f_skip = frames[t + stride]
    rows.append((f"LNTRA skip-frame (stride {stride})",
                 [f0, _gray(np.zeros((h, w))), f_skip, flow_img, flow_to_rgb(estimate_flow(f0, f_skip))], "flow of PA"))
    noisy = from_images(gaussian_pa(to_images(frames[t : t + 2]), 0.5, rng))
    rows.append(("Gaussian noise sigma 0.5",
                 [f0, _gray(np.ones((h, w))), noisy[0], flow_img, flow_to_rgb(estimate_flow(noisy[0], noisy[1]))], "flow of PA"))
    if noise_generator is not None:
        x = clip[None, :, :16]
        with torch.no_grad():
            noise = noise_generator(x)
        x_p, eff = learned_noise_pa(x, noise)
        lp = from_images(x_p[0, :, :2].permute(1, 0, 2, 3))
        rows.append(("learned noise (untrained G)", [f0, _gray(eff[0, :, 0].abs().mean(0).numpy() / 2), lp[0],
                                                     flow_img, flow_to_rgb(estimate_flow(lp[0], lp[1]))], "flow of PA"))
    return rows


def render(rows: list[tuple[str, list[np.ndarray], str]]) -> np.ndarray:
    """Stack rows (title, 5 cells, temporal-column note) into one (rows*H, 5*W, 3) uint8 image, cells labelled."""
    lines = []
    for title, cells, note in rows:
        names = [title, *COLUMNS[1:4], note]
        lines.append(np.concatenate([_label(c, n) for c, n in zip(cells, names)], axis=1))
    return np.concatenate(lines, axis=0)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`vad pa-gallery`'s arguments."""
    parser.add_argument("--out", type=Path, default=Path("pa_gallery.png"), help="PNG to write")
    parser.add_argument("--config", type=Path, default=None, help="YAML config (data and pa sections)")
    parser.add_argument("--clip", default=None, help="training clip id (default: the first)")
    parser.add_argument("--frame", type=int, default=40, help="frame index in the clip")
    parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    """`vad pa-gallery`: draw every PA type on real frames into one PNG."""
    import cv2

    from offline.config import ConfigError, load_config
    from offline.data.readers import DataError, open_dataset, read_frames
    from offline.models.noise_generator import NoiseGenerator
    from offline.pa.inpaint import make_inpainter
    from offline.pa.intruders import load_intruders

    try:
        cfg = load_config(args.config)
        dataset = open_dataset(cfg.data.root, cfg.data.layout)
        clips = [c for c in dataset.train if args.clip in (None, c.id)]
        if not clips:
            raise DataError(f"--clip {args.clip!r}: no such training clip; have {[c.id for c in dataset.train]}")
        frames = np.stack(list(read_frames(clips[0], cfg.data.size)))
        if not 0 <= args.frame < len(frames) - 16:
            raise DataError(f"--frame {args.frame}: clip {clips[0].id} has {len(frames)} frames; need frame + 16 < that")
        inpainter = make_inpainter(cfg.pa.ldm_path, cfg.pa.ldm_steps)
        intruders = load_intruders(cfg.pa.intruder_dir, seed=args.seed)
    except (ConfigError, DataError, FileNotFoundError, ValueError) as exc:
        print(exc)
        return 2
    rng = np.random.default_rng(args.seed)
    torch.manual_seed(args.seed)
    rows = gallery_rows(frames, args.frame, inpainter, intruders, rng, noise_generator=NoiseGenerator().eval())
    image = render(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(args.out), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
        print(f"{args.out}: could not write PNG")
        return 2
    print(f"wrote {args.out} ({len(rows)} rows x {len(COLUMNS)} columns, clip {clips[0].id} frame {args.frame})")
    return 0
