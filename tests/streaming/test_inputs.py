"""Source URLs and path strings checked when they are given (streaming/inputs.py): every bad one names its part."""
from __future__ import annotations

import pytest

from streaming.inputs import DemoParams, check_source_url, no_control_chars

BAD_URLS = [
    ("demo://street?size=99999999", "size"),
    ("demo://street?size=8", "size"),
    ("demo://street?fps=nan", "fps"),
    ("demo://street?fps=0", "fps"),
    ("demo://street?seed=-1", "seed"),
    ("demo://street?anomaly_every_s=1", "anomaly_every_s"),
    ("demo://street?loop_s=inf", "loop_s"),
    ("demo://street?speed=3", "unknown demo parameter 'speed'"),
    ("demo://?seed=0", "needs a name"),
    ("rtsp://127.0.0.1:99999/x", "Port out of range"),
    ("rtsp://127.0.0.1:0/x", "port must be 1-65535"),
    ("rtsp:///x", "no host"),
    ("http://h/x", "unsupported URL scheme"),
    ("/tmp/a\x00b", "control characters"),
    ("file:///tmp/a\x00b", "control characters"),
    ("rtsp://h/x\nInjected: 1", "control characters"),
]


@pytest.mark.parametrize("url, text", BAD_URLS, ids=[u for u, _ in BAD_URLS])
def test_bad_source_urls_are_refused_naming_the_part(url, text):
    with pytest.raises(ValueError) as exc:
        check_source_url(url)
    assert text in str(exc.value), str(exc.value)


@pytest.mark.parametrize("url", ["demo://street?seed=0&fps=10&size=64", "demo://s?anomaly_every_s=0&start=5&loop_s=2",
                                 " rtsp://u:p@cam.local:554/live?token=x ", "/srv/clips/a.mkv", "file:///srv/a.mkv"])
def test_good_source_urls_pass_stripped(url):
    assert check_source_url(url) == url.strip()


def test_demo_params_defaults_and_values():
    p = DemoParams.from_url("demo://street?size=64&fps=10&seed=3&seed=4")
    assert (p.seed, p.fps, p.size, p.anomaly_every_s, p.start, p.loop_s) == (4, 10.0, 64, 20.0, 0, None)


def test_control_characters_named_with_their_position():
    assert no_control_chars("/a/b c") == "/a/b c"
    with pytest.raises(ValueError, match=r"'\\x00' at 2"):
        no_control_chars("/a\x00")
