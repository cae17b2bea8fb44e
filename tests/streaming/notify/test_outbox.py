"""streaming/notify/outbox.py: sequence numbers, acknowledgement, coalescing, the bound, persistence."""
from __future__ import annotations

import json

from streaming.notify.messages import Message
from streaming.notify.outbox import Outbox


def test_messages_keep_their_sequence_until_acknowledged_and_survive_a_restart(tmp_path):
    db = tmp_path / "events.db"
    box = Outbox(db, "phone", "cpu", max_messages=100)
    s1, _ = box.put(Message("event", "events", {"type": "new", "event_id": 1}), 1.0)
    s2, _ = box.put(Message("snapshot", "gate/snapshot", b"\xff\xd8", retain=True), 1.0)
    assert (s1, s2) == (1, 2)
    first, second = box.peek()
    assert json.loads(first.body) == {"type": "new", "event_id": 1, "seq": 1, "origin": "cpu"}
    assert first.content_type == "application/json" and second.content_type == "image/jpeg" and second.retain
    box.failed(1)
    box.ack(2)
    box.close()
    again = Outbox(db, "phone", "cpu")  # a restarted scorer: the unacknowledged message is still there
    (left,) = again.peek()
    assert left.seq == 1 and left.attempts == 1 and json.loads(left.body)["seq"] == 1
    assert again.put(Message("event", "events", {"type": "end"}), 2.0)[0] == 3  # numbering goes on
    assert Outbox(db, "phone", "cuda:0").depth() == 0 and Outbox(db, "hook", "cpu").depth() == 0  # own rows


def test_a_newer_state_replaces_an_undelivered_one_and_the_bound_drops_the_oldest(tmp_path):
    box = Outbox(tmp_path / "e.db", "phone", "cpu", max_messages=3)
    for v in (b"0.1", b"0.2", b"0.3"):
        box.put(Message("score", "gate/score", v, key="gate/score"), 1.0)
    (only,) = box.peek()
    assert only.body == b"0.3" and only.seq == 3
    drops = [box.put(Message("event", "events", {"n": i}), 1.0)[1] for i in range(4)]
    assert drops == [0, 0, 1, 1] and box.depth() == 3
    assert [json.loads(x.body)["n"] for x in box.peek()] == [1, 2, 3]
