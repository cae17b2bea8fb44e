"""The Learning page as plain HTML: per camera its model, its recordings and learn jobs, and the forms that start them.

Pure (data in, `str` out): streaming/page.py gathers the camera rows (streaming/status.py), recordings
(streaming/recordings.py) and learn jobs (streaming/learn_jobs.py) and serves this. The forms and the swap buttons
carry their API route in `data-` attributes; streaming/static/page.js posts them as JSON and shows the API's error
(409 busy, 422 naming the field, 507 no room) in the camera's card. Everything from outside is escaped.
"""
from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from streaming.page_html import e, layout, number, utc

ACTIVE_RECORDING = ("queued", "recording")
ACTIVE_JOB = ("queued", "running")
SCHEDULES = (("auto", "auto: paper with a GPU, else cpu"), ("tiny", "tiny: seconds, a smoke test"),
             ("cpu", "cpu: at most an hour on 2 cores"),
             ("paper", "paper: the paper's, for a GPU"))
THRESHOLD_SOURCES = {"config": "set in the config", "max_false_alerts_per_hour": "chosen for the camera's rate",
                     "bundle_learned": "learned with the bundle", "bundle": "the bundle's default"}
SHOWN = 10  # newest recordings and jobs shown per camera
QUANTILES = (("0.5", "median"), ("0.9", "90%"), ("0.99", "99%"), ("1.0", "max"))


def rate(per_hour: float) -> str:
    """A rate per hour for people: `0.25`, `12.5`, `2250`."""
    return f"{per_hour:.0f}" if per_hour >= 100 else f"{per_hour:.3g}"


def per_hour(expected: float | None, bound: float | None) -> str:
    """Expected false alerts per hour; when the footage showed none, the bound it allows."""
    if expected is None:
        return "unknown (no calibration footage)"
    if expected == 0 and bound:
        return f"0/h seen (under {rate(bound)}/h: more footage would tell)"
    return f"{rate(expected)}/h"


def progress_bar(fraction: float | None, label: str) -> str:
    """A <progress> bar (no inline style: the CSP forbids it) with its percentage as text for screen readers."""
    f = min(1.0, max(0.0, float(fraction or 0.0)))
    return f'<progress max=1 value="{f:.3f}" aria-label="{e(label)}">{f:.0%}</progress>'


def state_badge(state: str) -> str:
    return f'<span class="badge state-{e(state)}">{e(state)}</span>'


def model_part(row: dict[str, Any]) -> str:
    """The camera's bundle and threshold now (with the false alerts per hour its calibration footage shows)."""
    bundle = row.get("bundle") or {}
    th = row.get("threshold") or {}
    which = "default" if bundle.get("default") else "its own"
    thr = "&mdash;" if th.get("threshold") is None else (
        f'{th["threshold"]:.3f} ({e(THRESHOLD_SOURCES.get(th.get("source"), th.get("source")))})')
    rate = per_hour(th.get("expected_per_hour"), th.get("bound_per_hour")) if th else "&mdash;"
    note = f'<p class=note>{e(th["note"])}</p>' if th.get("note") else ""
    return (
        "<dl>"
        f'<dt>bundle</dt><dd><span class=bundle-sha>{e(bundle.get("sha256") or "?")}</span> ({which}) '
        f'<code class=path>{e(bundle.get("path"))}</code></dd>'
        f"<dt>threshold</dt><dd class=threshold>{thr}</dd>"
        f"<dt>expected false alerts</dt><dd>{rate}</dd>"
        "</dl>" + note
    )


def recording_item(rec: dict[str, Any]) -> str:
    """One recording: state, progress bar, seconds recorded of requested, segments, size, error."""
    state = rec.get("state") or "queued"
    active = " active" if state in ACTIVE_RECORDING else ""
    mib = (rec.get("bytes") or 0) / 2**20
    error = f'<p class="state error">{e(rec["error"])}</p>' if rec.get("error") else ""
    return (
        f'<li class="item recording{active}" data-recording="{e(rec.get("id"))}" data-state="{e(state)}">'
        f'<p>{state_badge(state)} <code>{e(rec.get("id"))}</code> &middot; {utc(rec.get("created_s"))}</p>'
        + progress_bar(rec.get("progress"), f"recording {rec.get('id')}")
        + f'<p class=figures><span class=recorded>{number(rec.get("recorded_s"), ".1f")}</span> s of '
        f'{number(rec.get("requested_s"), ".1f")} s &middot; {int(rec.get("segments") or 0)} segment(s) &middot; '
        f"{mib:.1f} MiB</p>{error}</li>"
    )


