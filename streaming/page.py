"""The operator's page and the JSON/JPEG routes it reads, mixed into the control plane (streaming/app.py).

`PageRoutes` is a mixin of the Serve ingress class: its routes live on `router`, which app.py includes. Pages
(HTML from streaming/page_html.py; script and stylesheet from streaming/static/, no build step, nothing from the
internet, and a Content-Security-Policy that forbids any other origin):

  GET  /                           cameras: state, bundle, fps, lag, live frame, score chart with the threshold
  GET  /ui/events?camera=&label=&since=   events newest first with snapshots and label buttons
  GET  /ui/events/{id}             one event: its facts, score timeline around it, snapshot, label buttons
  GET  /ui/learning                per camera: bundle and threshold now, its recordings and learn jobs with their
                                   progress and figures; forms that start them and buttons that swap a job's bundle
                                   in (streaming/learning_html.py; they call the API's own routes)
  POST /ui/login                   the login form (token=...): sets the session cookie
  GET  /ui/static/{page.js,page.css}   the page's script and style (no token: they hold no data)
  GET  /docs                       the API's routes, offline (the OpenAPI document stays at /openapi.json)

and the data behind them (same auth as every API route):

  GET  /cameras/{name}/scores?seconds=300   {"points": [[t, score], ...], "threshold": ...} (at most 600 points)
  GET  /cameras/{name}/frame                JPEG of the newest scored frame (what the model saw)
  GET  /events/{id}/scores                  the event's stored score trace (10 s before to 5 s after it)
  GET  /events/{id}/clip                    the alert's footage as the model saw it (video/x-matroska, H.264)
  POST /events/{id}/label  {"label": "false_alarm" | "anomaly"}   the labelled event and `footage`: a false alarm's
                                            clip is kept as the camera's normal footage for its next learn
                                            (streaming/event_clips.py); 404 unknown, 422 bad label

Auth with a token configured: a page load without it answers 401 with the login form; `?token=` (once) or the form
sets an HttpOnly SameSite=Strict cookie (streaming/web_auth.py) that the page and its data calls then carry.
"""
# No `from __future__ import annotations`: FastAPI reads the route signatures' types at runtime.
import logging
import os
import re
import time
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import parse_qs, urlencode

import ray
from fastapi import APIRouter, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import Field

from offline.config import Strict
from streaming import learning_html, page_html, status, web_auth
from streaming.events import Label
from streaming.fleet import CALL_TIMEOUT_S
from streaming.score_history import HORIZON_S

logger = logging.getLogger(__name__)
router = APIRouter()

