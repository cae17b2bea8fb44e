"""Recordings made through the control plane: POST /cameras/{name}/recordings, GET /recordings[/{id}].

Each recording runs a `streaming.recorder.Recorder` in its own Ray actor (`RecordingActor`), not in the camera's
actor: encoding full-resolution frames then competes with neither the camera's decoding nor scoring for a Python
process, a failing recording cannot take the camera down, and the camera actor (and its ingest loop) stays as it
is. The cost is a second connection to the camera while it records (most cameras allow several). The actor is
pinned to the control plane's node, so the files land under `recordings.root` on the disk the limits are checked
on, and owned by the control plane's replica (it stops with the service; the open segment is closed first).

A recording writes into `<recordings.root>/<camera>/<id>/`, so `vad train --data <recordings.root>/<camera>`
trains on every recording of that camera. `Recordings` keeps the table and polls running actors for progress; a
finished actor is asked for its last progress and released. At start it lists the recordings of earlier runs from
their manifests; one cut short by a service stop (no clean-up call under SIGTERM) gets its open segment rescued
(streaming/recording_dir.py) and is marked "stopped".
"""
from __future__ import annotations

import logging
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
from pydantic import Field
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from offline.config import Strict
from streaming.config import CameraConfig, RecordingsConfig
from streaming.credentials import scrub_url
from streaming.disk_limit import DiskLimit
from streaming.ingest import IngestSettings
from streaming.recorder import ACTIVE, RecordSettings, Recorder
from streaming.recording_dir import MANIFEST, RecordingDirError, open_dir

logger = logging.getLogger(__name__)

MAX_MINUTES = 24 * 60  # a day of footage is plenty for one scene's normal; more: several recordings
POLL_S = 2.0
LIMIT_NAMES = ("recordings.max_bytes", "recordings.min_free_bytes")


class RecordingRequest(Strict):
    """Body of POST /cameras/{name}/recordings."""

    minutes: float = Field(gt=0, le=MAX_MINUTES, description="minutes of footage to record")
    fps: float | None = Field(None, gt=0, le=60, description="frames kept per second (default: the camera's fps)")
    max_side: int | None = Field(None, ge=16, le=16384, description="cap on the frames' longest side (default: none)")


class RecordingActor:
    """Ray actor running one Recorder in a thread; `progress()` reads it, `stop()` ends it (open segment closed)."""

    def __init__(self, camera: dict, url: str, out: str, requested_s: float, settings: dict, limit: dict,
                 max_reconnects: int):
        cam = CameraConfig.model_validate(camera)
        ingest = IngestSettings.for_camera(cam, size=0, window=1)  # size and windows are the recorder's to set
        ingest.max_reconnects = max_reconnects
        self.recorder = Recorder(url, Path(out), requested_s, settings=RecordSettings(**settings),
                                 limit=DiskLimit(**limit), ingest=ingest, camera=cam.name,
                                 credentials_env=cam.env_prefix)
        self._thread = threading.Thread(target=self.recorder.run, name=f"record-{cam.name}", daemon=True)
        self._thread.start()

    def progress(self) -> dict[str, Any]:
        """The recorder's progress (state, seconds recorded of requested, segments, bytes, scrubbed error)."""
        return self.recorder.progress()

    def stop(self, timeout_s: float = 15.0) -> dict[str, Any]:
        """Stop and wait for the open segment to be closed; the final progress."""
        self.recorder.stop()
        self._thread.join(timeout_s)
        return self.recorder.progress()


@dataclass
class Entry:
    """One recording as the control plane knows it."""

    id: str
    camera: str
    dir: Path
    requested_s: float
    created_s: float
    actor: Any = None
    last: dict[str, Any] = field(default_factory=dict)

    def view(self) -> dict[str, Any]:
        """The API's answer: id, camera, state and the recorder's progress (queued until its actor reports)."""
        base = {"state": "queued", "recorded_s": 0.0, "progress": 0.0, "segments": 0, "bytes": 0, "error": None}
        return {**base, **self.last, "id": self.id, "camera": self.camera, "dir": str(self.dir),
                "requested_s": self.requested_s, "created_s": self.created_s}

    @property
    def active(self) -> bool:
        return self.last.get("state", "queued") in ACTIVE


