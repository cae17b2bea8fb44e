"""Every Prometheus metric of the streaming service, in one registry object (prefix `vad_`, label `camera`).

Names follow Prometheus conventions: counters end in `_total`, durations are histograms in `_seconds`,
fractions are `_ratio`. Cameras are labelled by their configured name, never by their URL (a URL may hold
credentials); `camera_label` refuses anything that looks like one. deploy/rules/*.yml and the Grafana
dashboard use exactly the names in `METRIC_NAMES`.

Two ways to feed it:
- in one process: `m = VadMetrics(); cam = m.camera("door"); cam.frames_decoded.inc()`; `m.render()` gives the
  `/metrics` body and content type.
- across processes (Ray actors): the process that owns the counters keeps cumulative totals and the app
  calls `cam.sync_totals(frames_decoded=..., reconnects=...)` with them (deltas are added, restarts handled),
  or an actor ships `m.snapshot()` (picklable metric families) and the app merges them with
  `app_metrics.remote.update(source, families)` (`.remove(source)` when the actor goes away).

Over 350 lines on purpose: this is the one place metric names are defined (the rules and the dashboard depend on it).
"""
from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Enum, Gauge, Histogram, Info, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

CAMERA_STATES = ("connecting", "streaming", "reconnecting", "error", "stopped")
DROP_REASONS = ("scorer_behind", "corrupt")

DECODE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
SCORE_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
BATCH_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

# name (as exposed, without _bucket/_count/_sum suffixes) -> labels; rules and dashboard must use only these.
METRIC_NAMES: dict[str, tuple[str, ...]] = {
    "vad_frames_decoded_total": ("camera",),
    "vad_frames_scored_total": ("camera",),
    "vad_frames_dropped_total": ("camera", "reason"),
    "vad_reconnects_total": ("camera",),
    "vad_alerts_total": ("camera",),
    "vad_decode_latency_seconds": ("camera",),
    "vad_score_latency_seconds": ("camera",),
    "vad_anomaly_score": ("camera",),
    "vad_normaliser_warm": ("camera",),
    "vad_alert_active": ("camera",),
    "vad_camera_up": ("camera",),
    "vad_camera_state": ("camera", "vad_camera_state"),
    "vad_window_queue_depth": ("camera",),
    "vad_lag_seconds": ("camera",),
    "vad_scorer_up": ("scorer",),
    "vad_scorer_batch_size": ("scorer",),
    "vad_scorer_batch_duration_seconds": ("scorer",),
    "vad_scorer_windows_total": ("scorer",),
    "vad_scorer_busy_ratio": ("scorer",),
    "vad_scorer_queue_depth": ("scorer",),
    "vad_scorer_loaded_bundles": ("scorer",),
    "vad_camera_bundle_info": ("camera", "bundle"),
    "vad_notify_outbox_depth": ("sink", "scorer"),
    "vad_notify_sent_total": ("sink", "scorer"),
    "vad_notify_failures_total": ("sink", "scorer"),
    "vad_notify_dropped_total": ("sink", "scorer"),
    "vad_notify_sink_up": ("sink", "scorer"),
    "vad_build_info": ("version",),
}


