"""The control plane's HTTP side: a Ray Serve application (FastAPI ingress) over the fleet of actors.

`serve run deploy/config.yaml` calls `build_app(args)`, which validates the args into a ServiceConfig once, before
any actor starts, and hands that object to the replica. The replica starts the Fleet (streaming/fleet.py: one
scorer actor per device and one camera actor per camera, owned by the replica: they stop with it) and serves
(status and metrics from streaming/status.py):

  GET  /healthz                    200 when every scorer and camera actor answers, else 503 naming the dead
  GET  /metrics                    Prometheus text (label `camera`, never the URL)
  GET  /cameras, /cameras/{name}   status: state, fps in/scored, lag, drops, reconnects, last score, alert, and
                                   its bundle (path, weights sha256 prefix, whether it is the default)
  POST /cameras                    add a camera (body: CameraConfig)       -> 201, 409 if the name exists; 403
                                   when its file (a path or file://, symlinks and `..` resolved) lies outside
                                   every `cameras_file_roots` (PUT and PATCH too; rtsp(s):// and demo:// are not files)
                                   or its own `bundle` outside every `scorer.bundle_roots`; 422 when that bundle
                                   is refused, 409 when it would pass `scorer.max_bundles`
  PUT  /cameras/{name}             replace its config (restarts its decoder unless only alert settings change)
  PATCH /cameras/{name}            change some fields
  DELETE /cameras/{name}           stop and remove it (its open alert closes with reason "removed")
  GET  /events?camera=&since=&until=&min_score=&status=&label=&limit=   events, newest first (label: false_alarm,
                                   anomaly, or none = not labelled yet)
  GET  /events/{id}, /events/{id}/snapshot (image/jpeg); `clip`: whether the alert's footage is kept
                                   (streaming/event_clips.py; GET /events/{id}/clip, video/x-matroska)
  POST /cameras/{name}/recordings {"minutes": M[, "fps": F, "max_side": S]}   record normal footage of the camera
                                   (streaming/recordings.py) into recordings.root/<camera>/<id>/ for vad train --data
                                   -> 202; 404 unknown camera, 422 naming the bad field (minutes in (0, 1440]), 409
                                   while that camera already records, 507 naming recordings.max_bytes or
                                   recordings.min_free_bytes when there is no room
  GET  /recordings, /recordings/{id}   state (queued, recording, done, failed, stopped), recorded_s of requested_s,
                                   progress, segments, bytes, error (credentials scrubbed), dir
  PUT  /cameras/{name}/bundle {"path": "/abs/dir" | null}   hot-swap one camera's model (null: back to the
                                   default bundle) with the guarantees of PUT /bundle; its windows follow the new
                                   bundle's input; 404 unknown camera, 403, 422 and 409 as for POST; persisted
  POST /cameras/{name}/learn {"schedule"?, "max_false_alerts_per_hour"?, "swap"?, "overrides"?}   learn the camera's
                                   scene from recordings.root/<camera>/ (streaming/learn_jobs.py: a Ray task with
                                   learn.num_cpus) into learn.bundles_root/<camera>/<job id> -> 202; 404 unknown
                                   camera, 422 naming the bad field, 409 while it learns or with no recordings;
                                   "swap": put the new bundle in for this camera only if the job succeeds
  GET  /jobs?camera=, /jobs/{id}  state (queued, running, done, failed), progress (stage, fraction, step), result
                                   (learn.json: score quantiles, false alerts per hour on unseen footage) or error
  The operator's page and its data (streaming/page.py): GET / (cameras), /ui/events, /ui/events/{id}, /ui/learning
  (recordings, learn jobs and bundle swaps through the routes above), /docs
  (offline; the OpenAPI document is /openapi.json), GET /cameras/{name}/scores?seconds=, /cameras/{name}/frame
  (JPEG), /events/{id}/scores, /events/{id}/clip, POST /events/{id}/label {"label": "false_alarm" | "anomaly"}
  (a false alarm's clip goes to recordings.root/<camera>/feedback/ for the camera's next learn, an anomaly's is
  removed from there; the answer's `footage`: kept, removed, pending or none with `footage_reason`)
  GET  /scorers                    batching and utilisation per scorer, and its loaded bundles (path, sha256
                                   prefix, cameras, parameter bytes)
  GET  /bundle                     the default model bundle (path, weights sha256 prefix, version)
  PUT  /bundle  {"path": "/abs/dir"}   hot-swap the default bundle (cameras with their own keep theirs): every
                                   scorer loads and validates it fully, then all switch between two batches; a
                                   refused bundle (checksum mismatch, unknown version, pickled weights, missing
                                   files, other input size) is 422 naming the file and the reason, and the running
                                   bundle keeps scoring; 403 when the path (symlinks and `..` resolved) lies
                                   outside every `scorer.bundle_roots`.

Persisted: cameras added, replaced or removed (their own bundle included) and the bundle swapped through the API
are saved (streaming/state.py, `state.path`, default state.json beside events.path) and come back at the next
start, unless the config's entry changed after the API change (the later wins: the stale API change is dropped
with a warning naming it). A persisted bundle that no longer loads is logged and the config's `scorer.bundle` is
used (a camera's own: the camera runs as the config has it, or not at all). Answers to changes say
whether the change was saved (`"persisted": true|false` with `"persist_error"`; DELETE: header `X-VAD-Persisted`),
and /healthz shows `state_error` while saving fails (the change is live, but a restart would lose it).

Every route but /healthz, /docs, /openapi.json and the page's static files needs `Authorization: Bearer <token>`
when a token is configured, or the page's session cookie (streaming/web_auth.py: set from `?token=` or the page's
login form), checked before anything of the request is read (streaming/http_guard.py, which also bounds bodies:
413 past 64 KiB whatever the transfer encoding, 408 when not all there within 10 s). Request errors are 422 with
one entry per bad field (`{"field": "body.fps", "message": ..., "value": ...}`, the value cut to 200 characters).
"""
# No `from __future__ import annotations`: FastAPI reads the route signatures' types at runtime.
import logging
import os
from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import Field, ValidationError
from ray import serve

