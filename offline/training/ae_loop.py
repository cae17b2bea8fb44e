"""The training loop for the spatial / temporal autoencoder (with PAs, SSPCAB, learned noise), single-process or DDP.

It writes its run directory (offline.training.run_dir: config, JSONL log, loss plot, checkpoint every epoch and on
stop, weights, held-out windows). Ctrl-C / SIGTERM finish the current step, write the checkpoint and return;
`--resume` continues from the same step with the same optimiser state and the same PA draws.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from offline.training import ddp
from offline.training.run_dir import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    HOLDOUT_FILE,
    LOG_FILE,
    PLOT_FILE,
    WEIGHTS_FILE,
    JsonlLog,
    StopRequest,
    atomic_save_safetensors,
    atomic_torch_save,
    config_differences,
    dump_config,
    load_checkpoint,
    plot_losses,
)
from offline.models.autoencoder import Autoencoder
from offline.config import Config, FlowConfig
from offline.models.noise_generator import NoiseGenerator
from offline.pa.baselines import learned_noise_pa, noise_generator_loss
from offline.pa.intruders import load_intruders

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What a run ended with: the (unwrapped) models, the global step, the next epoch, and whether it was stopped."""

    model: torch.nn.Module
    generator: torch.nn.Module | None
    step: int
    epoch: int
    stopped: bool
    out_dir: Path
    losses: list[float] = field(default_factory=list)


def seed_everything(seed: int) -> None:
    """Seed torch and numpy so a run (and each DDP rank) is reproducible."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


def build_autoencoder(cfg: Config) -> Autoencoder:
    """The autoencoder the config describes (widths, SSPCAB), freshly initialised."""
    return Autoencoder(3, tuple(cfg.model.channels), cfg.model.sspcab)


def flow_tools(flow_cfg: FlowConfig, device: torch.device):
    """(estimator, encoder) from the flow package: est(f0, f1) -> (B, 2, H, W); encode (.., 2, H, W) -> (.., 3, H, W)."""
    from offline.flow import FlowEstimator, encode_flow

    est = FlowEstimator(flow_cfg, device=device)
    return est, (lambda flow: encode_flow(flow, flow_cfg.clip))


def build_windows(cfg: Config, device: torch.device, clips=None, part: str = "train", data=None, progress: bool = True):
    """The TrainWindows of the run's target (spatial or temporal) with its PA sampler; `data` reuses decoded clips."""
    from offline.data.readers import open_from_config
    from offline.pa.sampler import SpatialPA, TemporalPA
    from offline.training.data import TrainWindows, load_clips

    target = cfg.train.target
    if data is None and clips is None:
        clips = open_from_config(cfg.data).train
        if not clips:
            raise ValueError(f"data.root: {cfg.data.root} has no training clips")
    est = encode = None
    if target == "temporal":
        est, encode = flow_tools(cfg.flow, device)
    need_masks = (target == "spatial" and cfg.pa.spatial == "ldm") or (target == "temporal" and cfg.pa.temporal != "none")
    masks = cfg.pa.mask if need_masks else None
    if data is None:
        data = load_clips(clips, cfg.data.size, masks=masks, flow_estimator=est, progress=progress,
                          desc=f"decode + flow ({target})" if est is not None else f"decode ({target})")
    elif target == "temporal" and any(d.flow is None for d in data):
        from offline.training.data import add_flow

        data = [add_flow(d, est) if d.flow is None else d for d in data]
    spatial = temporal = None
    if part == "train" and target == "spatial" and cfg.pa.spatial != "none":
        inpainter = intruders = None
        if cfg.pa.spatial == "ldm":
            from offline.pa.inpaint import make_inpainter

            inpainter = make_inpainter(cfg.pa.ldm_path, cfg.pa.ldm_steps, str(device))
        if cfg.pa.spatial == "patch":
            intruders = load_intruders(cfg.pa.intruder_dir, size=cfg.data.size, count=64, seed=cfg.pa.seed)
        spatial = SpatialPA.from_config(cfg.pa, cfg.data.window, inpainter, intruders)
    if part == "train" and target == "temporal" and cfg.pa.temporal != "none":
        temporal = TemporalPA.from_config(cfg.pa)
    stride = cfg.data.train_stride if part == "train" else cfg.data.window
    return TrainWindows(
        data, cfg.data.window, stride, target=target, part=part, holdout_fraction=cfg.train.holdout_fraction,
        spatial=spatial, temporal=temporal, encode=encode, seed=cfg.train.seed,
    ), data


