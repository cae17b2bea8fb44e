"""The operator's page as plain HTML strings: cameras, events, one event, the login form and the offline API docs
(the Learning page: streaming/learning_html.py).

Pure (data in, `str` out, no HTTP): streaming/page.py serves these. Every value from outside is escaped. No inline
script or style (the page is served with a Content-Security-Policy allowing only this service), so data for the
script rides in `data-` attributes; `data-live` regions are re-rendered here and swapped in by
streaming/static/page.js, which keeps the formatting in one place. `base` is the application's route prefix.
"""
from __future__ import annotations

import re
from datetime import datetime, timezone
from html import escape
from typing import Any
from urllib.parse import quote, urlencode

NAV = (("cameras", "Cameras", "/"), ("events", "Events", "/ui/events"), ("learning", "Learning", "/ui/learning"),
       ("api", "API", "/docs"))
LABEL_TEXT = {"false_alarm": "false alarm", "anomaly": "anomaly", None: "unlabelled"}
SINCE_CHOICES = {"1h": 3600.0, "24h": 86400.0, "7d": 7 * 86400.0, "all": None}  # the events page's time filter
CHART_SECONDS = 300  # the cameras page charts the last five minutes


def e(value: Any) -> str:
    """HTML-escaped text of `value` (quotes too: safe inside attributes)."""
    return escape("" if value is None else str(value), quote=True)


def utc(ts: float | None) -> str:
    """A <time> element in UTC (page.js shows it in the browser's time zone); an em dash for None."""
    if ts is None:
        return "&mdash;"
    iso = datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f'<time datetime="{iso}">{iso.replace("T", " ")}</time>'


def duration(seconds: float | None) -> str:
    """`12.3 s`, `4 min 05 s`, `2 h 01 min`; `open` for None."""
    if seconds is None:
        return "open"
    s = max(0.0, float(seconds))
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60):02d} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60):02d} min"


def number(value: float | None, fmt: str = ".2f", unit: str = "") -> str:
    """`value` formatted, or an em dash when there is none yet."""
    return "&mdash;" if value is None else f"{value:{fmt}}{unit}"


def layout(base: str, active: str, title: str, main: str, page: str) -> str:
    """The document around `main`: header with the navigation, stylesheet and script from this service."""
    links = "".join(
        f'<a href="{e(base)}{href}"{" aria-current=page" if key == active else ""}>{text}</a>' for key, text, href in NAV
    )
    return (
        "<!doctype html>\n<html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width, initial-scale=1">'
        f"<title>{e(title)} &middot; vad</title>"
        f'<link rel=stylesheet href="{e(base)}/ui/static/page.css">'
        f'<script src="{e(base)}/ui/static/page.js" defer></script></head>'
        f'<body data-base="{e(base)}" data-page="{e(page)}">'
        f'<header><span class=brand>vad</span><nav>{links}</nav></header>'
        f"<main>{main}</main></body></html>\n"
    )


# ------------------------------------------------------------------------------------------------ cameras
def camera_state(row: dict[str, Any]) -> tuple[str, str]:
    """(css class, text) of a camera's state: streaming; reconnecting with its retry wait; error with the
    (scrubbed) reason."""
    state = row.get("state") or "unknown"
    if state == "reconnecting":
        wait = row.get("retry_in_s")
        return state, "reconnecting" + (f", next try after a {wait:.1f} s wait" if wait is not None else "")
    if state == "error":
        return state, f"error: {row.get('last_error') or 'unknown'}"
    return state, state


def camera_stats(row: dict[str, Any]) -> str:
    """The live part of a camera's card (state, bundle, rates, lag, score, alert)."""
    cls, text = camera_state(row)
    bundle = row.get("bundle") or {}
    alert = (f'<span class="badge alert">alert open (event {e(row["event_id"])})</span>'
             if row.get("alert_open") else '<span class="badge">no alert</span>')
    score = number(row.get("last_score"), ".3f") + (" (warming up)" if row.get("warming_up") else "")
    error = ""
    if row.get("last_error") and row.get("state") != "error":
        error = f'<p class=note>last error: {e(row["last_error"])}</p>'
    return (
        f'<p class="state {e(cls)}">{e(text)}</p>'
        "<dl>"
        f'<dt>bundle</dt><dd title="{e(bundle.get("path"))}">{e(bundle.get("sha256") or "?")}</dd>'
        f'<dt>fps in / scored</dt><dd>{number(row.get("fps_in"), ".1f")} / {number(row.get("fps_scored"), ".1f")}</dd>'
        f'<dt>lag</dt><dd>{number(row.get("lag_s"), ".2f", " s")}</dd>'
        f"<dt>score</dt><dd>{score}</dd>"
        f"<dt>alert</dt><dd>{alert}</dd>"
        "</dl>" + error
    )


