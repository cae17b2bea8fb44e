"""Ray actor per camera: runs the IngestLoop in a thread and hands windows to a scorer actor, never blocking.

Drop policy at the camera: at most `max_inflight` windows may be on their way to (not yet accepted by) the
scorer; a window beyond that is dropped here and counted (`windows_dropped`, `frames_dropped`), so a slow or
dead scorer can never stall the decoder. The scorer applies its own per-camera queue policy after that.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

import ray

from streaming.config import CameraConfig
from streaming.ingest import IngestCounters, IngestLoop, IngestSettings
from streaming.credentials import resolve_credentials
from streaming.prometheus import VadMetrics

logger = logging.getLogger(__name__)

# The histogram this actor reports (its counters and gauges travel as totals in `stats()`).
CAMERA_FAMILIES = ("vad_decode_latency_seconds",)


class CameraActor:
    """One camera: decode -> resample -> resize -> ring buffer -> `scorer.submit.remote(window)`.

    Args:
        camera: a CameraConfig (or its dict).
        scorer: the scorer actor handle that scores this camera's windows.
        size / window: the bundle's input size and window length (frames are resized to size x size).
        hop: a window every `hop` frames (the bundle's scoring.hop); None = window (no overlap).
        max_inflight: windows allowed in flight to the scorer before new ones are dropped here.
    """

    def __init__(
        self, camera: dict | CameraConfig, scorer: Any, size: int, window: int, max_inflight: int = 4, hop: int | None = None
    ):
        self.cfg = camera if isinstance(camera, CameraConfig) else CameraConfig.model_validate(camera)
        self.name = self.cfg.name
        self.scorer = scorer
        self.max_inflight = max_inflight
        self._inflight: list[ray.ObjectRef] = []
        self._lock = threading.Lock()
        self.windows_sent = 0
        self.scorer_errors = 0
        self.last_scorer_error: str | None = None
        self.started_s = time.time()
        self.metrics = VadMetrics()
        self._decode_hist = self.metrics.decode_latency.labels(self.name)
        self._url = resolve_credentials(self.cfg.url, self.cfg.env_prefix)
        self.loop = self._start_loop(size, window, hop)

    def _start_loop(
        self, size: int, window: int, hop: int | None, counters: IngestCounters | None = None
    ) -> IngestLoop:
        settings = IngestSettings.for_camera(self.cfg, size, window, hop)
        loop = IngestLoop(self.name, self._url, settings, on_window=self._on_window, on_state=self._on_state)
        if counters is not None:
            loop.counters = counters  # totals keep counting across a restart of the loop (they feed Prometheus)
        return loop.start()

    def _on_state(self, state: str, detail: str) -> None:
        logger.info("camera %s: %s %s", self.name, state, detail)
        with self._lock:
            scorer = self.scorer
        try:  # fire-and-forget: the state topic of the notifications (streaming/notify/)
            scorer.camera_state.remote(self.name, state)
        except Exception:  # noqa: BLE001 - a dead scorer must not stop decoding
            logger.debug("camera %s: state not sent to the scorer", self.name, exc_info=True)

    def _reap(self) -> int:
        """Forget windows the scorer has accepted; count failed hand-overs (dead scorer). Returns in flight."""
        if not self._inflight:
            return 0
        ready, pending = ray.wait(self._inflight, num_returns=len(self._inflight), timeout=0, fetch_local=False)
        for ref in ready:
            try:
                ray.get(ref, timeout=0)
            except Exception as exc:  # noqa: BLE001 - a dead scorer must not stop decoding
                self.scorer_errors += 1
                self.last_scorer_error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        self._inflight = pending
        return len(pending)

    def _on_window(self, window: Any) -> bool:
        """IngestLoop callback: hand the window over without waiting; False = dropped (scorer behind)."""
        self._decode_hist.observe(self.loop.counters.decode_s)  # sampled once per window
        with self._lock:
            if self._reap() >= self.max_inflight:
                return False
            self._inflight.append(self.scorer.submit.remote(window))
            self.windows_sent += 1
            return True

    # ------------------------------------------------------------------------------------------ remote API
    def ping(self) -> str:
        """Health check: answers while the actor lives."""
        return self.name

    def set_scorer(self, scorer: Any) -> None:
        """Send windows to another scorer actor from now on (in-flight windows are forgotten)."""
        with self._lock:
            self.scorer = scorer
            self._inflight = []

    def set_input(self, size: int, window: int, hop: int | None = None) -> dict[str, int]:
        """Cut windows for another bundle input from now on (its bundle changed): the ingest loop restarts with the
        new size, window and hop; its counters go on. Returns the input now fed."""
        old = self.loop
        s = old.settings
        if (s.size, s.window, s.hop) != (size, window, hop or window):
            old.stop()
            self.loop = self._start_loop(size, window, hop, old.counters)
            logger.info("camera %s: windows now %d frames of %dx%d every %d", self.name, window, size, size,
                        hop or window)
        s = self.loop.settings
        return {"size": s.size, "window": s.window, "hop": s.hop}

    def stats(self) -> dict[str, Any]:
        """Counters and state for the status endpoint and `/metrics` (URL scrubbed)."""
        s = self.loop.stats()
        with self._lock:
            inflight = self._reap()
        ctx = ray.get_runtime_context()
        s.update(
            running=self.loop.running,
            windows_sent=self.windows_sent,
            windows_inflight=inflight,
            scorer_errors=self.scorer_errors,
            last_scorer_error=self.last_scorer_error,
            node_id=ctx.get_node_id(),
            node_ip=ray.util.get_node_ip_address(),
            started_s=self.started_s,
            fps_target=self.cfg.fps,
            pid=os.getpid(),  # which process to watch (memory, restarts)
        )
        return s

    def metric_families(self) -> list:
        """This actor's histograms (decode latency) for the control plane's /metrics."""
        return [f for f in self.metrics.snapshot() if f.name in CAMERA_FAMILIES]

    def stop(self) -> bool:
        """Stop decoding (returns within about the read timeout); True if the loop ended."""
        return self.loop.stop()
