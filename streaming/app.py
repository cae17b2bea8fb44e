"""The control plane: a Ray Serve application (FastAPI ingress) that owns the scorer and camera actors.

`serve run deploy/config.yaml` calls `build_app(args)`, which validates the args into a ServiceConfig before
any actor starts. The replica then starts one scorer actor per device and one camera actor per camera
(owned by the replica: they stop with it), and serves:

  GET  /healthz                    200 when every scorer and camera actor answers, else 503 naming the dead
  GET  /metrics                    Prometheus text (label `camera`, never the URL)
  GET  /cameras, /cameras/{name}   status: state, fps in/scored, lag, drops, reconnects, last score, alert
  POST /cameras                    add a camera (body: CameraConfig)       -> 201, 409 if the name exists
  PUT  /cameras/{name}             replace its config (restarts its decoder unless only alert settings change)
  PATCH /cameras/{name}            change some fields
  DELETE /cameras/{name}           stop and remove it (its open alert closes with reason "removed")
  GET  /events?camera=&since=&until=&min_score=&status=&limit=     events, newest first
  GET  /events/{id}, /events/{id}/snapshot (image/jpeg)
  GET  /scorers                    batching and utilisation per scorer
  GET  /bundle                     the model bundle being scored with (path, weights sha256 prefix, version)
  PUT  /bundle  {"path": "/abs/dir"}   hot-swap the bundle: every scorer loads and validates it fully, then all
                                   switch between two batches; a refused bundle (checksum mismatch, unknown
                                   version, pickled weights, missing files, other input size) is 422 naming the
                                   file and the reason, and the running bundle keeps scoring; 403 when the path
                                   (symlinks and `..` resolved) lies outside every `scorer.bundle_roots`.

Persisted: cameras added, replaced or removed and the bundle swapped through the API are saved (streaming/state.py,
`state.path`, default state.json beside events.path) and come back at the next start, unless the config's entry
changed after the API change (the later wins: the stale API change is dropped with a warning naming it). A
persisted bundle that no longer loads is logged and the config's `scorer.bundle` is used. Answers to changes say
whether the change was saved (`"persisted": true|false` with `"persist_error"`; DELETE: header `X-VAD-Persisted`),
and /healthz shows `state_error` while saving fails (the change is live, but a restart would lose it).

Every route but /healthz needs `Authorization: Bearer <token>` when a token is configured. Request errors
are 422 with one entry per bad field (`{"field": "body.fps", "message": ..., "value": ...}`).
"""


import hmac
import logging
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Literal

import ray
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import Field, ValidationError
from ray import serve

from offline.scoring.bundle import BundleError
from offline.config import Strict
from streaming import state as persisted
from streaming.camera_actor import CameraActor
from streaming.config import CameraConfig, ServiceConfig, parse_service_config, scrub
from streaming.metrics import SnapshotCollector, VadMetrics
from streaming.scorer_actor import ScorerService

logger = logging.getLogger(__name__)

ACTOR_FAMILIES = (  # histograms observed inside the actors; the app's own copies stay out of /metrics
    "vad_decode_latency_seconds",
    "vad_score_latency_seconds",
    "vad_scorer_batch_size",
    "vad_scorer_batch_duration_seconds",
)
ALERT_FIELDS = {"threshold", "min_duration_s", "hysteresis"}
CALL_TIMEOUT_S = 10.0
HEALTH_TIMEOUT_S = 2.0  # a restarting actor queues calls: answer 503 while it is away instead of waiting for it


def resolve_paths(cfg: ServiceConfig, base: Path) -> ServiceConfig:
    """Make the bundle, bundle roots, events and state paths absolute against `base` (actors may run in another
    directory); the roots and state file get their defaults (beside the bundle, beside the events database)."""
    def absolute(p: Path) -> Path:
        return p if p.is_absolute() else base / p

    scorer = cfg.scorer.model_copy(update={"bundle": absolute(cfg.scorer.bundle)})
    scorer = scorer.model_copy(update={"bundle_roots": [absolute(r) for r in cfg.scorer.bundle_roots]
                                       if cfg.scorer.bundle_roots is not None else scorer.allowed_roots()})
    events = cfg.events.model_copy(update={"path": absolute(cfg.events.path)})
    cfg = cfg.model_copy(update={"scorer": scorer, "events": events})
    return cfg.model_copy(update={"state": cfg.state.model_copy(update={"path": absolute(cfg.state_file())})})