from offline.config import Strict
from offline.scoring.bundle import BundleError
from streaming import http_guard, page, status
from streaming.bundle_set import BundleLimitError
from streaming.config import CameraConfig, ServiceConfig, parse_service_config, resolve_paths
from streaming.credentials import scrub_url
from streaming.fleet import Fleet, NoScorerError
from streaming.inputs import PathText
from streaming.disk_limit import DiskLimitError
from streaming.learn_jobs import JobConflict, LearnJobs, LearnRequest
from streaming.recordings import RecordingRequest, Recordings

logger = logging.getLogger(__name__)

# docs_url/redoc_url off: FastAPI's pages load their assets from a CDN; streaming/page.py serves an offline /docs
api = FastAPI(title="vad streaming service", description="Real-time video anomaly detection: cameras, scores, events",
              docs_url=None, redoc_url=None)
api.include_router(page.router)


MAX_BODY_BYTES = 64 * 1024  # a camera config is well under 1 KiB
BODY_TIMEOUT_S = 10.0  # a body still arriving after this is 408: a slow client cannot hold a request slot
MAX_VALUE_CHARS = 200  # of a bad value echoed in a 422
PUBLIC_PATHS = frozenset({"/healthz", "/openapi.json"})  # and the page's (page.public_path)


def _replica_token() -> str | None:
    return serve.get_replica_context().servable_object.token


api.add_middleware(http_guard.RequestGuard, token=_replica_token, max_body=MAX_BODY_BYTES, body_timeout_s=BODY_TIMEOUT_S,
                   public=lambda path: path in PUBLIC_PATHS or page.public_path(path))


class BundleRequest(Strict):
    """Body of PUT /bundle."""

    path: PathText = Field(min_length=1, max_length=4096, description="absolute path of the bundle directory to score with")


class CameraBundleRequest(Strict):
    """Body of PUT /cameras/{name}/bundle."""

    path: PathText | None = Field(min_length=1, max_length=4096,
                             description="absolute path of the camera's own bundle directory; null: the default bundle")


def _refused(field: str, value: Any, exc: BundleError) -> JSONResponse:
    """422 for a refused bundle, naming the field, the file and the reason."""
    msg = scrub_url(str(exc))
    return JSONResponse({"detail": f"{field}: bundle refused, the running bundle keeps scoring: {msg}",
                         "errors": [{"field": field, "message": msg, "value": value}]}, 422)


def _absolute(field: str, path: Any) -> None:
    """422 unless a requested bundle path is absolute (the service's working directory is not the caller's)."""
    if path is not None and not Path(path).is_absolute():
        raise HTTPException(422, f"{field}: must be an absolute path (the service's working directory is not "
                                 f"yours), got {str(path)!r}")


