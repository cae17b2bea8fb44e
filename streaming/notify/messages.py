"""Notification messages, built by pure functions (no I/O, no clock, no config objects).

Topics are relative to a sink's prefix (`events`, `<camera>/snapshot`, ...); a discovery message's topic is
absolute (Home Assistant's discovery prefix). A JSON body is a dict: the outbox adds `seq` (and `origin`) when it
stores it, so a resent message carries the sequence number it was first given. `key` marks state messages whose
newer value replaces an older one not yet delivered (only the latest state matters).

Topics under <prefix> (Frigate's conventions):
    events                  JSON per event: type new / update / end (schema in README, "Get a notification on your phone")
    <camera>/snapshot       the event's JPEG (the peak frame with its evidence)
    <camera>/anomaly        ON / OFF while an alert is open
    <camera>/score          the latest score, rate-limited ("0.5123")
    <camera>/state          the camera's ingest state (streaming, reconnecting, ...)
    <camera>/available      online / offline (offline while the camera is not streaming)
    available               online / offline: the service itself (the MQTT last will)
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

Kind = Literal["event", "snapshot", "anomaly", "score", "state", "available", "discovery"]
EVENT_TYPES = {"opened": "new", "update": "update", "closed": "end"}
ORIGIN = {"name": "vad-stream"}  # Home Assistant shows who published an entity


@dataclass(frozen=True)
class Message:
    """One message for a sink: `body` JSON (a dict) or raw bytes, `meta` as MQTT user properties / X-VAD- headers."""

    kind: Kind
    topic: str
    body: dict[str, Any] | bytes
    retain: bool = False
    key: str | None = None
    absolute: bool = False  # topic not under the sink's prefix (discovery)
    meta: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class EventInfo:
    """What a message says about one alert event (times in Unix seconds; end_s None while open)."""

    id: int
    camera: str
    start_s: float
    peak_score: float
    peak_s: float
    threshold: float | None  # None: not known (an event closed after a restart, without its trace)
    end_s: float | None = None
    reason: str | None = None
    label: str | None = None
    has_snapshot: bool = False


def links(event_id: int, base_url: str | None) -> dict[str, str]:
    """The event's page, snapshot and clip, absolute under `base_url` (else paths on the service)."""
    base = base_url or ""
    return {"event": f"{base}/ui/events/{event_id}", "snapshot": f"{base}/events/{event_id}/snapshot",
            "clip": f"{base}/events/{event_id}/clip", "api": f"{base}/events/{event_id}"}


def event_body(kind: str, ev: EventInfo, now_s: float, base_url: str | None) -> dict[str, Any]:
    """The JSON of an event message as of the frame at `now_s`; `kind` "opened", "update" or "closed" (type new /
    update / end)."""
    end = ev.end_s if ev.end_s is not None else now_s
    return {
        "type": EVENT_TYPES[kind],
        "event_id": ev.id,
        "camera": ev.camera,
        "start_s": round(ev.start_s, 3),
        "end_s": None if ev.end_s is None else round(ev.end_s, 3),
        "duration_s": round(max(0.0, end - ev.start_s), 3),
        "peak_score": round(ev.peak_score, 5),
        "peak_s": round(ev.peak_s, 3),
        "threshold": None if ev.threshold is None else round(ev.threshold, 5),
        "label": ev.label,
        "reason": ev.reason,
        "has_snapshot": ev.has_snapshot,
        "links": links(ev.id, base_url),
        "at_s": round(now_s, 3),
    }


def event_messages(kind: str, ev: EventInfo, snapshot: bytes | None, now_s: float, base_url: str | None,
                   retain: bool) -> list[Message]:
    """An event message and, when given, its snapshot (after it, so a receiver has the event first), plus the
    camera's anomaly state at an open or a close."""
    info = EventInfo(**{**ev.__dict__, "has_snapshot": ev.has_snapshot or snapshot is not None})
    out = [Message("event", "events", event_body(kind, info, now_s, base_url), meta={"event_id": str(ev.id)})]
    if snapshot is not None:
        out.append(Message("snapshot", f"{ev.camera}/snapshot", bytes(snapshot), retain=retain,
                           meta={"event_id": str(ev.id), "camera": ev.camera, "type": EVENT_TYPES[kind]}))
    if kind != "update":
        out.append(camera_value("anomaly", ev.camera, "ON" if kind == "opened" else "OFF", retain))
    return out


def camera_value(kind: Kind, camera: str, value: str, retain: bool) -> Message:
    """A camera's state topic (`anomaly`, `score`, `state`, `available`): a newer value replaces an undelivered one,
    except for `anomaly`: an alert that opened and closed while the broker was down still turns ON, then OFF (an
    automation waiting for ON must not miss it)."""
    return Message(kind, f"{camera}/{kind}", value.encode(), retain=retain,
                   key=None if kind == "anomaly" else f"{camera}/{kind}")


def score_message(camera: str, score: float, retain: bool) -> Message:
    """The camera's latest score, 4 decimals."""
    return camera_value("score", camera, f"{score:.4f}", retain)


def state_messages(camera: str, state: str, retain: bool) -> list[Message]:
    """The camera's ingest state and its availability (online exactly while streaming)."""
    return [camera_value("state", camera, state, retain),
            camera_value("available", camera, "online" if state == "streaming" else "offline", retain)]


def node_id(prefix: str) -> str:
    """Home Assistant's node id for a topic prefix (letters, digits, _ and - only)."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", prefix)


def discovery_messages(camera: str, prefix: str, discovery_prefix: str) -> list[Message]:
    """Home Assistant MQTT discovery of one camera (retained): binary_sensor anomaly, sensor score, sensor state,
    image snapshot; all on one device, available while the service and the camera both are."""
    node = node_id(prefix)
    cam = node_id(camera)
    base = f"{prefix}/{camera}"
    common = {
        "availability": [{"topic": f"{prefix}/available"}, {"topic": f"{base}/available"}],
        "availability_mode": "all",
        "device": {"identifiers": [f"{node}_{cam}"], "name": camera, "manufacturer": "vad-stream",
                   "model": "video anomaly detector"},
        "origin": dict(ORIGIN),
    }
    entities = [
        ("binary_sensor", "anomaly", {"name": "Anomaly", "state_topic": f"{base}/anomaly",
                                      "payload_on": "ON", "payload_off": "OFF"}),
        ("sensor", "score", {"name": "Anomaly score", "state_topic": f"{base}/score", "state_class": "measurement",
                             "suggested_display_precision": 3}),
        ("sensor", "state", {"name": "Stream state", "state_topic": f"{base}/state", "entity_category": "diagnostic"}),
        ("image", "snapshot", {"name": "Anomaly snapshot", "image_topic": f"{base}/snapshot",
                               "content_type": "image/jpeg"}),
    ]
    return [
        Message("discovery", f"{discovery_prefix}/{component}/{node}/{cam}_{obj}/config",
                {**spec, "unique_id": f"{node}_{cam}_{obj}", **common}, retain=True, absolute=True,
                key=f"discovery/{component}/{cam}_{obj}")
        for component, obj, spec in entities
    ]


def discovery_removal(camera: str, prefix: str, discovery_prefix: str) -> list[Message]:
    """Empty retained configs: Home Assistant removes the camera's entities (a camera removed from the service)."""
    return [Message("discovery", m.topic, b"", retain=True, absolute=True, key=m.key)
            for m in discovery_messages(camera, prefix, discovery_prefix)]
