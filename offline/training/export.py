"""`vad export`: training runs -> the model bundle the streaming service loads.

Takes the spatial run (required), the temporal run and the discriminator run (optional), writes both AEs (+ D when
trained), input size, flow settings and encoding, score weights renormalised over the components present (eta3 = 0
when D is off, with the reason in `discriminator_status`), and calibration statistics of the raw components and of
the aggregate score on the spatial run's held-out normal training footage (never trained on; windows every quarter
window, offline.scoring.calibration). The calibration
goes through `Detector`, the same scoring path as `vad eval` and the service. A discriminator on the spatial
encoder's features (model.disc_features=spatial_encoder) is exported only beside the spatial run it was trained on.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file

from offline.models.autoencoder import Autoencoder
from offline.scoring.bundle import InputSpec, ScoringSpec, save_bundle
from offline.scoring.calibration import calibrate
from offline.config import Config
from offline.models.discriminator import build_discriminator
from offline.scoring.weights import renormalise_weights
from offline.training.run_dir import WEIGHTS_FILE as RUN_WEIGHTS

logger = logging.getLogger(__name__)


def read_run(run_dir: str | Path) -> Config:
    """The exact config a run was trained with (its config.yaml)."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; is {run_dir} a `vad train` run directory?")
    return Config.model_validate(yaml.safe_load(path.read_text()))


def load_run_autoencoder(run_dir: str | Path) -> tuple[Autoencoder, Config]:
    """The AE of a run from weights.safetensors (safetensors only, no pickle), in eval mode."""
    cfg = read_run(run_dir)
    path = Path(run_dir) / RUN_WEIGHTS
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; the run has not finished an epoch or a stop yet")
    tensors = load_file(str(path))
    model = Autoencoder(3, tuple(cfg.model.channels), cfg.model.sspcab)
    model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}, strict=True)
    return model.eval(), cfg


def check_spatial_run(record: dict, discriminator_run: str | Path, spatial_run: str | Path) -> None:
    """A spatial_encoder discriminator reads the latent of the encoder it was trained on: ValueError naming both
    runs when `spatial_run`'s weights are not those (sha256 in the discriminator run's record)."""
    from offline.scoring.bundle import sha256_file

    path = Path(spatial_run) / RUN_WEIGHTS
    actual = sha256_file(path) if path.is_file() else None
    if actual != record.get("spatial_sha256"):
        raise ValueError(
            f"{discriminator_run}: the discriminator was trained on the encoder of {record.get('spatial_run')} "
            f"(weights sha256 {str(record.get('spatial_sha256'))[:16]}...), not on the spatial run exported, {spatial_run} "
            f"(sha256 {str(actual)[:16]}...): export it with the spatial run it was trained on, or train it again with "
            f"--set model.disc_spatial_run={spatial_run}"
        )


