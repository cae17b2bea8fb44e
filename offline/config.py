"""Typed, validated configuration for the offline side (data, flow, PAs, model, scoring, training).

Every section forbids unknown keys; `load_config` turns pydantic's errors into one message per field
that names the dotted path and the bad value (`scoring.weights: must sum to 1, got 0.9 (...)`).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from offline.scoring.weights import check_weights


class Strict(BaseModel):
    """Base for every config section: typos are errors, not silently ignored keys."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(Strict):
    """Where the footage is and how it is cut: dataset root and layout, frame size, window length, strides."""

    root: Path = Field(
        default=Path(os.environ.get("VAD_DATA", "../shared/data/ped2")),
        description="dataset folder (shared layout with labels.json, UCSD, frames layout, Avenue, or a folder of videos)",
    )
    layout: Literal["auto", "shared", "ucsd", "frames", "avenue", "videos"] = "auto"
    size: int = Field(256, ge=32, le=1024, description="frames are resized to size x size")
    window: int = Field(16, ge=2, le=64, description="frames per window")
    train_stride: int = Field(1, ge=1, description="step between training windows")
    clips: list[str] | None = Field(None, description="restrict to these clip ids (None = all)")


class FlowConfig(Strict):
    """TV-L1 parameters, OpenCV's DualTVL1 defaults (METHOD.md)."""

    backend: Literal["auto", "torch", "opencv"] = Field(
        "auto", description="auto: torch on CUDA, the faster of the two on CPU (OpenCV)"
    )
    tau: float = Field(0.25, gt=0, le=0.25)
    lambda_: float = Field(0.15, gt=0, alias="lambda")
    theta: float = Field(0.3, gt=0, lt=1)
    scales: int = Field(5, ge=1, le=10, alias="nscales")
    warps: int = Field(5, ge=1, le=20)
    epsilon: float = Field(0.01, gt=0)
    inner_iterations: int = Field(30, ge=1)
    outer_iterations: int = Field(10, ge=1)
    scale_step: float = Field(0.8, gt=0, lt=1)
    gamma: float = Field(0.0, ge=0, description="illumination term weight (0 = off, OpenCV's default)")
    median_filtering: int = Field(5, ge=1, description="median filter size on the flow per outer iteration (1 = off, odd)")
    compile: Literal["auto", "on", "off"] = Field(
        "auto", description="torch backend: fuse the inner iteration with torch.compile (auto: on CUDA only)"
    )
    clip: float = Field(
        10.0, gt=0, description="flow encoding: |u|, |v| and magnitude (pixels/frame) are clipped to this and scaled to [-1, 1]"
    )
    cache_dir: Path = Field(Path("cache/flow"), description="where `vad flow-cache` stores flow fields")
    warm_start: bool = Field(
        False, description="each pair of a chain after its first starts from the previous pair's flow (with `warm_scales` "
        "pyramid levels) instead of from zero at the coarsest level")
    warm_scales: int = Field(1, ge=1, le=10, description="pyramid levels of a warm-started pair (its init is resized "
                             "to the coarsest of them, as OpenCV's useInitialFlow does; `scales` or more: the whole pyramid)")
    warm_chain: int = Field(16, ge=2, le=256, description="warm start: a chain of pairs restarts cold every this many "
                            "frames, counted from a clip's or a stream's first frame; must equal the window (data.window), "
                            "so each window's flow depends on that window alone, as a camera computes it")
    cuda_graphs: bool = Field(False, description="torch backend on CUDA: replay the solver from CUDA graphs, one per "
                              "(batch bucket 1, 2, 4 .. 256, frame size), captured on first use (the same flow; no "
                              "kernel-launch floor, no compile; takes precedence over `compile`)")
    compile_cache_dir: Path | None = Field(None, description="where torch.compile keeps its compiled kernels so later "
                                           "processes reuse them (TORCHINDUCTOR_CACHE_DIR); None: torch's default")

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)

    @field_validator("median_filtering")
    @classmethod
    def _odd_median(cls, v: int) -> int:
        if v > 1 and v % 2 == 0:
            raise ValueError(f"must be 1 (off) or an odd size, got {v}")
        return v