STATIC_DIR = Path(__file__).parent / "static"
STATIC_TYPES = {"page.js": "text/javascript; charset=utf-8", "page.css": "text/css; charset=utf-8"}
HTML_HEADERS = {
    # only this service: no CDN, no inline script, no framing (the label buttons must not be clickjacked)
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
# SQLite's integer range: a larger id is a client's mistake (422), not a store failure
EventId = Annotated[int, PathParam(ge=1, le=2**63 - 1, description="event id")]
PAGE_PATHS = frozenset({"/", "/ui/events", "/ui/learning", "/ui/login", "/docs"})
_NEXT = re.compile(r"^/[A-Za-z0-9/_-]*$")  # where the login form may send the browser back to: this service's paths


def _real(path: str | None) -> str | None:
    """`path` with symlinks resolved (a swapped-in bundle is known by its real path), None for None."""
    return None if path is None else os.path.realpath(path)


class LabelRequest(Strict):
    """Body of POST /events/{id}/label."""

    label: Label = Field(description="the operator's verdict: false_alarm or anomaly")


def public_path(path: str) -> bool:
    """True for the page's paths that need no token: its script and style, and its pages (each answers 401 with the
    login form itself)."""
    return path in PAGE_PATHS or path.startswith(("/ui/static/", "/ui/events/"))


def base_path(request: Request) -> str:
    """The application's route prefix ("" at /), so that links work wherever Serve mounts the app."""
    return str(request.scope.get("root_path", "")).rstrip("/")


def html(body: str, status_code: int = 200) -> HTMLResponse:
    """An HTML answer with the page's security headers."""
    return HTMLResponse(body, status_code=status_code, headers=HTML_HEADERS)


def log_ready(host: str, port: int, cameras: int, token: bool) -> None:
    """The line an operator looks for: the service is up and where its page is (never the token itself)."""
    how = " (token required: open it once with ?token=... or log in on the page)" if token else ""
    # WARNING: Ray's workers print WARNING and above by default
    logger.warning("vad service ready with %d camera(s): page at http://%s:%d/%s", cameras, host, port, how)


class PageRoutes:
    """The page's routes (a mixin of app.ControlPlane, which provides `token`, `fleet`, `recordings`, `learn_jobs`
    the token checked in front of every route by streaming/http_guard.py)."""

    # ------------------------------------------------------------------------------------------- helpers
    def _page_gate(self, request: Request) -> Response | None:
        """None when the page may be shown. Else the answer: for a right `?token=`, a redirect to the same page
        without it that sets the session cookie; for none or a wrong one, 401 with the login form."""
        token = self.token
        if token is None or web_auth.authorised(token, request.headers.get("authorization"),
                                                request.cookies.get(web_auth.COOKIE)):
            return None
        base = base_path(request)
        given = request.query_params.get("token")
        if given is not None and web_auth.token_matches(given, token):
            rest = urlencode([(k, v) for k, v in request.query_params.multi_items() if k != "token"])
            return self._with_session(request, base + request.url.path.removeprefix(base) + ("?" + rest if rest else ""))
        return html(page_html.login_page(base, request.url.path.removeprefix(base) or "/", given is not None), 401)

    def _with_session(self, request: Request, location: str) -> Response:
        """303 to `location` setting the session cookie (HttpOnly, SameSite=Strict; Secure over https)."""
        resp = RedirectResponse(location, status_code=303, headers={"Cache-Control": "no-store"})
        secure = request.url.scheme == "https" or request.headers.get("x-forwarded-proto") == "https"
        resp.set_cookie(web_auth.COOKIE, web_auth.session_value(self.token), max_age=web_auth.COOKIE_MAX_AGE_S,
                        path=base_path(request) or "/", httponly=True, samesite="strict", secure=secure)
        return resp

    def _camera_scorer(self, name: str) -> Any:
        """The scorer actor of camera `name` (404 naming the cameras when unknown)."""
        placed = self.fleet.placements([name])
        if not placed:
            raise HTTPException(404, f"no camera named {name!r}; cameras: {sorted(self.fleet.cameras)}")
        return self.fleet.scorers[placed[0][2]][1]

    def _ask(self, ref: Any) -> Any:
        try:
            return ray.get(ref, timeout=CALL_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - a restarting scorer: 503, try again
            raise HTTPException(503, f"the camera's scorer did not answer: {type(exc).__name__}") from None

    # --------------------------------------------------------------------------------------------- pages
    @router.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page_cameras(self, request: Request) -> Response:
        """The cameras page."""
        gate = self._page_gate(request)
        if gate is not None:
            return gate
        return html(page_html.cameras_page(base_path(request), status.camera_rows(self.fleet)))

    @router.get("/ui/events", response_class=HTMLResponse, include_in_schema=False)
    def page_events(
        self,
        request: Request,
        camera: str = "",
        label: Literal["", "none", "false_alarm", "anomaly"] = "",
        since: Literal["1h", "24h", "7d", "all"] = "all",
        limit: int = Query(100, ge=1, le=1000),
    ) -> Response:
        """The events page, filtered by camera, label and time."""
        gate = self._page_gate(request)
        if gate is not None:
            return gate
        ago = page_html.SINCE_CHOICES[since]
        events = self._events("list_events", camera=camera or None, label=label or None, limit=limit,
                              since=None if ago is None else time.time() - ago)
        cameras = sorted(set(self.fleet.cameras) | ({camera} if camera else set()))
        return html(page_html.events_page(base_path(request), events, cameras, camera, label, since, limit))

    @router.get("/ui/events/{event_id}", response_class=HTMLResponse, include_in_schema=False)
    def page_event(self, event_id: EventId, request: Request) -> Response:
        """One event's page."""
        gate = self._page_gate(request)
        if gate is not None:
            return gate
        ev = self._events("get_event", event_id)
        if ev is None:
            raise HTTPException(404, f"no event {event_id}")
        return html(page_html.event_page(base_path(request), ev))

    @router.get("/ui/learning", response_class=HTMLResponse, include_in_schema=False)
    def page_learning(self, request: Request) -> Response:
        """The Learning page: each camera's model, recordings and learn jobs."""
        gate = self._page_gate(request)
        if gate is not None:
            return gate
        rows = status.camera_rows(self.fleet)
        using = {r["name"]: _real((r.get("bundle") or {}).get("path")) for r in rows}
        jobs = [j | {"in_use": j["state"] == "done" and using.get(j["camera"]) == _real(j["bundle"])}
                for j in self.learn_jobs.list()]
        defaults = self.fleet.cfg.alerts
        rates = {n: c.alert_settings(defaults).max_false_alerts_per_hour for n, c in self.fleet.cameras.items()}
        return html(learning_html.learning_page(base_path(request), rows, self.recordings.list(), jobs,
                                                self.learn_jobs.cfg.schedule, rates, self.learn_jobs.cfg.temporal))

    @router.post("/ui/login", response_class=HTMLResponse, include_in_schema=False)
    async def page_login(self, request: Request) -> Response:
        """The login form's target: a right token sets the session cookie and goes back to the page."""
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        given, nxt = form.get("token", [""])[0], form.get("next", ["/"])[0]
        nxt = nxt if _NEXT.match(nxt) else "/"
        base = base_path(request)
        if self.token is None or web_auth.token_matches(given, self.token):
            return self._with_session(request, base + nxt) if self.token else RedirectResponse(base + nxt, 303)
        return html(page_html.login_page(base, nxt, True), 401)

    @router.get("/ui/static/{name}", include_in_schema=False)
    def page_static(self, name: str) -> Response:
        """The page's script and stylesheet (fixed list; no token needed, they hold no data)."""
        if name not in STATIC_TYPES:
            raise HTTPException(404, f"no static file {name!r}; files: {sorted(STATIC_TYPES)}")
        return Response((STATIC_DIR / name).read_bytes(), media_type=STATIC_TYPES[name],
                        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"})

    @router.get("/docs", response_class=HTMLResponse, include_in_schema=False)
    def page_docs(self, request: Request) -> Response:
        """The API's routes, offline (FastAPI's own /docs loads its assets from a CDN, so it is off)."""
        return html(page_html.docs_page(base_path(request), request.app.openapi()))

    # ---------------------------------------------------------------------------------------- page data
    @router.get("/cameras/{name}/scores")
    def camera_scores(
        self, name: str,
        seconds: float = Query(300.0, gt=0, le=HORIZON_S, description="how far back, seconds"),
    ) -> dict:
        """GET /cameras/{name}/scores: the camera's scores of the last `seconds` as [[t, score], ...] (at most 600
        points, peaks kept) with its alert threshold; points is empty before the first scored window."""
        scorer = self._camera_scorer(name)
        hist = self._ask(scorer.score_history.remote(name, seconds))
        return hist or {"camera": name, "seconds": seconds, "threshold": None, "alert_open": False, "points": []}

    @router.get("/cameras/{name}/frame")
    def camera_frame(self, name: str) -> Response:
        """GET /cameras/{name}/frame: JPEG of the camera's newest scored frame, as the model saw it."""
        jpeg = self._ask(self._camera_scorer(name).latest_frame.remote(name))
        if jpeg is None:
            raise HTTPException(404, f"camera {name!r} has no scored frame yet")
        return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "no-store"})

    @router.get("/events/{event_id}/scores")
    def event_scores(self, event_id: EventId) -> dict:
        """GET /events/{id}/scores: the event's score trace {"threshold", "points": [[t, score], ...]}."""
        trace = self._events("get_trace", event_id)
        if trace is None:
            raise HTTPException(404, f"event {event_id} has no score trace (or does not exist)")
        return trace

    @router.get("/events/{event_id}/clip")
    def event_clip(self, event_id: EventId) -> Response:
        """GET /events/{id}/clip: the alert's footage, at the model's input size (Matroska, H.264)."""
        clip = self._events("get_clip", event_id)
        if clip is None:
            raise HTTPException(404, f"event {event_id} has no clip (or does not exist)")
        return Response(clip, media_type="video/x-matroska",
                        headers={"Content-Disposition": f'attachment; filename="event-{event_id}.mkv"'})

    @router.post("/events/{event_id}/label")
    def label_event(self, event_id: EventId, body: LabelRequest) -> dict:
        """POST /events/{id}/label: record the operator's verdict (false_alarm or anomaly); the labelled event with
        `footage`: "kept" (a false alarm's clip now is normal footage of the camera's next learn, `footage_path`),
        "removed" (an anomaly's is not), "pending" (kept once the alert's clip is written) or "none"
        (`footage_reason`: no clip, e.g. the event predates clips or its clip was pruned)."""
        ev = self._events("set_label", event_id, body.label)
        if ev is None:
            raise HTTPException(404, f"no event {event_id}")
        return ev
