"""Model bundles: a directory with `model.safetensors` and `config.json`, the unit the service loads.

Everything needed to score travels in the bundle: architectures, input size, flow settings and encoding, score
weights, normaliser choice and calibration statistics. Loading never unpickles: weights are safetensors only, their
sha256 is checked against the config, and unknown format versions are refused.
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import ConfigDict, Field, ValidationError, field_validator, model_validator
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from offline.models.autoencoder import Autoencoder
from offline.config import FlowConfig, Strict, format_validation_error
from offline.models.discriminator import Discriminator, build_discriminator
from offline.models.encoder_features import feature_dim
from offline.scoring.weights import check_weights

FORMAT = "vad-bundle"
VERSION = 1
SUPPORTED_VERSIONS = (1,)
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


class BundleError(ValueError):
    """A bundle that cannot be trusted or read; the message names the file and the reason."""


class _Strict(Strict):
    """The config base (unknown keys are errors), without pydantic's reserved `model_` prefix check."""

    model_config = ConfigDict(**Strict.model_config, protected_namespaces=())


class AEArch(_Strict):
    """Architecture of one autoencoder in a bundle (enough to rebuild it before loading its weights)."""

    in_channels: int = Field(3, ge=1)
    channels: tuple[int, int, int] = (96, 128, 256)
    sspcab: bool = False


class InputSpec(_Strict):
    """What the bundle's models take: frame size, window length and value range."""

    size: int = Field(256, ge=16)
    window: int = Field(16, ge=8)
    value_range: tuple[float, float] = (-1.0, 1.0)


class ScoringSpec(_Strict):
    """How the bundle's evidence becomes a camera's score: windows and hop, reductions, weights, normaliser.

    Everything that shapes a score lives here, so `vad eval --protocol stream` and the service compute the same
    numbers: windows start every `hop` frames and each frame is scored once, by the first window that holds it;
    each autoencoder's error map is reduced to one value per frame (`frame` mean, or `block_max`: the worst
    `block`-pixel square), then optionally `pool`ed over its window; the `calibrated` normaliser maps the calibration footage's median to 0.5 and its
    `calibration_quantile` to `threshold`, and adapts slowly (`adapt_halflife` frames) on frames scored below
    `adapt_gate` only.
    """

    weights: tuple[float, float, float] = (0.65, 0.25, 0.1)
    normaliser: Literal["minmax", "running", "calibrated"] = "running"
    running_halflife: float = Field(600.0, gt=0)
    running_warmup: int = Field(32, ge=1)
    frame: Literal["all", "center"] = "all"
    hop: int = Field(16, ge=1, le=64, description="a window every `hop` frames; each frame is scored once")
    reduction_spatial: Literal["frame", "block_max"] = "frame"
    reduction_temporal: Literal["frame", "block_max"] = "frame"
    block: int = Field(16, ge=1, description="block side in pixels at the model's input size (block_max)")
    pool: Literal["frame", "window"] = Field(
        "frame", description="window: each frame's reduced evidence is its window's mean (a smoothing over the window "
        "at no extra latency); frame: each frame its own")
    threshold: float = Field(0.9, gt=0.5, lt=1, description="the score the calibration quantile maps to: the default alert threshold")
    alert_threshold: float | None = Field(
        None, ge=0.5, lt=1,
        description="the alert threshold `vad learn` chose for a false-alert rate on the calibration footage (None: threshold); "
        "unlike `threshold` it does not change the scores",
    )
    calibration_quantile: float = Field(0.99, gt=0.5, lt=1)
    adapt_halflife: float = Field(3000.0, gt=0, description="frames for the calibrated location to move half-way to a new level")
    adapt_gate: float = Field(0.75, gt=0, le=1, description="only frames scored below this teach the normaliser")
    adapt_limit: float = Field(3.0, ge=0, description="the location never moves more than this many calibration scales")
    cpu_precision: Literal["float32", "bfloat16"] = Field(
        "float32", description="the autoencoders' forward pass on a CPU: bfloat16 autocast is ~2.7x faster at 128 px on "
        "CPUs with AVX512-BF16 or AMX (bench/RESULTS.md) and moves reconstructions by ~5e-4; on CUDA it is always "
        "bfloat16. Calibration and `vad eval` read it from here, so they compute what the camera computes")

    @field_validator("weights")
    @classmethod
    def _weights(cls, v):
        return check_weights(v)