class PAConfig(Strict):
    """Pseudo-anomaly settings (METHOD.md); `spatial` and `temporal` pick the PA type fed to each AE."""

    spatial: Literal["none", "ldm", "patch", "skip_frame", "gaussian", "learned_noise"] = "ldm"
    temporal: Literal["none", "flow_mixup"] = "flow_mixup"
    p_spatial: float = Field(0.4, ge=0, le=1)
    p_temporal: float = Field(0.5, ge=0, le=1)
    mask: Literal["object", "random"] = "object"
    segmenter: str | None = Field(
        None,
        description="'module:factory' returning a callable (T, H, W, 3) uint8 -> (T, H, W) bool masks; None: motion masks",
    )
    mask_min_coverage: float = Field(0.02, ge=0, le=1)
    mask_max_coverage: float = Field(0.3, ge=0, le=1)
    ldm_path: Path | None = Field(
        None, description="local diffusers directory of the CompVis LDM inpainting model (None: Telea fallback)"
    )
    ldm_batch_size: int = Field(8, ge=1, description="frames per LDM inpainting batch")
    ldm_steps: int = Field(50, ge=1)
    intruder_dir: Path | None = Field(None, description="images for the LNTRA patch PA (None: generated textures)")
    patch_probability: float = Field(0.2, ge=0, le=1)
    patch_max_size: float = Field(0.5, gt=0, le=1)
    patch_max_speed: int = Field(10, ge=0)
    skip_probability: float = Field(0.2, ge=0, le=1)
    skip_strides: list[int] = Field([2, 3, 4, 5])
    gaussian_sigma: float = Field(0.5, gt=0)
    noise_lambda: float = Field(0.1, ge=0)
    cache_dir: Path = Field(Path("cache/pas"), description="where `vad make-pas` stores spatial PAs")
    seed: int = 0

    @model_validator(mode="after")
    def _coverage_bounds(self) -> "PAConfig":
        if self.mask_min_coverage > self.mask_max_coverage:
            raise ValueError(
                f"mask_min_coverage ({self.mask_min_coverage}) must not exceed mask_max_coverage ({self.mask_max_coverage})"
            )
        return self

    @field_validator("skip_strides")
    @classmethod
    def _strides(cls, v: list[int]) -> list[int]:
        if not v or any(s < 2 for s in v):
            raise ValueError(f"strides must be a non-empty list of integers >= 2, got {v}")
        return v


class ModelConfig(Strict):
    """Autoencoder widths, the optional SSPCAB block, and the discriminator's features (CLIP or the spatial encoder)."""

    channels: tuple[int, int, int] = Field((96, 128, 256), description="encoder widths (METHOD.md)")
    sspcab: bool = Field(False, description="replace the encoder's last convolution by an SSPCAB block")
    sspcab_weight: float = Field(0.1, ge=0)
    clip_model_path: Path | None = Field(
        None, description="local transformers CLIP vision directory for the discriminator features (None: D off, "
        "unless disc_features is spatial_encoder)"
    )
    disc_features: Literal["clip", "spatial_encoder"] = Field(
        "clip", description="the discriminator's features: clip (CLIP image embeddings per frame, needs clip_model_path) "
        "or spatial_encoder (the frozen encoder of the spatial AE in disc_spatial_run, per latent slice; no downloads)"
    )
    disc_spatial_run: Path | None = Field(
        None, validate_default=True, description="run directory of the trained spatial AE whose encoder, frozen, gives "
        "the discriminator's features (disc_features spatial_encoder); export it with the same spatial run"
    )

    @field_validator("disc_spatial_run")
    @classmethod
    def _spatial_run_given(cls, v: Path | None, info) -> Path | None:
        if v is None and info.data.get("disc_features") == "spatial_encoder":
            raise ValueError("required when model.disc_features is 'spatial_encoder': the run directory of a trained "
                             "spatial AE (e.g. --set model.disc_spatial_run=runs/spatial)")
        return v


