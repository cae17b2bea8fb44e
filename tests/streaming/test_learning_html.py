"""The Learning page's HTML (streaming/learning_html.py): figures, progress, the swap button's states, escaping."""
from __future__ import annotations

import json
import re
from html import unescape

import pytest

from streaming import learning_html, page_html

HOSTILE = '<script>alert(1)</script>"'
ROW = {"name": "door", "bundle": {"path": "/b/demo", "sha256": "abc123", "default": True},
       "threshold": {"threshold": 0.9074, "source": "bundle_learned", "expected_per_hour": 0.0, "bound_per_hour": 2250.0}}
REC = {"id": "door-20240101T000000Z-ab12", "camera": "door", "state": "recording", "recorded_s": 12.25,
       "requested_s": 18.0, "progress": 0.68, "segments": 1, "bytes": 3 * 2**20, "error": None, "created_s": 1_700_000_000.0}
RESULT = {"train_minutes": 0.05, "threshold_choice": {"threshold": 0.9074, "expected_per_hour": 0.0,
                                                      "bound_per_hour": 2250.0, "resolved": False},
          "unseen": {"seconds": 9.0, "score_quantiles": {"0.5": 0.4064, "0.9": 0.9271, "0.99": 0.9962, "1.0": 0.9987},
                     "false_alerts": {"bundle": {"threshold": 0.9, "alerts": 2, "per_hour": 800.0},
                                      "chosen": {"threshold": 0.9074, "alerts": 1, "per_hour": 400.0}}}}
JOB = {"id": "door-20240101T000100Z-c0ffee", "camera": "door", "bundle": "/b/learned/door/door-20240101T000100Z-c0ffee",
       "schedule": "tiny", "swap": False, "state": "done", "progress": {"stage": "done", "fraction": 1.0, "step": None},
       "result": RESULT, "error": None, "swapped": False, "swap_error": None, "created": 1_700_000_060.0,
       "in_use": False}


def page(recordings=(), jobs=(), rows=(ROW,), rates=None) -> str:
    return learning_html.learning_page("/p", list(rows), list(recordings), list(jobs), "tiny", rates or {"door": 6.0})


def button(html: str) -> str:
    (b,) = re.findall(r"<button type=button class=api-button[^>]*>[^<]*</button>", html)
    return b


def test_the_page_is_in_the_navigation_and_shows_the_model_and_the_forms():
    out = page()
    assert '<a href="/p/ui/learning" aria-current=page>Learning</a>' in out
    assert all(f'href="/p{href}"' in out for _, _, href in page_html.NAV)
    assert 'data-url="/p/cameras/door/recordings"' in out and 'data-url="/p/cameras/door/learn"' in out
    assert '<option value="tiny" selected>' in out and 'placeholder="camera&#x27;s: 6"' in out
    assert "abc123" in out and "0.907 (learned with the bundle)" in out and "under 2250/h" in out
    assert "No recordings yet" in out and "No learn jobs yet" in out
    assert 'class="state error api-error" role=alert hidden' in out
    assert "No cameras" in learning_html.learning_page("", [], [], [], "cpu", {})
    assert not re.search(r"https?://", out) and "<script>" not in out and "style=" not in out  # the page's CSP


def test_the_learn_form_offers_the_flow_ae_ticked_as_the_service_is_configured():
    box = r"<input type=checkbox name=temporal( checked)?>"
    assert re.search(box, page()).group(1) is None
    on = learning_html.learning_page("/p", [ROW], [], [{**JOB, "temporal": True}], "cpu", {}, temporal=True)
    assert re.search(box, on).group(1) == " checked"
    assert "tiny schedule + flow AE" in on and "+ flow AE" not in page(jobs=[JOB])


def test_a_recording_shows_its_progress_and_seconds():
    out = page([REC])
    assert 'data-state="recording"' in out and 'class="item recording active"' in out
    assert '<progress max=1 value="0.680"' in out and "12.2</span> s of 18.0 s" in out and "3.0 MiB" in out
    done = page([REC | {"state": "done", "progress": 1.0, "recorded_s": 18.0}])
    assert 'class="item recording"' in done and "item recording active" not in done


