"""A training run's directory: what is written there, how, and how a run is resumed or stopped.

Files: `config.yaml` (the exact config), `train.jsonl` (one JSON object per logged step and per epoch), `loss.png`,
`checkpoint.pt` (model + optimiser + position, written atomically, loaded with weights_only=True),
`weights.safetensors` (the model alone, for `vad export`) and `holdout.json` (held-out normal windows for
calibration). Shared by the autoencoder loop, the discriminator loop and the export.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import time
from pathlib import Path

import torch
import yaml
from safetensors.torch import save_file

from offline.config import Config

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"
LOG_FILE = "train.jsonl"
PLOT_FILE = "loss.png"
CHECKPOINT_FILE = "checkpoint.pt"
WEIGHTS_FILE = "weights.safetensors"
HOLDOUT_FILE = "holdout.json"
# fields that may change between a run and its resume
# (a time budget counts from the start of each invocation, so a resume may be given a new one)
RESUMABLE = {("train", "epochs"), ("train", "max_steps"), ("train", "max_minutes"), ("train", "num_workers"),
             ("train", "log_every")}


class StopRequest:
    """Turns SIGINT / SIGTERM into a flag the loop checks between steps (so no checkpoint is half written)."""

    def __init__(self):
        self.requested = False
        self.reason = ""
        self._previous: dict[int, object] = {}

    def request(self, reason: str = "requested") -> None:
        """Ask the loop to stop after the current step (what a signal does; tests call it directly)."""
        self.requested, self.reason = True, reason

    def _handler(self, signum, frame) -> None:
        if self.requested:  # a second Ctrl-C: the user really means it
            raise KeyboardInterrupt
        self.request(signal.Signals(signum).name)
        logger.warning("%s received: stopping after this step and writing the checkpoint", self.reason)

    def __enter__(self) -> "StopRequest":
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handler)
            except ValueError:  # not the main thread: signals stay as they are
                pass
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def atomic_torch_save(obj, path: Path) -> None:
    """torch.save to a temporary file, then rename: a crash leaves the previous checkpoint intact."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def atomic_save_safetensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict | None = None) -> None:
    """Save tensors as safetensors to a temporary file, then rename: a crash leaves the previous file intact."""
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict:
    """Tensors and plain containers only: weights_only=True refuses pickled code."""
    return torch.load(path, map_location="cpu", weights_only=True)


def dump_config(cfg: Config) -> str:
    """The config as YAML (aliases as in the file), written to the run directory for resumes and exports."""
    return yaml.safe_dump(cfg.model_dump(mode="json", by_alias=True), sort_keys=False)


def config_differences(a: Config, b: Config) -> list[str]:
    """Fields (section.key) where two configs differ, ignoring those a resume may change."""
    da, db = a.model_dump(mode="json", by_alias=True), b.model_dump(mode="json", by_alias=True)
    out = []
    for section in da:
        for key in da[section]:
            if (section, key) not in RESUMABLE and da[section][key] != db[section].get(key):
                out.append(f"{section}.{key}: {db[section].get(key)!r} in the run, {da[section][key]!r} now")
    return out


def plot_losses(log_path: Path, out: Path) -> None:
    """Loss curve from the JSONL log: logged steps and per-epoch means."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps, losses, epochs, means = [], [], [], []
    for line in log_path.read_text().splitlines():
        rec = json.loads(line)
        if rec.get("event") == "step":
            steps.append(rec["step"])
            losses.append(rec["loss"])
        elif rec.get("event") == "epoch":
            epochs.append(rec["step"])
            means.append(rec["loss_mean"])
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(steps, losses, lw=1, alpha=0.6, label="logged steps")
    if means:
        ax.plot(epochs, means, "o-", label="epoch mean")
    ax.set(xlabel="step", ylabel="loss (MSE to the normal input)", yscale="log", title=log_path.parent.name)
    ax.legend()
    fig.tight_layout()
    tmp = out.with_name("tmp-" + out.name)
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, out)


class JsonlLog:
    """Appends one JSON object per line (rank 0 only); resumed runs append to the same file."""

    def __init__(self, path: Path | None):
        self.path = path

    def write(self, **record) -> None:
        """Append one record (with the time) as a JSON line; no-op off rank 0."""
        if self.path is None:
            return
        record.setdefault("time", round(time.time(), 3))
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
