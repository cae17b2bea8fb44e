"""Spatial pseudo-anomalies by inpainting: the CompVis latent-diffusion inpainting model (the sole diffusers import)
and a classical fallback when no weights are configured.

`P_s(x) = F_s(stack(x, x*m, m))`: the UNet sees 7 channels, the noisy latent (3), the VQ latent of the masked
image (3) and the mask resized to latent size (1); 50 DDIM steps; the decoded image is pasted back inside the
mask only, so every pixel outside it equals the input exactly.

Local directory layout (what `save_pretrained` writes and `vad convert-ldm` produces):
    unet/       UNet2DModel, in_channels 7, out_channels 3
    vqvae/      VQModel (latent channels 3)
    scheduler/  DDIMScheduler
    vad_ldm.json  {"num_heads": 8}: CompVis attention uses 8 heads at every width, which UNet2DModel's single
                  `attention_head_dim` cannot express; the loader applies it (absent: the diffusers config's heads).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

DIRECTORY_META = "vad_ldm.json"


class Inpainter(Protocol):
    """images (N, 3, H, W) in [-1, 1], masks (N, H, W) bool -> (N, 3, H, W), equal to `images` outside the masks."""

    def __call__(self, images: torch.Tensor, masks: torch.Tensor, seed: int = 0) -> torch.Tensor: ...


def paste_inside(images: torch.Tensor, filled: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Take `filled` inside the masks and `images` (bit-exact) elsewhere: (N, 3, H, W), masks (N, H, W)."""
    return torch.where(masks.bool()[:, None].to(images.device), filled.to(images.dtype), images)


def _check(images: torch.Tensor, masks: torch.Tensor) -> None:
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (N, 3, H, W), got shape {tuple(images.shape)}")
    if masks.shape != (images.shape[0], *images.shape[2:]):
        raise ValueError(f"masks must be (N, H, W) = {(images.shape[0], *images.shape[2:])}, got {tuple(masks.shape)}")


def spatial_pa(frames: torch.Tensor, masks: torch.Tensor, inpainter: Inpainter, seed: int = 0) -> torch.Tensor:
    """Inpaint every frame of a clip: frames (3, T, H, W) or (B, 3, T, H, W), masks (T, H, W) or (B, T, H, W)."""
    batched = frames.ndim == 5
    x = frames if batched else frames[None]
    m = masks if batched else masks[None]
    b, c, t, h, w = x.shape
    flat = x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
    out = inpainter(flat, m.reshape(b * t, h, w), seed=seed)
    out = out.reshape(b, t, c, h, w).permute(0, 2, 1, 3, 4)
    return out if batched else out[0]


# ----------------------------------------------------------------------------------------------------------------
# Latent diffusion (CompVis inpainting layout)


def compvis_unet_config(model_channels: int = 256, channel_mult=(1, 2, 3, 4), num_res_blocks: int = 2,
                        attention_levels=(1, 2, 3), resblock_updown: bool = True, in_channels: int = 7,
                        out_channels: int = 3, sample_size: int = 64, head_dim: int = 128) -> dict:
    """UNet2DModel kwargs matching the CompVis openaimodel UNet; defaults are the `inpainting_big` model."""
    n = len(channel_mult)
    down, up = [], []
    for level in range(n):
        attn = level in attention_levels
        down.append("AttnDownBlock2D" if attn else ("ResnetDownsampleBlock2D" if resblock_updown else "DownBlock2D"))
    for level in reversed(range(n)):
        attn = level in attention_levels
        up.append("AttnUpBlock2D" if attn else ("ResnetUpsampleBlock2D" if resblock_updown else "UpBlock2D"))
    return dict(
        sample_size=sample_size, in_channels=in_channels, out_channels=out_channels,
        block_out_channels=tuple(model_channels * m for m in channel_mult), layers_per_block=num_res_blocks,
        down_block_types=tuple(down), up_block_types=tuple(up),
        downsample_type="resnet" if resblock_updown else "conv", upsample_type="resnet" if resblock_updown else "conv",
        attention_head_dim=head_dim, norm_num_groups=32, norm_eps=1e-5, flip_sin_to_cos=True, freq_shift=0,
        add_attention=True,
    )


def compvis_vq_config(ch: int = 128, ch_mult=(1, 2, 4), num_res_blocks: int = 2, z_channels: int = 3,
                      embed_dim: int = 3, n_embed: int = 8192, mid_attention: bool = False, resolution: int = 256) -> dict:
    """VQModel kwargs matching the taming VQ autoencoder; defaults are the `inpainting_big` first stage."""
    n = len(ch_mult)
    return dict(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n, block_out_channels=tuple(ch * m for m in ch_mult),
        layers_per_block=num_res_blocks, latent_channels=z_channels, vq_embed_dim=embed_dim,
        num_vq_embeddings=n_embed, sample_size=resolution, norm_num_groups=32, scaling_factor=1.0,
        mid_block_add_attention=mid_attention,
    )