def export(
    spatial_run: Path, out: Path, temporal_run: Path | None = None, discriminator_run: Path | None = None,
    device: str = "cpu", batch: int = 8, data=None, scoring: dict | None = None, calibration_stride: int | None = None,
) -> Path:
    """Write the bundle into `out`; `data` (decoded clips) may be passed to skip decoding again; `scoring` overrides
    fields of the bundle's ScoringSpec (hop, reductions, block, threshold, ...; they shape scores, not training);
    `calibration_stride`: frames between calibration windows (default a quarter window, offline.scoring.calibration)."""
    from offline.scoring.detector import Detector
    from offline.training.ae_loop import build_windows
    from offline.training.data import holdout_tails

    spatial, cfg = load_run_autoencoder(spatial_run)
    temporal = None
    if temporal_run is not None:
        temporal, tcfg = load_run_autoencoder(temporal_run)
        if (tcfg.data.size, tcfg.data.window) != (cfg.data.size, cfg.data.window):
            raise ValueError(
                f"{temporal_run}: trained on {tcfg.data.size}px windows of {tcfg.data.window} frames, the spatial run "
                f"{spatial_run} on {cfg.data.size}px x {cfg.data.window}: they cannot share a bundle"
            )
        flow_cfg = tcfg.flow
    else:
        flow_cfg = cfg.flow
    disc, status, clip_path = None, "off: no discriminator run given to `vad export` (eta3 = 0, weights renormalised)", None
    disc_features = "clip"
    if discriminator_run is not None:
        from offline.training.disc_loop import WEIGHTS_FILE, read_status

        record = read_status(discriminator_run)
        status, clip_path = record["status"], record.get("clip_model_path")
        disc_features = record.get("features", "clip")
        if status == "on" and disc_features == "spatial_encoder":
            check_spatial_run(record, discriminator_run, spatial_run)
        if status == "on":
            disc = build_discriminator(disc_features, record.get("in_features", 512))
            tensors = load_file(str(Path(discriminator_run) / WEIGHTS_FILE))
            disc.load_state_dict({k[len("discriminator."):]: v for k, v in tensors.items()}, strict=True)
    if disc is None:
        logger.warning("discriminator %s", status)
    available = (True, temporal is not None, disc is not None)
    weights = renormalise_weights(cfg.scoring.weights, available)
    scoring = ScoringSpec.model_validate({
        "weights": weights, "normaliser": "calibrated", "running_halflife": cfg.scoring.running_halflife,
        "running_warmup": cfg.scoring.running_warmup, "frame": cfg.scoring.frame, **(scoring or {}),
    })
    notes = {
        "weights_requested": list(cfg.scoring.weights), "spatial_run": str(spatial_run),
        "temporal_run": str(temporal_run) if temporal_run else None,
        "discriminator_run": str(discriminator_run) if discriminator_run else None,
        "pa": {"spatial": cfg.pa.spatial, "temporal": read_run(temporal_run).pa.temporal if temporal_run else None},
    }
    common = dict(input_spec=InputSpec(size=cfg.data.size, window=cfg.data.window), flow=flow_cfg, scoring=scoring,
                  discriminator_status=status, discriminator_features=disc_features, clip_model_path=clip_path, notes=notes)
    save_bundle(out, spatial, temporal, disc, **common)
    holdout_cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"target": "spatial"})})
    _, data = build_windows(holdout_cfg, torch.device("cpu"), part="holdout", data=data)
    tails = holdout_tails(data, cfg.train.holdout_fraction, cfg.data.window)
    if not tails:
        logger.warning("no held-out windows (train.holdout_fraction=%s): the bundle has no calibration", cfg.train.holdout_fraction)
        return out
    detector = Detector.load(out, device)
    calibration = calibrate(detector, tails, calibration_stride, batch)
    logger.info("calibration on %d held-out normal frames (windows every %d frames): %s, quantiles %s",
                calibration.frames, calibration.stride, calibration.components, calibration.score_quantiles)
    save_bundle(out, spatial, temporal, disc, calibration=calibration, **common)
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`vad export`'s arguments."""
    parser.add_argument("--spatial", type=Path, required=True, help="run directory of the spatial AE")
    parser.add_argument("--temporal", type=Path, help="run directory of the temporal AE (flow)")
    parser.add_argument("--discriminator", type=Path, help="run directory of `vad train --target discriminator`")
    parser.add_argument("--out", type=Path, required=True, help="bundle directory to write")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=8, help="windows per forward pass during calibration")
    parser.add_argument("--calibration-stride", type=int, default=None, metavar="FRAMES",
                        help="frames between the (overlapping) calibration windows; default a quarter window")
    parser.add_argument("--scoring", action="append", default=[], metavar="KEY=VALUE",
                        help="set a field of the bundle's scoring spec, e.g. --scoring hop=8 --scoring reduction_temporal=block_max")


def parse_scoring(items: list[str]) -> dict:
    """`--scoring KEY=VALUE` items -> {key: YAML value}; ValueError naming a malformed item. A bare comma list of
    numbers is a list as well (`weights=0.2,0.8,0` as `weights=[0.2,0.8,0]`): YAML alone would read it as a string."""
    scoring = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--scoring {item!r}: expected KEY=VALUE, e.g. hop=8")
        parsed = yaml.safe_load(value)
        if isinstance(parsed, str) and "," in parsed:
            parts = [yaml.safe_load(p) for p in parsed.split(",")]
            if all(isinstance(p, (int, float)) and not isinstance(p, bool) for p in parts):
                parsed = parts
        scoring[key.strip()] = parsed
    return scoring


def run(args: argparse.Namespace) -> int:
    """`vad export`: write the bundle of the given runs and print its weights; exit status 2 on a bad run."""
    try:
        scoring = parse_scoring(args.scoring)
        path = export(args.spatial, args.out, args.temporal, args.discriminator, args.device, args.batch, scoring=scoring,
                      calibration_stride=args.calibration_stride)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    cfg = json.loads((path / "config.json").read_text())
    print(f"bundle {path}: weights {cfg['scoring']['weights']}, discriminator {cfg['discriminator_status']}, "
          f"calibration frames {cfg['calibration']['frames'] if cfg.get('calibration') else 0}")
    return 0
