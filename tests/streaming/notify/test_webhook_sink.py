"""streaming/notify/webhook_sink.py against a real HTTP receiver: headers from the environment, refusals, a closed port."""
from __future__ import annotations

import json
import logging
import socket

from streaming.notify.dispatcher import Notifier
from streaming.notify.messages import EventInfo
from streaming.notify.settings import NotifyConfig
from tests.streaming.notify.conftest import wait


def hook(tmp_path, url: str, **extra) -> Notifier:
    cfg = NotifyConfig.model_validate({"sinks": [{"type": "webhook", "name": "hook", "url": url, "timeout_s": 2,
                                                  **extra}]})
    n = Notifier(cfg, tmp_path / "events.db", "cpu")
    n.sinks[0].delivery.backoff.initial_s = n.sinks[0].delivery.backoff.max_s = 0.1
    return n


def test_posts_carry_the_event_its_snapshot_and_the_headers_from_the_environment(tmp_path, receiver, monkeypatch):
    monkeypatch.setenv("VAD_HOOK_AUTH", "Bearer hook-secret")
    n = hook(tmp_path, receiver.url, headers_env={"Authorization": "VAD_HOOK_AUTH"})
    try:
        n.camera_state("gate", "streaming")  # not for webhooks
        n.event("opened", EventInfo(3, "gate", 1.0, 0.95, 1.0, 0.9), lambda: b"\xff\xd8jpeg", 1.0)
        wait(lambda: len(receiver.posts) == 2, 10, "event and snapshot")
        (h1, b1), (h2, b2) = receiver.posts
        assert h1["authorization"] == h2["authorization"] == "Bearer hook-secret"
        assert h1["content-type"] == "application/json" and json.loads(b1)["type"] == "new"
        assert (h1["x-vad-seq"], h1["x-vad-kind"], h1["x-vad-event-id"]) == ("1", "event", "3")
        assert h2["content-type"] == "image/jpeg" and b2 == b"\xff\xd8jpeg" and h2["x-vad-camera"] == "gate"
    finally:
        n.stop()


def test_a_refusing_then_a_closed_receiver_is_retried_and_logged_once_each(tmp_path, receiver, caplog):
    caplog.set_level(logging.WARNING, logger="streaming.notify")
    receiver.status = 503
    n = hook(tmp_path, receiver.url + "?token=url-secret", snapshot=False)
    try:
        n.event("opened", EventInfo(4, "gate", 1.0, 0.95, 1.0, 0.9), lambda: b"JPEG", 1.0)
        wait(lambda: n.status()["hook"]["failures"] >= 3, 10, "refused attempts")
        assert n.status()["hook"]["state"] == "refusing" and n.status()["hook"]["reason"] == "HTTP 503"
        receiver.status = 200
        wait(lambda: n.status()["hook"]["outbox"] == 0, 10, "accepted")
        assert len(receiver.posts) == n.status()["hook"]["failures"] + 1  # the refused ones, then the accepted one
        assert {h["x-vad-seq"] for h, _ in receiver.posts} == {"1"}  # one message (no snapshot), resent as seq 1
    finally:
        n.stop()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends
    n = hook(tmp_path, f"http://127.0.0.1:{port}/x?token=url-secret")
    try:
        n.event("opened", EventInfo(5, "gate", 1.0, 0.95, 1.0, 0.9), lambda: None, 1.0)
        wait(lambda: n.status()["hook"]["failures"] >= 3, 10, "refused connections")
        assert n.status()["hook"]["state"] == "down"
    finally:
        n.stop()
    said = [r.getMessage() for r in caplog.records]
    assert len([s for s in said if ": refusing (" in s]) == 1 and len([s for s in said if ": down (" in s]) == 1, said
    assert not any("url-secret" in s for s in said)
