"""The page's pure parts: session auth (streaming/web_auth.py), label validation, HTML rendering and escaping
(streaming/page_html.py), and the shipped script and stylesheet (nothing from another origin, small)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from streaming import page_html, web_auth
from streaming.page import STATIC_DIR, STATIC_TYPES, LabelRequest

TOKEN = "s3cret-token"


@pytest.mark.parametrize("authorization, cookie, ok", [
    (f"Bearer {TOKEN}", None, True),
    (f"bearer  {TOKEN} ", None, True),
    ("Bearer wrong", None, False),
    (f"Basic {TOKEN}", None, False),
    (None, web_auth.session_value(TOKEN), True),
    (None, TOKEN, False),  # the cookie holds an HMAC of the token, never the token
    (None, web_auth.session_value("other"), False),
    (None, "é" * 64, False),
    (None, None, False),
])
def test_bearer_header_or_session_cookie(authorization, cookie, ok):
    assert web_auth.authorised(TOKEN, authorization, cookie) is ok
    assert web_auth.authorised(None, authorization, cookie)  # no token configured: open


def test_session_value_does_not_reveal_the_token():
    v = web_auth.session_value(TOKEN)
    assert re.fullmatch(r"[0-9a-f]{64}", v) and TOKEN not in v and v == web_auth.session_value(TOKEN)


def test_label_request_accepts_the_two_verdicts_and_names_the_field_otherwise():
    assert LabelRequest.model_validate({"label": "false_alarm"}).label == "false_alarm"
    assert LabelRequest.model_validate({"label": "anomaly"}).label == "anomaly"
    for body, loc in (({"label": "maybe"}, ("label",)), ({}, ("label",)), ({"label": "anomaly", "x": 1}, ("x",)),
                      ({"label": None}, ("label",))):
        with pytest.raises(ValidationError) as info:
            LabelRequest.model_validate(body)
        assert info.value.errors()[0]["loc"] == loc


ROW = {"name": "door", "state": "streaming", "bundle": {"path": "/b", "sha256": "abc123"}, "fps_in": 10.0,
       "fps_scored": 9.5, "lag_s": 0.25, "last_score": 0.42, "warming_up": False, "alert_open": False,
       "event_id": None, "retry_in_s": None, "last_error": None}


@pytest.mark.parametrize("row, cls, text", [
    ({}, "streaming", "streaming"),
    ({"state": "reconnecting", "retry_in_s": 4.0}, "reconnecting", "reconnecting, next try after a 4.0 s wait"),
    ({"state": "error", "last_error": "rtsp://***@cam/: 401"}, "error", "error: rtsp://***@cam/: 401"),
])
def test_camera_state_text(row, cls, text):
    assert page_html.camera_state(ROW | row) == (cls, text)


def test_cameras_page_escapes_what_it_shows_and_links_under_the_prefix():
    hostile = '<script>alert(1)</script>"'
    out = page_html.cameras_page("/vad", [ROW | {"state": "error", "last_error": hostile}])
    assert "<script>alert" not in out and "&lt;script&gt;alert(1)&lt;/script&gt;&quot;" in out
    assert 'src="/vad/cameras/door/frame"' in out and 'data-scores="/vad/cameras/door/scores?seconds=300"' in out
    assert 'href="/vad/ui/static/page.css"' in out and "9.5" in out and "0.25 s" in out
    assert "No cameras" in page_html.cameras_page("", [])


def test_events_page_and_event_page():
    ev = {"id": 7, "camera": "door", "start_s": 1_700_000_000.0, "end_s": 1_700_000_002.5, "peak_score": 0.987,
          "peak_frame": 12, "peak_s": 1_700_000_001.0, "status": "closed", "reason": "<b>score</b>",
          "label": "false_alarm", "labelled_s": 1_700_000_100.0, "has_snapshot": True}
    out = page_html.events_page("", [ev], ["door"], "door", "false_alarm", "24h", 100)
    assert 'src="/events/7/snapshot"' in out and "2.5 s" in out and "0.987" in out and "false alarm" in out
    assert '<option value="door" selected>' in out and '<option value="24h" selected>' in out
    assert 'class="label-button chosen" data-url="/events/7/label" data-label="false_alarm"' in out
    detail = page_html.event_page("", ev)
    assert "&lt;b&gt;score&lt;/b&gt;" in detail and 'data-scores="/events/7/scores"' in detail
    assert 'data-end="1700000002.5"' in detail and "2023-11-14 22:13:20Z" in detail
    assert 'data-end' not in page_html.event_page("", ev | {"end_s": None, "status": "open"})
    assert "No events match" in page_html.events_page("", [], [], "", "", "all", 100)


@pytest.mark.parametrize("seconds, text", [(None, "open"), (0.04, "0.0 s"), (59.9, "59.9 s"), (125, "2 min 05 s"),
                                           (7260, "2 h 01 min")])
def test_duration(seconds, text):
    assert page_html.duration(seconds) == text


def test_docs_page_lists_the_routes_and_points_to_the_openapi_document():
    spec = {"paths": {"/events/{event_id}/label": {"post": {"description": "POST /events/{id}/label: record the\n"
                                                                            "verdict.\n\nMore."}}}}
    out = page_html.docs_page("/p", spec)
    assert 'href="/p/openapi.json"' in out and "<td>record the verdict.</td>" in out


def test_login_page_posts_the_token_and_never_puts_it_in_a_url():
    out = page_html.login_page("/p", "/ui/events", wrong=True)
    assert 'method=post action="/p/ui/login"' in out and "type=password" in out and "Wrong token" in out


def test_static_files_are_small_and_reach_no_other_origin():
    for name in STATIC_TYPES:
        text = (STATIC_DIR / name).read_text()
        assert len(text.encode()) < 16_000, name  # hand-written, no framework
        assert not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/|@import", text), name
    rendered = page_html.cameras_page("", [ROW]) + page_html.events_page("", [], [], "", "", "all", 1)
    assert not re.search(r"https?://", rendered)
    assert "<script>" not in rendered and "style=" not in rendered  # the CSP allows no inline script or style
