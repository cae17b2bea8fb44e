"""The notifier of one scorer: turns alert events and camera states into messages for each sink's outbox.

Called from the scoring thread (streaming/camera_alerts.py, under the scorer's lock): it only builds messages
(streaming/notify/messages.py) and stores them (streaming/notify/outbox.py), a few milliseconds; each sink's
delivery thread (streaming/notify/delivery.py) does the network I/O. Nothing here raises into scoring: a failed
store is logged once and counted.

Per sink: a camera filter, and `min_peak_score`: an event is announced (type new, with its snapshot) once its peak
reached it, then updated (at most every `update_interval_s`, with a new snapshot when the peak rose) and ended;
an event that never reached it is never sent. Webhooks get event messages and snapshots; MQTT brokers also the
cameras' anomaly / score / state / availability topics and, with `discovery: true`, Home Assistant discovery.
"""
from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streaming.notify import messages as m
from streaming.notify.delivery import Delivery
from streaming.notify.outbox import Outbox
from streaming.notify.settings import MqttSinkConfig, NotifyConfig

logger = logging.getLogger(__name__)


@dataclass
class _Announced:
    last_sent_s: float  # the last message about the event
    peak_sent: float  # the peak score of the last snapshot sent


@dataclass
class Sink:
    """One configured sink at this scorer: its outbox, its delivery thread, which events it has announced."""

    cfg: Any
    outbox: Outbox
    delivery: Delivery
    metrics: Any = None
    announced: dict[int, _Announced] = field(default_factory=dict)
    store_failed: bool = False

    @property
    def mqtt(self) -> bool:
        return isinstance(self.cfg, MqttSinkConfig)

    @property
    def retain(self) -> bool:
        """Whether state topics are retained (MQTT's `retain`; a webhook has none)."""
        return self.mqtt and self.cfg.retain

    def put(self, msgs: list[m.Message], now_s: float) -> None:
        """Store messages for delivery (a webhook only takes events and snapshots); never raises."""
        try:
            for msg in msgs:
                if self.mqtt or msg.kind == "event" or (msg.kind == "snapshot" and self.cfg.snapshot):
                    _, dropped = self.outbox.put(msg, now_s)
                    if dropped:
                        logger.warning("notify sink %s: outbox full (%d), %d oldest message(s) dropped",
                                       self.cfg.name, self.outbox.max_messages, dropped)
                        if self.metrics is not None:
                            self.metrics.dropped.inc(dropped)
            self.store_failed = False
        except Exception as exc:  # noqa: BLE001 - a full disk must not stop scoring
            if self.metrics is not None:
                self.metrics.failures.inc()
            if not self.store_failed:
                logger.error("notify sink %s: cannot store messages in the outbox: %s", self.cfg.name, exc)
            self.store_failed = True
            return
        self.delivery.wake()


