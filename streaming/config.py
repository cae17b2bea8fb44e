"""Typed, validated configuration of the streaming service (cameras, scorer, alerts, events, HTTP; `notify` lives
in streaming/notify/settings.py).

The same model validates `deploy/config.yaml` (the `args:` of the `streaming.app:build_app` application)
and the bodies of the control plane's camera requests. Every section forbids unknown keys; errors name
the dotted field path and the bad value, with camera credentials scrubbed.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from offline.config import ConfigError, Strict, format_validation_error, read_yaml
from streaming.credentials import camera_env_prefix, scrub_url
from streaming.inputs import check_source_url, no_control_chars
from streaming.notify.settings import NotifyConfig

APP_IMPORT_PATH = "streaming.app:build_app"
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$"
ALERT_FIELDS = frozenset({"threshold", "min_duration_s", "hysteresis", "max_false_alerts_per_hour"})  # a camera may override

def camera_file_path(url: str) -> Path | None:
    """The file a camera URL names, as streaming.sources opens it (a plain path, or the path of a file:// URL);
    None for rtsp://, rtsps:// and demo://, which are not files."""
    url = url.strip()
    scheme = urlsplit(url).scheme.lower()
    if scheme == "file":
        return Path(unquote(urlsplit(url).path))
    return Path(url) if len(scheme) <= 1 else None  # no scheme (or a Windows drive letter): a path


class AlertConfig(Strict):
    """When a camera's normalised score opens and closes an alert (defaults for every camera)."""

    threshold: float | None = Field(
        None, ge=0, le=1,
        description="score in (0, 1) that counts as anomalous; None: the bundle's scoring.threshold (0.9 by default), "
        "the score of the 99th percentile of the scene's normal calibration footage (0.5 = its median)",
    )
    min_duration_s: float = Field(0.5, ge=0, le=600, description="the score must stay above the threshold this long")
    hysteresis: float = Field(0.1, ge=0, lt=1, description="an alert closes when the score falls below threshold - hysteresis")
    max_false_alerts_per_hour: float | None = Field(
        None, ge=0, le=3600,
        description="choose the threshold so that the bundle's normal calibration footage, replayed at the camera's fps "
        "through these alert rules, opens at most this many alerts an hour (a bare `threshold` still wins)",
    )


class CameraConfig(Strict):
    """One camera feed: where it comes from, how it is decoded, and its alert settings."""

    name: str = Field(pattern=NAME_PATTERN, description="unique name; the metric label and the API's key")
    url: str = Field(min_length=1, description="rtsp://, rtsps://, file path or file://, or demo://<name>?seed=..")
    transport: Literal["tcp", "udp"] = Field("tcp", description="RTSP lower transport")
    fps: float = Field(5.0, gt=0, le=60, description="analysis frame rate (frames are dropped to reach it)")
    open_timeout_s: float = Field(10.0, gt=0, le=300)
    read_timeout_s: float = Field(5.0, gt=0, le=300)
    backoff_initial_s: float = Field(0.5, gt=0, le=60, description="first reconnect delay; doubles per failed attempt")
    backoff_max_s: float = Field(
        3.0,
        gt=0,
        le=300,
        description="cap of the reconnect delay (+-20% jitter): a camera is back within about this long after its server",
    )
    credentials_env: str | None = Field(
        None,
        pattern=r"^[A-Z_][A-Z0-9_]*$",
        description="env prefix for user/password when the URL has none (default VAD_CAMERA_<NAME>)",
    )
    threshold: float | None = Field(None, ge=0, le=1, description="overrides alerts.threshold")
    min_duration_s: float | None = Field(None, ge=0, le=600, description="overrides alerts.min_duration_s")
    hysteresis: float | None = Field(None, ge=0, lt=1, description="overrides alerts.hysteresis")
    max_false_alerts_per_hour: float | None = Field(None, ge=0, le=3600, description="overrides alerts.max_false_alerts_per_hour")
    bundle: Path | None = Field(
        None, description="this camera's own model bundle directory (learnt on its scene), inside scorer.bundle_roots; "
        "None: scorer.bundle. Its input (size, window, hop) sets how this camera's frames are cut"
    )

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        return check_source_url(v)  # every scheme's parameters (a demo feed's size too), at add time

    @field_validator("bundle")
    @classmethod
    def _bundle(cls, v: Path | None) -> Path | None:
        return v if v is None else Path(no_control_chars(str(v)))

    @property
    def env_prefix(self) -> str:
        """Where this camera's credentials are read from: `credentials_env`, else VAD_CAMERA_<NAME>."""
        return self.credentials_env or camera_env_prefix(self.name)

    def alert_settings(self, defaults: AlertConfig) -> AlertConfig:
        """This camera's alert settings: its own overrides on top of the service defaults."""
        own = {k: getattr(self, k) for k in ALERT_FIELDS if getattr(self, k) is not None}
        return defaults.model_copy(update=own)

    def public(self) -> dict[str, Any]:
        """The camera as the API shows it: the URL scrubbed of credentials."""
        data = self.model_dump()
        data["url"] = scrub_url(self.url)
        return data


class ScorerConfig(Strict):
    """Batched scoring: one scorer actor per device, windows from many cameras in one Detector call."""

    bundle: Path = Field(Path("runs/demo/bundle"), description="model bundle directory (offline.scoring.bundle)")
    build_demo_bundle: bool = Field(
        True, description="build the demo bundle at `bundle` on first start when it is missing (`vad demo-bundle`)"
    )
    devices: list[str] | Literal["auto"] = Field(
        "auto", description="one scorer per entry ('cpu', 'cuda:0', ...); auto: one per GPU, else one on CPU"
    )
    max_batch: int = Field(16, ge=1, le=512, description="most windows per Detector call")
    max_wait_ms: float = Field(50.0, ge=0, le=10_000, description="longest wait for a batch to fill (bounds latency)")
    max_pending_per_camera: int = Field(
        2, ge=1, le=64, description="queued windows per camera; a newer window evicts that camera's oldest (counted)"
    )
    num_cpus: float = Field(1.0, ge=0, le=64, description="Ray CPUs reserved per CPU scorer")
    torch_threads: int | None = Field(None, ge=1, le=256, description="torch intra-op threads (None: torch's default)")
    bundle_roots: list[Path] | None = Field(
        None,
        description="directories PUT /bundle may load from (symlinks and `..` resolved first); "
        "default: the directory containing `bundle`; [] turns hot-swaps off",
    )
    max_bundles: int = Field(
        8, ge=1, le=64, description="most model bundles loaded per scorer (the default and the cameras' own); "
        "a camera or swap that would need more is refused"
    )

    def allowed_roots(self) -> list[Path]:
        """The directories a hot-swapped bundle must lie in (`bundle_roots`, else the one holding `bundle`)."""
        return list(self.bundle_roots) if self.bundle_roots is not None else [self.bundle.parent]

    def confine(self, path: str | Path) -> Path:
        """The real path of bundle `path` (symlinks, `..` resolved); PermissionError naming the field when it lies
        outside every allowed root."""
        real = Path(os.path.realpath(path))
        roots = self.allowed_roots()
        if any(real.is_relative_to(os.path.realpath(r)) for r in roots):
            return real
        shown = str(path) if str(real) == str(path) else f"{path} (resolves to {real})"
        raise PermissionError(
            f"{shown} is outside the allowed bundle directories (scorer.bundle_roots: {[str(r) for r in roots]})"
        )

    def camera_bundle(self, camera: CameraConfig) -> str | None:
        """The real path of a camera's own bundle (None: it scores with `bundle`); PermissionError outside the roots."""
        return None if camera.bundle is None else str(self.confine(camera.bundle))

    @field_validator("devices")
    @classmethod
    def _devices(cls, v: list[str] | str) -> list[str] | str:
        if v == "auto":
            return v
        if not v:
            raise ValueError("needs at least one device, or 'auto'")
        for d in v:
            if not re.fullmatch(r"cpu|cuda(:\d+)?", d):
                raise ValueError(f"device {d!r} is not 'cpu', 'cuda' or 'cuda:N'")
        return v


class EventsConfig(Strict):
    """The SQLite file of alert events (shared by every scorer) and how long events are kept."""

    path: Path = Field(Path("runs/events.db"), description="SQLite file of alert events (shared by all scorers)")
    retention_days: float = Field(30.0, gt=0, le=3650)
    max_events: int = Field(10_000, ge=1)
    clip_seconds: float = Field(
        30.0, ge=0, le=120, description="an alert's footage kept with its event (its newest seconds at the camera's "
        "fps and the model's input size, streaming/event_clips.py); a false alarm's goes to the camera's next learn; "
        "held in the scorer's memory while the alert is open (seconds x fps x size^2 x 3 bytes per alerting camera); "
        "0: none"
    )
    clips_max_bytes: int = Field(1 << 30, ge=0, description="most bytes all alert clips may hold; the oldest go first")

    def clips_dir(self) -> Path:
        """Where the alert clips go: a folder beside the database (runs/events.db -> runs/events-clips/)."""
        return self.path.with_name(self.path.stem + "-clips")


class StateConfig(Strict):
    """Where changes made through the API (cameras added, replaced or removed; the hot-swapped bundle) are kept so
    that a restart brings them back (streaming/state.py; the later of an API change and a config edit wins)."""

    path: Path | None = Field(
        None, description="JSON state file, mode 0600 (camera URLs may carry credentials); default: state.json "
        "beside events.path (runs/state.json)"
    )
    persist: bool = Field(True, description="false: nothing is saved and every start uses this config alone")


class HttpConfig(Strict):
    """Where the control plane listens, and its optional bearer token."""

    host: str = Field("127.0.0.1", description="bind address; loopback unless you mean to expose the service")
    port: int = Field(8000, ge=1, le=65535)
    token: SecretStr | None = Field(None, description="bearer token required on every request but /healthz")
    token_env: str | None = Field(None, pattern=r"^[A-Z_][A-Z0-9_]*$", description="read the token from this env var")

    def resolve_token(self) -> str | None:
        """The bearer token (from `token` or the `token_env` variable), or None when the API is open."""
        if self.token is not None:
            return self.token.get_secret_value()
        if self.token_env:
            value = os.environ.get(self.token_env)
            if not value:
                raise ConfigError(f"http.token_env: environment variable {self.token_env} is not set or empty")
            return value
        return None


class RecordingsConfig(Strict):
    """Recordings of normal footage made through the API (POST /cameras/{name}/recordings; streaming/recordings.py)."""

    root: Path | None = Field(
        None, description="directory holding every API recording (<root>/<camera>/<id>/); default: recordings/ beside "
        "events.path (runs/recordings)"
    )
    max_bytes: int = Field(20 * 2**30, ge=1, description="most bytes all recordings under root may hold together")
    min_free_bytes: int = Field(2**30, ge=0, description="free space a recording always leaves on root's disk")
    segment_minutes: float = Field(5.0, gt=0, le=60, description="minutes of footage per segment file")
    crf: int = Field(18, ge=0, le=51, description="x264 quality of the segments (lower is better; 18 near lossless)")
    max_reconnects: int = Field(60, ge=0, description="a recording fails after this many failed reconnects in a row")
    num_cpus: float = Field(0.1, ge=0, le=16, description="Ray CPUs reserved per recording actor")


class LearnConfig(Strict):
    """`vad learn` from the service (POST /cameras/{name}/learn, streaming/learn_jobs.py): where learned bundles go
    and what a learn job may use."""

    bundles_root: Path | None = Field(
        None, description="learned bundles go to <bundles_root>/<camera>/<job id>; it must lie inside scorer.bundle_roots "
        "for a new bundle to be swapped in; default: learned/ in the first of them (runs/demo/learned)",
    )
    schedule: Literal["auto", "tiny", "cpu", "paper"] = Field(
        "auto", description="training schedule (`vad train --schedule`); auto: paper where the job gets a GPU "
        "(learn.num_gpus > 0), else cpu")
    eval_fraction: float = Field(0.2, ge=0, lt=1, description="last part of the recordings kept unseen, for the evaluation")
    temporal: bool = Field(
        True, description="also train the flow (temporal) autoencoder: on Ped2 it lifts the stream micro-AUC from 79 to 98 "
        "(bench/RESULTS.md), but scoring then computes TV-L1 flow (the cpu schedule's budget: ~7 ms per frame on one core at "
        "128 px; with both AEs about 6 cameras at 5 fps per core instead of ~45) and learning takes about twice as long; "
        "false: the spatial AE alone")
    num_cpus: float = Field(1.0, gt=0, le=64, description="Ray CPUs a learn job reserves (scorers keep theirs)")
    num_gpus: float = Field(0.0, ge=0, le=8, description="Ray GPUs a learn job reserves (0: train on CPU)")


class ServiceConfig(Strict):
    """The whole service config (the `args:` of deploy/config.yaml); validated once in build_app."""

    cameras: list[CameraConfig] = Field(default_factory=list)
    scorer: ScorerConfig = ScorerConfig()
    alerts: AlertConfig = AlertConfig()
    events: EventsConfig = EventsConfig()
    state: StateConfig = StateConfig()
    recordings: RecordingsConfig = RecordingsConfig()
    learn: LearnConfig = LearnConfig()
    http: HttpConfig = HttpConfig()
    notify: NotifyConfig = Field(default_factory=NotifyConfig, description="alerts over MQTT and webhooks (streaming/notify/)")
    camera_num_cpus: float = Field(0.1, ge=0, le=16, description="Ray CPUs reserved per camera actor (fractional)")
    max_inflight_windows: int = Field(
        4, ge=1, le=256, description="windows a camera may have on their way to the scorer; more are dropped at the camera"
    )
    namespace: str = Field("vad", pattern=NAME_PATTERN, description="Ray namespace of the service's actors")
    cameras_file_roots: list[Path] | None = Field(
        None,
        description="directories a file camera (a path or file://) may be read from, in `cameras` and through the "
        "API (symlinks and `..` resolved first); default: the directories holding the file cameras of `cameras` "
        "(none there: no file camera at all); [] refuses every file camera; rtsp(s):// and demo:// are not files",
    )

    @field_validator("cameras")
    @classmethod
    def _unique(cls, v: list[CameraConfig]) -> list[CameraConfig]:
        seen: set[str] = set()
        for cam in v:
            if cam.name in seen:
                raise ValueError(f"camera name {cam.name!r} appears twice")
            seen.add(cam.name)
        return v

    @model_validator(mode="after")
    def _one_token_source(self) -> "ServiceConfig":
        if self.http.token is not None and self.http.token_env:
            raise ValueError("http: set token or token_env, not both")
        return self

    @model_validator(mode="after")
    def _camera_files_inside_roots(self) -> "ServiceConfig":
        errors = []
        for i, cam in enumerate(self.cameras):
            try:
                self.confine_camera(cam.url)
            except PermissionError as exc:
                errors.append(InitErrorDetails(type=PydanticCustomError("outside_roots", "{reason}", {"reason": str(exc)}),
                                               loc=("cameras", i, "url"), input=cam.url))
            try:
                self.scorer.camera_bundle(cam)
            except PermissionError as exc:
                errors.append(InitErrorDetails(type=PydanticCustomError("outside_roots", "{reason}", {"reason": str(exc)}),
                                               loc=("cameras", i, "bundle"), input=str(cam.bundle)))
        if errors:  # a ValidationError so that each error names its camera's field, cameras.N.url or cameras.N.bundle
            raise ValidationError.from_exception_data(type(self).__name__, errors)
        return self

    def camera_file_roots(self) -> list[Path]:
        """The directories file cameras must lie in: `cameras_file_roots`, else those holding the config's own file
        cameras (for a symlinked one, its target's directory as well)."""
        if self.cameras_file_roots is not None:
            return list(self.cameras_file_roots)
        roots: list[Path] = []
        for cam in self.cameras:
            path = camera_file_path(cam.url)
            for root in () if path is None else (Path(os.path.abspath(path)).parent, path.resolve().parent):
                if root not in roots:
                    roots.append(root)
        return roots

    def confine_camera(self, url: str) -> Path | None:
        """The real path of a file camera's `url` (symlinks and `..` resolved; relative to the working directory),
        None when `url` is not a file (rtsp://, rtsps://, demo://); PermissionError naming the roots when the file
        lies outside every `camera_file_roots()`."""
        path = camera_file_path(url)
        if path is None:
            return None
        real = path.resolve(strict=False)
        roots = self.camera_file_roots()
        if any(real.is_relative_to(r.resolve(strict=False)) for r in roots):
            return real
        shown = scrub_url(url) if str(real) == url else f"{scrub_url(url)} (resolves to {real})"
        raise PermissionError(
            f"{shown} is outside the allowed camera file directories (cameras_file_roots: {[str(r) for r in roots]})"
        )

    def camera(self, name: str) -> CameraConfig | None:
        """The configured camera named `name`, or None."""
        return next((c for c in self.cameras if c.name == name), None)

    def state_file(self) -> Path:
        """The state file: `state.path`, else state.json beside the events database."""
        return self.state.path if self.state.path is not None else self.events.path.with_name("state.json")


def resolve_paths(cfg: ServiceConfig, base: Path) -> ServiceConfig:
    """Make the bundles (the default and the cameras' own), bundle roots, camera file roots, events, state and
    recordings paths absolute against `base` (actors may run in another directory); the roots, state file and
    recordings root get their defaults (beside the bundle, beside the config's file cameras, beside the events
    database), and learned bundles go into the first bundle root."""
    def absolute(p: Path) -> Path:
        return p if p.is_absolute() else base / p

    scorer = cfg.scorer.model_copy(update={"bundle": absolute(cfg.scorer.bundle)})
    scorer = scorer.model_copy(update={"bundle_roots": [absolute(r) for r in cfg.scorer.bundle_roots]
                                       if cfg.scorer.bundle_roots is not None else scorer.allowed_roots()})
    events = cfg.events.model_copy(update={"path": absolute(cfg.events.path)})
    # explicit roots against `base`; the default ones are already absolute (from the cameras' resolved paths)
    file_roots = ([absolute(r) for r in cfg.cameras_file_roots] if cfg.cameras_file_roots is not None
                  else cfg.camera_file_roots())
    cameras = [c if c.bundle is None else c.model_copy(update={"bundle": absolute(c.bundle)}) for c in cfg.cameras]
    cfg = cfg.model_copy(update={"scorer": scorer, "events": events, "cameras_file_roots": file_roots,
                                 "cameras": cameras, "notify": cfg.notify.resolved(absolute)})
    rec_root = absolute(cfg.recordings.root) if cfg.recordings.root is not None else events.path.with_name("recordings")
    cfg = cfg.model_copy(update={"recordings": cfg.recordings.model_copy(update={"root": rec_root})})
    learned = absolute(cfg.learn.bundles_root) if cfg.learn.bundles_root is not None else (
        scorer.bundle_roots[0] / "learned" if scorer.bundle_roots else base / "runs" / "learned")
    cfg = cfg.model_copy(update={"learn": cfg.learn.model_copy(update={"bundles_root": learned})})
    return cfg.model_copy(update={"state": cfg.state.model_copy(update={"path": absolute(cfg.state_file())})})


def format_errors(exc: ValidationError, source: str, prefix: str = "") -> str:
    """One line per bad field (`source: cameras.0.url: ... (got 'rtsp://***@host')`), secrets scrubbed: the project's
    formatter (offline.config) with credentials removed and no lists or tokens echoed."""
    return format_validation_error(exc, source, prefix, scrub=scrub_url)


def parse_service_config(data: Any, source: str = "service config", prefix: str = "") -> ServiceConfig:
    """Validate a mapping into ServiceConfig, raising ConfigError naming every bad field."""
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{source}: {prefix.rstrip('.') or 'top level'} must be a mapping, got {type(data).__name__}")
    try:
        return ServiceConfig.model_validate(data or {})
    except ValidationError as exc:
        raise ConfigError(format_errors(exc, source, prefix)) from None


def _check_http_options(http_options: Any, cfg: ServiceConfig, source: str, prefix: str) -> None:
    """Serve's own http_options bind the port; they must agree with the app's `http` section."""
    if not isinstance(http_options, dict):
        raise ConfigError(f"{source}: http_options must be a mapping, got {type(http_options).__name__}")
    host = str(http_options.get("host", "0.0.0.0"))  # Serve's default binds every interface
    port = int(http_options.get("port", 8000))
    if host != cfg.http.host:
        raise ConfigError(
            f"{source}: http_options.host is {host!r} but {prefix}http.host is {cfg.http.host!r}; "
            "set both (127.0.0.1 keeps the service on this machine)"
        )
    if port != cfg.http.port:
        raise ConfigError(f"{source}: http_options.port is {port} but {prefix}http.port is {cfg.http.port}; set both")


def service_config_from_serve(data: dict, source: str) -> ServiceConfig:
    """The ServiceConfig inside a `serve run` config file (the app whose import_path is build_app)."""
    apps = data.get("applications")
    if not isinstance(apps, list) or not apps:
        raise ConfigError(f"{source}: applications must be a non-empty list")
    for i, app in enumerate(apps):
        if isinstance(app, dict) and app.get("import_path") == APP_IMPORT_PATH:
            prefix = f"applications.{i}.args."
            cfg = parse_service_config(app.get("args"), source, prefix)
            _check_http_options(data.get("http_options", {}), cfg, source, prefix)
            return cfg
    raise ConfigError(f"{source}: no application has import_path {APP_IMPORT_PATH!r}")


def load_service_config(path: str | Path) -> ServiceConfig:
    """Load a service config: either a `serve run` file (deploy/config.yaml) or the bare ServiceConfig mapping."""
    data = read_yaml(path)
    source = str(path)
    if isinstance(data, dict) and "applications" in data:
        return service_config_from_serve(data, source)
    return parse_service_config(data, source)