def compvis_scheduler_config(betas: np.ndarray | None = None) -> dict:
    """DDIMScheduler kwargs matching LDM's sampler: sqrt-linear betas 0.0015..0.0205, timesteps 1, 21, ..., 981."""
    cfg = dict(num_train_timesteps=1000, beta_start=0.0015, beta_end=0.0205, beta_schedule="scaled_linear",
               clip_sample=False, set_alpha_to_one=False, steps_offset=1, prediction_type="epsilon")
    if betas is not None:
        cfg["trained_betas"] = [float(b) for b in betas]
    return cfg


def set_attention_heads(unet: torch.nn.Module, num_heads: int) -> None:
    """Give every attention layer `num_heads` heads (CompVis: a fixed head count, not a fixed head width)."""
    from diffusers.models.attention_processor import Attention

    for name, module in unet.named_modules():
        if isinstance(module, Attention):
            inner = module.to_q.out_features
            if inner % num_heads:
                raise ValueError(f"unet {name}: {inner} channels are not divisible by num_heads={num_heads}")
            module.heads = num_heads
            module.scale = (inner // num_heads) ** -0.5


def build_ldm(unet_config: dict, vq_config: dict, scheduler_config: dict | None = None, num_heads: int | None = None,
              seed: int = 0):
    """Randomly initialised (unet, vqvae, scheduler) of the given layout (tests, benchmarks, the converter)."""
    from diffusers import DDIMScheduler, UNet2DModel, VQModel

    torch.manual_seed(seed)
    unet = UNet2DModel(**unet_config).eval()
    vqvae = VQModel(**vq_config).eval()
    if num_heads is not None:
        set_attention_heads(unet, num_heads)
    return unet, vqvae, DDIMScheduler(**(scheduler_config or compvis_scheduler_config()))


class LDMInpainter:
    """CompVis LDM inpainting with DDIM (eta 0): batched; bf16/fp16 weights on CUDA, float32 on CPU."""

    def __init__(self, unet, vqvae, scheduler, steps: int = 50, batch_size: int = 8, device: str | torch.device = "cpu",
                 dtype: torch.dtype | None = None, num_heads: int | None = None):
        self.device = torch.device(device)
        if dtype is None:
            dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        self.dtype = dtype
        # cast only when needed: diffusers warns on every dtype cast, even a no-op one
        self.unet = (unet.to(self.device) if dtype == torch.float32 else unet.to(self.device, dtype)).eval()
        self.vqvae = (vqvae.to(self.device) if dtype == torch.float32 else vqvae.to(self.device, dtype)).eval()
        self.scheduler = scheduler
        self.steps = steps
        self.batch_size = batch_size
        self.num_heads = num_heads
        if num_heads is not None:
            set_attention_heads(self.unet, num_heads)

    @classmethod
    def from_pretrained(cls, path: str | Path, **kwargs) -> "LDMInpainter":
        """Load unet/, vqvae/, scheduler/ (+ vad_ldm.json) from a local directory; never touches the network."""
        from diffusers import DDIMScheduler, UNet2DModel, VQModel

        path = Path(path)
        missing = [sub for sub in ("unet", "vqvae", "scheduler") if not (path / sub).is_dir()]
        if missing:
            raise FileNotFoundError(
                f"pa.ldm_path {path}: not a local LDM inpainting directory (missing {', '.join(missing)}/); "
                "make one with `vad convert-ldm`"
            )
        meta = json.loads((path / DIRECTORY_META).read_text()) if (path / DIRECTORY_META).is_file() else {}
        unet = UNet2DModel.from_pretrained(path / "unet", local_files_only=True, low_cpu_mem_usage=False)
        vqvae = VQModel.from_pretrained(path / "vqvae", local_files_only=True, low_cpu_mem_usage=False)
        scheduler = DDIMScheduler.from_pretrained(path / "scheduler", local_files_only=True)
        if unet.config.in_channels != 7 or unet.config.out_channels != vqvae.config.latent_channels:
            raise ValueError(
                f"{path / 'unet'}: in_channels={unet.config.in_channels}, out_channels={unet.config.out_channels}; "
                f"the inpainting layout needs 7 and the VQ latent channels ({vqvae.config.latent_channels})"
            )
        kwargs.setdefault("num_heads", meta.get("num_heads"))
        return cls(unet, vqvae, scheduler, **kwargs)

    def save_pretrained(self, path: str | Path) -> None:
        """Write the UNet, VQ model, scheduler and vad_ldm.json to `path` (the layout `pa.ldm_path` reads)."""
        path = Path(path)
        self.unet.save_pretrained(path / "unet")
        self.vqvae.save_pretrained(path / "vqvae")
        self.scheduler.save_pretrained(path / "scheduler")
        if self.num_heads is not None:
            (path / DIRECTORY_META).write_text(json.dumps({"num_heads": self.num_heads}) + "\n")

    @torch.no_grad()
    def _batch(self, images: torch.Tensor, masks: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        dev, dt = self.device, self.dtype
        x = images.to(dev, torch.float32)
        m = masks.to(dev)[:, None].float()
        masked = x * (1 - m) - m  # CompVis: (1 - m) * image in [0, 1], then *2-1: the hole is -1 (black)
        cond = self.vqvae.encode(masked.to(dt)).latents.float()
        mask_lat = F.interpolate(m * 2 - 1, size=cond.shape[-2:])  # {-1, 1}, nearest
        latents = torch.randn(cond.shape, generator=generator, dtype=torch.float32).to(dev)
        latents = latents * self.scheduler.init_noise_sigma
        self.scheduler.set_timesteps(self.steps, device=dev)
        for t in self.scheduler.timesteps:
            inp = torch.cat([latents, cond, mask_lat], dim=1).to(dt)
            eps = self.unet(inp, t).sample.float()
            latents = self.scheduler.step(eps, t, latents, eta=0.0).prev_sample
        decoded = self.vqvae.decode(latents.to(dt)).sample.float().clamp(-1, 1)
        return decoded.cpu()

    def __call__(self, images: torch.Tensor, masks: torch.Tensor, seed: int = 0) -> torch.Tensor:
        """Inpaint (N, 3, H, W) in [-1, 1] inside (N, H, W) masks; H, W divisible by the VQ downsampling."""
        _check(images, masks)
        factor = 2 ** (len(self.vqvae.config.block_out_channels) - 1)
        if images.shape[-1] % factor or images.shape[-2] % factor:
            raise ValueError(f"image size {tuple(images.shape[-2:])} must be divisible by {factor} (VQ downsampling)")
        generator = torch.Generator().manual_seed(seed)
        out = [self._batch(images[i : i + self.batch_size], masks[i : i + self.batch_size], generator)
               for i in range(0, images.shape[0], self.batch_size)]
        return paste_inside(images, torch.cat(out).to(images.device), masks)


# ----------------------------------------------------------------------------------------------------------------
# Fallback: OpenCV Telea inpainting plus texture noise


class TeleaInpainter:
    """Fallback when no LDM weights are configured: OpenCV Telea fill plus Gaussian texture noise.

    Telea propagates the surrounding colours smoothly into the hole, which alone leaves an unnaturally flat
    patch; noise with the image's own high-frequency strength (std of the image minus its 5x5 blur, outside
    the mask) restores some texture. Unlike the LDM it invents no objects or structure: the PA is a
    plausible-colour "erasure" of the masked object, not a semantic replacement.
    """

    def __init__(self, radius: int = 5, noise_scale: float = 1.0):
        self.radius = radius
        self.noise_scale = noise_scale

    def __call__(self, images: torch.Tensor, masks: torch.Tensor, seed: int = 0) -> torch.Tensor:
        import cv2  # adapter dependency, imported lazily

        _check(images, masks)
        rng = np.random.default_rng(seed)
        out = images.detach().cpu().float().clone()
        for i in range(images.shape[0]):
            m = masks[i].cpu().numpy().astype(bool)
            if not m.any():
                continue
            img = ((out[i].permute(1, 2, 0).numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8)
            filled = cv2.inpaint(img, m.astype(np.uint8) * 255, self.radius, cv2.INPAINT_TELEA).astype(np.float32)
            gray = img.astype(np.float32).mean(axis=2)
            residual = gray - cv2.blur(gray, (5, 5))
            std = float(residual[~m].std()) if (~m).any() else 0.0
            filled += self.noise_scale * std * rng.standard_normal(m.shape, dtype=np.float32)[..., None]
            out[i] = torch.from_numpy(filled.clip(0, 255) / 127.5 - 1).permute(2, 0, 1)
        return paste_inside(images, out.to(images.device), masks)


def make_inpainter(ldm_path: Path | None, steps: int = 50, device: str = "cpu", batch_size: int = 8) -> Inpainter:
    """The configured inpainter: the LDM from `pa.ldm_path`, or the Telea fallback (one log line) when unset."""
    if ldm_path is None:
        logger.warning(
            "pa.ldm_path is not set: spatial PAs use the fallback inpainter (OpenCV Telea + texture noise), "
            "not the latent diffusion model; see README 'Pseudo-anomalies'"
        )
        return TeleaInpainter()
    return LDMInpainter.from_pretrained(ldm_path, steps=steps, device=device, batch_size=batch_size)