def cameras_page(base: str, rows: list[dict[str, Any]]) -> str:
    """One card per camera: live frame, the score chart of the last CHART_SECONDS with the threshold, status."""
    cards = []
    for row in rows:
        name = row["name"]
        q = quote(name, safe="")
        cards.append(
            f'<section class="card camera" data-camera="{e(name)}">'
            f"<h2>{e(name)}</h2>"
            '<div class=live>'
            f'<img class=frame src="{e(base)}/cameras/{q}/frame" data-src="{e(base)}/cameras/{q}/frame" '
            f'alt="latest frame of {e(name)}" width=256 height=256>'
            f'<canvas class=chart data-scores="{e(base)}/cameras/{q}/scores?seconds={CHART_SECONDS}" '
            f'data-seconds="{CHART_SECONDS}" role=img aria-label="score of {e(name)}, last {CHART_SECONDS // 60} minutes">'
            "</canvas></div>"
            f'<div class=stats data-live="camera-{e(name)}">{camera_stats(row)}</div>'
            "</section>"
        )
    body = "".join(cards) or '<p class=empty>No cameras. Add one with <code>POST /cameras</code> (see API).</p>'
    return layout(base, "cameras", "Cameras", f'<h1>Cameras</h1><div class=grid>{body}</div>', "cameras")


# ------------------------------------------------------------------------------------------------- events
def label_badge(label: str | None) -> str:
    """The event's label as a badge."""
    return f'<span class="badge label-{e(label or "none")}">{e(LABEL_TEXT.get(label, label))}</span>'


def label_buttons(base: str, ev: dict[str, Any]) -> str:
    """The two label buttons of an event (page.js posts them to /events/{id}/label)."""
    url = f"{base}/events/{int(ev['id'])}/label"
    return "".join(
        f'<button type=button class="label-button{" chosen" if ev.get("label") == key else ""}" '
        f'data-url="{e(url)}" data-label="{key}">{"false alarm" if key == "false_alarm" else "anomaly"}</button>'
        for key in ("false_alarm", "anomaly")
    )


def event_summary(ev: dict[str, Any]) -> str:
    """Start, duration, peak score, status and label of an event, one line."""
    dur = None if ev.get("end_s") is None else ev["end_s"] - ev["start_s"]
    status = "" if ev.get("status") == "closed" else '<span class="badge alert">open</span> '
    return (
        f'{status}{utc(ev["start_s"])} &middot; {duration(dur)} &middot; peak {ev["peak_score"]:.3f} '
        f"&middot; {label_badge(ev.get('label'))}"
    )


def _select(name: str, current: str, options: list[tuple[str, str]]) -> str:
    opts = "".join(f'<option value="{e(v)}"{" selected" if v == current else ""}>{e(t)}</option>' for v, t in options)
    return f'<label>{name} <select name="{name}">{opts}</select></label>'


def events_list(base: str, events: list[dict[str, Any]]) -> str:
    """The live list of events (newest first), each with its snapshot, summary and label buttons."""
    items = []
    for ev in events:
        i = int(ev["id"])
        snap = (f'<img class=thumb src="{e(base)}/events/{i}/snapshot" alt="snapshot of event {i}" loading=lazy>'
                if ev.get("has_snapshot") else '<span class="thumb none">no snapshot</span>')
        items.append(
            f'<li class="card event" data-event="{i}">'
            f'<a href="{e(base)}/ui/events/{i}">{snap}</a>'
            f'<div><h2><a href="{e(base)}/ui/events/{i}">#{i} {e(ev["camera"])}</a></h2>'
            f"<p>{event_summary(ev)}</p>"
            f'<p class=buttons>{label_buttons(base, ev)}</p></div></li>'
        )
    return f'<ul class=events>{"".join(items)}</ul>' if items else "<p class=empty>No events match.</p>"


def events_page(base: str, events: list[dict[str, Any]], cameras: list[str], camera: str, label: str, since: str,
                limit: int) -> str:
    """The events page: a filter form (camera, label, time) and the matching events, newest first."""
    form = (
        f'<form class=filters method=get action="{e(base)}/ui/events">'
        + _select("camera", camera, [("", "all")] + [(c, c) for c in cameras])
        + _select("label", label, [("", "any"), ("none", "unlabelled"), ("false_alarm", "false alarm"),
                                   ("anomaly", "anomaly")])
        + _select("since", since, [("1h", "last hour"), ("24h", "last 24 h"), ("7d", "last 7 days"), ("all", "all")])
        + "<button>Filter</button></form>"
    )
    note = f"<p class=note>Newest {limit} at most.</p>"
    return layout(base, "events", "Events",
                  f'<h1>Events</h1>{form}<div data-live=events>{events_list(base, events)}</div>{note}', "events")