@pytest.mark.parametrize("job, text, enabled", [
    ({}, "swap in", True),
    ({"in_use": True, "swapped": True}, "in use", False),
    ({"state": "failed", "result": None, "error": "LearnError: too short"}, "failed: nothing to swap in", False),
    ({"state": "running", "result": None, "progress": {"stage": "training", "fraction": 0.4, "step": 20}},
     "swap in (when done)", False),
    ({"swapped": True, "in_use": False}, "swap in", True),  # swapped in once, since replaced: may go back in
])
def test_the_swap_button_puts_a_finished_jobs_bundle_in(job, text, enabled):
    b = button(page(jobs=[JOB | job]))
    assert b.endswith(f">{text}</button>") and (" disabled" not in b) is enabled
    assert 'data-method=PUT data-url="/p/cameras/door/bundle"' in b
    body = json.loads(unescape(re.search(r'data-body="([^"]*)"', b).group(1)))
    assert body == {"path": JOB["bundle"]}


def test_a_finished_job_shows_its_figures_on_unseen_footage():
    out = page(jobs=[JOB])
    assert "0.907, expected 0/h seen (under 2250/h: more footage would tell)" in out
    assert "median 0.406, 90% 0.927, 99% 0.996, max 0.999" in out and "9.0 s" in out
    assert '<dd class="false-alerts-bundle">2 = 800/h</dd>' in out
    assert '<dd class="false-alerts-chosen">1 = 400/h</dd>' in out
    assert '<progress max=1 value="1.000"' in out
    one_clip = page(jobs=[JOB | {"result": {"train_minutes": 0.1, "unseen": None, "unseen_reason": "one clip only"}}])
    assert "none: one clip only" in one_clip
    running = page(jobs=[JOB | {"state": "running", "result": None,
                                "progress": {"stage": "training", "fraction": 0.4, "step": 20}}])
    assert "<p class=stage>" not in out and "<p class=stage>training, step 20</p>" in running and 'value="0.400"' in running and 'class="item job active"' in running


def test_newest_first_and_only_the_cameras_own():
    old, new = JOB | {"id": "old", "created": 1.0}, JOB | {"id": "new", "created": 2.0}
    other = JOB | {"id": "elsewhere", "camera": "gate"}
    out = page([REC | {"id": "r-old", "created_s": 1.0}, REC | {"id": "r-new", "created_s": 2.0}], [old, new, other])
    assert out.index('data-job="new"') < out.index('data-job="old"') and "elsewhere" not in out
    assert out.index('data-recording="r-new"') < out.index('data-recording="r-old"')
    many = page(jobs=[JOB | {"id": f"j{i}", "created": float(i)} for i in range(13)])
    assert many.count("data-job=") == learning_html.SHOWN and "3 older jobs not shown" in many


def test_camera_names_and_error_texts_are_escaped():
    name = HOSTILE + "&x"
    row = ROW | {"name": name, "threshold": ROW["threshold"] | {"note": HOSTILE}}
    rec = REC | {"camera": name, "id": HOSTILE, "state": "failed", "error": "rtsp://***@cam/: " + HOSTILE}
    job = JOB | {"camera": name, "state": "failed", "result": None, "error": HOSTILE, "swap_error": HOSTILE,
                 "bundle": HOSTILE, "schedule": HOSTILE}
    out = page([rec], [job], [row], {name: None})
    assert "<script>alert" not in out and out.count("&lt;script&gt;alert(1)&lt;/script&gt;&quot;") >= 8
    q = "%3Cscript%3Ealert%281%29%3C%2Fscript%3E%22%26x"  # the name in a URL path: quoted, then escaped
    assert f'data-url="/p/cameras/{q}/recordings"' in out and f'data-url="/p/cameras/{q}/bundle"' in out
    assert 'data-camera="&lt;script&gt;' in out and 'data-live="work-&lt;script&gt;' in out
    assert "swap refused: &lt;script&gt;" in out and 'placeholder="default: the bundle&#x27;s"' in out


@pytest.mark.parametrize("expected, bound, text", [
    (None, None, "unknown (no calibration footage)"), (1.5, None, "1.5/h"), (0.0, None, "0/h"), (2250.4, None, "2250/h"),
    (0.0, 12.0, "0/h seen (under 12/h: more footage would tell)"),
])
def test_per_hour(expected, bound, text):
    assert learning_html.per_hour(expected, bound) == text