class ScoringConfig(Strict):
    """How per-frame evidence becomes a score: weights (eta), normaliser, window stride, which frames score."""

    weights: tuple[float, float, float] = Field(
        (0.65, 0.25, 0.1), description="eta1 (frame PSNR), eta2 (flow error), eta3 (discriminator); sum to 1"
    )
    normaliser: Literal["minmax", "running"] = Field("minmax", description="minmax: per-video (paper); running: causal")
    window_stride: int = Field(16, ge=1, description="step between scored windows")
    frame: Literal["all", "center"] = Field(
        "all", description="all: every frame of a window gets its own score; center: only the 9th (LNTRA)"
    )
    running_halflife: float = Field(600.0, gt=0, description="running normaliser: frames for statistics to halve their weight")
    running_warmup: int = Field(32, ge=1, description="running normaliser: frames before scores are reported as warm")

    @field_validator("weights")
    @classmethod
    def _sum_to_one(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        return check_weights(v)


class TrainConfig(Strict):
    """One training run: target, schedule, optimiser, device and precision, logging, held-out calibration share."""

    target: Literal["spatial", "temporal", "discriminator"] = "spatial"
    epochs: int = Field(25, ge=1)
    batch_size: int = Field(24, ge=1, description="effective batch (split over data-parallel ranks)")
    lr: float = Field(1e-4, gt=0)
    max_steps: int | None = Field(None, ge=1, description="stop after this many steps (reduced schedules)")
    max_minutes: float | None = Field(
        None, gt=0, description="stop (weights kept, as after max_steps) once training has run this long: a time budget")
    seed: int = 0
    out_dir: Path = Path("runs/train")
    device: str = Field("auto", description="auto (cuda when available), cpu, cuda, cuda:N; torchrun ranks use cuda:LOCAL_RANK")
    amp: bool = Field(True, description="bf16 autocast and channels_last_3d on CUDA (ignored on CPU)")
    log_every: int = Field(10, ge=1, description="steps between JSONL log lines")
    num_workers: int = Field(0, ge=0)
    holdout_fraction: float = Field(
        0.1, ge=0, lt=1, description="tail fraction of every training clip held out (not trained on) for calibration"
    )
    d_lr: float = Field(0.02, gt=0)
    d_momentum: float = Field(0.9, ge=0, lt=1)
    d_weight_decay: float = Field(1e-3, ge=0)
    d_batch_size: int = Field(16, ge=1)
    d_epochs: int = Field(20, ge=1)


class Config(Strict):
    """A whole offline config, one section per concern; `load_config` validates a YAML file into it."""

    data: DataConfig = DataConfig()
    flow: FlowConfig = FlowConfig()
    pa: PAConfig = PAConfig()
    model: ModelConfig = ModelConfig()
    scoring: ScoringConfig = ScoringConfig()
    train: TrainConfig = TrainConfig()


class ConfigError(ValueError):
    """A config file that does not validate; the message names every bad field and value."""


def format_validation_error(
    exc: ValidationError, source: str = "config", prefix: str = "", scrub: Callable[[str], str] | None = None
) -> str:
    """One line per bad field, `source: N invalid field(s)` then `  dotted.path: message (got value)`.

    The project's one formatter (offline configs, bundles, service configs). `prefix` is put before every path
    (`applications.0.args.`); `scrub` (service configs) removes credentials from messages and values, and then
    lists and token fields are not echoed at all.
    """
    clean = scrub or (lambda text: text)
    lines = [f"{source}: {exc.error_count()} invalid field(s)"]
    for err in exc.errors():
        path = prefix + (".".join(str(p) for p in err["loc"]) or "(top level)")
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        value = err.get("input")
        hidden = isinstance(value, dict) or (scrub is not None and (isinstance(value, list) or "token" in path))
        shown = "" if hidden else f" (got {clean(repr(value))})"
        lines.append(f"  {path}: {clean(msg)}{shown}")
    return "\n".join(lines)


def validate(model: type[BaseModel], data: Any, source: str = "config") -> Any:
    """Validate `data` into `model`, raising ConfigError with field paths and values."""
    try:
        return model.model_validate(data or {})
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from None


def read_yaml(path: str | Path) -> Any:
    """Parse a YAML file; a missing file or bad YAML is a ConfigError naming the file."""
    path = Path(path)
    try:
        return yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Load a YAML file (or defaults) into a validated Config; `overrides` are merged per section."""
    data = read_yaml(path) if path else {}
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    data = dict(data or {})
    for key, value in (overrides or {}).items():
        section, _, field = key.partition(".")
        data.setdefault(section, {})
        data[section] = {**data[section], field: value}
    return validate(Config, data, str(path or "config"))
