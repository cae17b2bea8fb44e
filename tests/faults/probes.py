"""Hostile and clumsy requests against the control plane, as one table (tests/faults/test_hostile_requests.py
asserts each row, bench/probes.py prints the tally by route).

`PROBES`: every protected route without a token, with a wrong one and with a forged session cookie (401 before
its body is read or validated), then bad input with the token: types, schemes, null bytes in paths, event ids
past 64 bits, NaN and infinite query values, demo feeds of absurd size, traversal, oversized bodies.
`raw_post` sends a body over a bare socket (chunked or not, optionally stalling) for what `requests` cannot do.
"""
from __future__ import annotations

import re
import socket
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.faults.scenarios import ServiceClient
from tests.faults.tools.watch import API_TOKEN, find_secrets

APP, PREFIX = "probes", "/probes"
HUGE_ID = "99999999999999999999999"  # past 64 bits


@dataclass(frozen=True)
class Probe:
    id: str
    method: str
    path: str
    auth: bool | str  # True: the token; a string: that bearer token; False: none
    status: int
    text: str  # the answer must contain it
    kw: dict = field(default_factory=dict, hash=False)

    @property
    def route(self) -> str:
        """The route template the probe hits (`POST /events/{id}/label`)."""
        path = self.path.split("?")[0]
        for pattern, template in _TEMPLATES:
            path = re.sub(pattern, template, path)
        return f"{self.method} {path}"


_TEMPLATES = [(r"^/((?:ui/)?events|recordings|jobs)/[^/]+", r"/\1/{id}"), (r"^/cameras/[^/]+", "/cameras/{name}"),
              (r"^/ui/static/.+", "/ui/static/{name}")]


# (method, path, body) of every route that needs the token; the camera "alerting" and event 1 may exist or not
PROTECTED = [
    ("GET", "/metrics", None), ("GET", "/cameras", None), ("GET", "/cameras/alerting", None),
    ("POST", "/cameras", {"name": "x1", "url": "demo://a"}), ("PUT", "/cameras/alerting", {"name": "alerting", "url": "demo://a"}),
    ("PATCH", "/cameras/alerting", {"fps": 3}), ("DELETE", "/cameras/alerting", None),
    ("PUT", "/cameras/alerting/bundle", {"path": None}), ("POST", "/cameras/alerting/recordings", {"minutes": 1}),
    ("GET", "/recordings", None), ("GET", "/recordings/r1", None), ("POST", "/cameras/alerting/learn", {}),
    ("GET", "/jobs", None), ("GET", "/jobs/j1", None), ("GET", "/scorers", None), ("GET", "/bundle", None),
    ("PUT", "/bundle", {"path": "/tmp"}), ("GET", "/events", None), ("GET", "/events/1", None),
    ("GET", "/events/1/snapshot", None), ("GET", "/events/1/scores", None), ("GET", "/events/1/clip", None),
    ("POST", "/events/1/label", {"label": "anomaly"}), ("GET", "/cameras/alerting/scores", None),
    ("GET", "/cameras/alerting/frame", None),
]
PAGES = ["/", "/ui/events", "/ui/events/1", "/ui/learning"]  # 401 with the login form
FORGED_COOKIE = {"Cookie": "vad_session=" + "0" * 64}


def _auth_probes() -> list[Probe]:
    out = []
    for method, path, body in PROTECTED:
        kw = {} if body is None else {"json": body}
        for how, auth, extra in (("none", False, {}), ("wrong", "not-the-token", {}), ("cookie", False, FORGED_COOKIE)):
            out.append(Probe(f"{how} {method} {path}", method, path, auth, 401, "bearer token",
                             {**kw, "headers": dict(extra)}))
    for path in PAGES:
        out.append(Probe(f"none GET {path}", "GET", path, False, 401, "token"))
    return out


