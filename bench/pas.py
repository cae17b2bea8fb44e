"""Benchmark: spatial PAs per second at 256x256 with 50 DDIM steps, using a randomly initialised UNet and VQ
autoencoder of the real CompVis `inpainting_big` size (speed needs no trained weights), and the Telea fallback.

    .venv/bin/python bench/pas.py --quick     # CPU: a few UNet steps timed, 50-step rate extrapolated (~2 min)
    .venv/bin/python bench/pas.py             # CPU: one full 50-step sample as well; GPU rows when CUDA exists

Rows are printed as a Markdown table for bench/RESULTS.md.
"""
from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch

from offline.pa.inpaint import LDMInpainter, TeleaInpainter, build_ldm, compvis_unet_config, compvis_vq_config
from offline.pa.masks import random_mask


def _inputs(n: int, size: int = 256, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    images = torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    masks = torch.from_numpy(np.stack([random_mask(size, size, rng, 0.02, 0.3) for _ in range(n)]))
    return images, masks


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_ldm(ldm: LDMInpainter, batch: int, steps: int, repeats: int = 1) -> float:
    """Seconds per call inpainting `batch` frames with `steps` DDIM steps (after one warm-up call)."""
    images, masks = _inputs(batch)
    ldm.steps = min(steps, 2)
    ldm.batch_size = batch
    ldm(images, masks)  # warm-up
    ldm.steps = steps
    _sync(ldm.device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        ldm(images, masks)
    _sync(ldm.device)
    return (time.perf_counter() - t0) / repeats


@torch.no_grad()
def time_parts(ldm: LDMInpainter, repeats: int = 3) -> tuple[float, float]:
    """Median seconds of one UNet step and of one VQ encode + decode, batch 1 at 256x256 (latent 64x64)."""
    images, _ = _inputs(1)
    x = images.to(ldm.device, ldm.dtype)
    unet_in = torch.randn(1, 7, 64, 64, device=ldm.device, dtype=ldm.dtype)
    t_unet, t_vq = [], []
    for _ in range(repeats + 1):  # the first round warms up
        t0 = time.perf_counter()
        ldm.unet(unet_in, 500)
        t1 = time.perf_counter()
        ldm.vqvae.decode(ldm.vqvae.encode(x).latents)
        t_unet.append(t1 - t0)
        t_vq.append(time.perf_counter() - t1)
    return float(np.median(t_unet[1:])), float(np.median(t_vq[1:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CPU: time a few steps and extrapolate to 50")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--gpu-batches", type=int, nargs="*", default=[1, 8, 16])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    unet, vqvae, sched = build_ldm(compvis_unet_config(), compvis_vq_config(), num_heads=8)
    n_unet = sum(p.numel() for p in unet.parameters()) / 1e6
    n_vq = sum(p.numel() for p in vqvae.parameters()) / 1e6
    print(f"UNet {n_unet:.1f} M parameters, VQ autoencoder {n_vq:.1f} M; torch {torch.__version__}, "
          f"{platform.processor() or platform.machine()}, {args.threads} threads")

    cpu = LDMInpainter(unet, vqvae, sched, steps=args.steps, num_heads=8)
    per_step, fixed = time_parts(cpu, repeats=3)
    est = fixed + args.steps * per_step
    rows.append(("LDM, CPU fp32, batch 1", f"UNet {per_step:.2f} s/step (median of 3), VQ enc+dec {fixed:.2f} s",
                 f"{1 / est:.4f} (extrapolated: {est:.0f} s per PA)"))
    if not args.quick:
        t = time_ldm(cpu, 1, args.steps)
        rows.append((f"LDM, CPU fp32, batch 1, {args.steps} steps measured", f"{t:.1f} s per PA", f"{1 / t:.4f}"))
    del cpu
    if torch.cuda.is_available():
        for dtype in (torch.bfloat16, torch.float16):
            gpu = LDMInpainter(unet, vqvae, sched, steps=args.steps, device="cuda", dtype=dtype, num_heads=8)
            for b in args.gpu_batches:
                t = time_ldm(gpu, b, args.steps, repeats=2)
                rows.append((f"LDM, {torch.cuda.get_device_name()} {str(dtype)[6:]}, batch {b}, {args.steps} steps",
                             f"{t:.2f} s per batch", f"{b / t:.2f}"))
            del gpu
            torch.cuda.empty_cache()
    else:
        rows.append(("LDM, GPU", "no CUDA device in this run", "-"))

    telea = TeleaInpainter()
    images, masks = _inputs(32)
    telea(images[:2], masks[:2])
    t0 = time.perf_counter()
    telea(images, masks)
    t = time.perf_counter() - t0
    rows.append(("Telea fallback, CPU, 32 frames", f"{t / 32 * 1000:.1f} ms per PA", f"{32 / t:.1f}"))

    print("\n| inpainter (256x256, random masks 2-30 %) | cost | PAs per second |\n|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} |")


if __name__ == "__main__":
    main()