class Calibration(_Strict):
    """Statistics on held-out normal footage of the scene, the reference a camera starts from.

    components: raw (mean, std) per component; robust: raw (median, 1.4826 MAD) per component (the calibrated
    normaliser's location and scale); z_quantiles: quantiles of the weighted sum of robust z-scores; score_quantiles:
    the final scores' quantiles on the same footage (a check: the median should be about 0.5); score_trace: those
    scores per clip in stream order (None = not scored), rounded to 1e-4, so a camera can replay the footage through
    its own alert rules to choose a threshold for a false-alert rate (offline/scoring/alert_rules.py). frames: the
    footage's length in frames; samples: how many per-frame values the statistics were taken from (windows every
    `stride` frames overlap, so a frame counts once per window holding it; older bundles: None, non-overlapping).
    """

    components: dict[str, tuple[float, float]] = {}
    robust: dict[str, tuple[float, float]] = {}
    z_quantiles: dict[str, float] = {}
    score_quantiles: dict[str, float] = {}
    score_trace: dict[str, list[float | None]] = {}
    frames: int = 0
    samples: int | None = None
    stride: int | None = None


class BundleConfig(_Strict):
    """The bundle's config.json: format and version, architectures, input, flow, scoring, calibration, checksum."""

    format: Literal["vad-bundle"] = FORMAT
    version: int
    spatial: AEArch
    temporal: AEArch | None = None
    discriminator: bool = False
    discriminator_status: str = "off: not trained"
    discriminator_features: Literal["clip", "spatial_encoder"] = Field(
        "clip", description="what the discriminator reads: CLIP embeddings per frame (clip_model_path) or the spatial "
        "AE's own encoder latent per slice (offline/models/encoder_features.py); bundles before this key: clip")
    discriminator_in_features: int = Field(512, ge=1, description="the discriminator MLP's input width")
    clip_model_path: str | None = None
    input: InputSpec = InputSpec()
    flow: FlowConfig = FlowConfig()
    scoring: ScoringSpec = ScoringSpec()
    calibration: Calibration | None = None
    weights_sha256: str
    created: str = ""
    notes: dict = {}

    @field_validator("version")
    @classmethod
    def _version(cls, v: int) -> int:
        if v not in SUPPORTED_VERSIONS:
            raise ValueError(f"unsupported bundle version {v}; this build reads versions {list(SUPPORTED_VERSIONS)}")
        return v

    @model_validator(mode="after")
    def _fits_input(self) -> "BundleConfig":
        s, i = self.scoring, self.input
        if s.hop > i.window:
            raise ValueError(f"scoring.hop ({s.hop}) must not exceed input.window ({i.window}): frames would go unscored")
        if "block_max" in (s.reduction_spatial, s.reduction_temporal) and i.size % s.block:
            raise ValueError(f"scoring.block ({s.block}) must divide input.size ({i.size})")
        if self.flow.warm_start and not (self.flow.warm_chain == i.window == s.hop):
            raise ValueError(f"flow.warm_start needs flow.warm_chain ({self.flow.warm_chain}) = input.window ({i.window}) = "
                             f"scoring.hop ({s.hop}): a window's flow is one chain, so windows must not overlap")
        if self.discriminator and self.discriminator_features == "spatial_encoder":
            width = feature_dim(self.spatial.channels[2])
            if self.discriminator_in_features != width:
                raise ValueError(f"discriminator_in_features ({self.discriminator_in_features}) must be {width} for "
                                 f"spatial_encoder features of a spatial AE with channels {list(self.spatial.channels)}")
        return self