class Recordings:
    """The control plane's recordings: start one per camera at a time, report progress, stop all at shutdown."""

    def __init__(self, cfg: RecordingsConfig, namespace: str):
        if cfg.root is None:
            raise ValueError("recordings.root must be resolved (streaming.config.resolve_paths) before use")
        self.cfg = cfg
        self.namespace = namespace
        self._lock = threading.Lock()
        self._entries: dict[str, Entry] = {}
        self._stop = threading.Event()
        threading.Thread(target=self._reap, name="recordings-reap", daemon=True).start()

    def _load_past(self) -> None:
        for entry in past_recordings(Path(self.cfg.root)):
            with self._lock:
                self._entries.setdefault(entry.id, entry)

    def limit(self) -> DiskLimit:
        """The disk limit every API recording shares: `max_bytes` over the whole root, `min_free_bytes` on its disk."""
        return DiskLimit(self.cfg.root, self.cfg.max_bytes, self.cfg.min_free_bytes, names=LIMIT_NAMES)

    def start(self, cam: CameraConfig, url: str, req: RecordingRequest) -> dict[str, Any]:
        """Start recording camera `cam` from `url` (its confined file path for a file camera). Raises KeyError naming
        the running recording when the camera already records, DiskLimitError (naming the limit) without room."""
        with self._lock:
            for entry in self._entries.values():
                if entry.camera == cam.name and entry.active:
                    self._refresh(entry)
                    if entry.active:
                        raise KeyError(entry.id)
            self.limit().start()
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
            rid = f"{cam.name}-{stamp}-{secrets.token_hex(2)}"
            out = Path(self.cfg.root) / cam.name / rid
            requested_s = req.minutes * 60
            settings = {"fps": req.fps or cam.fps, "max_side": req.max_side or 0,
                        "segment_s": self.cfg.segment_minutes * 60, "crf": self.cfg.crf,
                        "names": {"fps": "body.fps", "max_side": "body.max_side"}}
            limit = {"root": str(self.cfg.root), "max_bytes": self.cfg.max_bytes,
                     "min_free_bytes": self.cfg.min_free_bytes, "names": LIMIT_NAMES}
            here = ray.get_runtime_context().get_node_id()
            actor = ray.remote(RecordingActor).options(
                name=f"recording:{rid}", namespace=self.namespace, num_cpus=self.cfg.num_cpus, max_concurrency=4,
                scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False),
            ).remote(cam.model_dump(), url, str(out), requested_s, settings, limit, self.cfg.max_reconnects)
            entry = Entry(rid, cam.name, out, round(requested_s, 3), time.time(), actor)
            self._entries[rid] = entry
        logger.info("recording %s of camera %s (%s) started: %.1f s into %s", rid, cam.name, scrub_url(cam.url),
                    requested_s, out)
        return entry.view()

    def get(self, rid: str) -> dict[str, Any] | None:
        """One recording's view (progress fetched now), None when unknown."""
        entry = self._entries.get(rid)
        if entry is None:
            return None
        self._refresh(entry)
        return entry.view()

    def list(self) -> list[dict[str, Any]]:
        """Every recording of this service run, newest first."""
        entries = sorted(self._entries.values(), key=lambda e: e.created_s, reverse=True)
        for entry in entries:
            self._refresh(entry)
        return [e.view() for e in entries]

    def _refresh(self, entry: Entry, timeout_s: float = POLL_S) -> None:
        """Fetch a running recording's progress; a finished one's actor is released, a dead one is failed."""
        actor = entry.actor
        if actor is None:
            return
        try:
            entry.last = ray.get(actor.progress.remote(), timeout=timeout_s)
        except ray.exceptions.GetTimeoutError:
            return  # not started yet (queued for resources) or busy: keep the last answer
        except Exception as exc:  # noqa: BLE001 - the actor died (node lost, killed)
            reason = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}" if str(exc) else type(exc).__name__
            entry.last = {**entry.last, "state": "failed", "error": scrub_url(f"the recording actor died ({reason})")}
        if not entry.active:
            entry.actor = None
            ray.kill(actor)

    def _reap(self) -> None:
        """List earlier runs' recordings, then release the actors of finished recordings even when nobody asks."""
        try:
            self._load_past()
        except Exception:  # noqa: BLE001 - a damaged old recording must not stop new ones
            logger.exception("recordings under %s: listing earlier recordings failed", self.cfg.root)
        while not self._stop.wait(POLL_S):
            for entry in list(self._entries.values()):
                if entry.actor is not None:
                    try:
                        self._refresh(entry)
                    except Exception:  # noqa: BLE001 - try again next round
                        logger.exception("recording %s: progress poll failed", entry.id)

    def shutdown(self, timeout_s: float = 20.0) -> None:
        """Stop every running recording (each closes its open segment) and release the actors."""
        self._stop.set()
        for entry in list(self._entries.values()):
            actor, entry.actor = entry.actor, None
            if actor is None:
                continue
            try:
                entry.last = ray.get(actor.stop.remote(), timeout=timeout_s)
            except Exception:  # noqa: BLE001 - best effort: the next vad record into that directory rescues it
                logger.warning("recording %s did not stop cleanly", entry.id)
            ray.kill(actor)


def past_recordings(root: Path) -> list[Entry]:
    """The recordings under `root` (`<camera>/<id>/recording.json`) as finished entries; one whose manifest still
    says it is recording (the service stopped under it) is reconciled (its partial file rescued) and marked stopped."""
    entries = []
    for manifest in sorted(root.glob(f"*/*/{MANIFEST}")):
        out = manifest.parent
        try:
            rec = open_dir(out, None, None)
            if rec.state in ACTIVE:
                rec.state, rec.error = "stopped", "the service stopped during the recording"
                rec.save()
        except (RecordingDirError, OSError, ValueError) as exc:
            logger.warning("recording %s not listed: %s", out, exc)
            continue
        requested = rec.requested_s or rec.seconds
        entry = Entry(out.name, out.parent.name, out, round(requested, 3), rec.started_s or manifest.stat().st_mtime)
        entry.last = {"state": rec.state, "recorded_s": round(rec.seconds, 3), "segments": len(rec.segments),
                      "progress": round(min(1.0, rec.seconds / requested), 4) if requested else 1.0,
                      "bytes": rec.bytes, "error": scrub_url(rec.error) if rec.error else None, "fps": rec.fps,
                      "max_side": rec.max_side, "source": scrub_url(rec.source)}
        entries.append(entry)
    return entries