class Notifier:
    """Every sink of `cfg` for the scorer `origin`, with outboxes in the events database `db_path`.

    Args:
        metrics: a VadMetrics (streaming/prometheus.py) whose `notify_sink(name, origin)` children are updated, or
            None.
        clock: wall time (tests).
    """

    def __init__(self, cfg: NotifyConfig, db_path: str | Path, origin: str, metrics: Any = None,
                 clock: Callable[[], float] = time.time, start: bool = True):
        from streaming.notify.mqtt_sink import MqttTransport
        from streaming.notify.webhook_sink import WebhookTransport

        self.cfg, self.origin, self.clock = cfg, origin, clock
        self.cameras: set[str] = set()
        self._cameras_lock = threading.Lock()  # the delivery threads read the cameras (birth) while scoring adds
        self._score_sent: dict[str, float] = {}
        self.sinks: list[Sink] = []
        for sc in cfg.sinks:
            outbox = Outbox(db_path, sc.name, origin, sc.max_outbox)
            sm = None if metrics is None else metrics.notify_sink(sc.name, origin)
            if isinstance(sc, MqttSinkConfig):
                client_id = re.sub(r"[^A-Za-z0-9_-]", "-", f"vad-{sc.topic_prefix}-{sc.name}-{origin}")[:64]
                transport = MqttTransport(sc, client_id, origin, birth=self._birth(sc))
            else:
                transport = WebhookTransport(sc, origin)
            sink = Sink(sc, outbox, Delivery(sc.name, outbox, transport, sm), sm)
            self.sinks.append(sink)
            if start:
                sink.delivery.start()

    def _birth(self, sc: MqttSinkConfig) -> Callable[[], list[m.Message]]:
        def birth() -> list[m.Message]:
            if not sc.discovery:
                return []
            with self._cameras_lock:
                cameras = sorted(self.cameras)
            return [d for cam in cameras if sc.wants(cam)
                    for d in m.discovery_messages(cam, sc.topic_prefix, sc.discovery_prefix)]
        return birth

    def _sinks(self, camera: str) -> list[Sink]:
        return [s for s in self.sinks if s.cfg.wants(camera)]

    # ------------------------------------------------------------------------------------------- cameras
    def camera_seen(self, camera: str) -> None:
        """A camera this scorer scores: announce its entities (discovery) the first time."""
        with self._cameras_lock:
            if camera in self.cameras:
                return
            self.cameras.add(camera)
        now = self.clock()
        for s in self._sinks(camera):
            if s.mqtt and s.cfg.discovery:
                s.put(m.discovery_messages(camera, s.cfg.topic_prefix, s.cfg.discovery_prefix), now)
            if s.mqtt:
                s.put([m.camera_value("anomaly", camera, "OFF", s.retain)], now)

    def camera_state(self, camera: str, state: str) -> None:
        """The camera's ingest state changed (streaming, reconnecting, ...)."""
        self.camera_seen(camera)
        now = self.clock()
        for s in self._sinks(camera):
            s.put(m.state_messages(camera, state, s.retain), now)

    def camera_removed(self, camera: str) -> None:
        """The camera left the service: offline, and its Home Assistant entities removed."""
        now = self.clock()
        for s in self._sinks(camera):
            s.put(m.state_messages(camera, "stopped", s.retain), now)
            if s.mqtt and s.cfg.discovery:
                s.put(m.discovery_removal(camera, s.cfg.topic_prefix, s.cfg.discovery_prefix), now)
        with self._cameras_lock:
            self.cameras.discard(camera)
        self._score_sent.pop(camera, None)

    def score(self, camera: str, score: float, at_s: float) -> None:
        """The camera's latest score (of the frame at `at_s`): sent at most every `score_interval_s` of stream."""
        if abs(at_s - self._score_sent.get(camera, -1e18)) < self.cfg.score_interval_s:
            return
        self._score_sent[camera] = at_s
        now = self.clock()
        self.camera_seen(camera)
        for s in self._sinks(camera):
            s.put([m.score_message(camera, score, s.retain)], now)

    # -------------------------------------------------------------------------------------------- events
    def resumed(self, ev: m.EventInfo) -> None:
        """A restarted scorer adopted an open event: sinks it reached count it announced (no second "new")."""
        for s in self._sinks(ev.camera):
            if _reached(s, ev.peak_score):
                s.announced[ev.id] = _Announced(ev.peak_s, ev.peak_score)

    def ended_after_restart(self, ev: m.EventInfo) -> None:
        """An event a previous run left open was closed at this start: its end goes to the sinks it reached."""
        for s in self._sinks(ev.camera):
            s.announced.pop(ev.id, None)
            if _reached(s, ev.peak_score):
                s.put(m.event_messages("closed", ev, None, ev.end_s, self.cfg.base_url, s.retain), self.clock())

    def event(self, kind: str, ev: m.EventInfo, snapshot: Callable[[], bytes | None], at_s: float) -> None:
        """An event opened ("opened"), raised its peak ("peak"), is still open ("tick") or closed ("closed"), as of
        the frame at `at_s` (updates are rate-limited in stream time).

        `snapshot` gives the event's current JPEG; called only when a message will carry it."""
        now = at_s
        stored_s = self.clock()
        jpeg: list[bytes | None] = []

        def shot() -> bytes | None:
            if not jpeg:
                jpeg.append(snapshot())
            return jpeg[0]

        for s in self._sinks(ev.camera):
            seen = s.announced.get(ev.id)
            if seen is None:
                if kind == "closed" or not _reached(s, ev.peak_score):
                    continue
                s.announced[ev.id] = _Announced(now, ev.peak_score)
                s.put(m.event_messages("opened", ev, shot(), now, self.cfg.base_url, s.retain), stored_s)
            elif kind == "closed":
                del s.announced[ev.id]
                new_peak = ev.peak_score > seen.peak_sent
                s.put(m.event_messages("closed", ev, shot() if new_peak else None, now, self.cfg.base_url,
                                       s.retain), stored_s)
            elif now - seen.last_sent_s >= self.cfg.update_interval_s:
                new_peak = ev.peak_score > seen.peak_sent
                seen.last_sent_s = now
                if new_peak:
                    seen.peak_sent = ev.peak_score
                s.put(m.event_messages("update", ev, shot() if new_peak else None, now, self.cfg.base_url,
                                       s.retain), stored_s)

    # ----------------------------------------------------------------------------------------- lifecycle
    def status(self) -> dict[str, dict[str, Any]]:
        """Per sink: state (up, down, slow, refusing), its reason, outbox depth, messages sent, failures."""
        return {s.cfg.name: {"type": s.cfg.type, "state": s.delivery.state, "reason": s.delivery.reason,
                             "outbox": s.outbox.depth(), "sent": s.delivery.sent, "failures": s.delivery.failures}
                for s in self.sinks}

    def stop(self, timeout_s: float = 5.0, drain_s: float = 2.0) -> None:
        """Stop delivering, after up to `drain_s` for sinks that are up to empty their outbox (the alerts just
        closed); what is still undelivered waits in the outbox for the next start."""
        deadline = time.monotonic() + drain_s
        while time.monotonic() < deadline and any(s.delivery.state == "up" and s.outbox.depth() for s in self.sinks):
            time.sleep(0.05)
        for s in self.sinks:
            s.delivery.stop(timeout_s)
            s.outbox.close()


def _reached(sink: Sink, peak: float) -> bool:
    return sink.cfg.min_peak_score is None or peak >= sink.cfg.min_peak_score
