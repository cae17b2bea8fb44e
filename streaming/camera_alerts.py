"""One camera's scored stream at its scorer: counters, the alert tracker, the open event and its snapshot.

`CameraAlerts.observe` takes a scored window frame by frame: each frame's score goes to the AlertTracker, the
peak frame (with its error map) is kept for the event's JPEG snapshot, and the tracker's opened/peak/closed
events are written to the shared EventStore. After a scorer restart, `resume_open_event` adopts the camera's
open event when it was updated within RESUME_GAP_S (no duplicate alert), else closes it (reason "restart").
It also keeps the camera's recent scores (`history`, streaming/score_history.py: the page's live chart), the newest
scored frame (`latest_jpeg`: the page's live view) and writes each event's score trace (TRACE_BEFORE_S before its
start to TRACE_AFTER_S after its end) to the store. While an alert is pending or open, the frames of the windows it
covers are kept (`clip`, streaming/clip_buffer.py, bounded) and handed to `clips` (streaming/event_clips.py) when it
closes: the event's clip. Each open, peak, close, the open event's progress and the camera's score also go to
`notify` (streaming/notify/dispatcher.py: it only stores messages; delivery runs in its own threads). No Ray, no
threads: the scorer service calls it under its lock.
"""
from __future__ import annotations

import io
import logging
import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from offline.scoring.alert_rules import AlertEvent, AlertTracker
from streaming.batching import ScoredWindow
from streaming.clip_buffer import ClipBuffer
from streaming.config import AlertConfig
from streaming.event_clips import EventClips
from streaming.events import EventStore, EventStoreError
from streaming.notify.messages import EventInfo
from streaming.score_history import ScoreHistory
from streaming.snapshot import render_evidence_snapshot

logger = logging.getLogger(__name__)

RESUME_GAP_S = 60.0  # a restarted scorer resumes a camera's open alert last updated at most this long ago
TRACE_BEFORE_S = 10.0  # an event's stored score trace starts this long before the alert
TRACE_AFTER_S = 5.0  # ... and is completed this long after it closed (a first version is written at the close)
LIVE_MIN_SIDE = 256  # pixels: the live frame is enlarged (nearest, integer factor) to at least this short side


