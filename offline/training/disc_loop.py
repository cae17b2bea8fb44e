"""Training the discriminator: normal windows' features (label 0) vs their spatial PAs' (label 1), SGD.

Two feature towers (`model.disc_features`):

- clip (default): CLIP image features per frame. Without `model.clip_model_path` the discriminator is OFF: a
  warning is logged, `discriminator.json` in the run directory says so (and why), and `vad export` writes that
  status into the bundle with eta3 = 0 and the other weights renormalised. It is never silently a zero score.
- spatial_encoder: the frozen encoder of the trained spatial AE in `model.disc_spatial_run`, one feature vector per
  latent slice (offline/models/encoder_features.py), standardised by the training features' mean and std, so
  nothing has to be downloaded. Every fifth window (with its
  PA) is held out for a held-out accuracy. `discriminator.json` records the spatial run and its weights' sha256;
  `vad export` refuses to put the discriminator beside any other spatial AE, whose latent it was not trained on.
"""
from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from offline.config import Config
from offline.models.discriminator import Discriminator, build_discriminator
from offline.models.encoder_features import feature_dim, latent_features
from offline.pa.sampler import SpatialPA, item_rng

logger = logging.getLogger(__name__)

STATUS_FILE = "discriminator.json"
WEIGHTS_FILE = "discriminator.safetensors"
OFF_NO_WEIGHTS = (
    "off: model.clip_model_path is not set (no ViFi-CLIP / CLIP image weights here); "
    "eta3 = 0 and the other score weights are renormalised"
)
HOLDOUT_EVERY = 5  # spatial_encoder: windows 4, 9, 14, ... (and their PAs) are held out, ~20 %


@dataclass
class DiscriminatorResult:
    """What a discriminator run ended with: status (trained or off, and why), run directory, weights."""

    status: str
    model: Discriminator | None
    out_dir: Path
    accuracy: float | None = None
    heldout_accuracy: float | None = None


def read_status(run_dir: str | Path) -> dict:
    """The discriminator run's status record ({"status": "on" | "off: ...", ...})."""
    path = Path(run_dir) / STATUS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; run `vad train --target discriminator` into {run_dir} first")
    return json.loads(path.read_text())


