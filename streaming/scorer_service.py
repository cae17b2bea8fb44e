"""The scorer service of one device: queue windows from every camera, score them in batches, then alerts and events.

`ScorerService` is a plain class (no Ray import); the fleet runs it as a Ray actor (`ray.remote(ScorerService)`,
streaming/fleet.py). `submit(window)` only queues (see streaming.batching for the drop policy); a worker thread
takes batches (max_batch, max_wait_ms), calls the batch's bundle's Detector once per batch, and per camera runs
FrameScorer -> CameraAlerts (streaming/camera_alerts.py: AlertTracker -> EventStore, with the peak frame's JPEG
snapshot and the alert's clip, streaming/event_clips.py; a false alarm's clip is kept under `feedback_root`), and
the notifications of those events to MQTT brokers and webhooks (streaming/notify/, delivered in their own threads).

Bundles (streaming/bundle_set.py): a camera scores with its own bundle (`set_camera(..., bundle=path)`) or the
default one; each bundle is loaded once per scorer, a batch only holds windows of one bundle, and a bundle no camera
uses is unloaded (at most `max_bundles` loaded). A window whose shape is not its bundle's input (cut before the
camera's ingest followed a bundle change) is dropped and counted.

Hot-swaps load and validate the new bundle completely beside the running one (a refused bundle raises BundleError
and changes nothing), then switch between two batches: the default in two phases, so several scorers switch
together or not at all (`prepare_bundle(path)`, then `commit_bundle(sha)`), one camera's in one call
(`swap_camera_bundle`). A batch is always scored by one fully loaded model; the running normaliser of each camera
that changes bundle starts again from the new bundle's calibration (raw scores of two models are not comparable);
open alerts go on. Over 350 lines: the queue, the batch loop, camera registration and bundle changes share two
locks (`_lock`, `_batch_lock`) whose order only holds if they live together.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from typing import Any

import torch

from offline.scoring.alert_rules import AlertRules, ResolvedThreshold, resolve_threshold
from offline.scoring.bundle import BundleError
from offline.scoring.detector import Detector
from streaming.batching import PendingWindows, ScoredWindow
from streaming.bundle_set import BundleSet, LoadedBundle, bundle_info, load_detector
from streaming.camera_alerts import CameraAlerts
from streaming.clip_buffer import ClipBuffer
from streaming.event_clips import EventClips, clip_frames
from streaming.config import AlertConfig, EventsConfig
from streaming.events import EventStore
from streaming.notify.dispatcher import Notifier
from streaming.notify.messages import EventInfo
from streaming.notify.settings import NotifyConfig
from streaming.prometheus import VadMetrics
from streaming.score_history import CHART_POINTS, downsample

logger = logging.getLogger(__name__)

# The histograms this actor reports (its counters and gauges travel as totals in `stats()`).
SCORER_FAMILIES = ("vad_score_latency_seconds", "vad_scorer_batch_size", "vad_scorer_batch_duration_seconds",
                   "vad_scorer_loaded_bundles", "vad_camera_bundle", "vad_notify_outbox_depth", "vad_notify_sent",
                   "vad_notify_failures", "vad_notify_dropped", "vad_notify_sink_up")
BUSY_WINDOW_S = 10.0


class ScorerService:
    """Batches windows from many cameras through their bundles' Detectors on one device.

    Args:
        name: metric label of this scorer ("cpu", "cuda:0").
        device: torch device of the Detectors.
        bundle: the default model bundle directory.
        events: EventsConfig (or dict) of the shared SQLite store.
        alerts: default AlertConfig (or dict); cameras may override it with `set_camera`.
        max_batch / max_wait_ms / max_pending: batching and the per-camera queue bound.
        torch_threads: torch intra-op threads for CPU scoring (None: leave torch's default).
        max_bundles: most bundles loaded at once, the default included (`scorer.max_bundles`).
        feedback_root: recordings.root: a clip labelled false_alarm is copied to <root>/<camera>/feedback/ for the
            camera's next learn (None: not kept).
        notify: NotifyConfig (or dict): where events are delivered; its outboxes live in the events database.
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
        max_bundles: int = 8,
        feedback_root: str | None = None,
        notify: dict | NotifyConfig | None = None,
    ):
        if torch_threads:
            torch.set_num_threads(torch_threads)
        self.name = name
        self.device = device
        self.bundles = BundleSet(load_detector(bundle, device), max_bundles, max_batch)
        self._staged: LoadedBundle | None = None  # a validated default bundle waiting for commit_bundle
        self._swap_lock = threading.Lock()  # one bundle change at a time (loads run under it; scoring goes on)
        self._batch_lock = threading.Lock()  # held while a batch is scored: bundle changes land between batches
        self._bundle_labels: set[str] = set()  # cameras with a vad_camera_bundle_info series
        self.bundle_swaps = 0
        self.queue = PendingWindows(max_pending)
        self.max_batch, self.max_wait_s = max_batch, max_wait_ms / 1000.0
        ev = events if isinstance(events, EventsConfig) else EventsConfig.model_validate(events)
        self.store = EventStore(ev.path, ev.retention_days, ev.max_events)
        self.clip_seconds = ev.clip_seconds
        self.clips = EventClips(ev.clips_dir(), ev.clips_max_bytes, feedback_root, enabled=ev.clip_seconds > 0)
        try:
            self.clips.prune(self.store)
        except OSError as exc:
            logger.error("scorer %s: pruning alert clips in %s failed: %s", name, self.clips.dir, exc)
        self.alert_defaults = alerts if isinstance(alerts, AlertConfig) else AlertConfig.model_validate(alerts or {})
        self._alert_settings: dict[str, AlertConfig] = {}
        self._fps: dict[str, float] = {}
        self._thresholds: dict[str, ResolvedThreshold] = {}
        self._cams: dict[str, CameraAlerts] = {}
        self._removed: set[str] = set()
        self._latency_labels: set[str] = set()
        self._lock = threading.RLock()
        self.metrics = VadMetrics()
        self._scorer_metrics = self.metrics.scorer(name)
        nc = notify if isinstance(notify, NotifyConfig) else NotifyConfig.model_validate(notify or {})
        self.notifier = Notifier(nc, ev.path, name, self.metrics) if nc.sinks else None
        self.batches = 0
        self.windows = 0
        self.errors = 0
        self.last_error: str | None = None
        self._busy: deque[tuple[float, float]] = deque()  # (end monotonic, duration) of recent batches
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"scorer-{name}", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------------------------------ cameras
    @property
    def detector(self) -> Detector:
        """The default bundle's Detector."""
        return self.bundles.default.detector

    def set_camera(
        self, camera: str, alerts: dict | AlertConfig | None = None, bundle: str | None = None, fps: float = 5.0,
    ) -> dict:
        """Register a camera, or change its alert settings (an open alert keeps going under the new ones) or its
        bundle (`bundle`: its own bundle directory, None: the default; loaded unless already loaded); `fps`: its
        analysis rate, at which a false-alert rate is replayed. Returns the input its windows must have (size,
        window, hop). BundleError / BundleLimitError: nothing changed."""
        settings = self.alert_defaults if alerts is None else AlertConfig.model_validate(
            alerts.model_dump() if isinstance(alerts, AlertConfig) else alerts
        )
        with self._swap_lock:
            with self._lock:
                same = camera in self.bundles.camera_key and self.bundles.own.get(camera) == bundle
                entry = self.bundles.entry_for(camera) if same else None
            if entry is None:
                entry = self._switch(camera, bundle)
            with self._lock:
                self._removed.discard(camera)
                self._alert_settings[camera] = settings
                self._fps[camera] = float(fps)
                self._refresh(camera)
            return entry.model_input()

    def swap_camera_bundle(self, camera: str, bundle: str | None) -> dict[str, Any]:
        """Hot-swap one camera's bundle (None: back to the default), validated fully beside the running one and
        switched between two batches; its normaliser restarts from the new bundle's calibration, an open alert goes
        on. Returns the new bundle's info with the input the camera must now feed and the previous bundle.
        KeyError for an unregistered camera; BundleError / BundleLimitError: the running bundle stays."""
        with self._swap_lock:
            with self._lock:
                if camera not in self.bundles.camera_key:
                    raise KeyError(f"scorer {self.name}: no camera {camera!r} registered")
                previous = self.bundles.camera_bundle(camera)
            entry = self._switch(camera, bundle)
            with self._lock:
                self._refresh(camera)
        logger.warning("scorer %s: camera %s now scores with bundle %s (%s)", self.name, camera, entry.path, entry.sha)
        return {**bundle_info(entry.detector), "input": entry.model_input(), "default": bundle is None,
                "previous": previous}

    def _switch(self, camera: str, bundle: str | None) -> LoadedBundle:
        """Move `camera` to `bundle` (None: the default): reuse a loaded one or load it (outside the scoring
        locks), check the limit, then switch between two batches. Call with `_swap_lock` held."""
        with self._lock:
            entry = self.bundles.default if bundle is None else self.bundles.find(bundle)
        if entry is None:
            entry = LoadedBundle.of(load_detector(bundle, self.device), self.max_batch)
        with self._batch_lock, self._lock:
            self.bundles.check_room(entry, {camera})
            return self.bundles.assign(camera, entry, bundle)

    def _refresh(self, camera: str) -> None:
        """Resolve a camera's threshold again (its settings, fps or bundle changed; the status shows it before the
        first window) and apply it with its bundle's block to its alert state, if it has one (under `_lock`)."""
        self._resolve(camera)
        cam = self._cams.get(camera)
        if cam is not None:
            cam.apply(self._settings(camera))
            cam.block = self.bundles.entry_for(camera).detector.config.scoring.block
            self._clip_settings(camera, cam)

    def _clip_settings(self, camera: str, cam: CameraAlerts) -> None:
        """The camera's clip bound (events.clip_seconds at its fps) and pre-roll (its bundle's window less one);
        a changed bound applies from the camera's next alert on."""
        cam.clips, cam.fps = self.clips, self._fps.get(camera, 5.0)
        frames = clip_frames(self.clip_seconds, cam.fps)
        pre = self.bundles.entry_for(camera).detector.window - 1
        if frames == 0:
            cam.clip = None
        elif cam.clip is None or (not cam.clip.active and (cam.clip.max_frames, cam.clip.pre_frames) != (frames, pre)):
            cam.clip = ClipBuffer(frames, pre)

    def remove_camera(self, camera: str) -> None:
        """Forget a camera: close its open alert (reason "removed"), its queue, its normaliser, and its bundle when
        no other camera uses it."""
        self.queue.discard(camera)
        with self._batch_lock, self._lock:
            self._removed.add(camera)
            cam = self._cams.pop(camera, None)
            self._alert_settings.pop(camera, None)
            self._fps.pop(camera, None)
            self._thresholds.pop(camera, None)
            self.bundles.remove(camera)
            if camera in self._latency_labels:
                self._latency_labels.discard(camera)
                self.metrics.score_latency.remove(camera)
            if cam is not None:
                cam.close(self.store, "removed")
            if self.notifier is not None:
                self.notifier.camera_removed(camera)

    def camera_state(self, camera: str, state: str) -> None:
        """A camera's ingest state changed (its actor tells, fire-and-forget): notified as its state topic."""
        if self.notifier is not None:
            with self._lock:
                if camera not in self._removed:
                    self.notifier.camera_state(camera, state)

    def _resolve(self, camera: str) -> None:
        """Resolve the camera's threshold once (offline.scoring.alert_rules.resolve_threshold: the config's, else one
        for its max_false_alerts_per_hour on its bundle's calibration trace, else the bundle's) and keep it."""
        settings = self._alert_settings.get(camera, self.alert_defaults)
        config = self.bundles.entry_for(camera).detector.config
        rules = AlertRules(settings.min_duration_s, settings.hysteresis)
        self._thresholds[camera] = resolve_threshold(settings.threshold, settings.max_false_alerts_per_hour,
                                                     config.scoring, config.calibration, self._fps.get(camera, 5.0), rules)

    def _settings(self, camera: str) -> AlertConfig:
        """The camera's alert settings with its resolved threshold filled in."""
        if camera not in self._thresholds:
            self._resolve(camera)
        settings = self._alert_settings.get(camera, self.alert_defaults)
        return settings.model_copy(update={"threshold": self._thresholds[camera].threshold})

    def _camera(self, name: str) -> CameraAlerts:
        cam = self._cams.get(name)
        if cam is None:
            cam = self._cams[name] = CameraAlerts.start(name, self._settings(name), self.store, self.notifier)
            cam.block = self.bundles.entry_for(name).detector.config.scoring.block
            self._clip_settings(name, cam)
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
            batch = self.queue.take(self.max_batch, self.max_wait_s, timeout_s=0.5, group=self.bundles.key_for)
            if not batch:
                continue
            with self._batch_lock:  # a bundle change waits for this batch: it lands between two batches
                self._score(batch)

    def _score(self, batch: list) -> None:
        """Score one batch (windows of one bundle) and hand the results to the cameras' alert state."""
        with self._lock:
            entry = self.bundles.entry_for(batch[0].camera)
            fit = []
            for w in batch:
                if self.bundles.entry_for(w.camera) is entry and entry.fits(w):
                    fit.append(w)
                else:  # cut for another bundle's input (its camera changed bundle since): dropped, counted
                    cam = self._camera(w.camera)
                    cam.windows_dropped += 1
                    cam.frames_dropped += len(w.indices)
        if not fit:
            return
        t0 = time.monotonic()
        try:
            results = entry.scorer.score(fit)
        except Exception as exc:  # noqa: BLE001 - a bad batch is counted and dropped, the scorer goes on
            self.errors += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            logger.exception("scorer %s: batch of %d windows failed", self.name, len(fit))
            return
        dt = time.monotonic() - t0
        self._busy.append((time.monotonic(), dt))
        self._scorer_metrics.observe_batch(len(fit), dt)
        self.batches += 1
        self.windows += len(fit)
        for r in results:
            try:
                self._after_scoring(r, entry.sha)
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
            camera_bundles = {name: self.bundles.camera_bundle(name) for name in self._alert_settings}
            camera_thresholds = {name: t.to_dict() for name, t in self._thresholds.items()}
            loaded = self.bundles.describe()
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
            "camera_bundles": camera_bundles,
            "camera_thresholds": camera_thresholds,
            "loaded_bundles": len(loaded),
            "max_bundles": self.bundles.max_bundles,
            "bundles": loaded,
            "notify": {} if self.notifier is None else self.notifier.status(),
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
        """Load and validate a new default bundle fully, off the scoring thread, and stage it; raises BundleError
        if refused (or BundleLimitError when it would pass `max_bundles`)."""
        with self._lock:
            entry = self.bundles.find(path)
        if entry is None:
            entry = LoadedBundle.of(load_detector(path, self.device), self.max_batch)
        detector = entry.detector
        new, old = (detector.size, detector.window, detector.config.scoring.hop), (
            self.detector.size, self.detector.window, self.detector.config.scoring.hop)
        if new != old:
            raise BundleError(
                f"{path}: input {detector.window} frames x {detector.size}x{detector.size} differs from the running "
                f"bundle's {self.detector.window} x {self.detector.size}x{self.detector.size} (or its hop: {new[2]} vs "
                f"{old[2]} frames); cameras feed the running input, so change it with a restart, not a hot-swap"
            )
        with self._lock:
            self.bundles.check_room(entry, self.bundles.followers(), as_default=True)
        with self._swap_lock:
            self._staged = entry
        return bundle_info(detector)

    def commit_bundle(self, sha256: str) -> dict[str, Any]:
        """Make the staged bundle (the one whose sha256 prefix is given) the default, between two batches: the
        cameras without their own bundle move to it."""
        with self._swap_lock:
            staged = self._staged
            if staged is None or staged.sha != sha256:
                raise BundleError(f"no staged bundle with sha256 {sha256} to commit (prepare_bundle first)")
            with self._batch_lock, self._lock:  # no batch and no camera update runs during the switch
                followers = self.bundles.followers()
                self.bundles.set_default(staged)
                for name in followers:  # a threshold left to the bundle follows the new bundle
                    self._refresh(name)
            self._staged = None
            self.bundle_swaps += 1
        logger.warning("scorer %s: now scoring with bundle %s (%s)", self.name, staged.path, sha256)
        return bundle_info(staged.detector)

    def discard_bundle(self) -> None:
        """Forget a staged bundle (another scorer refused it)."""
        with self._swap_lock:
            self._staged = None

    def model_input(self) -> dict[str, int]:
        """Frame size, window length and hop of the default bundle (what cameras without their own must feed)."""
        return self.bundles.default.model_input()

    def metric_families(self) -> list:
        """This scorer's histograms (latency, batch size and duration) and bundle gauges for the control plane's
        /metrics."""
        self._scorer_metrics.set_busy(self.busy_ratio())
        with self._lock:
            self._scorer_metrics.loaded_bundles.set(len(self.bundles.loaded))
            shas = {name: self.bundles.entry_for(name).sha for name in self._alert_settings}
        for name in self._bundle_labels - set(shas):
            self.metrics.camera_bundle.remove(name)
        for name, sha in shas.items():
            self.metrics.camera_bundle.labels(name).info({"bundle": sha})
        self._bundle_labels = set(shas)
        return [f for f in self.metrics.snapshot() if f.name in SCORER_FAMILIES]

    def list_events(self, **filters: Any) -> list[dict]:
        """Events from the shared store, filtered (GET /events); `clip`: whether the event's clip exists."""
        return [{**e.to_dict(), "clip": self.clips.exists(e.id)} for e in self.store.list_events(**filters)]

    def get_event(self, event_id: int) -> dict | None:
        """One event from the shared store, or None (GET /events/{id}); `clip`: whether its clip exists."""
        e = self.store.get_event(event_id)
        return None if e is None else {**e.to_dict(), "clip": self.clips.exists(e.id)}

    def get_clip(self, event_id: int) -> bytes | None:
        """One event's clip (Matroska, H.264, at the model's input size), or None (GET /events/{id}/clip)."""
        return self.clips.read(event_id)

    def get_snapshot(self, event_id: int) -> bytes | None:
        """One event's JPEG from the shared store, or None."""
        return self.store.get_snapshot(event_id)

    def set_label(self, event_id: int, label: str) -> dict | None:
        """Label an event "false_alarm" or "anomaly" (POST /events/{id}/label); None if unknown, else the event and
        what became of its footage: a false alarm's clip is kept as the camera's normal footage for its next learn,
        an anomaly's is removed from there (`footage`: kept, removed, pending or none, with `footage_reason`)."""
        footage = self.clips.label(self.store, event_id, label)
        ev = None if footage is None else self.get_event(event_id)
        return None if ev is None else {**ev, **footage}

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
        """At startup: settle events a previous run left open (ended at their last update); their end is
        notified."""
        dangling = self.store.list_events(status="open", limit=10_000) if self.notifier is not None else []
        n = self.store.close_dangling("last_seen")
        for ev in dangling:
            closed = self.store.get_event(ev.id)
            if closed is not None and self.notifier is not None:
                threshold = (self.store.get_trace(ev.id) or {}).get("threshold")  # what it was judged against
                self.notifier.ended_after_restart(EventInfo(
                    ev.id, ev.camera, ev.start_s, ev.peak_score, ev.peak_s, threshold, closed.end_s, closed.reason,
                    closed.label, closed.has_snapshot))
        return n

    def stop(self) -> None:
        """Stop scoring; close every open alert (reason "stopped")."""
        self._stop.set()
        self.queue.close()
        self._thread.join(timeout=30)
        with self._lock:
            for name, cam in self._cams.items():
                cam.close(self.store, "stopped")
        self.clips.close()  # the clips of the alerts just closed are written before the scorer goes
        if self.notifier is not None:
            self.notifier.stop()  # what was not delivered waits in the outbox for the next start