def epoch_batches(n: int, batch: int, epoch: int, seed: int, info: ddp.DistInfo) -> list[list[int]]:
    """This rank's batches for one epoch: a seeded shuffle, split across ranks like DistributedSampler (padded)."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch)).tolist()
    total = int(math.ceil(n / info.world_size)) * info.world_size
    order += order[: total - n]
    mine = order[info.rank : total : info.world_size]
    return [mine[i : i + batch] for i in range(0, len(mine), batch)]


def _collate(items):
    x = torch.stack([it[0] for it in items])
    y = torch.stack([it[1] for it in items])
    pa = torch.tensor([bool(it[2]) for it in items])
    return x, y, pa


def train_autoencoder(
    cfg: Config,
    *,
    resume: bool = False,
    stop: StopRequest | None = None,
    progress: bool = True,
    data=None,
    after_step=None,
) -> TrainResult:
    """Train `cfg.train.target` ("spatial" or "temporal") into `cfg.train.out_dir`; see the module docstring.

    Args:
        resume: continue from `out_dir/checkpoint.pt` (the config must match except epochs/max_steps).
        stop: a StopRequest (signals); the loop stops cleanly when it is set.
        data: decoded clips to reuse (tests, several runs on the same footage).
        after_step: callback(step) after every optimiser step (tests: interrupt at a given step).
    """
    tc = cfg.train
    info = ddp.setup(tc.device)
    stop = stop or StopRequest()
    out = Path(tc.out_dir)
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
    ddp.barrier(info)
    ckpt_path = out / CHECKPOINT_FILE
    state = None
    if resume:
        if not ckpt_path.is_file():
            raise FileNotFoundError(f"--resume: no checkpoint at {ckpt_path}")
        saved = Config.model_validate(yaml.safe_load((out / CONFIG_FILE).read_text()))
        diff = config_differences(cfg, saved)
        if diff:
            raise ValueError(f"--resume: {out / CONFIG_FILE} differs from the current config: " + "; ".join(diff))
        state = load_checkpoint(ckpt_path)
    seed_everything(tc.seed + info.rank)
    if tc.batch_size % info.world_size:
        raise ValueError(f"train.batch_size {tc.batch_size} is not divisible by the {info.world_size} data-parallel ranks")
    per_rank = tc.batch_size // info.world_size
    cuda = info.device.type == "cuda"
    amp = cuda and tc.amp

    windows, _ = build_windows(cfg, info.device, data=data, progress=progress and info.is_main)
    holdout, _ = build_windows(cfg, info.device, part="holdout", data=windows.data)
    if len(windows) == 0:
        raise ValueError(f"no training windows: clips shorter than data.window={cfg.data.window} after the holdout")

    torch.manual_seed(tc.seed)  # identical initial weights on every rank
    model = build_autoencoder(cfg).to(info.device)
    gen = NoiseGenerator(3, tuple(cfg.model.channels)).to(info.device) if (
        tc.target == "spatial" and cfg.pa.spatial == "learned_noise") else None
    if cuda and tc.amp:
        model = model.to(memory_format=torch.channels_last_3d)
        if gen is not None:
            gen = gen.to(memory_format=torch.channels_last_3d)
    opt = torch.optim.Adam(model.parameters(), lr=tc.lr)
    gopt = torch.optim.Adam(gen.parameters(), lr=tc.lr) if gen is not None else None
    step, epoch, skip = 0, 0, 0
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        if gen is not None:
            gen.load_state_dict(state["generator"])
            gopt.load_state_dict(state["g_optimizer"])
        step, epoch, skip = int(state["step"]), int(state["epoch"]), int(state["batch_in_epoch"])
    fmodel = DDP(model, device_ids=[info.device.index] if cuda else None) if info.distributed else model
    fgen = (DDP(gen, device_ids=[info.device.index] if cuda else None) if info.distributed else gen) if gen is not None else None

    log = JsonlLog(out / LOG_FILE if info.is_main else None)
    if info.is_main:
        (out / CONFIG_FILE).write_text(dump_config(cfg))
        (out / HOLDOUT_FILE).write_text(json.dumps({"windows": holdout.keys(), "fraction": tc.holdout_fraction}) + "\n")
        log.write(
            event="resume" if state is not None else "start", step=step, epoch=epoch, target=tc.target,
            pa_spatial=cfg.pa.spatial, pa_temporal=cfg.pa.temporal, windows=len(windows), holdout_windows=len(holdout),
            world_size=info.world_size, device=str(info.device), amp=amp, size=cfg.data.size, batch_size=tc.batch_size,
        )
    logger.info(
        "training the %s AE: %d windows (%d held out), batch %d (%d x %d ranks), %s%s, PAs: %s",
        tc.target, len(windows), len(holdout), tc.batch_size, per_rank, info.world_size, info.device,
        " bf16" if amp else "", cfg.pa.spatial if tc.target == "spatial" else cfg.pa.temporal,
    )

    def checkpoint(next_epoch: int, batch_in_epoch: int) -> None:
        ddp.broadcast_buffers(model, info)
        if gen is not None:
            ddp.broadcast_buffers(gen, info)
        if info.is_main:
            blob = {
                "model": model.state_dict(), "optimizer": opt.state_dict(),
                "step": step, "epoch": next_epoch, "batch_in_epoch": batch_in_epoch,
            }
            if gen is not None:
                blob["generator"], blob["g_optimizer"] = gen.state_dict(), gopt.state_dict()
            atomic_torch_save(blob, ckpt_path)
            weights = {f"model.{k}": v for k, v in model.state_dict().items()}
            if gen is not None:
                weights.update({f"generator.{k}": v for k, v in gen.state_dict().items()})
            atomic_save_safetensors(weights, out / WEIGHTS_FILE, {"target": tc.target, "step": str(step)})
        ddp.barrier(info)

    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if amp else contextlib.nullcontext
    losses: list[float] = []
    stopped = False
    max_steps = tc.max_steps or math.inf
    deadline = time.monotonic() + tc.max_minutes * 60.0 if tc.max_minutes else math.inf
    out_of_time = False
    with stop:
        while epoch < tc.epochs and step < max_steps and not stopped and not out_of_time:
            windows.set_epoch(epoch)
            batches = epoch_batches(len(windows), per_rank, epoch, tc.seed, info)
            loader = torch.utils.data.DataLoader(
                windows, batch_sampler=batches[skip:], collate_fn=_collate, num_workers=tc.num_workers,
                pin_memory=cuda,
            )
            model.train()
            bar = tqdm(loader, total=len(batches) - skip, desc=f"{tc.target} epoch {epoch + 1}/{tc.epochs}",
                       unit="batch", disable=not (progress and info.is_main), dynamic_ncols=True)
            epoch_losses: list[float] = []
            t_epoch = time.perf_counter()
            batch_index = skip
            t0 = time.perf_counter()
            for x, y, is_pa in bar:
                x = x.to(info.device, non_blocking=True)
                y = y.to(info.device, non_blocking=True)
                if cuda and tc.amp:
                    x = x.contiguous(memory_format=torch.channels_last_3d)
                    y = y.contiguous(memory_format=torch.channels_last_3d)
                if gen is not None and bool(is_pa.any()):
                    with torch.no_grad(), autocast():
                        noise = fgen(x).float()
                    x_p, _ = learned_noise_pa(x, noise)
                    sel = is_pa.to(info.device).view(-1, 1, 1, 1, 1)
                    x = torch.where(sel, x_p, x)
                opt.zero_grad(set_to_none=True)
                with autocast():
                    recon = fmodel(x)
                    loss = F.mse_loss(recon.float(), y.float())
                    if cfg.model.sspcab:
                        loss = loss + cfg.model.sspcab_weight * model.aux_loss().float()
                loss.backward()
                opt.step()
                if gen is not None:  # alternate: G maximises its noise while F still reconstructs it (Astrid et al.)
                    gopt.zero_grad(set_to_none=True)
                    with autocast():
                        noise = fgen(y).float()
                        x_p, eff = learned_noise_pa(y, noise)
                        g_loss = noise_generator_loss(fmodel(x_p).float(), x_p, eff, cfg.pa.noise_lambda)
                    g_loss.backward()
                    gopt.step()
                    opt.zero_grad(set_to_none=True)
                step += 1
                batch_index += 1
                value = float(loss.detach())
                epoch_losses.append(value)
                losses.append(value)
                dt, t0 = time.perf_counter() - t0, time.perf_counter()  # data + step: what a person waits for
                rate = x.shape[0] * info.world_size / max(dt, 1e-9)
                bar.set_postfix(loss=f"{value:.4f}", win_s=f"{rate:.1f}", pa=f"{float(is_pa.float().mean()):.2f}")
                if step % tc.log_every == 0 or step == 1:
                    mean_loss = ddp.all_reduce_mean(value, info)
                    log.write(event="step", step=step, epoch=epoch, loss=mean_loss, pa_fraction=float(is_pa.float().mean()),
                              windows_per_s=round(rate, 2), lr=tc.lr)
                if after_step is not None:
                    after_step(step)
                out_of_time = ddp.any_rank(time.monotonic() >= deadline, info)
                if ddp.any_rank(stop.requested, info) or step >= max_steps or out_of_time:
                    stopped = stop.requested
                    break
            bar.close()
            finished = batch_index >= len(batches)
            if finished:
                epoch += 1
                skip = 0
                mean = ddp.all_reduce_mean(float(np.mean(epoch_losses)) if epoch_losses else float("nan"), info)
                log.write(event="epoch", epoch=epoch, step=step, loss_mean=mean, steps=len(epoch_losses),
                          seconds=round(time.perf_counter() - t_epoch, 2))
                logger.info("epoch %d/%d: mean loss %.5f (%d steps, %.1f s)", epoch, tc.epochs, mean,
                            len(epoch_losses), time.perf_counter() - t_epoch)
            else:
                skip = batch_index
            checkpoint(epoch, skip)
            if info.is_main:
                plot_losses(out / LOG_FILE, out / PLOT_FILE)
    if info.is_main:
        why = (f"stopped by {stop.reason}" if stopped else "max_steps reached" if step >= max_steps
               else f"time budget reached (train.max_minutes={tc.max_minutes})" if out_of_time else "done")
        log.write(event="end", step=step, epoch=epoch, reason=why)
        logger.info("%s at step %d (epoch %d); checkpoint %s", why, step, epoch, ckpt_path)
    return TrainResult(model, gen, step, epoch, stopped, out, losses)
