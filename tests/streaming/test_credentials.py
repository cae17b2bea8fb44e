"""Credential scrubbing on hostile text (streaming/credentials.py)."""
from __future__ import annotations

import time

from streaming.credentials import scrub_url


def test_scrub_is_linear_on_a_long_run_without_a_url():
    """A 2 MB string of letters used to take quadratic time in the userinfo pattern (70 KB: 5 s on the event loop)."""
    text = "x" * 2_000_000
    t0 = time.perf_counter()
    assert scrub_url(text) == text
    assert time.perf_counter() - t0 < 3.0


def test_scrub_still_hides_credentials_and_secret_queries():
    out = scrub_url("open rtsp://admin:hunter2@10.0.0.1/x failed; rtsps://u@h/y?token=abc&size=2")
    assert "hunter2" not in out and "admin" not in out and "abc" not in out
    assert "rtsp://***@10.0.0.1/x" in out and "rtsps://***@h/y?token=***&size=2" in out