NUL = "/tmp/a\x00b"
BAD_INPUT = [
    # authentication before validation: a bad body without the token is 401, never 422 naming its fields
    Probe("unauth bad body", "POST", "/cameras", False, 401, "bearer token", {"json": {"name": "n", "fps": "abc"}}),
    Probe("unauth not json", "POST", "/cameras", False, 401, "bearer token",
          {"data": b"{name: ", "headers": {"content-type": "application/json"}}),
    Probe("unauth label bad body", "POST", "/events/31/label", False, 401, "bearer token", {"json": {"label": 7}}),
    Probe("fps type", "POST", "/cameras", True, 422, "body.fps", {"json": {"name": "n1", "url": "demo://a", "fps": "abc"}}),
    Probe("url scheme", "POST", "/cameras", True, 422, "body.url", {"json": {"name": "n2", "url": "http://127.0.0.1/x"}}),
    Probe("unknown key", "POST", "/cameras", True, 422, "body.colour", {"json": {"name": "n4", "url": "demo://a", "colour": 1}}),
    Probe("name traversal", "POST", "/cameras", True, 422, "body.name", {"json": {"name": "../../etc/passwd", "url": "demo://a"}}),
    Probe("not json", "POST", "/cameras", True, 422, "body",
          {"data": b"{name: ", "headers": {"content-type": "application/json"}}),
    # null bytes in paths: 422 naming the field, not a 500
    Probe("nul url", "POST", "/cameras", True, 422, "body.url", {"json": {"name": "n7", "url": NUL}}),
    Probe("nul file url", "POST", "/cameras", True, 422, "body.url", {"json": {"name": "n8", "url": "file://" + NUL}}),
    Probe("nul bundle", "POST", "/cameras", True, 422, "body.bundle", {"json": {"name": "n9", "url": "demo://a", "bundle": NUL}}),
    Probe("nul patch url", "PATCH", "/cameras/alerting", True, 422, "body.url", {"json": {"url": NUL}}),
    Probe("nul put camera", "PUT", "/cameras/alerting", True, 422, "body.url", {"json": {"name": "alerting", "url": NUL}}),
    Probe("nul bundle path", "PUT", "/bundle", True, 422, "body.path", {"json": {"path": NUL}}),
    Probe("nul camera bundle", "PUT", "/cameras/alerting/bundle", True, 422, "body.path", {"json": {"path": NUL}}),
    # event ids past 64 bits: a client error, not an outage
    *[Probe(f"huge id {m} {p}", m, p.format(HUGE_ID), True, 422, "path.event_id", kw) for m, p, kw in (
        ("GET", "/events/{}", {}), ("GET", "/events/{}/scores", {}), ("GET", "/events/{}/snapshot", {}),
        ("GET", "/events/{}/clip", {}), ("GET", "/ui/events/{}", {}),
        ("POST", "/events/{}/label", {"json": {"label": "anomaly"}}))],
    Probe("negative id", "GET", "/events/-1", True, 422, "path.event_id"),
    Probe("id type", "GET", "/events/abc", True, 422, "path.event_id"),
    Probe("unknown event", "GET", "/events/999999", True, 404, "no event"),
    # NaN and infinities in queries
    Probe("since nan", "GET", "/events?since=nan", True, 422, "query.since"),
    Probe("until inf", "GET", "/events?until=inf", True, 422, "query.until"),
    Probe("min_score nan", "GET", "/events?min_score=nan", True, 422, "query.min_score"),
    Probe("limit type", "GET", "/events?limit=lots", True, 422, "query.limit"),
    Probe("since after until", "GET", "/events?since=10&until=5", True, 422, "query.since"),
    Probe("scores seconds nan", "GET", "/cameras/alerting/scores?seconds=nan", True, 422, "query.seconds"),
    # every source's parameters checked when the camera is added
    Probe("demo size", "POST", "/cameras", True, 422, "size", {"json": {"name": "d1", "url": "demo://street?size=99999999"}}),
    Probe("demo fps nan", "POST", "/cameras", True, 422, "fps", {"json": {"name": "d2", "url": "demo://street?fps=nan"}}),
    Probe("demo unknown", "POST", "/cameras", True, 422, "unknown demo parameter",
          {"json": {"name": "d3", "url": "demo://street?speed=3"}}),
    Probe("demo seed", "POST", "/cameras", True, 422, "seed", {"json": {"name": "d4", "url": "demo://street?seed=-1"}}),
    Probe("rtsp port", "POST", "/cameras", True, 422, "body.url", {"json": {"name": "d5", "url": "rtsp://127.0.0.1:99999/x"}}),
    Probe("patch demo size", "PATCH", "/cameras/alerting", True, 422, "size", {"json": {"url": "demo://street?size=99999999"}}),
    # traversal and sizes
    Probe("static traversal", "GET", "/ui/static/..%2F..%2Fapp.py", False, 404, "detail"),
    Probe("camera traversal", "GET", "/cameras/..%2F..%2Fetc%2Fpasswd", True, 404, "detail"),
    Probe("bundle relative", "PUT", "/bundle", True, 422, "absolute path", {"json": {"path": "../../etc"}}),
    Probe("oversized body", "POST", "/cameras", True, 413, "too large", {"json": {"name": "n6", "url": "demo://" + "x" * 70_000}}),
    Probe("oversized body unauth", "POST", "/cameras", False, 401, "bearer token", {"json": {"url": "demo://" + "x" * 70_000}}),
    Probe("recording minutes", "POST", "/cameras/alerting/recordings", True, 422, "body.minutes", {"json": {"minutes": 1e9}}),
    Probe("learn unknown key", "POST", "/cameras/alerting/learn", True, 422, "body.", {"json": {"epochs": 1e9}}),
    Probe("deep nesting", "POST", "/cameras", True, 400, "error parsing the body",  # FastAPI's answer to RecursionError
          {"data": b"[" * 30_000 + b"]" * 30_000, "headers": {"content-type": "application/json"}}),
    Probe("huge int", "POST", "/cameras/alerting/recordings", True, 400, "error parsing the body",  # past 4300 digits
          {"data": b'{"minutes": ' + b"9" * 5000 + b"}", "headers": {"content-type": "application/json"}}),
    Probe("float overflow", "POST", "/cameras", True, 422, "body.fps",
          {"data": b'{"name": "f1", "url": "demo://a", "fps": 1e999}', "headers": {"content-type": "application/json"}}),
    Probe("label bad", "POST", "/events/1/label", True, 422, "body.label", {"json": {"label": "maybe"}}),
    Probe("healthz open", "GET", "/healthz", False, 200, "\"ok\":true"),
]
PROBES = _auth_probes() + BAD_INPUT


