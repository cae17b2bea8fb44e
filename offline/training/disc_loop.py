"""Training the discriminator: CLIP image features of normal frames (label 0) vs spatial PAs (label 1), SGD.

Without `model.clip_model_path` the discriminator is OFF: a warning is logged, `discriminator.json` in the run
directory says so (and why), and `vad export` writes that status into the bundle with eta3 = 0 and the other
weights renormalised. It is never silently a zero score.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from offline.config import Config
from offline.models.discriminator import Discriminator
from offline.pa.sampler import SpatialPA, item_rng

logger = logging.getLogger(__name__)

STATUS_FILE = "discriminator.json"
WEIGHTS_FILE = "discriminator.safetensors"
OFF_NO_WEIGHTS = (
    "off: model.clip_model_path is not set (no ViFi-CLIP / CLIP image weights here); "
    "eta3 = 0 and the other score weights are renormalised"
)


@dataclass
class DiscriminatorResult:
    """What a discriminator run ended with: status (trained or off, and why), run directory, weights."""

    status: str
    model: Discriminator | None
    out_dir: Path
    accuracy: float | None = None


def read_status(run_dir: str | Path) -> dict:
    """The discriminator run's status record ({"status": "on" | "off: ...", ...})."""
    path = Path(run_dir) / STATUS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; run `vad train --target discriminator` into {run_dir} first")
    return json.loads(path.read_text())


def labelled_frames(cfg: Config, data, sampler: SpatialPA, max_windows: int | None = None):
    """Normal frames and their spatial PAs from non-overlapping training windows: ((N, 3, H, W), labels (N,))."""
    frames, labels = [], []
    count = 0
    for ci, d in enumerate(data):
        n = len(d.frames)
        for start in range(0, n - cfg.data.window + 1, cfg.data.window):
            if max_windows is not None and count >= max_windows:
                break
            rng = item_rng(cfg.train.seed, 0, count)
            s = sampler(d.get, n, start, rng, d.masks, force=True)
            frames += [s.target.permute(1, 0, 2, 3), s.input.permute(1, 0, 2, 3)]
            labels += [torch.zeros(s.target.shape[1]), torch.ones(s.input.shape[1])]
            count += 1
    return torch.cat(frames), torch.cat(labels)


def train_discriminator(cfg: Config, data=None, progress: bool = True, max_windows: int | None = None) -> DiscriminatorResult:
    """Train D into `cfg.train.out_dir` (SGD lr 0.02, momentum 0.9, wd 1e-3, batch 16, 20 epochs by default)."""
    from offline.training import ddp
    from offline.training.ae_loop import seed_everything
    from offline.training.run_dir import atomic_save_safetensors, dump_config

    tc = cfg.train
    out = Path(tc.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(dump_config(cfg))
    if cfg.model.clip_model_path is None:
        logger.warning("discriminator %s", OFF_NO_WEIGHTS)
        (out / STATUS_FILE).write_text(json.dumps({"status": OFF_NO_WEIGHTS, "clip_model_path": None}, indent=2) + "\n")
        return DiscriminatorResult(OFF_NO_WEIGHTS, None, out)

    from offline.models.clip_features import ClipFeatureExtractor
    from offline.data.readers import open_from_config
    from offline.pa.inpaint import make_inpainter
    from offline.training.data import load_clips

    device = ddp.resolve_device(tc.device)
    seed_everything(tc.seed)
    extractor = ClipFeatureExtractor(cfg.model.clip_model_path, device)
    if extractor.dim != 512:
        raise ValueError(f"model.clip_model_path: {cfg.model.clip_model_path} gives {extractor.dim}-d features, the discriminator takes 512")
    if data is None:
        data = load_clips(open_from_config(cfg.data).train, cfg.data.size, masks=cfg.pa.mask, desc="decode (D)")
    pa_cfg = cfg.pa.model_copy(update={"spatial": "ldm"})
    sampler = SpatialPA.from_config(pa_cfg, cfg.data.window, make_inpainter(cfg.pa.ldm_path, cfg.pa.ldm_steps, str(device)))
    frames, labels = labelled_frames(cfg, data, sampler, max_windows)
    feats = torch.cat([extractor(frames[i : i + 256]).cpu() for i in range(0, len(frames), 256)])
    model = Discriminator(extractor.dim)
    opt = torch.optim.SGD(model.parameters(), lr=tc.d_lr, momentum=tc.d_momentum, weight_decay=tc.d_weight_decay)
    gen = torch.Generator().manual_seed(tc.seed)
    log = (out / "train.jsonl").open("a")
    for epoch in tqdm(range(tc.d_epochs), desc="discriminator", disable=not progress):
        order = torch.randperm(len(feats), generator=gen)
        total = 0.0
        for i in range(0, len(order), tc.d_batch_size):
            idx = order[i : i + tc.d_batch_size]
            loss = F.binary_cross_entropy_with_logits(model(feats[idx])[:, 0], labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        log.write(json.dumps({"event": "epoch", "epoch": epoch + 1, "loss_mean": total / len(feats)}) + "\n")
    log.close()
    with torch.no_grad():
        acc = float(((model(feats)[:, 0] > 0).float() == labels).float().mean())
    atomic_save_safetensors({f"discriminator.{k}": v for k, v in model.state_dict().items()}, out / WEIGHTS_FILE)
    status = {"status": "on", "clip_model_path": str(cfg.model.clip_model_path), "frames": int(len(feats)),
              "train_accuracy": acc}
    (out / STATUS_FILE).write_text(json.dumps(status, indent=2) + "\n")
    logger.info("discriminator trained on %d frames (%s): train accuracy %.3f", len(feats), np.bincount(labels.long()), acc)
    return DiscriminatorResult("on", model.eval(), out, acc)