@dataclass
class Bundle:
    """A loaded bundle: config plus the models in eval mode on CPU."""

    path: Path | None
    config: BundleConfig
    spatial: Autoencoder
    temporal: Autoencoder | None = None
    discriminator: Discriminator | None = None
    extra: dict = field(default_factory=dict)


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file (bundle weights; the spatial run a spatial_encoder discriminator was trained on)."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _build(config: BundleConfig) -> tuple[Autoencoder, Autoencoder | None, Discriminator | None]:
    s = config.spatial
    spatial = Autoencoder(s.in_channels, s.channels, s.sspcab)
    temporal = None
    if config.temporal is not None:
        t = config.temporal
        temporal = Autoencoder(t.in_channels, t.channels, t.sspcab)
    disc = build_discriminator(config.discriminator_features, config.discriminator_in_features) if config.discriminator else None
    return spatial, temporal, disc


def save_bundle(
    path: str | Path,
    spatial: Autoencoder,
    temporal: Autoencoder | None = None,
    discriminator: Discriminator | None = None,
    *,
    input_spec: InputSpec | None = None,
    flow: FlowConfig | None = None,
    scoring: ScoringSpec | None = None,
    calibration: Calibration | None = None,
    discriminator_status: str | None = None,
    discriminator_features: str = "clip",
    clip_model_path: str | None = None,
    notes: dict | None = None,
) -> Path:
    """Write weights (safetensors, fp32) and config.json into `path` (created); returns the path.

    `discriminator_features`: "clip" (CLIP embeddings, `clip_model_path`) or "spatial_encoder" (the latent of
    `spatial`'s own encoder); the discriminator's input width is read from the model.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    for prefix, model in (("spatial", spatial), ("temporal", temporal), ("discriminator", discriminator)):
        if model is None:
            continue
        for key, value in model.state_dict().items():
            tensors[f"{prefix}.{key}"] = value.detach().to("cpu", torch.float32 if value.is_floating_point() else value.dtype).contiguous()
    weights = path / WEIGHTS_FILE
    tmp = weights.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata={"format": FORMAT})
    tmp.replace(weights)

    def arch(m: Autoencoder) -> AEArch:
        conv = m.encoder[0]
        return AEArch(
            in_channels=conv.in_channels,
            channels=(m.encoder[0].out_channels, m.encoder[3].out_channels, m.encoder[6].out_channels),
            sspcab=m.sspcab is not None,
        )

    config = BundleConfig(
        version=VERSION,
        spatial=arch(spatial),
        temporal=arch(temporal) if temporal is not None else None,
        discriminator=discriminator is not None,
        discriminator_status=discriminator_status
        or ("on" if discriminator is not None else "off: no discriminator in this bundle"),
        discriminator_features=discriminator_features,
        discriminator_in_features=discriminator.net[0].in_features if discriminator is not None else 512,
        clip_model_path=clip_model_path,
        input=input_spec or InputSpec(),
        flow=flow or FlowConfig(),
        scoring=scoring or ScoringSpec(),
        calibration=calibration,
        weights_sha256=sha256_file(weights),
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        notes=notes or {},
    )
    (path / CONFIG_FILE).write_text(json.dumps(config.model_dump(mode="json", by_alias=True), indent=2) + "\n")
    return path


def update_scoring(path: str | Path, **fields: Any) -> BundleConfig:
    """Change fields of a written bundle's ScoringSpec in place (validated; the weights and their checksum stay)."""
    path = Path(path)
    config = read_bundle_config(path)
    try:
        scoring = ScoringSpec.model_validate({**config.scoring.model_dump(), **fields})
    except ValidationError as exc:
        raise BundleError(format_validation_error(exc, f"{path / CONFIG_FILE}: scoring")) from None
    config = config.model_copy(update={"scoring": scoring})
    tmp = path / (CONFIG_FILE + ".tmp")
    tmp.write_text(json.dumps(config.model_dump(mode="json", by_alias=True), indent=2) + "\n")
    tmp.replace(path / CONFIG_FILE)
    return config