def _field_errors(errors: list[dict], prefix: str = "", with_value: bool = True) -> JSONResponse:
    """422 with one entry per bad field (`field`, `message`, and `value` unless told not to), secrets scrubbed."""
    out = []
    for err in errors:
        entry = {
            "field": prefix + ".".join(str(p) for p in err["loc"]),
            "message": scrub_url(str(err["msg"]).removeprefix("Value error, ")),
        }
        if with_value:
            value = err.get("input")
            # scrubbed before it is cut, so that a cut never splits a credential out of the scrubber's sight
            entry["value"] = None if isinstance(value, (dict, list)) else scrub_url(repr(value))[:MAX_VALUE_CHARS]
        out.append(entry)
    detail = "; ".join(f"{e['field']}: {e['message']}" for e in out)
    return JSONResponse({"detail": detail, "errors": out}, status_code=422)


@api.exception_handler(RequestValidationError)
async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's request validation errors in the service's format (field paths like `body.fps`)."""
    return _field_errors(exc.errors())


@serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=32)
@serve.ingress(api)
class ControlPlane(page.PageRoutes):
    """The Serve deployment: one replica holding the Fleet (the page's routes come from page.PageRoutes)."""

    def __init__(self, cfg: ServiceConfig):
        self.token = cfg.http.resolve_token()
        if cfg.scorer.build_demo_bundle:
            from streaming.demo_bundle import ensure_demo_bundle

            ensure_demo_bundle(cfg.scorer.bundle)
        self.fleet = Fleet(cfg)
        self.recordings = Recordings(cfg.recordings, cfg.namespace)
        self.learn_jobs = LearnJobs(cfg.learn, swap=lambda name, path: self.fleet.swap_camera_bundle(name, path, via_api=True))
        page.log_ready(cfg.http.host, cfg.http.port, len(self.fleet.cameras), self.token is not None)

    def _camera(self, name: str) -> CameraConfig:
        cam = self.fleet.cameras.get(name)
        if cam is None:
            raise HTTPException(404, f"no camera named {name!r}; cameras: {sorted(self.fleet.cameras)}")
        return cam

    def _confine(self, cam: CameraConfig) -> None:
        """403 naming the roots when the camera's file lies outside every `cameras_file_roots` or its own bundle
        outside every `scorer.bundle_roots` (422 for a relative bundle path)."""
        try:
            self.fleet.cfg.confine_camera(cam.url)  # symlinks and `..` resolved: neither escapes a root
        except PermissionError as exc:
            raise HTTPException(403, f"body.url: {scrub_url(str(exc))}") from None
        _absolute("body.bundle", cam.bundle)
        try:
            self.fleet.cfg.scorer.camera_bundle(cam)
        except PermissionError as exc:
            raise HTTPException(403, f"body.bundle: {exc}") from None

    def _change(self, cam: CameraConfig, apply: Any) -> Any:
        """Run a camera change; a refused bundle is 422 and one over `scorer.max_bundles` 409 (nothing changed)."""
        try:
            return apply()
        except BundleError as exc:
            return _refused("body.bundle", str(cam.bundle), exc)
        except BundleLimitError as exc:
            raise HTTPException(409, f"body.bundle: {exc}") from None

    def _events(self, method: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return self.fleet.event_call(method, *args, **kwargs)
        except NoScorerError as exc:
            raise HTTPException(503, str(exc)) from None

    @api.get("/healthz")
    def healthz(self) -> JSONResponse:
        """GET /healthz: 200 when every actor answers, else 503 naming the dead (no token needed)."""
        ok, body = status.health(self.fleet)
        return JSONResponse(body, status_code=200 if ok else 503)

    @api.get("/metrics")
    def metrics(self) -> Response:
        """GET /metrics: the Prometheus exposition of the whole fleet."""
        body, ctype = status.render_metrics(self.fleet)
        return Response(body, media_type=ctype)

    @api.get("/cameras")
    def list_cameras(self) -> list[dict]:
        """GET /cameras: one status row per camera."""
        return status.camera_rows(self.fleet)

    @api.get("/cameras/{name}")
    def get_camera(self, name: str) -> dict:
        """GET /cameras/{name}: its status row and its config (URL scrubbed)."""
        self._camera(name)
        return {**status.camera_rows(self.fleet, [name])[0], "config": self.fleet.cameras[name].public()}

    @api.post("/cameras", status_code=201)
    def add_camera(self, cam: CameraConfig) -> Any:
        """POST /cameras: start a camera (201; 409 when the name exists, 403 for a file outside the roots); saved
        for the next start."""
        self._confine(cam)

        def add() -> dict:
            try:
                self.fleet.add(cam, via_api=True)
            except KeyError:
                raise HTTPException(409, f"body.name: a camera named {cam.name!r} already exists") from None
            return status.camera_rows(self.fleet, [cam.name])[0] | self.fleet.persistence()

        return self._change(cam, add)

    @api.put("/cameras/{name}")
    def replace_camera(self, name: str, cam: CameraConfig) -> Any:
        """PUT /cameras/{name}: replace its config (alert-only changes apply live, others restart its decoder)."""
        self._camera(name)
        if cam.name != name:
            raise HTTPException(422, f"body.name: {cam.name!r} differs from the path's camera {name!r} (rename = delete + add)")
        self._confine(cam)
        return self._change(cam, lambda: self._updated(cam))

    @api.patch("/cameras/{name}")
    def patch_camera(self, name: str, changes: dict) -> Any:
        """PATCH /cameras/{name}: change some fields of its config, validated as a whole."""
        old = self._camera(name)
        if "name" in changes and changes["name"] != name:
            raise HTTPException(422, f"body.name: cannot rename {name!r} (delete + add)")
        try:
            cam = CameraConfig.model_validate({**old.model_dump(), **changes})
        except ValidationError as exc:
            return _field_errors(exc.errors(), "body.", with_value=False)
        self._confine(cam)
        return self._change(cam, lambda: self._updated(cam))

    def _updated(self, cam: CameraConfig) -> dict:
        how = self.fleet.update(cam, via_api=True)
        return {**status.camera_rows(self.fleet, [cam.name])[0], "applied": how, **self.fleet.persistence()}

    @api.put("/cameras/{name}/bundle")
    def put_camera_bundle(self, name: str, body: CameraBundleRequest) -> Any:
        """PUT /cameras/{name}/bundle: hot-swap one camera's bundle (null: the default); 404 unknown camera, 403
        outside the roots, 422 refused (the running bundle keeps scoring), 409 over `scorer.max_bundles`."""
        self._camera(name)
        _absolute("body.path", body.path)
        try:
            info = self.fleet.swap_camera_bundle(name, body.path, via_api=True)
        except KeyError:
            raise HTTPException(404, f"no camera named {name!r}; cameras: {sorted(self.fleet.cameras)}") from None
        except PermissionError as exc:
            raise HTTPException(403, f"body.path: {exc}") from None
        except BundleError as exc:
            return _refused("body.path", body.path, exc)
        except BundleLimitError as exc:
            raise HTTPException(409, f"body.path: {exc}") from None
        return {"camera": name, **info, **self.fleet.persistence()}

    @api.delete("/cameras/{name}", status_code=204)
    def delete_camera(self, name: str) -> Response:
        """DELETE /cameras/{name}: stop and remove it (its open alert closes, reason "removed")."""
        self._camera(name)
        self.fleet.remove(name, via_api=True)
        saved = self.fleet.persistence()["persisted"]
        return Response(status_code=204, headers={"X-VAD-Persisted": "true" if saved else "false"})

    @api.post("/cameras/{name}/recordings", status_code=202)
    def start_recording(self, name: str, body: RecordingRequest) -> dict:
        """POST /cameras/{name}/recordings: record `minutes` of the camera's footage (202; 404, 409, 507)."""
        cam = self._camera(name)
        try:
            real = self.fleet.cfg.confine_camera(cam.url)  # a file camera is read at its checked real path
        except PermissionError as exc:
            raise HTTPException(403, scrub_url(str(exc))) from None
        try:
            return self.recordings.start(cam, cam.url if real is None else str(real), body)
        except KeyError as exc:
            raise HTTPException(409, f"camera {name!r} is already recording (recording {exc.args[0]})") from None
        except DiskLimitError as exc:
            raise HTTPException(507, str(exc)) from None

    @api.get("/recordings")
    def list_recordings(self) -> list[dict]:
        """GET /recordings: every recording of this run, newest first, with its progress."""
        return self.recordings.list()

    @api.get("/recordings/{rid}")
    def get_recording(self, rid: str) -> dict:
        """GET /recordings/{id}: one recording's state and progress (404 if unknown)."""
        rec = self.recordings.get(rid)
        if rec is None:
            raise HTTPException(404, f"no recording {rid!r}")
        return rec

    @api.post("/cameras/{name}/learn", status_code=202)
    def start_learn(self, name: str, body: LearnRequest) -> dict:
        """POST /cameras/{name}/learn: learn the camera's scene from its recordings in a Ray task (202; 404 unknown
        camera, 409 while it learns or when it has no recordings yet)."""
        cam = self._camera(name)
        settings = cam.alert_settings(self.fleet.cfg.alerts)
        rules = {"min_duration_s": settings.min_duration_s, "hysteresis": settings.hysteresis}
        try:
            return self.learn_jobs.start(name, self.fleet.cfg.recordings.root / name, body, fps=cam.fps, rules=rules,
                                         max_false_alerts_per_hour=settings.max_false_alerts_per_hour)
        except (JobConflict, FileNotFoundError) as exc:  # busy, or nothing recorded to learn from yet
            raise HTTPException(409, str(exc)) from None

    @api.get("/jobs")
    def list_jobs(self, camera: str | None = Query(None, max_length=64)) -> list[dict]:
        """GET /jobs?camera=: learn jobs of this run, newest first, with progress and results."""
        return self.learn_jobs.list(camera)

    @api.get("/jobs/{job_id}")
    def get_job(self, job_id: str) -> dict:
        """GET /jobs/{id}: one learn job (state, progress, result or the reason it failed); 404 if unknown."""
        job = self.learn_jobs.get(job_id)
        if job is None:
            raise HTTPException(404, f"no learn job {job_id!r}")
        return job

    @api.get("/scorers")
    def scorers(self) -> dict:
        """GET /scorers: batching and utilisation per scorer actor."""
        return {
            k: {**(v if isinstance(v, dict) else {"alive": False, "error": str(v)[:300]}),
                "actor": self.fleet.scorer_actor_names.get(k)}
            for k, v in status.scorer_stats(self.fleet).items()
        }

    @api.get("/bundle")
    def get_bundle(self) -> dict:
        """GET /bundle: the bundle being scored with (path, weights sha256 prefix, version)."""
        return self.fleet.bundle_info()

    @api.put("/bundle")
    def put_bundle(self, body: BundleRequest) -> Any:
        """PUT /bundle: hot-swap every scorer to a bundle under the allowed roots (403 outside, 422 refused)."""
        _absolute("body.path", body.path)
        try:
            real = self.fleet.cfg.scorer.confine(body.path)  # symlinks and `..` resolved: neither escapes a root
        except PermissionError as exc:
            raise HTTPException(403, f"body.path: {exc}") from None
        try:
            return self.fleet.swap_bundle(str(real), via_api=True) | self.fleet.persistence()
        except BundleError as exc:
            return _refused("body.path", body.path, exc)
        except RuntimeError as exc:
            raise HTTPException(409, str(exc)) from None

    @api.get("/events")
    def events(
        self,
        camera: str | None = None,
        since: float | None = Query(None, allow_inf_nan=False,
                                    description="epoch seconds: events still going at or after this"),
        until: float | None = Query(None, allow_inf_nan=False, description="epoch seconds: events started at or before this"),
        min_score: float | None = Query(None, ge=0, le=1),
        status: Literal["open", "closed"] | None = None,
        label: Literal["false_alarm", "anomaly", "none"] | None = Query(None, description="none: not labelled yet"),
        limit: int = Query(100, ge=1, le=10_000),
    ) -> list[dict]:
        """GET /events: alert events, newest first, filtered by camera, time, score, status and label."""
        if since is not None and until is not None and since > until:
            raise HTTPException(422, f"query.since ({since}) must not be after query.until ({until})")
        return self._events(
            "list_events", camera=camera, since=since, until=until, min_score=min_score, status=status, label=label,
            limit=limit,
        )

    @api.get("/events/{event_id}")
    def event(self, event_id: page.EventId) -> dict:
        """GET /events/{id}: one event (404 if unknown)."""
        ev = self._events("get_event", event_id)
        if ev is None:
            raise HTTPException(404, f"no event {event_id}")
        return ev

    @api.get("/events/{event_id}/snapshot")
    def snapshot(self, event_id: page.EventId) -> Response:
        """GET /events/{id}/snapshot: the event's JPEG (peak frame with the error heatmap)."""
        jpeg = self._events("get_snapshot", event_id)
        if jpeg is None:
            raise HTTPException(404, f"event {event_id} has no snapshot (or does not exist)")
        return Response(jpeg, media_type="image/jpeg")

    def __del__(self) -> None:
        for part in ("recordings", "fleet"):  # recordings first: each closes its open segment
            owner = getattr(self, part, None)
            if owner is not None:
                try:
                    owner.shutdown()
                except Exception:  # noqa: BLE001 - best effort at teardown
                    pass


def build_app(args: dict) -> serve.Application:
    """`serve run` entry point: validate the args once (errors name the field), resolve paths, bind the deployment.

    The replica receives the validated ServiceConfig itself: no second parse, no re-merged dicts.
    """
    cfg = parse_service_config(args, "serve config", "args.")
    base = Path(os.environ.get("VAD_HOME", os.getcwd()))
    return ControlPlane.bind(resolve_paths(cfg, base))