def event_detail(base: str, ev: dict[str, Any]) -> str:
    """The live facts of one event (status, times, peak, label)."""
    return (
        f"<p>{event_summary(ev)}</p><dl>"
        f"<dt>camera</dt><dd>{e(ev['camera'])}</dd>"
        f"<dt>start</dt><dd>{utc(ev['start_s'])}</dd>"
        f"<dt>end</dt><dd>{utc(ev.get('end_s'))}{' (' + e(ev['reason']) + ')' if ev.get('reason') else ''}</dd>"
        f"<dt>peak</dt><dd>{ev['peak_score']:.3f} at {utc(ev['peak_s'])} (frame {int(ev['peak_frame'])})</dd>"
        f"<dt>label</dt><dd>{label_badge(ev.get('label'))}"
        f"{' since ' + utc(ev['labelled_s']) if ev.get('labelled_s') else ''}</dd></dl>"
    )


def event_page(base: str, ev: dict[str, Any]) -> str:
    """One event: facts, label buttons, the score timeline around it, its snapshot and a link to its clip."""
    i = int(ev["id"])
    snap = (f'<img class=snapshot src="{e(base)}/events/{i}/snapshot" alt="snapshot of event {i}">'
            if ev.get("has_snapshot") else "<p class=empty>No snapshot.</p>")
    end = "" if ev.get("end_s") is None else f' data-end="{ev["end_s"]}"'
    clip = (f'<p><a class=clip href="{e(base)}/events/{i}/clip" download>Footage of the alert</a> (.mkv, as the model '
            "saw it)</p>" if ev.get("clip") else "")
    main = (
        f'<h1>Event #{i} <small>{e(ev["camera"])}</small></h1>'
        f'<div class="card" data-live="event-{i}">{event_detail(base, ev)}</div>'
        f'<p class=buttons>{label_buttons(base, ev)}</p>'
        f'<h2>Score around the alert</h2>'
        f'<canvas class="chart trace" data-scores="{e(base)}/events/{i}/scores" data-start="{ev["start_s"]}"{end} '
        f'role=img aria-label="score around event {i}"></canvas>'
        f"<h2>Snapshot (peak frame)</h2>{snap}{clip}"
        f'<p><a href="{e(base)}/ui/events?{urlencode({"camera": ev["camera"]})}">more events of {e(ev["camera"])}</a></p>'
    )
    return layout(base, "events", f"Event {i}", main, "event")


# ------------------------------------------------------------------------------------------- login, docs
def login_page(base: str, next_path: str, wrong: bool) -> str:
    """The form asking for the service's token (posted to /ui/login, never put in a URL by the form)."""
    msg = '<p class="state error">Wrong token.</p>' if wrong else ""
    main = (
        "<h1>Token needed</h1><p>This service requires its API token.</p>" + msg
        + f'<form class=login method=post action="{e(base)}/ui/login">'
        f'<input type=hidden name=next value="{e(next_path)}">'
        '<label>Token <input type=password name=token autocomplete=current-password required></label>'
        "<button>Open</button></form>"
    )
    return layout(base, "", "Token needed", main, "login")


def docs_page(base: str, openapi: dict[str, Any]) -> str:
    """The API's routes from its OpenAPI document, and where that document is (works offline: no CDN assets)."""
    rows = []
    for path, methods in sorted(openapi.get("paths", {}).items()):
        for method, op in methods.items():
            first = (op.get("description") or op.get("summary") or "").split("\n\n")[0]
            what = re.sub(r"^[A-Z]+ \S+: ", "", " ".join(first.split()))  # the docstrings open with "GET /path: "
            rows.append(f"<tr><td><code>{e(method.upper())}</code></td><td><code>{e(path)}</code></td>"
                        f"<td>{e(what)}</td></tr>")
    main = (
        "<h1>API</h1>"
        f'<p>The OpenAPI document is at <a href="{e(base)}/openapi.json"><code>{e(base)}/openapi.json</code></a> '
        "(load it into any OpenAPI viewer). Requests need <code>Authorization: Bearer &lt;token&gt;</code> when the "
        "service has a token; <code>/healthz</code> never does.</p>"
        f"<table><thead><tr><th>method</th><th>path</th><th>what</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )
    return layout(base, "api", "API", main, "docs")