def job_figures(result: dict[str, Any]) -> str:
    """A finished job's figures: the chosen threshold, and on unseen footage the score quantiles and false alerts/h."""
    choice = result.get("threshold_choice") or {}
    rows = [f"<dt>trained</dt><dd>{number(result.get('train_minutes'), '.2f', ' min')}</dd>"]
    if choice:
        # too short a calibration for the target (`resolved` false) shows as "0/h seen (under N/h ...)"
        rows.append(f'<dt>chosen threshold</dt><dd class=chosen-threshold>{choice["threshold"]:.3f}, expected '
                    f'{per_hour(choice.get("expected_per_hour"), choice.get("bound_per_hour"))}</dd>')
    unseen = result.get("unseen")
    if unseen:
        q = unseen.get("score_quantiles") or {}
        quant = ", ".join(f"{name} {q[k]:.3f}" for k, name in QUANTILES if q.get(k) is not None) or "&mdash;"
        rows.append(f'<dt>unseen footage</dt><dd>{number(unseen.get("seconds"), ".1f", " s")}</dd>'
                    f"<dt>scores there</dt><dd class=quantiles>{quant}</dd>")
        for key, text in (("bundle", "bundle's threshold"), ("chosen", "chosen threshold")):
            fa = (unseen.get("false_alerts") or {}).get(key)
            if fa:
                rows.append(f"<dt>false alerts at the {text} ({fa['threshold']:.3f})</dt>"
                            f'<dd class="false-alerts-{key}">{int(fa["alerts"])} = {rate(fa["per_hour"])}/h</dd>')
    elif "unseen" in result:
        rows.append(f'<dt>unseen footage</dt><dd>none: {e(result.get("unseen_reason") or "one clip only")}</dd>')
    return "<dl>" + "".join(rows) + "</dl>"


def swap_button(base: str, job: dict[str, Any]) -> str:
    """The button that puts a finished job's bundle in for its camera (PUT /cameras/{name}/bundle); disabled while
    the job runs, when it failed, and when its bundle is the camera's already."""
    state = job.get("state")
    if job.get("in_use"):
        text, enabled = "in use", False
    elif state == "failed":
        text, enabled = "failed: nothing to swap in", False
    elif state != "done":
        text, enabled = "swap in (when done)", False
    else:
        text, enabled = "swap in", True
    url = f"{base}/cameras/{quote(str(job.get('camera')), safe='')}/bundle"
    body = json.dumps({"path": job.get("bundle")})
    return (f'<button type=button class=api-button data-method=PUT data-url="{e(url)}" data-body="{e(body)}"'
            f'{"" if enabled else " disabled"}>{e(text)}</button>')


def job_item(base: str, job: dict[str, Any]) -> str:
    """One learn job: state, stage, progress bar; when done its figures and the swap button; else its error."""
    state = job.get("state") or "queued"
    active = " active" if state in ACTIVE_JOB else ""
    prog = job.get("progress") or {}
    step = f", step {int(prog['step'])}" if prog.get("step") is not None else ""
    stage = "" if state == "done" else f'<p class=stage>{e(prog.get("stage") or state)}{step}</p>'
    swapped = " &middot; swapped in when done" if job.get("swapped") else ""
    flow = " + flow AE" if job.get("temporal") else ""
    parts = [
        f'<li class="item job{active}" data-job="{e(job.get("id"))}" data-state="{e(state)}">'
        f'<p>{state_badge(state)} <code>{e(job.get("id"))}</code> &middot; {e(job.get("schedule"))} schedule{flow} '
        f'&middot; {utc(job.get("created"))}{swapped}</p>{stage}',
        progress_bar(1.0 if state == "done" else prog.get("fraction"), f"learn job {job.get('id')}"),
    ]
    if state == "done" and job.get("result"):
        parts.append(job_figures(job["result"]))
    if job.get("error"):
        parts.append(f'<p class="state error">{e(job["error"])}</p>')
    if job.get("swap_error"):
        parts.append(f'<p class="state error">swap refused: {e(job["swap_error"])}</p>')
    parts.append(f"<p class=buttons>{swap_button(base, job)}</p></li>")
    return "".join(parts)