def answer(svc: ServiceClient, probe: Probe) -> tuple[bool, str]:
    """(answered right, what came back): the expected status, the expected text, no credential or token echoed."""
    kw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in probe.kw.items()}
    r = svc.request(probe.method, probe.path, auth=probe.auth, **kw)
    ok = r.status_code == probe.status and probe.text in r.text and not find_secrets(r.text, (API_TOKEN,))
    return ok, f"{r.status_code} {r.text[:200]}"


def raw_post(port: int, path: str, body: bytes, *, chunk: int = 1024, token: str | None = None,
             stall_after: int | None = None, timeout_s: float = 30.0) -> tuple[int | None, float]:
    """POST `body` as `Transfer-Encoding: chunked` over a bare socket; (status or None, seconds to the status line).

    The body is sent from a thread (the server may answer before it is all sent); `stall_after`: stop sending
    after that many bytes and keep the connection open (a slow client).
    """
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout_s)
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\n" + (f"Authorization: Bearer {token}\r\n" if token else "") + "\r\n")
    done = threading.Event()

    def feed() -> None:
        try:
            sock.sendall(head.encode())
            end = len(body) if stall_after is None else stall_after
            for i in range(0, end, chunk):
                part = body[i:min(i + chunk, end)]
                sock.sendall(b"%x\r\n%s\r\n" % (len(part), part))
            if stall_after is None:
                sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # the server answered and closed: expected for a refused body
        done.set()

    t0 = time.monotonic()
    threading.Thread(target=feed, daemon=True).start()
    try:
        line = sock.makefile("rb").readline()
        status = int(line.split()[1]) if line.startswith(b"HTTP/") else None
    except (OSError, ValueError, IndexError):
        status = None
    elapsed = time.monotonic() - t0
    sock.close()
    return status, elapsed


def start_service(root: Path | None = None) -> tuple[ServiceClient, int]:
    """The app the probes run against: a token, one demo camera ("alerting", always over its threshold so events
    exist), a small spatial bundle; (client, Serve's port). Stop it with `serve.delete(APP)`."""
    from ray import serve

    from offline.scoring.bundle import random_bundle
    from streaming.app import build_app
    from tests.streaming.service_support import SERVE_PORT, ensure_ray, wait_for

    root = root or Path(tempfile.mkdtemp(prefix="vad-probes-"))
    bundle = random_bundle(root / "bundle", size=64, temporal=False, channels=(8, 16, 32))
    args = {
        "cameras": [{"name": "alerting", "url": "demo://street?seed=0&fps=10&size=64", "fps": 5, "threshold": 0.0,
                     "min_duration_s": 0.0}],
        "scorer": {"bundle": str(bundle), "build_demo_bundle": False, "devices": ["cpu"], "max_batch": 4,
                   "torch_threads": 1, "num_cpus": 0.25},
        "events": {"path": str(root / "events.db")},
        "state": {"persist": False},
        "http": {"host": "127.0.0.1", "port": SERVE_PORT, "token": API_TOKEN},
    }
    ensure_ray()
    serve.run(build_app(args), name=APP, route_prefix=PREFIX)
    svc = ServiceClient(f"http://127.0.0.1:{SERVE_PORT}{PREFIX}")
    wait_for(lambda: svc.get("/healthz", auth=False).status_code == 200, 120, "healthz 200")
    return svc, SERVE_PORT
