"""What the fleet is doing: per-camera status rows, health, and one Prometheus exposition from every actor.

Each answer asks the actors (with timeouts: a dead or restarting actor stands as an exception, never a hang) and
merges the camera actor's view (decoding) with its scorer's view (scores, alerts, drops); /metrics fills the fleet's
`FleetMetrics` with totals synced from the actors' counters plus the histograms they ship (streaming/prometheus.py).
No HTTP here; streaming/app.py serves these.
"""
from __future__ import annotations

import time
from typing import Any

import ray
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from streaming.credentials import scrub_url
from streaming.fleet import CALL_TIMEOUT_S, HEALTH_TIMEOUT_S, Fleet
from streaming.prometheus import CAMERA_STATES

ACTOR_FAMILIES = (  # histograms observed inside the actors; the app's own copies stay out of /metrics
    "vad_decode_latency_seconds",
    "vad_score_latency_seconds",
    "vad_scorer_batch_size",
    "vad_scorer_batch_duration_seconds",
    "vad_scorer_loaded_bundles",
    "vad_camera_bundle",
)
def gather(refs: dict[str, Any], timeout_s: float = CALL_TIMEOUT_S) -> dict[str, Any]:
    """ray.get each ref with a timeout; an exception object stands in for a dead or hung actor."""
    out: dict[str, Any] = {}
    deadline = time.monotonic() + timeout_s
    for key, ref in refs.items():
        try:
            out[key] = ray.get(ref, timeout=max(0.1, deadline - time.monotonic()))
        except Exception as exc:  # noqa: BLE001
            out[key] = exc
    return out


def scorer_stats(fleet: Fleet) -> dict[str, Any]:
    """`stats()` of every scorer actor by device name; an exception object for one that did not answer."""
    return gather({name: a.stats.remote() for name, a in fleet.scorers})


def camera_stats(fleet: Fleet) -> dict[str, Any]:
    """`stats()` of every camera actor by camera name; an exception object for one that did not answer."""
    actors = fleet.running_actors()
    return gather({n: a.stats.remote() for n, a in actors.items()})


def camera_rows(fleet: Fleet, names: list[str] | None = None) -> list[dict[str, Any]]:
    """One status row per camera (all, or `names`), as GET /cameras shows it: the camera actor's and its scorer's view."""
    scorers = scorer_stats(fleet)
    cams = camera_stats(fleet)
    out = []
    items = fleet.placements(names)
    for name, cfg, i in items:
        c = cams.get(name)
        sc = scorers.get(fleet.scorers[i][0])
        s = sc["cameras"].get(name, {}) if isinstance(sc, dict) else {}
        alive = isinstance(c, dict)
        entry: dict[str, Any] = {
            "name": name,
            "url": scrub_url(cfg.url),
            "actor": fleet.actor_names.get(name),
            "source": fleet.source(name),
            "namespace": fleet.cfg.namespace,
            "scorer": fleet.scorers[i][0],
            "bundle": sc.get("camera_bundles", {}).get(name) if isinstance(sc, dict) else None,
            "actor_alive": alive,
            "state": c["state"] if alive else "error",
            "fps_target": cfg.fps,
            "fps_in": c["fps_in"] if alive else 0.0,
            "fps_scored": s.get("fps_scored", 0.0),
            "lag_s": s.get("lag_s"),
            "latency_s": s.get("latency_s"),
            "frames_decoded": c["frames_decoded"] if alive else None,
            "frames_scored": s.get("frames_scored", 0),
            "windows_scored": s.get("windows_scored", 0),
            "windows_made": (c["windows_emitted"] + c["windows_dropped"]) if alive else None,  # by the ring buffer
            "windows_dropped": (c["windows_dropped"] if alive else 0) + s.get("windows_dropped", 0),
            "frames_dropped": (c["frames_dropped"] if alive else 0) + s.get("frames_dropped", 0),
            "corrupt_frames": c["corrupt_frames"] if alive else None,
            "reconnects": c["reconnects"] if alive else None,
            "retry_in_s": c.get("retry_in_s") if alive else None,
            "last_score": s.get("last_score"),
            "warm": s.get("warm", False),
            "warming_up": not s.get("warm", False),
            "alert_open": s.get("alert_open", False),
            # the threshold in force, where it came from, and the false-alert rate the calibration footage shows at it
            "threshold": sc.get("camera_thresholds", {}).get(name) if isinstance(sc, dict) else None,
            "event_id": s.get("event_id"),
            "events_opened": s.get("events_opened", 0),
            "queue_depth": s.get("queue_depth", 0),
            "last_error": (c["last_error"] or c.get("last_scorer_error")) if alive else scrub_url(str(c))[:300],
            "node_ip": c.get("node_ip") if alive else None,
            "node_id": c.get("node_id") if alive else None,
            "pid": c.get("pid") if alive else None,
        }
        out.append(entry)
    return out