def labelled_windows(cfg: Config, data, sampler: SpatialPA, max_windows: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(normal window, its spatial PA), each (3, T, H, W), from non-overlapping training windows in clip order."""
    count = 0
    for d in data:
        n = len(d.frames)
        for start in range(0, n - cfg.data.window + 1, cfg.data.window):
            if max_windows is not None and count >= max_windows:
                return
            rng = item_rng(cfg.train.seed, 0, count)
            s = sampler(d.get, n, start, rng, d.masks, force=True)
            yield s.target, s.input
            count += 1


def labelled_frames(cfg: Config, data, sampler: SpatialPA, max_windows: int | None = None):
    """Normal frames and their spatial PAs from non-overlapping training windows: ((N, 3, H, W), labels (N,))."""
    frames, labels = [], []
    for target, pa in labelled_windows(cfg, data, sampler, max_windows):
        frames += [target.permute(1, 0, 2, 3), pa.permute(1, 0, 2, 3)]
        labels += [torch.zeros(target.shape[1]), torch.ones(pa.shape[1])]
    return torch.cat(frames), torch.cat(labels)


def _spatial_pa(cfg: Config, device: torch.device) -> SpatialPA:
    """Our spatial PA (LDM inpainting, or its fallback without `pa.ldm_path`), whatever `pa.spatial` says."""
    from offline.pa.inpaint import make_inpainter

    pa_cfg = cfg.pa.model_copy(update={"spatial": "ldm"})
    return SpatialPA.from_config(pa_cfg, cfg.data.window, make_inpainter(cfg.pa.ldm_path, cfg.pa.ldm_steps, str(device)))


def _fit(model: Discriminator, feats: torch.Tensor, labels: torch.Tensor, cfg: Config, out: Path, progress: bool) -> None:
    """SGD on (N, D) features and labels (N,): `train.d_*`, shuffled by `train.seed`, epoch losses to train.jsonl."""
    tc = cfg.train
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


def _accuracy(model: Discriminator, feats: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.no_grad():
        return float(((model(feats)[:, 0] > 0).float() == labels).float().mean())


def train_discriminator(cfg: Config, data=None, progress: bool = True, max_windows: int | None = None) -> DiscriminatorResult:
    """Train D into `cfg.train.out_dir` (SGD lr 0.02, momentum 0.9, wd 1e-3, batch 16, 20 epochs by default) on the
    features `cfg.model.disc_features` names; `max_windows` caps the windows (tests)."""
    from offline.training import ddp
    from offline.training.ae_loop import seed_everything
    from offline.training.run_dir import atomic_save_safetensors, dump_config

    tc = cfg.train
    out = Path(tc.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(dump_config(cfg))
    if cfg.model.disc_features == "spatial_encoder":
        return _train_on_spatial_encoder(cfg, out, data, progress, max_windows)
    if cfg.model.clip_model_path is None:
        logger.warning("discriminator %s", OFF_NO_WEIGHTS)
        (out / STATUS_FILE).write_text(json.dumps({"status": OFF_NO_WEIGHTS, "clip_model_path": None}, indent=2) + "\n")
        return DiscriminatorResult(OFF_NO_WEIGHTS, None, out)

    from offline.models.clip_features import ClipFeatureExtractor
    from offline.data.readers import open_from_config
    from offline.training.data import load_clips

    device = ddp.resolve_device(tc.device)
    seed_everything(tc.seed)
    extractor = ClipFeatureExtractor(cfg.model.clip_model_path, device)
    if extractor.dim != 512:
        raise ValueError(f"model.clip_model_path: {cfg.model.clip_model_path} gives {extractor.dim}-d features, the discriminator takes 512")
    if data is None:
        data = load_clips(open_from_config(cfg.data).train, cfg.data.size, masks=cfg.pa.mask, desc="decode (D)")
    sampler = _spatial_pa(cfg, device)
    frames, labels = labelled_frames(cfg, data, sampler, max_windows)
    feats = torch.cat([extractor(frames[i : i + 256]).cpu() for i in range(0, len(frames), 256)])
    model = Discriminator(extractor.dim)
    _fit(model, feats, labels, cfg, out, progress)
    acc = _accuracy(model, feats, labels)
    atomic_save_safetensors({f"discriminator.{k}": v for k, v in model.state_dict().items()}, out / WEIGHTS_FILE)
    status = {"status": "on", "clip_model_path": str(cfg.model.clip_model_path), "frames": int(len(feats)),
              "train_accuracy": acc}
    (out / STATUS_FILE).write_text(json.dumps(status, indent=2) + "\n")
    logger.info("discriminator trained on %d frames (%s): train accuracy %.3f", len(feats), np.bincount(labels.long()), acc)
    return DiscriminatorResult("on", model.eval(), out, acc)


def _train_on_spatial_encoder(cfg: Config, out: Path, data, progress: bool, max_windows: int | None) -> DiscriminatorResult:
    """D on the frozen encoder latent of `model.disc_spatial_run`: one sample per latent slice of every window."""
    from offline.data.readers import open_from_config
    from offline.scoring.bundle import sha256_file
    from offline.training import ddp
    from offline.training.ae_loop import seed_everything
    from offline.training.data import load_clips
    from offline.training.export import load_run_autoencoder
    from offline.training.run_dir import WEIGHTS_FILE as RUN_WEIGHTS, atomic_save_safetensors

    run = Path(cfg.model.disc_spatial_run)
    ae, run_cfg = load_run_autoencoder(run)
    if run_cfg.train.target != "spatial":
        raise ValueError(f"model.disc_spatial_run: {run} is a {run_cfg.train.target} run; its encoder must be the spatial AE's")
    if (run_cfg.data.size, run_cfg.data.window) != (cfg.data.size, cfg.data.window):
        raise ValueError(
            f"model.disc_spatial_run: {run} was trained on {run_cfg.data.size}px windows of {run_cfg.data.window} frames, "
            f"this config has data.size={cfg.data.size}, data.window={cfg.data.window}: set them to the run's "
            f"(e.g. the same --schedule)")
    spatial_sha = sha256_file(run / RUN_WEIGHTS)
    device = ddp.resolve_device(cfg.train.device)
    seed_everything(cfg.train.seed)
    encoder = ae.encoder.to(device).eval().requires_grad_(False)
    if data is None:
        data = load_clips(open_from_config(cfg.data).train, cfg.data.size, masks=cfg.pa.mask, desc="decode (D)")
    sampler = _spatial_pa(cfg, device)
    # the detector's encoder pass runs under bf16 autocast on CUDA, so the features are trained as they are scored
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
    train, held = [], []
    windows = labelled_windows(cfg, data, sampler, max_windows)
    for i, (target, pa) in enumerate(tqdm(windows, desc="encoder features (D)", unit="window", disable=not progress)):
        with torch.no_grad(), autocast:
            latent = encoder(torch.stack([target, pa]).to(device))
        feats = latent_features(latent.float()).cpu()  # (2, T', 2C)
        (held if i % HOLDOUT_EVERY == HOLDOUT_EVERY - 1 else train).append(feats)
    if not train:
        raise ValueError(f"no training windows of {cfg.data.window} frames in the clips (data.root {cfg.data.root})")
    slices = train[0].shape[1]

    def stack(pairs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.tensor([0.0] * slices + [1.0] * slices).repeat(len(pairs))
        return torch.cat(pairs).reshape(-1, pairs[0].shape[-1]), labels

    x, y = stack(train)
    model = build_discriminator("spatial_encoder", feature_dim(run_cfg.model.channels[2]))
    model.fit_standardisation(x)
    _fit(model, x, y, cfg, out, progress)
    acc = _accuracy(model, x, y)
    held_acc = _accuracy(model, *stack(held)) if held else None
    atomic_save_safetensors({f"discriminator.{k}": v for k, v in model.state_dict().items()}, out / WEIGHTS_FILE)
    status = {"status": "on", "features": "spatial_encoder", "spatial_run": str(run), "spatial_sha256": spatial_sha,
              "in_features": model.net[0].in_features, "windows": len(train) + len(held), "heldout_windows": len(held),
              "slices_per_window": slices, "train_accuracy": acc, "heldout_accuracy": held_acc}
    (out / STATUS_FILE).write_text(json.dumps(status, indent=2) + "\n")
    logger.info("discriminator on the encoder of %s: %d windows (%d held out), %d slices each; accuracy %.3f train, %s held out",
                run, len(train) + len(held), len(held), slices, acc, "n/a" if held_acc is None else f"{held_acc:.3f}")
    return DiscriminatorResult("on", model.eval(), out, acc, held_acc)