def _devices(cfg: ServiceConfig) -> list[str]:
    if cfg.scorer.devices != "auto":
        return list(cfg.scorer.devices)
    gpus = int(ray.cluster_resources().get("GPU", 0))
    return [f"cuda:{i}" for i in range(gpus)] or ["cpu"]


class Fleet:
    """Starts, tracks and stops the scorer and camera actors; gathers their status and metrics."""

    def __init__(self, cfg: ServiceConfig):
        self.cfg = cfg
        self._lock = threading.RLock()
        self.cameras: dict[str, CameraConfig] = {}
        self.camera_actors: dict[str, Any] = {}
        self.camera_scorer: dict[str, int] = {}
        self.actor_names: dict[str, str] = {}
        self._generation = 0
        self.scorers: list[tuple[str, Any]] = []
        self.scorer_actor_names: dict[str, str] = {}
        self.bundle = str(Path(cfg.scorer.bundle))  # the active bundle; a restarted scorer is brought back to it
        self._swap_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self.state_path = Path(cfg.state_file()) if cfg.state.persist else None
        self.state_error: str | None = None  # why the last save failed; None after a good one
        merged = self._load_state()
        s = cfg.scorer
        for device in _devices(cfg):
            gpu = device.startswith("cuda")
            # max_restarts: a killed or crashed scorer comes back (same args); `_watch` re-registers its cameras
            opts: dict[str, Any] = {"max_concurrency": 8, "num_cpus": 0.1 if gpu else s.num_cpus, "max_restarts": -1}
            if gpu:
                opts["num_gpus"] = 1
            # named (unique per run) so operators and the fault suite can find it: `ray.get_actor(name, namespace)`
            opts |= {"name": f"scorer:{device}:{uuid.uuid4().hex[:8]}", "namespace": cfg.namespace}
            self.scorer_actor_names[device] = opts["name"]
            actor = ray.remote(ScorerService).options(**opts).remote(
                name=device,
                device="cuda:0" if gpu else "cpu",  # Ray gives each GPU scorer its own CUDA_VISIBLE_DEVICES
                bundle=str(s.bundle),
                events=cfg.events.model_dump(mode="json"),
                alerts=cfg.alerts.model_dump(),
                max_batch=s.max_batch,
                max_wait_ms=s.max_wait_ms,
                max_pending=s.max_pending_per_camera,
                torch_threads=s.torch_threads,
            )
            self.scorers.append((device, actor))
        self.model_input = ray.get(self.scorers[0][1].model_input.remote(), timeout=300)
        closed = ray.get(self.scorers[0][1].close_dangling.remote(), timeout=60)
        if closed:
            logger.warning("closed %d event(s) left open by a previous run", closed)
        self.metrics = VadMetrics()
        self.collector = SnapshotCollector()
        self._registry_lock = threading.Lock()
        self._alerts_seen: dict[str, int] = {}
        if merged.bundle is not None:
            self._restore_bundle(merged.bundle)
        for cam in merged.cameras:
            self.add(cam)
        self._stop = threading.Event()
        threading.Thread(target=self._watch, name="fleet-watch", daemon=True).start()

    # ------------------------------------------------------------------------------------ persisted state
    def _load_state(self) -> persisted.Merged:
        """Read the state file and merge it with the config (the later change wins); log what was kept or dropped."""
        state = persisted.State()
        if self.state_path is not None:
            state, notes = persisted.load(self.state_path)
            for note in notes:
                logger.log(note.level, "%s", note.message)
        merged = persisted.merge(self.cfg, state)
        for note in merged.notes:
            logger.log(note.level, "state file %s: %s", self.state_path, note.message)
        self.state = merged.state
        if self.state != state:
            self._save_state()
        return merged

    def _save_state(self) -> None:
        """Write the state file; a failure is logged and kept in `state_error` (the API's answers carry it: the
        change stays live but will not survive a restart)."""
        if self.state_path is None:
            return
        with self._state_lock:
            try:
                persisted.save(self.state_path, self.state)
                self.state_error = None
            except OSError as exc:
                self.state_error = f"state file {self.state_path}: cannot save ({type(exc).__name__}: {exc})"
                logger.error("%s; runtime changes will not survive a restart", self.state_error)

    def persistence(self) -> dict[str, Any]:
        """For the API's answers to changes: whether the last change was saved for the next start, and why not."""
        if self.state_path is None:
            return {"persisted": False, "persist_error": "state.persist is false"}
        return {"persisted": self.state_error is None, "persist_error": self.state_error}

    def source(self, name: str) -> Literal["config", "api"]:
        """Where a running camera's config comes from: the API when the state holds a change of it, else the config."""
        return "api" if name in self.state.api_cameras() else "config"

    def _record_camera(self, name: str, cam: CameraConfig | None) -> None:
        with self._state_lock:
            self.state = persisted.record_camera(self.state, self.cfg, name, cam, time.time())
        self._save_state()

    def _restore_bundle(self, path: str) -> None:
        """Swap to the persisted bundle at start; one outside the roots or no longer loading falls back to the
        config's `scorer.bundle` (logged naming it) and is forgotten."""
        try:
            self.cfg.scorer.confine(path)
            self.swap_bundle(path)
            return
        except Exception as exc:  # noqa: BLE001 - PermissionError, BundleError, a scorer error: all fall back
            cause = getattr(exc, "cause", None) or exc
            logger.error("state file %s: persisted bundle %s not used (%s: %s); scoring with scorer.bundle %s",
                         self.state_path, path, type(cause).__name__, scrub(str(cause))[:500], self.cfg.scorer.bundle)
        with self._state_lock:
            self.state = self.state.model_copy(update={"bundle": None})
        self._save_state()

    def _watch(self, every_s: float = 1.0) -> None:
        """Give a restarted scorer back its cameras' alert settings (a fresh incarnation knows none) and the active
        bundle (it restarts with the bundle of its constructor, which a hot-swap may have replaced)."""
        while not self._stop.wait(every_s):
            for i, (_, scorer) in enumerate(self.scorers):
                try:
                    if self._swap_lock.acquire(blocking=False):  # a swap under way brings every scorer along itself
                        try:
                            running = ray.get(scorer.bundle_info.remote(), timeout=2.0)
                            if running["path"] != self.bundle:
                                info = ray.get(scorer.prepare_bundle.remote(self.bundle), timeout=120)
                                ray.get(scorer.commit_bundle.remote(info["sha256"]), timeout=10)
                                logger.warning("scorer %s restarted: bundle %s applied again", self.scorers[i][0], self.bundle)
                        finally:
                            self._swap_lock.release()
                    known = set(ray.get(scorer.registered.remote(), timeout=2.0))
                    with self._lock:
                        missing = [self.cameras[n] for n, j in self.camera_scorer.items() if j == i and n not in known]
                    for cam in missing:
                        ray.get(scorer.set_camera.remote(cam.name, cam.alert_settings(self.cfg.alerts).model_dump()),
                                timeout=2.0)
                        logger.warning("scorer %s restarted: camera %s registered again", self.scorers[i][0], cam.name)
                except Exception:  # noqa: BLE001 - a scorer still down: /healthz reports it, retry next round
                    continue

    # ---------------------------------------------------------------------------------------- cameras
    def _pick_scorer(self) -> int:
        load = [0] * len(self.scorers)
        for i in self.camera_scorer.values():
            load[i] += 1
        return min(range(len(load)), key=load.__getitem__)

    def add(self, cam: CameraConfig, *, via_api: bool = False) -> None:
        """Start camera `cam` (KeyError if the name runs); `via_api` records it in the state file."""
        with self._lock:
            if cam.name in self.cameras:
                raise KeyError(cam.name)
            i = self._pick_scorer()
            scorer = self.scorers[i][1]
            ray.get(scorer.set_camera.remote(cam.name, cam.alert_settings(self.cfg.alerts).model_dump()), timeout=CALL_TIMEOUT_S)
            self._generation += 1
            actor_name = f"camera:{cam.name}:{self._generation}"  # unique: a re-added camera never waits for a name
            actor = ray.remote(CameraActor).options(
                name=actor_name,
                namespace=self.cfg.namespace,
                num_cpus=self.cfg.camera_num_cpus,
                max_concurrency=4,
                scheduling_strategy="SPREAD",
            ).remote(cam.model_dump(), scorer, self.model_input["size"], self.model_input["window"], self.cfg.max_inflight_windows)
            self.cameras[cam.name] = cam
            self.camera_actors[cam.name] = actor
            self.camera_scorer[cam.name] = i
            self.actor_names[cam.name] = actor_name
            logger.info("camera %s added (%s, scorer %s)", cam.name, scrub(cam.url), self.scorers[i][0])
            if via_api:
                self._record_camera(cam.name, cam)

    def remove(self, name: str, *, via_api: bool = False) -> None:
        """Stop and forget camera `name` (KeyError if unknown); `via_api` records the removal in the state file."""
        with self._lock:
            cam = self.cameras.pop(name)
            actor = self.camera_actors.pop(name)
            i = self.camera_scorer.pop(name)
            self.actor_names.pop(name, None)
            try:
                ray.get(actor.stop.remote(), timeout=cam.read_timeout_s + 5)
            except Exception:  # noqa: BLE001 - a dead actor is removed all the same
                logger.warning("camera %s did not stop cleanly; killing its actor", name)
            ray.kill(actor)
            ray.get(self.scorers[i][1].remove_camera.remote(name), timeout=CALL_TIMEOUT_S)
            self.metrics.remove_camera(name)
            self._alerts_seen.pop(name, None)
            self.collector.remove(f"camera:{name}")
            logger.info("camera %s removed", name)
            if via_api:
                self._record_camera(name, None)

    def update(self, cam: CameraConfig, *, via_api: bool = False) -> str:
        """Apply a new config; returns "alerts" (live change) or "restarted"; `via_api` records it."""
        with self._lock:
            old = self.cameras[cam.name]
            changed = {k for k, v in cam.model_dump().items() if old.model_dump()[k] != v}
            if changed <= ALERT_FIELDS:
                scorer = self.scorers[self.camera_scorer[cam.name]][1]
                ray.get(scorer.set_camera.remote(cam.name, cam.alert_settings(self.cfg.alerts).model_dump()), timeout=CALL_TIMEOUT_S)
                self.cameras[cam.name] = cam
                how = "alerts"
            else:
                self.remove(cam.name)
                self.add(cam)
                how = "restarted"
            if via_api:
                self._record_camera(cam.name, cam)
            return how

    # ----------------------------------------------------------------------------------------- bundle
    def swap_bundle(self, path: str, *, via_api: bool = False) -> dict[str, Any]:
        """Hot-swap every scorer to the bundle at `path`: all load and validate it first, then all commit;
        `via_api` records the swap in the state file.

        Raises BundleError (nothing changed) when any scorer refuses it; RuntimeError when a swap is under way.
        """
        if not self._swap_lock.acquire(blocking=False):
            raise RuntimeError("another bundle swap is in progress")
        try:
            previous = self.bundle_info()
            staged: list[dict[str, Any]] = []
            try:
                for _, actor in self.scorers:
                    staged.append(ray.get(actor.prepare_bundle.remote(path), timeout=300))
            except Exception as exc:  # noqa: BLE001 - a refusal anywhere cancels the swap everywhere
                for _, actor in self.scorers:
                    actor.discard_bundle.remote()
                cause = getattr(exc, "cause", None) or exc  # ray wraps the actor's exception in RayTaskError
                if isinstance(cause, BundleError):
                    raise BundleError(str(cause)) from None
                raise
            sha = staged[0]["sha256"]
            for _, actor in self.scorers:
                ray.get(actor.commit_bundle.remote(sha), timeout=CALL_TIMEOUT_S)
            self.bundle = staged[0]["path"]
            logger.warning("bundle swapped: %s (%s) -> %s (%s)", previous.get("path"), previous.get("sha256"), path, sha)
            if via_api:
                with self._state_lock:
                    self.state = persisted.record_bundle(self.state, self.cfg, self.bundle, time.time())
                self._save_state()
            return {**staged[0], "previous": previous}
        finally:
            self._swap_lock.release()

    def bundle_info(self) -> dict[str, Any]:
        """The active bundle as the first scorer that answers reports it (all scorers run the same one)."""
        for _, actor in self.scorers:
            try:
                return ray.get(actor.bundle_info.remote(), timeout=HEALTH_TIMEOUT_S)
            except Exception:  # noqa: BLE001 - a restarting scorer: ask the next
                continue
        return {"path": self.bundle, "sha256": None, "version": None, "input": self.model_input}

    # ----------------------------------------------------------------------------------------- status
    def _gather(self, refs: dict[str, Any], timeout_s: float = CALL_TIMEOUT_S) -> dict[str, Any]:
        """ray.get each ref with a timeout; an exception object stands in for a dead or hung actor."""
        out: dict[str, Any] = {}
        deadline = time.monotonic() + timeout_s
        for key, ref in refs.items():
            try:
                out[key] = ray.get(ref, timeout=max(0.1, deadline - time.monotonic()))
            except Exception as exc:  # noqa: BLE001
                out[key] = exc
        return out

    def scorer_stats(self) -> dict[str, Any]:
        return self._gather({name: a.stats.remote() for name, a in self.scorers})

    def camera_stats(self) -> dict[str, Any]:
        with self._lock:
            actors = dict(self.camera_actors)
        return self._gather({n: a.stats.remote() for n, a in actors.items()})

    def status(self, names: list[str] | None = None) -> list[dict[str, Any]]:
        scorers = self.scorer_stats()
        cams = self.camera_stats()
        out = []
        with self._lock:
            items = [(n, self.cameras[n], self.camera_scorer[n]) for n in (names or sorted(self.cameras)) if n in self.cameras]
        for name, cfg, i in items:
            c = cams.get(name)
            sc = scorers.get(self.scorers[i][0])
            s = sc["cameras"].get(name, {}) if isinstance(sc, dict) else {}
            alive = isinstance(c, dict)
            entry: dict[str, Any] = {
                "name": name,
                "url": scrub(cfg.url),
                "actor": self.actor_names.get(name),
                "source": self.source(name),
                "namespace": self.cfg.namespace,
                "scorer": self.scorers[i][0],
                "bundle": {"path": sc.get("bundle"), "sha256": sc.get("bundle_sha256")} if isinstance(sc, dict) else None,
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
                "event_id": s.get("event_id"),
                "events_opened": s.get("events_opened", 0),
                "queue_depth": s.get("queue_depth", 0),
                "last_error": (c["last_error"] or c.get("last_scorer_error")) if alive else scrub(str(c))[:300],
                "node_ip": c.get("node_ip") if alive else None,
                "node_id": c.get("node_id") if alive else None,
                "pid": c.get("pid") if alive else None,
            }
            out.append(entry)
        return out

    def health(self) -> tuple[bool, dict[str, Any]]:
        with self._lock:
            cams = dict(self.camera_actors)
        pings = self._gather({f"scorer:{n}": a.ping.remote() for n, a in self.scorers}
                             | {f"camera:{n}": a.ping.remote() for n, a in cams.items()}, timeout_s=HEALTH_TIMEOUT_S)
        dead = {k: scrub(f"{type(v).__name__}: {v}")[:300] for k, v in pings.items() if isinstance(v, Exception)}
        body = {"ok": not dead, "scorers": len(self.scorers), "cameras": len(cams), "dead": dead}
        return not dead, body | ({"state_error": self.state_error} if self.state_error else {})

    def render_metrics(self) -> tuple[bytes, str]:
        """Pull totals and histograms from every actor into one Prometheus exposition."""
        with self._lock:
            cams = dict(self.camera_actors)
        fam_refs = {f"scorer:{n}": a.metric_families.remote() for n, a in self.scorers}
        fam_refs |= {f"camera:{n}": a.metric_families.remote() for n, a in cams.items()}
        families = self._gather(fam_refs)
        status = {s["name"]: s for s in self.status(sorted(cams))}
        scorers = self.scorer_stats()
        with self._registry_lock:
            m = self.metrics
            for name, s in status.items():
                cm = m.camera(name)
                cm.set_state(s["state"] if s["state"] in ("connecting", "streaming", "reconnecting", "error", "stopped") else "error")
                totals = {"frames_scored": s["frames_scored"], "frames_dropped": s["frames_dropped"]}
                if s["actor_alive"]:
                    totals |= {"frames_decoded": s["frames_decoded"], "corrupt_frames": s["corrupt_frames"],
                               "reconnects": s["reconnects"]}
                cm.sync_totals(**totals)
                if s["last_score"] is not None:
                    cm.observe_score(s["last_score"], s["warm"])
                cm.alert_active.set(1.0 if s["alert_open"] else 0.0)
                opened = s["events_opened"] - self._alerts_seen.get(name, 0)
                if opened > 0:  # alerts that opened (and maybe closed) since the last scrape
                    cm.alerts.inc(opened)
                self._alerts_seen[name] = s["events_opened"]
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
            self.collector.update("app", [f for f in m.snapshot() if f.name not in ACTOR_FAMILIES])
            for source, fams in families.items():
                if isinstance(fams, list):
                    self.collector.update(source, fams)
            from prometheus_client import CollectorRegistry, generate_latest
            from prometheus_client.exposition import CONTENT_TYPE_LATEST

            registry = CollectorRegistry()
            registry.register(self.collector)
            return generate_latest(registry), CONTENT_TYPE_LATEST

    def event_call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Read events through the first scorer that answers (they share one SQLite file)."""
        last: Exception | None = None
        for _, actor in self.scorers:
            try:
                return ray.get(getattr(actor, method).remote(*args, **kwargs), timeout=CALL_TIMEOUT_S)
            except ValueError:
                raise
            except Exception as exc:  # noqa: BLE001 - try the next scorer
                last = exc
        raise HTTPException(503, f"no scorer answered the events query: {type(last).__name__}")

    def shutdown(self) -> None:
        self._stop.set()
        with self._lock:
            for name in list(self.cameras):
                try:
                    self.remove(name)
                except Exception:  # noqa: BLE001
                    logger.exception("camera %s: removal at shutdown failed", name)
            for _, actor in self.scorers:
                try:
                    ray.get(actor.stop.remote(), timeout=30)
                except Exception:  # noqa: BLE001
                    pass
                ray.kill(actor)


# ------------------------------------------------------------------------------------------------ HTTP
api = FastAPI(title="vad streaming service", description="Real-time video anomaly detection: cameras, scores, events")


MAX_BODY_BYTES = 64 * 1024  # a camera config is well under 1 KiB


class BundleRequest(Strict):
    """Body of PUT /bundle."""

    path: str = Field(min_length=1, max_length=4096, description="absolute path of the bundle directory to score with")


@api.middleware("http")
async def _limit_body(request: Request, call_next):
    """Refuse oversized request bodies (413) before anything parses them."""
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
        return JSONResponse({"detail": f"request body too large ({length} bytes; limit {MAX_BODY_BYTES})"}, 413)
    return await call_next(request)


@api.exception_handler(RequestValidationError)
async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = []
    for err in exc.errors():
        value = err.get("input")
        errors.append(
            {
                "field": ".".join(str(p) for p in err["loc"]),
                "message": scrub(str(err["msg"]).removeprefix("Value error, ")),
                "value": None if isinstance(value, (dict, list)) else scrub(repr(value)),
            }
        )
    detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
    return JSONResponse({"detail": detail, "errors": errors}, status_code=422)


def _validation_response(exc: ValidationError, prefix: str) -> JSONResponse:
    errors = [
        {"field": prefix + ".".join(str(p) for p in e["loc"]), "message": scrub(e["msg"].removeprefix("Value error, "))}
        for e in exc.errors()
    ]
    return JSONResponse({"detail": "; ".join(f"{e['field']}: {e['message']}" for e in errors), "errors": errors}, 422)


@serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=32)
@serve.ingress(api)
class ControlPlane:
    """The Serve deployment: one replica holding the Fleet."""

    def __init__(self, config: dict):
        cfg = parse_service_config(config, "service config")
        self.token = cfg.http.resolve_token()
        if cfg.scorer.build_demo_bundle:
            from streaming.demo import ensure_demo_bundle

            ensure_demo_bundle(cfg.scorer.bundle)
        self.fleet = Fleet(cfg)

    def _auth(self, request: Request) -> None:
        if self.token is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), self.token.encode()):
            raise HTTPException(401, "missing or wrong bearer token (header Authorization)", {"WWW-Authenticate": "Bearer"})

    def _camera(self, name: str) -> CameraConfig:
        cam = self.fleet.cameras.get(name)
        if cam is None:
            raise HTTPException(404, f"no camera named {name!r}; cameras: {sorted(self.fleet.cameras)}")
        return cam

    @api.get("/healthz")
    def healthz(self) -> JSONResponse:
        ok, body = self.fleet.health()
        return JSONResponse(body, status_code=200 if ok else 503)

    @api.get("/metrics")
    def metrics(self, request: Request) -> Response:
        self._auth(request)
        body, ctype = self.fleet.render_metrics()
        return Response(body, media_type=ctype)

    @api.get("/cameras")
    def list_cameras(self, request: Request) -> list[dict]:
        self._auth(request)
        return self.fleet.status()

    @api.get("/cameras/{name}")
    def get_camera(self, name: str, request: Request) -> dict:
        self._auth(request)
        self._camera(name)
        return {**self.fleet.status([name])[0], "config": self.fleet.cameras[name].public()}

    @api.post("/cameras", status_code=201)
    def add_camera(self, cam: CameraConfig, request: Request) -> dict:
        self._auth(request)
        try:
            self.fleet.add(cam, via_api=True)
        except KeyError:
            raise HTTPException(409, f"body.name: a camera named {cam.name!r} already exists") from None
        return self.fleet.status([cam.name])[0] | self.fleet.persistence()

    @api.put("/cameras/{name}")
    def replace_camera(self, name: str, cam: CameraConfig, request: Request) -> dict:
        self._auth(request)
        self._camera(name)
        if cam.name != name:
            raise HTTPException(422, f"body.name: {cam.name!r} differs from the path's camera {name!r} (rename = delete + add)")
        how = self.fleet.update(cam, via_api=True)
        return {**self.fleet.status([name])[0], "applied": how, **self.fleet.persistence()}

    @api.patch("/cameras/{name}")
    def patch_camera(self, name: str, changes: dict, request: Request) -> Any:
        self._auth(request)
        old = self._camera(name)
        if "name" in changes and changes["name"] != name:
            raise HTTPException(422, f"body.name: cannot rename {name!r} (delete + add)")
        try:
            cam = CameraConfig.model_validate({**old.model_dump(), **changes})
        except ValidationError as exc:
            return _validation_response(exc, "body.")
        how = self.fleet.update(cam, via_api=True)
        return {**self.fleet.status([name])[0], "applied": how, **self.fleet.persistence()}

    @api.delete("/cameras/{name}", status_code=204)
    def delete_camera(self, name: str, request: Request) -> Response:
        self._auth(request)
        self._camera(name)
        self.fleet.remove(name, via_api=True)
        saved = self.fleet.persistence()["persisted"]
        return Response(status_code=204, headers={"X-VAD-Persisted": "true" if saved else "false"})

    @api.get("/scorers")
    def scorers(self, request: Request) -> dict:
        self._auth(request)
        return {
            k: {**(v if isinstance(v, dict) else {"alive": False, "error": str(v)[:300]}),
                "actor": self.fleet.scorer_actor_names.get(k)}
            for k, v in self.fleet.scorer_stats().items()
        }

    @api.get("/bundle")
    def get_bundle(self, request: Request) -> dict:
        self._auth(request)
        return self.fleet.bundle_info()

    @api.put("/bundle")
    def put_bundle(self, body: BundleRequest, request: Request) -> Any:
        self._auth(request)
        if not Path(body.path).is_absolute():
            raise HTTPException(422, f"body.path: must be an absolute path (the service's working directory is not "
                                     f"yours), got {body.path!r}")
        try:
            real = self.fleet.cfg.scorer.confine(body.path)  # symlinks and `..` resolved: neither escapes a root
        except PermissionError as exc:
            raise HTTPException(403, f"body.path: {exc}") from None
        try:
            return self.fleet.swap_bundle(str(real), via_api=True) | self.fleet.persistence()
        except BundleError as exc:
            msg = scrub(str(exc))
            return JSONResponse({"detail": f"body.path: bundle refused, the running bundle keeps scoring: {msg}",
                                 "errors": [{"field": "body.path", "message": msg, "value": body.path}]}, 422)
        except RuntimeError as exc:
            raise HTTPException(409, str(exc)) from None

    @api.get("/events")
    def events(
        self,
        request: Request,
        camera: str | None = None,
        since: float | None = Query(None, description="epoch seconds: events still going at or after this"),
        until: float | None = Query(None, description="epoch seconds: events started at or before this"),
        min_score: float | None = Query(None, ge=0, le=1),
        status: Literal["open", "closed"] | None = None,
        limit: int = Query(100, ge=1, le=10_000),
    ) -> list[dict]:
        self._auth(request)
        if since is not None and until is not None and since > until:
            raise HTTPException(422, f"query.since ({since}) must not be after query.until ({until})")
        return self.fleet.event_call(
            "list_events", camera=camera, since=since, until=until, min_score=min_score, status=status, limit=limit
        )

    @api.get("/events/{event_id}")
    def event(self, event_id: int, request: Request) -> dict:
        self._auth(request)
        ev = self.fleet.event_call("get_event", event_id)
        if ev is None:
            raise HTTPException(404, f"no event {event_id}")
        return ev

    @api.get("/events/{event_id}/snapshot")
    def snapshot(self, event_id: int, request: Request) -> Response:
        self._auth(request)
        jpeg = self.fleet.event_call("get_snapshot", event_id)
        if jpeg is None:
            raise HTTPException(404, f"event {event_id} has no snapshot (or does not exist)")
        return Response(jpeg, media_type="image/jpeg")

    def __del__(self) -> None:
        fleet = getattr(self, "fleet", None)
        if fleet is not None:
            try:
                fleet.shutdown()
            except Exception:  # noqa: BLE001 - best effort at teardown
                pass


def build_app(args: dict) -> serve.Application:
    """`serve run` entry point: validate the args (errors name the field), resolve paths, bind the deployment."""
    cfg = parse_service_config(args, "serve config", "args.")
    base = Path(os.environ.get("VAD_HOME", os.getcwd()))
    cfg = resolve_paths(cfg, base)
    data = dict(args)
    data["scorer"] = {**dict(args.get("scorer") or {}), "bundle": str(cfg.scorer.bundle)}
    data["scorer"]["bundle_roots"] = [str(r) for r in cfg.scorer.allowed_roots()]
    data["events"] = {**dict(args.get("events") or {}), "path": str(cfg.events.path)}
    data["state"] = {**dict(args.get("state") or {}), "path": str(cfg.state_file())}
    return ControlPlane.bind(data)
