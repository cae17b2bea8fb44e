"""streaming/notify/dispatcher.py and settings.py without a network: what each sink's outbox receives."""
from __future__ import annotations

import json

import pytest

from offline.config import ConfigError
from streaming.config import parse_service_config
from streaming.notify.dispatcher import Notifier
from streaming.notify.messages import EventInfo
from streaming.notify.settings import NotifyConfig


def stored(sink):
    return [(x.kind, json.loads(x.body)["type"] if x.is_json else x.body) for x in sink.outbox.peek(1000)]


def notifier(tmp_path, **extra) -> Notifier:
    cfg = NotifyConfig.model_validate({"update_interval_s": 1.0, "score_interval_s": 2.0, "sinks": [
        {"type": "mqtt", "name": "all", "host": "127.0.0.1", "discovery": True},
        {"type": "mqtt", "name": "loud", "host": "127.0.0.1", "min_peak_score": 0.95, "cameras": ["gate"]},
        {"type": "webhook", "name": "hook", "url": "http://127.0.0.1:9/hook"},
    ], **extra})
    return Notifier(cfg, tmp_path / "events.db", "cpu", start=False)  # no delivery threads: outboxes only


def test_each_sink_gets_what_its_filter_and_the_rate_limit_let_through(tmp_path):
    n = notifier(tmp_path)
    every, loud, hook = n.sinks
    ev = EventInfo(1, "gate", 100.0, 0.92, 100.0, 0.9)
    n.event("opened", ev, lambda: b"JPEG1", 100.0)
    for t, peak in ((100.2, 0.93), (100.5, 0.96), (101.3, 0.97), (101.6, 0.97), (102.5, 0.98)):
        n.event("peak" if peak > 0.96 else "tick", EventInfo(1, "gate", 100.0, peak, t, 0.9), lambda: b"JPEG2", t)
    n.event("closed", EventInfo(1, "gate", 100.0, 0.98, 102.5, 0.9, end_s=103.0, reason="score"), lambda: b"J3", 103)
    events = [x for x in stored(every) if x[0] != "discovery"]
    # new at the open, an update at most every second of stream (with a snapshot when the peak rose), end
    assert events == [("event", "new"), ("snapshot", b"JPEG1"), ("anomaly", b"ON"),
                      ("event", "update"), ("snapshot", b"JPEG2"), ("event", "update"), ("snapshot", b"JPEG2"),
                      ("event", "end"), ("anomaly", b"OFF")]  # the peak did not rise since: no new snapshot
    # min_peak_score 0.95: announced when the peak reached it (100.5 s), then updates and the end
    assert stored(loud)[:5] == [("event", "new"), ("snapshot", b"JPEG2"), ("anomaly", b"ON"), ("event", "update"),
                                ("snapshot", b"JPEG2")]  # 101.6 s; 102.5 s is less than a second later
    assert stored(loud)[-3:] == [("event", "end"), ("snapshot", b"J3"), ("anomaly", b"OFF")]
    assert [k for k, _ in stored(hook)] == ["event", "snapshot"] * 3 + ["event"]  # events and snapshots only

    n.event("opened", EventInfo(2, "yard", 200.0, 0.99, 200.0, 0.9), lambda: b"J", 200.0)
    assert stored(loud)[-1] == ("anomaly", b"OFF")  # cameras: [gate] only
    n.event("opened", EventInfo(3, "gate", 300.0, 0.91, 300.0, 0.9), lambda: b"J", 300.0)
    n.event("closed", EventInfo(3, "gate", 300.0, 0.91, 300.0, 0.9, end_s=301.0), lambda: b"J", 301.0)
    assert stored(loud)[-1] == ("anomaly", b"OFF") and len(stored(loud)) == 8  # never reached 0.95: never sent
    n.stop()


def test_camera_topics_discovery_and_score_rate_limit(tmp_path):
    n = notifier(tmp_path)
    every, _, hook = n.sinks
    n.camera_state("gate", "streaming")
    for t in (0.0, 1.0, 1.9, 2.1, 2.2, 5.0):
        n.score("gate", t / 10, t)
    kinds = [x.kind for x in every.outbox.peek(1000)]
    assert kinds.count("discovery") == 4 and kinds.count("state") == 1 and kinds.count("available") == 1
    scores = [x.body for x in every.outbox.peek(1000) if x.kind == "score"]
    assert scores == [b"0.5000"]  # one undelivered score at a time: the latest (sent every 2 s of stream)
    n.camera_removed("gate")
    removal = [x for x in every.outbox.peek(1000) if x.kind == "discovery"]
    assert len(removal) == 4 and all(x.body == b"" for x in removal)  # replaced the undelivered configs
    assert hook.outbox.depth() == 0
    n.stop()


def test_notify_config_errors_name_the_field():
    ok = parse_service_config({"notify": {"sinks": [{"type": "mqtt", "host": "broker.lan", "username_env": "MQ_USER"}]}})
    assert ok.notify.sinks[0].port == 1883 and ok.notify.sinks[0].qos == 1
    cases = [
        ({"sinks": [{"type": "mqtt", "host": "h", "qos": 3}]}, "notify.sinks.0.mqtt.qos"),
        ({"sinks": [{"type": "mqtt", "host": "mqtt://h"}]}, "notify.sinks.0.mqtt.host"),
        ({"sinks": [{"type": "mqtt", "host": "h", "password_env": "lower"}]}, "notify.sinks.0.mqtt.password_env"),
        ({"sinks": [{"type": "mqtt", "host": "h", "topic_prefix": "a/#"}]}, "notify.sinks.0.mqtt.topic_prefix"),
        ({"sinks": [{"type": "webhook", "url": "https://u:p@h/x"}]}, "notify.sinks.0.webhook.url"),
        ({"sinks": [{"type": "webhook", "url": "http://h", "headers": {}}]}, "notify.sinks.0.webhook.headers"),
        ({"sinks": [{"type": "pager", "url": "http://h"}]}, "notify.sinks.0"),
        ({"sinks": [{"type": "webhook", "url": "http://h"}, {"type": "webhook", "url": "http://g"}]}, "notify.sinks"),
        ({"update_interval_s": 0}, "notify.update_interval_s"),
    ]
    for bad, field in cases:
        with pytest.raises(ConfigError) as err:
            parse_service_config({"notify": bad})
        assert f"  {field}" in str(err.value), (bad, str(err.value))
    with pytest.raises(ConfigError) as err:
        parse_service_config({"notify": {"sinks": [{"type": "webhook", "url": "https://u:secret@h/x"}]}})
    assert "secret" not in str(err.value)