def read_bundle_config(path: str | Path) -> BundleConfig:
    """Validate a bundle's config.json alone (no weights loaded); BundleError naming the file and field."""
    path = Path(path)
    cfg_file = path / CONFIG_FILE
    if not path.is_dir():
        raise BundleError(f"{path}: not a bundle directory")
    if not cfg_file.is_file():
        raise BundleError(f"{cfg_file}: missing (a bundle needs {CONFIG_FILE} and {WEIGHTS_FILE})")
    try:
        raw = json.loads(cfg_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{cfg_file}: not valid JSON: {exc}") from None
    try:
        return BundleConfig.model_validate(raw)
    except ValidationError as exc:
        raise BundleError(format_validation_error(exc, str(cfg_file))) from None


def load_bundle(path: str | Path) -> Bundle:
    """Validate config, verify the weights' checksum, load safetensors (never pickle) into fresh models."""
    path = Path(path)
    config = read_bundle_config(path)
    weights = path / WEIGHTS_FILE
    if not weights.is_file():
        others = sorted(p.name for p in path.iterdir() if p.suffix in {".pt", ".pth", ".pkl", ".bin", ".ckpt"})
        hint = f" (found {others}: pickled checkpoints are refused, convert them to safetensors)" if others else ""
        raise BundleError(f"{weights}: missing{hint}")
    digest = sha256_file(weights)
    if digest != config.weights_sha256:
        raise BundleError(
            f"{weights}: checksum mismatch (sha256 {digest[:16]}..., config.json expects {config.weights_sha256[:16]}...): "
            "the weights were modified or belong to another bundle"
        )
    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as exc:
        raise BundleError(f"{weights}: not a safetensors file ({exc}); pickled weights are refused") from None
    spatial, temporal, disc = _build(config)
    for prefix, model in (("spatial", spatial), ("temporal", temporal), ("discriminator", disc)):
        if model is None:
            continue
        state = {k[len(prefix) + 1 :]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            first = str(exc).splitlines()[0:3]
            raise BundleError(f"{weights}: weights do not match the {prefix} architecture in {CONFIG_FILE}: {' '.join(first)}") from None
        model.eval()
    unused = [k for k in tensors if k.split(".", 1)[0] not in {"spatial", "temporal", "discriminator"}]
    if unused:
        raise BundleError(f"{weights}: unexpected tensors {unused[:5]}")
    for name, (mean, std) in (config.calibration.components.items() if config.calibration else []):
        if not (math.isfinite(mean) and math.isfinite(std)):
            raise BundleError(f"{path / CONFIG_FILE}: calibration.components.{name} is not finite: {(mean, std)}")
    return Bundle(path=path, config=config, spatial=spatial, temporal=temporal, discriminator=disc)


def random_bundle(
    path: str | Path,
    *,
    size: int = 256,
    temporal: bool = True,
    channels: tuple[int, int, int] = (96, 128, 256),
    seed: int = 0,
    scoring: ScoringSpec | None = None,
    flow: FlowConfig | None = None,
) -> Path:
    """A bundle of freshly initialised AEs (seeded): exercises the whole chain before any training."""
    torch.manual_seed(seed)
    spatial = Autoencoder(channels=channels)
    temp = Autoencoder(channels=channels) if temporal else None
    return save_bundle(
        path,
        spatial,
        temp,
        input_spec=InputSpec(size=size),
        flow=flow,
        scoring=scoring,
        discriminator_status="off: untrained random bundle",
        notes={"untrained": True, "seed": seed},
    )