def health(fleet: Fleet) -> tuple[bool, dict[str, Any]]:
    """(ok, body) for /healthz: every actor pinged with a short timeout; the dead ones named, and a failing state file."""
    cams = fleet.running_actors()
    pings = gather({f"scorer:{n}": a.ping.remote() for n, a in fleet.scorers}
                   | {f"camera:{n}": a.ping.remote() for n, a in cams.items()}, timeout_s=HEALTH_TIMEOUT_S)
    dead = {k: scrub_url(f"{type(v).__name__}: {v}")[:300] for k, v in pings.items() if isinstance(v, Exception)}
    body = {"ok": not dead, "scorers": len(fleet.scorers), "cameras": len(cams), "dead": dead}
    return not dead, body | ({"state_error": fleet.state_error} if fleet.state_error else {})


def render_metrics(fleet: Fleet) -> tuple[bytes, str]:
    """Pull totals and histograms from every actor into one Prometheus exposition."""
    cams = fleet.running_actors()
    fam_refs = {f"scorer:{n}": a.metric_families.remote() for n, a in fleet.scorers}
    fam_refs |= {f"camera:{n}": a.metric_families.remote() for n, a in cams.items()}
    families = gather(fam_refs)
    status = {s["name"]: s for s in camera_rows(fleet, sorted(cams))}
    scorers = scorer_stats(fleet)
    fm = fleet.metrics
    with fm.lock:
        m = fm.metrics
        for name, s in status.items():
            cm = m.camera(name)
            cm.set_state(s["state"] if s["state"] in CAMERA_STATES else "error")
            totals = {"frames_scored": s["frames_scored"], "frames_dropped": s["frames_dropped"]}
            if s["actor_alive"]:
                totals |= {"frames_decoded": s["frames_decoded"], "corrupt_frames": s["corrupt_frames"],
                           "reconnects": s["reconnects"]}
            cm.sync_totals(**totals)
            if s["last_score"] is not None:
                cm.observe_score(s["last_score"], s["warm"])
            cm.alert_active.set(1.0 if s["alert_open"] else 0.0)
            opened = s["events_opened"] - fm.alerts_seen.get(name, 0)
            if opened > 0:  # alerts that opened (and maybe closed) since the last scrape
                cm.alerts.inc(opened)
            fm.alerts_seen[name] = s["events_opened"]
            cm.queue_depth.set(s["queue_depth"])
            if s["lag_s"] is not None:
                cm.lag.set(s["lag_s"])
        for name, st in scorers.items():
            sm = m.scorer(name)
            ok = isinstance(st, dict)
            sm.up.set(1.0 if ok and st["alive"] else 0.0)
            if ok:
                sm.set_busy(st["busy_ratio"])
                sm.queue_depth.set(st["queue_depth"])
        fm.collector.update("app", [f for f in m.snapshot() if f.name not in ACTOR_FAMILIES])
        for source, fams in families.items():
            if isinstance(fams, list):
                fm.collector.update(source, fams)
        registry = CollectorRegistry()
        registry.register(fm.collector)
        return generate_latest(registry), CONTENT_TYPE_LATEST
