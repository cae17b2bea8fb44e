"""The scorer service of one device: queue windows from every camera, score them in batches, then alerts and events.

`ScorerService` is a plain class (no Ray import); the fleet runs it as a Ray actor (`ray.remote(ScorerService)`,
streaming/fleet.py). `submit(window)` only queues (see streaming.batching for the drop policy); a worker thread
takes batches (max_batch, max_wait_ms), calls the Detector once per batch, and per camera runs FrameScorer ->
CameraAlerts (streaming/camera_alerts.py: AlertTracker -> EventStore, with the peak frame's JPEG snapshot).

Bundle hot-swap (two phases, so several scorers switch together or not at all): `prepare_bundle(path)` loads and
validates the new bundle completely into a fresh Detector beside the running one (a refused bundle raises
BundleError and changes nothing); `commit_bundle(sha)` then swaps the scoring reference between two batches. A
batch is always scored by one fully loaded model; each camera's running normaliser starts again from the new
bundle's calibration (raw scores of two models are not comparable); open alerts go on.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from typing import Any

import torch

from offline.scoring.bundle import BundleError
from offline.scoring.detector import Detector
from streaming.batching import BatchScorer, PendingWindows, ScoredWindow, frame_scorer_factory
from streaming.camera_alerts import CameraAlerts
from streaming.config import AlertConfig, EventsConfig
from streaming.events import EventStore
from streaming.prometheus import VadMetrics
from streaming.score_history import CHART_POINTS, downsample

logger = logging.getLogger(__name__)

# The histograms this actor reports (its counters and gauges travel as totals in `stats()`).
SCORER_FAMILIES = ("vad_score_latency_seconds", "vad_scorer_batch_size", "vad_scorer_batch_duration_seconds")
BUSY_WINDOW_S = 10.0


class ScorerService:
    """Batches windows from many cameras through one Detector on one device.

    Args:
        name: metric label of this scorer ("cpu", "cuda:0").
        device: torch device of the Detector.
        bundle: model bundle directory.
        events: EventsConfig (or dict) of the shared SQLite store.
        alerts: default AlertConfig (or dict); cameras may override it with `set_camera`.
        max_batch / max_wait_ms / max_pending: batching and the per-camera queue bound.
        torch_threads: torch intra-op threads for CPU scoring (None: leave torch's default).
    """

    def __init__(
        self,
        name: str,
        device: str,
        bundle: str,
        events: dict | EventsConfig,
        alerts: dict | AlertConfig | None = None,
        max_batch: int = 16,
        max_wait_ms: float = 50.0,
        max_pending: int = 2,
        torch_threads: int | None = None,
    ):
        if torch_threads:
            torch.set_num_threads(torch_threads)
        self.name = name
        self.device = device
        self.detector = Detector.load(bundle, device)
        self.scorer = BatchScorer(self.detector, frame_scorer_factory(self.detector), max_batch=max_batch)
        self._staged: Detector | None = None  # a validated bundle waiting for commit_bundle
        self._swap_lock = threading.Lock()
        self.bundle_swaps = 0
        self.queue = PendingWindows(max_pending)
        self.max_batch, self.max_wait_s = max_batch, max_wait_ms / 1000.0
        ev = events if isinstance(events, EventsConfig) else EventsConfig.model_validate(events)
        self.store = EventStore(ev.path, ev.retention_days, ev.max_events)
        self.alert_defaults = alerts if isinstance(alerts, AlertConfig) else AlertConfig.model_validate(alerts or {})
        self._alert_settings: dict[str, AlertConfig] = {}
        self._cams: dict[str, CameraAlerts] = {}
        self._removed: set[str] = set()
        self._latency_labels: set[str] = set()
        self._lock = threading.RLock()
        self.metrics = VadMetrics()
        self._scorer_metrics = self.metrics.scorer(name)
        self.batches = 0
        self.windows = 0
        self.errors = 0
        self.last_error: str | None = None
        self._busy: deque[tuple[float, float]] = deque()  # (end monotonic, duration) of recent batches
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"scorer-{name}", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------------------------------ cameras
    def set_camera(self, camera: str, alerts: dict | AlertConfig | None = None) -> None:
        """Register a camera (or change its alert settings; an open alert keeps going under the new ones)."""
        settings = self.alert_defaults if alerts is None else AlertConfig.model_validate(
            alerts.model_dump() if isinstance(alerts, AlertConfig) else alerts
        )
        with self._lock:
            self._removed.discard(camera)
            self._alert_settings[camera] = settings
            cam = self._cams.get(camera)
            if cam is not None:
                cam.apply(self._resolved(settings))

    def remove_camera(self, camera: str) -> None:
        """Forget a camera: close its open alert (reason "removed"), its queue and its normaliser."""
        self.queue.discard(camera)
        with self._lock:
            self._removed.add(camera)
            cam = self._cams.pop(camera, None)
            self._alert_settings.pop(camera, None)
            self.scorer.forget(camera)
            if camera in self._latency_labels:
                self._latency_labels.discard(camera)
                self.metrics.score_latency.remove(camera)
            if cam is not None:
                cam.close(self.store, "removed")

    def _resolved(self, settings: AlertConfig) -> AlertConfig:
        """Alert settings with the threshold filled in from the running bundle when the config leaves it to it."""
        if settings.threshold is not None:
            return settings
        return settings.model_copy(update={"threshold": self.detector.config.scoring.threshold})

    def _camera(self, name: str) -> CameraAlerts:
        cam = self._cams.get(name)
        if cam is None:
            a = self._alert_settings.get(name, self.alert_defaults)
            cam = self._cams[name] = CameraAlerts.start(name, self._resolved(a), self.store)
            cam.block = self.detector.config.scoring.block
        return cam

    # ------------------------------------------------------------------------------------------- intake
    def submit(self, window: Any) -> bool:
        """Queue a window (never blocks). Returns False when it evicted an older window of that camera."""
        evicted = self.queue.put(window)
        if evicted is not None:
            with self._lock:
                cam = self._camera(window.camera)
                cam.windows_dropped += 1
                cam.frames_dropped += len(evicted.indices)
        return evicted is None

    # --------------------------------------------------------------------------------------------- loop
    def _run(self) -> None:
        while not self._stop.is_set():
            batch = self.queue.take(self.max_batch, self.max_wait_s, timeout_s=0.5)
            if not batch:
                continue
            t0 = time.monotonic()
            scorer = self.scorer  # one reference per batch: a hot-swap takes effect at the next batch
            sha = bundle_info(scorer.detector)["sha256"]
            try:
                results = scorer.score(batch)
            except Exception as exc:  # noqa: BLE001 - a bad batch is counted and dropped, the scorer goes on
                self.errors += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                logger.exception("scorer %s: batch of %d windows failed", self.name, len(batch))
                continue
            dt = time.monotonic() - t0
            self._busy.append((time.monotonic(), dt))
            self._scorer_metrics.observe_batch(len(batch), dt)
            self.batches += 1
            self.windows += len(batch)
            for r in results:
                try:
                    self._after_scoring(r, sha)
                except Exception as exc:  # noqa: BLE001 - e.g. a full disk for events: keep scoring
                    self.errors += 1
                    self.last_error = f"{type(exc).__name__}: {exc}"
                    logger.exception("scorer %s: camera %s: alert/event handling failed", self.name, r.camera)

    def _after_scoring(self, r: ScoredWindow, bundle: str | None = None) -> None:
        now = time.time()
        hist = self.metrics.score_latency.labels(r.camera)
        self._latency_labels.add(r.camera)
        with self._lock:
            if r.camera in self._removed:
                return  # removed while its window was being scored (a restarted scorer knows no camera yet)
            self._camera(r.camera).observe(r, self.store, hist, now, bundle)

    # ------------------------------------------------------------------------------------------ queries
    def busy_ratio(self) -> float:
        """Fraction of the last BUSY_WINDOW_S spent scoring batches (utilisation)."""
        now = time.monotonic()
        while self._busy and self._busy[0][0] < now - BUSY_WINDOW_S:
            self._busy.popleft()
        return min(1.0, sum(d for _, d in self._busy) / BUSY_WINDOW_S)

    def ping(self) -> str:
        """Health check: raises when the scoring thread has died."""
        if not self._thread.is_alive():
            raise RuntimeError(f"scorer {self.name}: scoring thread is not running (last error: {self.last_error})")
        return self.name

    def stats(self) -> dict[str, Any]:
        """Scorer-wide and per-camera counters for the status endpoint and `/metrics`."""
        now = time.time()
        cameras = {}
        with self._lock:
            for name, c in self._cams.items():
                recent = [(t, n) for t, n in c.scored_times if t >= now - BUSY_WINDOW_S]
                cameras[name] = {
                    "windows_scored": c.windows_scored,
                    "frames_scored": c.frames_scored,
                    "windows_dropped": c.windows_dropped,
                    "frames_dropped": c.frames_dropped,
                    "last_score": c.last_score,
                    "warm": c.last_warm,
                    "last_frame": c.last_frame,
                    "lag_s": None if c.last_frame_wall_s is None else now - c.last_frame_wall_s,
                    "latency_s": c.last_latency_s,
                    "fps_scored": sum(n for _, n in recent) / BUSY_WINDOW_S,
                    "queue_depth": self.queue.depth(name),
                    "alert_open": c.tracker.is_open,
                    "alert_state": c.tracker.state,
                    "event_id": c.event_id,
                    "events_opened": c.events_opened,
                    "bundle": c.bundle,
                }
        ctx = None
        try:
            import ray

            if ray.is_initialized():
                ctx = ray.get_runtime_context().get_node_id()
        except Exception:  # noqa: BLE001 - outside Ray
            ctx = None
        return {
            "name": self.name,
            "device": self.device,
            "alive": self._thread.is_alive(),
            "batches": self.batches,
            "windows": self.windows,
            "mean_batch": self.windows / self.batches if self.batches else 0.0,
            "busy_ratio": self.busy_ratio(),
            "queue_depth": self.queue.depth(),
            "errors": self.errors,
            "last_error": self.last_error,
            "node_id": ctx,
            "bundle": str(self.detector.bundle.path),
            "bundle_sha256": bundle_info(self.detector)["sha256"],
            "bundle_swaps": self.bundle_swaps,
            "pid": os.getpid(),
            "input": {"size": self.detector.size, "window": self.detector.window},
            "cameras": cameras,
        }

    def registered(self) -> list[str]:
        """Cameras registered with `set_camera` (empty after a restart until the control plane re-registers)."""
        with self._lock:
            return sorted(self._alert_settings)

    # -------------------------------------------------------------------------------------- hot-swap
    def bundle_info(self) -> dict[str, Any]:
        """The running bundle: path, sha256 prefix of its weights, format version, input."""
        return bundle_info(self.detector)

    def prepare_bundle(self, path: str) -> dict[str, Any]:
        """Load and validate a bundle fully, off the scoring thread, and stage it; raises BundleError if refused."""
        try:
            detector = Detector.load(path, self.device)  # BundleError: checksum, version, pickle, missing files
        except BundleError:
            raise
        except (ValueError, OSError, RuntimeError) as exc:  # e.g. a discriminator without its CLIP model
            raise BundleError(f"{path}: cannot be loaded: {type(exc).__name__}: {exc}") from None
        new, old = (detector.size, detector.window, detector.config.scoring.hop), (
            self.detector.size, self.detector.window, self.detector.config.scoring.hop)
        if new != old:
            raise BundleError(
                f"{path}: input {detector.window} frames x {detector.size}x{detector.size} differs from the running "
                f"bundle's {self.detector.window} x {self.detector.size}x{self.detector.size} (or its hop: {new[2]} vs "
                f"{old[2]} frames); cameras feed the running input, so change it with a restart, not a hot-swap"
            )
        with self._swap_lock:
            self._staged = detector
        return bundle_info(detector)

    def commit_bundle(self, sha256: str) -> dict[str, Any]:
        """Switch to the staged bundle (the one whose sha256 prefix is given) between two batches."""
        with self._swap_lock:
            staged = self._staged
            if staged is None or bundle_info(staged)["sha256"] != sha256:
                raise BundleError(f"no staged bundle with sha256 {sha256} to commit (prepare_bundle first)")
            scorer = BatchScorer(staged, frame_scorer_factory(staged), max_batch=self.max_batch)
            with self._lock:  # no camera update runs between the two assignments
                self.detector, self.scorer = staged, scorer
                for name, cam in self._cams.items():  # a threshold left to the bundle follows the new bundle
                    cam.apply(self._resolved(self._alert_settings.get(name, self.alert_defaults)))
                    cam.block = staged.config.scoring.block
            self._staged = None
            self.bundle_swaps += 1
        logger.warning("scorer %s: now scoring with bundle %s (%s)", self.name, staged.bundle.path, sha256)
        return bundle_info(staged)

    def discard_bundle(self) -> None:
        """Forget a staged bundle (another scorer refused it)."""
        with self._swap_lock:
            self._staged = None

    def model_input(self) -> dict[str, int]:
        """Frame size, window length and hop of the running bundle (what cameras must feed)."""
        return {"size": self.detector.size, "window": self.detector.window, "hop": self.detector.config.scoring.hop}

    def metric_families(self) -> list:
        """This scorer's histograms (latency, batch size and duration) for the control plane's /metrics."""
        self._scorer_metrics.set_busy(self.busy_ratio())
        return [f for f in self.metrics.snapshot() if f.name in SCORER_FAMILIES]

    def list_events(self, **filters: Any) -> list[dict]:
        """Events from the shared store, filtered (GET /events)."""
        return [e.to_dict() for e in self.store.list_events(**filters)]

    def get_event(self, event_id: int) -> dict | None:
        """One event from the shared store, or None (GET /events/{id})."""
        e = self.store.get_event(event_id)
        return None if e is None else e.to_dict()

    def get_snapshot(self, event_id: int) -> bytes | None:
        """One event's JPEG from the shared store, or None."""
        return self.store.get_snapshot(event_id)

    def set_label(self, event_id: int, label: str) -> dict | None:
        """Label an event "false_alarm" or "anomaly" (POST /events/{id}/label); the event, or None if unknown."""
        return self.get_event(event_id) if self.store.set_label(event_id, label) else None

    def get_trace(self, event_id: int) -> dict | None:
        """An event's stored score trace (GET /events/{id}/scores), or None."""
        return self.store.get_trace(event_id)

    def score_history(self, camera: str, seconds: float, max_points: int = CHART_POINTS) -> dict[str, Any] | None:
        """A camera's scores of the last `seconds` (at most `max_points`, peaks kept) and its alert threshold, for
        the page's live chart; None for a camera this scorer has not scored yet."""
        with self._lock:
            cam = self._cams.get(camera)
            if cam is None:
                return None
            now = time.time()
            points = cam.history.between(now - seconds)
            threshold, open_ = cam.tracker.threshold, cam.tracker.is_open
        return {"camera": camera, "now": now, "seconds": seconds, "threshold": threshold, "alert_open": open_,
                "points": [[round(t, 3), round(v, 5)] for t, v in downsample(points, max_points)]}

    def latest_frame(self, camera: str) -> bytes | None:
        """JPEG of the camera's newest scored frame (GET /cameras/{name}/frame), or None before its first window."""
        with self._lock:
            cam = self._cams.get(camera)
            return None if cam is None else cam.latest_jpeg()

    def close_dangling(self) -> int:
        """At startup: settle events a previous run left open (ended at their last update)."""
        return self.store.close_dangling("last_seen")

    def stop(self) -> None:
        """Stop scoring; close every open alert (reason "stopped")."""
        self._stop.set()
        self.queue.close()
        self._thread.join(timeout=30)
        with self._lock:
            for name, cam in self._cams.items():
                cam.close(self.store, "stopped")


def bundle_info(detector: Detector) -> dict[str, Any]:
    """What identifies a detector's bundle in status answers: path, weights sha256 prefix, version, input."""
    cfg = detector.config
    return {
        "path": str(detector.bundle.path),
        "sha256": cfg.weights_sha256[:12],
        "version": cfg.version,
        "input": {"size": detector.size, "window": detector.window},
    }