def camera_label(name: str) -> str:
    """Return `name` as a label value; refuse URLs (they may carry credentials) and empty names."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"camera label must be a non-empty name, got {name!r}")
    if "://" in name or "@" in name:
        # Do not echo the value: it may contain a password.
        raise ValueError("camera label looks like a URL (contains '://' or '@'); label metrics by the camera name")
    return name


@dataclass
class CameraMetrics:
    """The metric children bound to one camera's label, plus helpers that keep related series consistent."""

    name: str
    frames_decoded: Counter
    frames_scored: Counter
    dropped_scorer_behind: Counter
    dropped_corrupt: Counter
    reconnects: Counter
    alerts: Counter
    decode_latency: Histogram
    score_latency: Histogram
    anomaly_score: Gauge
    normaliser_warm: Gauge
    alert_active: Gauge
    up: Gauge
    state: Enum
    queue_depth: Gauge
    lag: Gauge
    _alert_open: bool = False
    _last_totals: dict[str, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def set_state(self, state: str) -> None:
        """Record an IngestLoop state; `vad_camera_up` is 1 exactly while streaming."""
        if state not in CAMERA_STATES:
            raise ValueError(f"camera {self.name}: unknown state {state!r}, expected one of {CAMERA_STATES}")
        self.state.state(state)
        self.up.set(1.0 if state == "streaming" else 0.0)

    def observe_score(self, score: float, warm: bool = True) -> None:
        """Record the latest normalised anomaly score and whether the running normaliser is warm."""
        self.anomaly_score.set(float(score))
        self.normaliser_warm.set(1.0 if warm else 0.0)

    def set_alert(self, active: bool) -> None:
        """Set the alert state gauge; count an alert when it goes from inactive to active."""
        with self._lock:
            self.alert_active.set(1.0 if active else 0.0)
            if active and not self._alert_open:
                self.alerts.inc()
            self._alert_open = bool(active)

    def sync_totals(self, **totals: float) -> None:
        """Advance counters to cumulative totals reported by another process.

        Keys: frames_decoded, frames_scored, frames_dropped (scorer_behind), corrupt_frames, reconnects.
        A total smaller than the last one means the reporter restarted: its whole value is added.
        """
        counters = {
            "frames_decoded": self.frames_decoded,
            "frames_scored": self.frames_scored,
            "frames_dropped": self.dropped_scorer_behind,
            "corrupt_frames": self.dropped_corrupt,
            "reconnects": self.reconnects,
        }
        with self._lock:
            for key, total in totals.items():
                if key not in counters:
                    raise ValueError(f"camera {self.name}: unknown total {key!r}, expected one of {sorted(counters)}")
                total = float(total)
                if total < 0:
                    raise ValueError(f"camera {self.name}: total {key} must be >= 0, got {total}")
                last = self._last_totals.get(key, 0.0)
                delta = total - last if total >= last else total
                if delta > 0:
                    counters[key].inc(delta)
                self._last_totals[key] = total


@dataclass
class ScorerMetrics:
    """The metric children bound to one scorer (label `scorer`, e.g. "cpu" or "cuda:0")."""

    name: str
    up: Gauge
    batch_size: Histogram
    batch_duration: Histogram
    windows: Counter
    busy: Gauge
    queue_depth: Gauge
    loaded_bundles: Gauge

    def observe_batch(self, size: int, duration_s: float) -> None:
        """Record one scored batch of `size` windows that took `duration_s` seconds."""
        if size < 1:
            raise ValueError(f"scorer {self.name}: batch size must be >= 1, got {size}")
        self.batch_size.observe(size)
        self.batch_duration.observe(max(0.0, float(duration_s)))
        self.windows.inc(size)

    def set_busy(self, fraction: float) -> None:
        """Fraction of recent wall time spent scoring, clamped to [0, 1]."""
        self.busy.set(min(1.0, max(0.0, float(fraction))))


@dataclass
class NotifyMetrics:
    """The metric children bound to one notification sink (label `sink`: its configured name, never a URL)."""

    outbox_depth: Gauge
    sent: Counter
    failures: Counter
    dropped: Counter
    up: Gauge


class VadMetrics:
    """All `vad_` metrics in their own registry (tests and several services in one process do not clash)."""

    def __init__(self, registry: CollectorRegistry | None = None, version: str | None = None):
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        cam = ("camera",)
        self.frames_decoded = Counter("vad_frames_decoded", "Frames decoded from the camera stream", cam, registry=r)
        self.frames_scored = Counter("vad_frames_scored", "Frames that received an anomaly score", cam, registry=r)
        self.frames_dropped = Counter(
            "vad_frames_dropped",
            "Frames dropped: scorer_behind (whole windows dropped when the scorer queue is full) or corrupt (undecodable)",
            ("camera", "reason"),
            registry=r,
        )
        self.reconnects = Counter("vad_reconnects", "Stream reconnect attempts after an error", cam, registry=r)
        self.alerts = Counter("vad_alerts", "Anomaly alerts opened", cam, registry=r)
        self.decode_latency = Histogram(
            "vad_decode_latency_seconds", "Time to decode one frame", cam, buckets=DECODE_BUCKETS, registry=r
        )
        self.score_latency = Histogram(
            "vad_score_latency_seconds",
            "Frame-to-score latency: from a frame's arrival to its anomaly score",
            cam,
            buckets=SCORE_LATENCY_BUCKETS,
            registry=r,
        )
        self.anomaly_score = Gauge("vad_anomaly_score", "Latest normalised anomaly score", cam, registry=r)
        self.normaliser_warm = Gauge(
            "vad_normaliser_warm", "1 once the running normaliser is past its warm-up, else 0", cam, registry=r
        )
        self.alert_active = Gauge("vad_alert_active", "1 while an anomaly alert is open, else 0", cam, registry=r)
        self.camera_up = Gauge("vad_camera_up", "1 while the camera is streaming, else 0", cam, registry=r)
        self.camera_state = Enum("vad_camera_state", "Ingest state of the camera", cam, states=list(CAMERA_STATES), registry=r)
        self.window_queue_depth = Gauge(
            "vad_window_queue_depth", "Windows of this camera waiting for the scorer", cam, registry=r
        )
        self.lag = Gauge(
            "vad_lag_seconds", "Now minus the arrival time of the newest scored frame", cam, registry=r
        )
        sc = ("scorer",)
        self.scorer_up = Gauge("vad_scorer_up", "1 while the scorer is alive", sc, registry=r)
        self.scorer_batch_size = Histogram(
            "vad_scorer_batch_size", "Windows per scored batch", sc, buckets=BATCH_SIZE_BUCKETS, registry=r
        )
        self.scorer_batch_duration = Histogram(
            "vad_scorer_batch_duration_seconds", "Time to score one batch", sc, buckets=BATCH_DURATION_BUCKETS, registry=r
        )
        self.scorer_windows = Counter("vad_scorer_windows", "Windows scored", sc, registry=r)
        self.scorer_busy = Gauge(
            "vad_scorer_busy_ratio", "Fraction of recent wall time the scorer spent scoring (device utilisation)", sc, registry=r
        )
        self.scorer_queue_depth = Gauge("vad_scorer_queue_depth", "Windows waiting in the scorer's queue", sc, registry=r)
        self.scorer_loaded_bundles = Gauge(
            "vad_scorer_loaded_bundles", "Model bundles loaded on the scorer (the default and the cameras' own)", sc, registry=r
        )
        self.camera_bundle = Info(
            "vad_camera_bundle", "The bundle scoring the camera (label bundle: weights sha256 prefix)", cam, registry=r
        )
        sk = ("sink", "scorer")  # each scorer delivers its own cameras' messages
        self.notify_outbox_depth = Gauge(
            "vad_notify_outbox_depth", "Notification messages waiting in the sink's outbox", sk, registry=r)
        self.notify_sent = Counter("vad_notify_sent", "Notification messages the sink acknowledged", sk, registry=r)
        self.notify_failures = Counter(
            "vad_notify_failures", "Failed notification attempts (connect, send or store)", sk, registry=r)
        self.notify_dropped = Counter(
            "vad_notify_dropped", "Notification messages dropped, oldest first, from a full outbox", sk, registry=r)
        self.notify_sink_up = Gauge("vad_notify_sink_up", "1 while the sink accepts messages, else 0", sk, registry=r)
        self.build_info = Info("vad_build", "Version of the streaming service", registry=r)
        self.build_info.info({"version": version or _package_version()})
        self.remote = SnapshotCollector()
        self.registry.register(self.remote)
        self._cameras: dict[str, CameraMetrics] = {}
        self._scorers: dict[str, ScorerMetrics] = {}
        self._lock = threading.Lock()

    def camera(self, name: str) -> CameraMetrics:
        """The children for camera `name` (created at zero on first use so dashboards see the series)."""
        name = camera_label(name)
        with self._lock:
            if name not in self._cameras:
                cm = CameraMetrics(
                    name=name,
                    frames_decoded=self.frames_decoded.labels(name),
                    frames_scored=self.frames_scored.labels(name),
                    dropped_scorer_behind=self.frames_dropped.labels(name, "scorer_behind"),
                    dropped_corrupt=self.frames_dropped.labels(name, "corrupt"),
                    reconnects=self.reconnects.labels(name),
                    alerts=self.alerts.labels(name),
                    decode_latency=self.decode_latency.labels(name),
                    score_latency=self.score_latency.labels(name),
                    anomaly_score=self.anomaly_score.labels(name),
                    normaliser_warm=self.normaliser_warm.labels(name),
                    alert_active=self.alert_active.labels(name),
                    up=self.camera_up.labels(name),
                    state=self.camera_state.labels(name),
                    queue_depth=self.window_queue_depth.labels(name),
                    lag=self.lag.labels(name),
                )
                cm.state.state("connecting")
                self._cameras[name] = cm
            return self._cameras[name]

    def _forget(self, table: dict, name: str, metrics: tuple) -> bool:
        """Remove `name` from `table` and its series from `metrics`; False when it was not there."""
        with self._lock:
            if table.pop(name, None) is None:
                return False
        for metric in metrics:
            metric.remove(name)
        return True

    def remove_camera(self, name: str) -> None:
        """Drop every series of a removed camera (no stale `camera_up` left for the CameraDown rule)."""
        if self._forget(self._cameras, name, (
            self.frames_decoded, self.frames_scored, self.reconnects, self.alerts, self.decode_latency,
            self.score_latency, self.anomaly_score, self.normaliser_warm, self.alert_active, self.camera_up,
            self.camera_state, self.window_queue_depth, self.lag,
        )):
            for reason in DROP_REASONS:
                self.frames_dropped.remove(name, reason)

    def cameras(self) -> list[str]:
        """Names of the cameras that have series, sorted."""
        with self._lock:
            return sorted(self._cameras)

    def scorer(self, name: str) -> ScorerMetrics:
        """The children for scorer `name` (e.g. "cpu", "cuda:0")."""
        with self._lock:
            if name not in self._scorers:
                self._scorers[name] = ScorerMetrics(
                    name=name,
                    up=self.scorer_up.labels(name),
                    batch_size=self.scorer_batch_size.labels(name),
                    batch_duration=self.scorer_batch_duration.labels(name),
                    windows=self.scorer_windows.labels(name),
                    busy=self.scorer_busy.labels(name),
                    queue_depth=self.scorer_queue_depth.labels(name),
                    loaded_bundles=self.scorer_loaded_bundles.labels(name),
                )
            return self._scorers[name]

    def notify_sink(self, name: str, scorer: str) -> NotifyMetrics:
        """The children for notification sink `name` at scorer `scorer` (streaming/notify/), created at zero."""
        labels = (camera_label(name), scorer)  # the same rule as cameras: a name, never a URL
        return NotifyMetrics(*(metric.labels(*labels) for metric in (
            self.notify_outbox_depth, self.notify_sent, self.notify_failures, self.notify_dropped, self.notify_sink_up)))

    def remove_scorer(self, name: str) -> None:
        """Drop every series of a scorer that is gone."""
        self._forget(self._scorers, name, (
            self.scorer_up, self.scorer_batch_size, self.scorer_batch_duration, self.scorer_windows,
            self.scorer_busy, self.scorer_queue_depth, self.scorer_loaded_bundles,
        ))

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition and its content type, for `/metrics`.

        Families with the same name (this process's own metrics and those merged from other processes by
        `self.remote`) are joined, so each name has one HELP/TYPE block as Prometheus requires. A series
        present in both comes from `self.remote`: the reporting process owns it (`camera()` here creates
        every child of a camera at zero, e.g. a decode histogram the camera actor really fills).
        """
        families = merge_families([("remote", list(self.remote.collect())), ("local", list(self.registry.collect()))])
        return generate_latest(_Static(families)), CONTENT_TYPE_LATEST

    def snapshot(self) -> list[Metric]:
        """This process's metric families (picklable), for shipping to the process that serves `/metrics`."""
        return list(self.registry.collect())


class _Static:
    """A registry stand-in holding fixed families, for `generate_latest`."""

    def __init__(self, families: list[Metric]):
        self._families = families

    def collect(self) -> list[Metric]:
        return self._families


def merge_families(sources: Iterable[tuple[str, Iterable[Metric]]]) -> list[Metric]:
    """Join families of the same name from several sources; a series seen twice keeps its first value."""
    merged: dict[str, Metric] = {}
    seen: set[tuple] = set()
    for source, families in sources:
        for fam in families:
            out = merged.get(fam.name)
            if out is None:
                out = merged[fam.name] = Metric(fam.name, fam.documentation, fam.type, fam.unit)
            elif out.type != fam.type:
                raise ValueError(f"metric {fam.name}: source {source} reports type {fam.type}, another {out.type}")
            for s in fam.samples:
                key = (s.name, tuple(sorted(s.labels.items())))
                if key in seen:
                    continue
                seen.add(key)
                out.samples.append(s)
    return list(merged.values())


class SnapshotCollector(Collector):
    """Merges metric families reported by other processes (one `source` each) into one exposition.

    Register it in the app's registry: `registry.register(collector)`; families with the same name from
    different sources are merged (their samples carry different `camera`/`scorer` labels).
    """

    def __init__(self) -> None:
        self._sources: dict[str, list[Metric]] = {}
        self._lock = threading.Lock()

    def update(self, source: str, families: Iterable[Metric]) -> None:
        """Replace the families shipped by `source` (an actor) with its latest snapshot."""
        with self._lock:
            self._sources[source] = list(families)

    def remove(self, source: str) -> None:
        """Drop the families of a source that is gone (a removed camera)."""
        with self._lock:
            self._sources.pop(source, None)

    def collect(self) -> Iterable[Metric]:
        """Every source's families merged, for the registry's exposition."""
        with self._lock:
            sources = list(self._sources.items())
        return merge_families(sources)

    def describe(self) -> Iterable[Metric]:
        """No static description: families are known only once actors ship them."""
        return []


def _package_version() -> str:
    try:
        from importlib.metadata import version

        return version("vad-stream")
    except Exception:  # noqa: BLE001 - not installed (e.g. a bare checkout on the GPU machine)
        return "unknown"
