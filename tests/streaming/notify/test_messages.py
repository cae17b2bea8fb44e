"""streaming/notify/messages.py: pure message building (topics, JSON bodies, Home Assistant discovery)."""
from __future__ import annotations

import pytest

from streaming.notify import messages as m

EV = m.EventInfo(id=7, camera="gate", start_s=100.0, peak_score=0.97, peak_s=101.0, threshold=0.9)

# Home Assistant's documented required keys per MQTT platform (https://www.home-assistant.io/integrations/
# binary_sensor.mqtt/, sensor.mqtt/, image.mqtt/): state_topic for sensors, image_topic or url_topic for images;
# unique_id and device.identifiers make the entity and its device editable, availability keeps it honest.
REQUIRED = {"binary_sensor": {"state_topic", "payload_on", "payload_off"}, "sensor": {"state_topic"},
            "image": {"image_topic", "content_type"}}


def test_event_body_carries_the_event_and_its_links():
    body = m.event_body("opened", EV, 102.5, "http://vad.local:8000")
    assert body["type"] == "new" and body["event_id"] == 7 and body["camera"] == "gate"
    assert body["duration_s"] == 2.5 and body["end_s"] is None and body["threshold"] == 0.9
    assert body["links"] == {"event": "http://vad.local:8000/ui/events/7",
                             "snapshot": "http://vad.local:8000/events/7/snapshot",
                             "clip": "http://vad.local:8000/events/7/clip", "api": "http://vad.local:8000/events/7"}
    closed = m.EventInfo(**{**EV.__dict__, "end_s": 104.0, "reason": "score", "label": "anomaly"})
    end = m.event_body("closed", closed, 110.0, None)
    assert end["type"] == "end" and end["duration_s"] == 4.0 and end["reason"] == "score" and end["label"] == "anomaly"
    assert end["links"]["snapshot"] == "/events/7/snapshot"  # no base_url: paths on the service


@pytest.mark.parametrize("kind, anomaly", [("opened", b"ON"), ("update", None), ("closed", b"OFF")])
def test_event_messages_put_the_snapshot_after_the_event(kind, anomaly):
    msgs = m.event_messages(kind, EV, b"\xff\xd8jpeg", 101.0, None, retain=True)
    assert [x.kind for x in msgs][:2] == ["event", "snapshot"]
    assert msgs[0].topic == "events" and msgs[0].body["has_snapshot"] and not msgs[0].retain
    assert msgs[1].topic == "gate/snapshot" and msgs[1].body == b"\xff\xd8jpeg" and msgs[1].meta["event_id"] == "7"
    states = [x for x in msgs if x.kind == "anomaly"]
    assert [x.body for x in states] == ([anomaly] if anomaly else [])
    assert all(x.key is None and x.retain for x in states)  # never replaced: every ON and OFF is delivered
    assert [x.kind for x in m.event_messages(kind, EV, None, 101.0, None, True)][:1] == ["event"]


def test_camera_state_and_score_replace_older_values():
    state, avail = m.state_messages("gate", "reconnecting", retain=False)
    assert (state.topic, state.body, state.key) == ("gate/state", b"reconnecting", "gate/state")
    assert (avail.topic, avail.body, avail.retain) == ("gate/available", b"offline", False)
    assert m.state_messages("gate", "streaming", True)[1].body == b"online"
    assert m.score_message("gate", 0.123456, True).body == b"0.1235"


def test_discovery_has_home_assistants_required_keys():
    msgs = m.discovery_messages("gate-1", "vad/site", "homeassistant")
    components = {x.topic.split("/")[1] for x in msgs}
    assert components == {"binary_sensor", "sensor", "image"}
    ids = set()
    for x in msgs:
        c = x.body
        component = x.topic.split("/")[1]
        assert x.absolute and x.retain and x.topic.startswith(f"homeassistant/{component}/vad_site/gate-1_")
        assert x.topic.endswith("/config") and REQUIRED[component] <= set(c), (component, c)
        assert c["device"]["identifiers"] == ["vad_site_gate-1"] and c["origin"]["name"] == "vad-stream"
        assert [a["topic"] for a in c["availability"]] == ["vad/site/available", "vad/site/gate-1/available"]
        topic = c.get("state_topic") or c["image_topic"]
        assert topic.startswith("vad/site/gate-1/") and "+" not in topic and "#" not in topic
        ids.add(c["unique_id"])
    assert len(ids) == len(msgs)
    removal = m.discovery_removal("gate-1", "vad/site", "homeassistant")
    assert [x.topic for x in removal] == [x.topic for x in msgs] and all(x.body == b"" for x in removal)
