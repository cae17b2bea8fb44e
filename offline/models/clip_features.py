"""Per-frame CLIP-family image features for the discriminator (the sole transformers import of the offline side).

ViFi-CLIP's image tower is CLIP ViT-B/16 with fine-tuned weights, so any local directory that transformers'
`CLIPVisionModelWithProjection` reads (its `save_pretrained` layout) works. Nothing is downloaded: the path
must exist and is opened with `local_files_only=True`. Preprocessing runs in torch (no PIL, no torchvision):
resize to the tower's image size, then the processor's mean/std.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

# OpenAI CLIP's normalisation, used when the directory has no preprocessor_config.json.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class ClipFeatureExtractor:
    """Frames (N, 3, H, W) in [-1, 1] -> (N, D) projected image embeddings (D = 512 for ViT-B/16).

    Args:
        path: local directory of a CLIP vision model (config.json + weights, as `save_pretrained` writes).
        device: where the tower runs; bf16 autocast on CUDA.
        batch_size: frames per forward pass.
    """

    def __init__(self, path: str | Path, device: str | torch.device = "cpu", batch_size: int = 64):
        from transformers import CLIPVisionModelWithProjection

        self.path = Path(path)
        if not (self.path / "config.json").is_file():
            raise FileNotFoundError(
                f"model.clip_model_path: {self.path} is not a local CLIP vision model directory (no config.json)"
            )
        self.device = torch.device(device)
        self.model = CLIPVisionModelWithProjection.from_pretrained(str(self.path), local_files_only=True)
        self.model.to(self.device).eval().requires_grad_(False)
        self.image_size = int(self.model.config.image_size)
        self.dim = int(self.model.config.projection_dim)
        mean, std = CLIP_MEAN, CLIP_STD
        proc = self.path / "preprocessor_config.json"
        if proc.is_file():
            meta = json.loads(proc.read_text())
            mean, std = tuple(meta.get("image_mean", mean)), tuple(meta.get("image_std", std))
        self.mean = torch.tensor(mean, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, device=self.device).view(1, 3, 1, 1)
        self.batch_size = batch_size
        logger.info("CLIP image tower from %s: %dx%d input, %d-d features", self.path, self.image_size, self.image_size, self.dim)

    def preprocess(self, frames: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) in [-1, 1] -> (N, 3, S, S) normalised as the tower expects."""
        if frames.dim() != 4 or frames.shape[1] != 3:
            raise ValueError(f"frames must be (N, 3, H, W), got shape {tuple(frames.shape)}")
        x = (frames.to(self.device, torch.float32) + 1.0) / 2.0
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bicubic", align_corners=False, antialias=True)
        return (x.clamp(0, 1) - self.mean) / self.std

    @torch.inference_mode()
    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        out = []
        for i in range(0, frames.shape[0], self.batch_size):
            x = self.preprocess(frames[i : i + self.batch_size])
            if self.device.type == "cuda":
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    emb = self.model(pixel_values=x).image_embeds
            else:
                emb = self.model(pixel_values=x).image_embeds
            out.append(emb.float())
        if not out:
            return torch.zeros((0, self.dim), device=self.device)
        return torch.cat(out)