def newest(items: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    return sorted(items, key=lambda x: x.get(key) or 0.0, reverse=True)


def work_part(base: str, recordings: list[dict[str, Any]], jobs: list[dict[str, Any]]) -> str:
    """A camera's recordings and learn jobs, newest first (SHOWN of each at most)."""
    recs, js = newest(recordings, "created_s"), newest(jobs, "created")
    more = lambda n, what: f"<p class=note>{n - SHOWN} older {what} not shown.</p>" if n > SHOWN else ""  # noqa: E731
    rec_html = "".join(recording_item(r) for r in recs[:SHOWN]) or "<li class=empty>No recordings yet.</li>"
    job_html = "".join(job_item(base, j) for j in js[:SHOWN]) or "<li class=empty>No learn jobs yet.</li>"
    return (f'<h3>Recordings</h3><ul class="items recordings">{rec_html}</ul>{more(len(recs), "recordings")}'
            f'<h3>Learn jobs</h3><ul class="items jobs">{job_html}</ul>{more(len(js), "jobs")}')


def forms(base: str, name: str, schedule: str, rate: float | None, temporal: bool = False) -> str:
    """The record and learn forms of a camera (page.js posts them as JSON; they stay outside the live regions, so
    a refresh never wipes what is being typed)."""
    q = quote(name, safe="")
    opts = "".join(f'<option value="{v}"{" selected" if v == schedule else ""}>{e(t)}</option>' for v, t in SCHEDULES)
    hint = f"camera's: {rate:g}" if rate is not None else "default: the bundle's"
    return (
        f'<form class="api-form record" data-url="{e(base)}/cameras/{q}/recordings">'
        '<label>Minutes <input type=number name=minutes data-type=number step=any min=0 value=10 required></label>'
        "<button>Record</button></form>"
        f'<form class="api-form learn" data-url="{e(base)}/cameras/{q}/learn">'
        f"<label>Schedule <select name=schedule>{opts}</select></label>"
        "<label>Max false alerts / h <input type=number name=max_false_alerts_per_hour data-type=number step=any "
        f'min=0 placeholder="{e(hint)}"></label>'
        f"<label class=check><input type=checkbox name=temporal{' checked' if temporal else ''}> motion (flow AE: "
        "better detection, ~35x the scoring cost)</label>"
        "<label class=check><input type=checkbox name=swap> swap in when done</label>"
        "<button>Learn</button></form>"
    )


def learning_page(base: str, rows: list[dict[str, Any]], recordings: list[dict[str, Any]],
                  jobs: list[dict[str, Any]], schedule: str, rates: dict[str, float | None], temporal: bool = False) -> str:
    """One card per camera: its model now, the forms, its recordings and learn jobs (live regions page.js
    refreshes while something runs). `jobs` carry "in_use": the camera scores with that job's bundle now."""
    cards = []
    for row in rows:
        name = row["name"]
        recs = [r for r in recordings if r.get("camera") == name]
        js = [j for j in jobs if j.get("camera") == name]
        cards.append(
            f'<section class="card learning" data-camera="{e(name)}">'
            f"<h2>{e(name)}</h2>"
            f'<div data-live="model-{e(name)}">{model_part(row)}</div>'
            f"{forms(base, name, schedule, rates.get(name), temporal)}"
            '<p class="state error api-error" role=alert hidden></p>'
            f'<div data-live="work-{e(name)}">{work_part(base, recs, js)}</div>'
            "</section>"
        )
    body = "".join(cards) or '<p class=empty>No cameras. Add one with <code>POST /cameras</code> (see API).</p>'
    intro = ("<p class=note>Record a camera's normal footage, learn its scene from it, then swap the new bundle in. "
             "The figures of a finished job come from footage it never trained on.</p>")
    main = f'<h1>Learning</h1>{intro}<div class="grid wide">{body}</div>'
    return layout(base, "learning", "Learning", main, "learning")