@dataclass
class CameraAlerts:
    """Per-camera scoring state and counters at one scorer (see the module docstring)."""

    name: str
    tracker: AlertTracker
    windows_scored: int = 0
    frames_scored: int = 0
    windows_dropped: int = 0
    frames_dropped: int = 0
    last_score: float | None = None
    last_warm: bool = False
    last_frame: int | None = None
    last_frame_wall_s: float | None = None
    last_latency_s: float | None = None
    event_id: int | None = None
    events_opened: int = 0
    peak: tuple[np.ndarray, np.ndarray] | None = None  # (rgb (H, W, 3), error map (H, W)) of the peak so far
    scored_times: deque = field(default_factory=lambda: deque(maxlen=64))  # (wall_s, frames) per window
    bundle: str | None = None  # sha256 prefix of the bundle that scored the last window
    block: int = 16
    """Evidence block side in pixels, from the bundle's scoring spec (`block_max`); the snapshot outlines these
    blocks. A map whose size it does not divide uses the largest common divisor of its sides <= block."""
    history: ScoreHistory = field(default_factory=ScoreHistory)
    latest: np.ndarray | None = None  # the newest scored frame (H, W, 3) uint8, at the model's input size
    trace_due: tuple[int, float, float] | None = None  # (event id, trace start, wall time to complete it)
    clip: ClipBuffer | None = None  # the current alert's frames; None: no clips kept
    clips: EventClips | None = None  # where a closed alert's clip is written
    fps: float = 5.0  # the camera's analysis rate: the clip's frame rate
    notify: Any = None  # the scorer's Notifier (streaming/notify/dispatcher.py), or None: no notifications
    open_event: AlertEvent | None = None  # the tracker's latest opened/peak event while an alert is open

    @classmethod
    def start(cls, name: str, settings: AlertConfig, store: EventStore, notify: Any = None) -> "CameraAlerts":
        """A camera's state at its first window: a fresh tracker with `settings`, and any open event resumed."""
        cam = cls(name, AlertTracker(settings.threshold, settings.min_duration_s, settings.hysteresis, camera=name))
        cam.notify = notify
        cam.resume_open_event(store)
        return cam

    def apply(self, settings: AlertConfig) -> None:
        """New alert settings; an open alert keeps going under them."""
        t = self.tracker
        t.threshold, t.min_duration_s, t.hysteresis = settings.threshold, settings.min_duration_s, settings.hysteresis

    def resume_open_event(self, store: EventStore) -> None:
        """After a scorer restart: adopt the camera's open event if it was updated within RESUME_GAP_S (the alert
        goes on, no duplicate), else close it at its last update (reason "restart"): an open alert is never lost."""
        for ev in store.list_events(camera=self.name, status="open", limit=10):
            if self.event_id is None and time.time() - ev.updated_s <= RESUME_GAP_S:
                self.event_id = ev.id
                self.tracker.resume(ev.start_s, ev.peak_score, ev.peak_frame, ev.peak_s)
                self.open_event = AlertEvent("opened", self.name, ev.start_s, ev.peak_score, ev.peak_frame, ev.peak_s)
                if self.notify is not None:
                    self.notify.resumed(self._event_info(self.open_event))
                logger.warning("camera %s: resumed open alert (event %d) after a scorer restart", self.name, ev.id)
            else:
                store.close_event(ev.id, ev.updated_s, "restart")
                if self.notify is not None:
                    self.notify.ended_after_restart(EventInfo(ev.id, self.name, ev.start_s, ev.peak_score, ev.peak_s,
                                                              self.tracker.threshold, ev.updated_s, "restart",
                                                              ev.label, ev.has_snapshot))

    def observe(self, r: ScoredWindow, store: EventStore, latency: Any, now: float, bundle: str | None = None) -> None:
        """Feed one scored window: per frame the latency histogram, the tracker, the peak; then the counters."""
        for t in range(len(r.score)):
            wall = float(r.wall_s[t])
            latency.observe(max(0.0, now - wall))
            if r.warm[t]:
                self.history.add(wall, float(r.score[t]))
            events = self.tracker.update(wall, float(r.score[t]), int(r.indices[t]), bool(r.warm[t]))
            if self.clip is not None:  # the closing frame still belongs to the alert
                self.clip.add(r.frames[t], self.tracker.state != "idle" or any(ev.kind == "closed" for ev in events))
            if self.tracker.new_peak:
                emap = r.error_map[t] if r.error_map is not None else np.zeros(r.frames.shape[1:3], np.float32)
                self.peak = (np.array(r.frames[t]), np.array(emap))
            for ev in events:
                self.persist(ev, store)
        self.windows_scored += 1
        self.frames_scored += len(r.score)
        self.last_score = float(r.score[-1])
        self.last_warm = bool(r.warm[-1])
        self.last_frame = int(r.indices[-1])
        self.last_frame_wall_s = float(r.wall_s[-1])
        self.last_latency_s = now - float(r.wall_s[-1])
        self.scored_times.append((now, len(r.score)))
        self.bundle = bundle
        self.latest = np.array(r.frames[-1])  # a copy: the batch's arrays can go
        if self.event_id is not None:
            store.touch(self.event_id, self.last_frame_wall_s)
        if self.notify is not None:
            if self.event_id is not None and self.open_event is not None:
                self.notify.event("tick", self._event_info(self.open_event), self.snapshot, self.last_frame_wall_s)
            if self.last_warm:
                self.notify.score(self.name, self.last_score, self.last_frame_wall_s)
        if self.trace_due is not None and self.last_frame_wall_s >= self.trace_due[2]:
            due, self.trace_due = self.trace_due, None
            try:
                self.write_trace(store, *due)
            except EventStoreError:  # pruned meanwhile (max_events): its close-time trace went with it
                logger.info("camera %s: event %d is gone; its trace is not completed", self.name, due[0])

    def write_trace(self, store: EventStore, event_id: int, start_s: float, end_s: float = math.inf) -> None:
        """Store the event's score trace: this camera's scores from `start_s` to `end_s`, with the threshold."""
        store.put_trace(event_id, self.history.between(start_s, end_s), self.tracker.threshold)

    def latest_jpeg(self) -> bytes | None:
        """JPEG of the newest scored frame (what the model saw), enlarged to LIVE_MIN_SIDE; None before one."""
        if self.latest is None:
            return None
        k = -(-LIVE_MIN_SIDE // min(self.latest.shape[:2]))
        buf = io.BytesIO()
        Image.fromarray(self.latest.repeat(k, axis=0).repeat(k, axis=1)).save(buf, format="JPEG", quality=80)
        return buf.getvalue()

    def close(self, store: EventStore, reason: str) -> None:
        """Close an open alert now (camera removed, scorer stopped)."""
        for ev in self.tracker.close(time.time(), reason=reason):
            self.persist(ev, store)

    def snapshot(self) -> bytes | None:
        """JPEG of the peak frame with its block evidence (see render_evidence_snapshot), or None before a peak."""
        if self.peak is None:
            return None
        rgb, emap = self.peak
        peak = self.tracker.peak  # (score, frame, wall time) of the frame kept in self.peak
        score, wall = (peak[0], peak[2]) if peak is not None else (self.last_score, self.last_frame_wall_s)
        if emap.shape != rgb.shape[:2]:  # the scorer's maps match its frames; never lose an alert over a size
            h, w = rgb.shape[:2]  # nearest resampling onto the frame
            emap = emap[np.arange(h) * emap.shape[0] // h][:, np.arange(w) * emap.shape[1] // w]
        side = math.gcd(*rgb.shape[:2])
        block = max(d for d in range(1, max(1, min(self.block, side)) + 1) if side % d == 0)
        return render_evidence_snapshot(
            rgb, emap, block=block, score=score if score is not None else 0.0, camera=self.name,
            when_s=wall if wall is not None else time.time(), threshold=self.tracker.threshold,
        )

    def _event_info(self, ev: AlertEvent, label: str | None = None, end_s: float | None = None) -> EventInfo:
        """What a notification says about the current event (`ev`: the tracker's latest event of it)."""
        return EventInfo(self.event_id, self.name, ev.start_s, ev.peak_score, ev.peak_s, self.tracker.threshold,
                         end_s, ev.reason or None, label, has_snapshot=self.peak is not None)

    def persist(self, ev: AlertEvent, store: EventStore) -> None:
        """Write a tracker event to the store: open an event (with snapshot), raise its peak, or close it."""
        if ev.kind == "opened":
            snap = self.snapshot()
            self.event_id = store.open_event(self.name, ev.start_s, ev.peak_score, ev.peak_frame, ev.peak_s, snapshot=snap)
            self.events_opened += 1
            self.open_event = ev
            if self.notify is not None:
                self.notify.event("opened", self._event_info(ev), lambda: snap, ev.peak_s)
            self.write_trace(store, self.event_id, ev.start_s - TRACE_BEFORE_S)
            logger.warning("camera %s: anomaly alert opened (event %d, score %.3f)", self.name, self.event_id, ev.peak_score)
        elif ev.kind == "peak" and self.event_id is not None:
            snap = self.snapshot()
            store.update_peak(self.event_id, ev.peak_score, ev.peak_frame, ev.peak_s, snapshot=snap)
            self.open_event = ev
            if self.notify is not None:
                self.notify.event("peak", self._event_info(ev), lambda: snap, ev.peak_s)
        elif ev.kind == "closed" and self.event_id is not None:
            end = ev.end_s if ev.end_s is not None else time.time()
            frames = self.clip.take() if self.clip is not None else None
            if frames is not None and self.clips is not None:
                self.clips.begin(self.event_id)  # before the close: a label meanwhile answers "pending"
            store.close_event(self.event_id, end, ev.reason)
            if self.notify is not None:
                stored = store.get_event(self.event_id)
                info = self._event_info(ev, stored.label if stored else None, end)
                self.notify.event("closed", info, self.snapshot, end)
            if frames is not None and self.clips is not None:
                self.clips.save(self.event_id, self.name, frames, self.fps, store)
            self.write_trace(store, self.event_id, ev.start_s - TRACE_BEFORE_S)
            self.trace_due = (self.event_id, ev.start_s - TRACE_BEFORE_S, end + TRACE_AFTER_S)
            # a warning like "opened": Ray's workers show WARNING and above by default
            logger.warning("camera %s: anomaly alert closed (event %d, %.1f s, peak score %.3f, reason %s)",
                           self.name, self.event_id, end - ev.start_s, ev.peak_score, ev.reason)
            self.event_id = None
            self.peak = None
            self.open_event = None
