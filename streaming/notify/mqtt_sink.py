"""The MQTT transport of a sink: paho-mqtt (MQTT 5), driven by the sink's delivery thread, no thread of its own.

paho's network loop is called only from the delivery thread (`loop()` while waiting for a CONNACK or a PUBACK,
and at each idle poll for keepalives), and paho's own reconnect is never used: a lost connection is dropped with
its client, so nothing paho queued is replayed behind the outbox's back; the outbox resends what was not
acknowledged, under the same sequence number. Each message carries `seq` and `origin` (and the event id) as MQTT 5
user properties, and its content type. The last will marks `<prefix>/available` offline; each connection first
publishes it online, then Home Assistant discovery for the known cameras (again when Home Assistant announces
itself on `<discovery_prefix>/status`). Credentials come from the environment and never reach a log or an error.
"""
from __future__ import annotations

import json
import logging
import socket
import ssl
import time
from collections.abc import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from streaming.notify.delivery import TransportError
from streaming.notify.messages import Message
from streaming.notify.outbox import Stored
from streaming.notify.settings import MqttSinkConfig

logger = logging.getLogger(__name__)


class MqttTransport:
    """Connects to one broker and publishes stored messages, each acknowledged at the sink's QoS.

    Args:
        cfg: the sink's config.
        client_id: unique per sink and scorer (a second connection with the same id would push this one off).
        origin: the scorer's name, sent with every message.
        birth: the retained messages to publish on every new connection (discovery of the known cameras).
    """

    def __init__(self, cfg: MqttSinkConfig, client_id: str, origin: str,
                 birth: Callable[[], list[Message]] = lambda: []):
        self.cfg, self.client_id, self.origin, self.birth = cfg, client_id, origin, birth
        self.prefix = cfg.topic_prefix
        self._client: mqtt.Client | None = None
        self._connack: mqtt.ReasonCode | None = None
        self._lost = False
        self._rebirth = False

    # ------------------------------------------------------------------------------------------ callbacks
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        self._connack = reason_code

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self._lost = True

    def _on_message(self, client, userdata, message) -> None:
        if message.payload == b"online":  # Home Assistant (re)started: it forgets entities it was not retained
            self._rebirth = True

    # ---------------------------------------------------------------------------------------- transport
    def connect(self) -> None:
        c = self._client
        if c is not None:
            if not self._lost:
                c.loop(0.0)  # keepalive pings, incoming status
            if self._lost:
                self.reset()
                raise TransportError("down", "connection to the broker lost")
            if self._rebirth:
                self._rebirth = False
                self._publish_birth()
            return
        try:
            user, password = self.cfg.credentials()
        except KeyError as exc:
            raise TransportError("refusing", f"{exc.args[0]} (credentials)") from None
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=mqtt.MQTTv5)
        c.connect_timeout = self.cfg.timeout_s
        if user is not None:
            c.username_pw_set(user, password)
        if self.cfg.tls:
            c.tls_set(ca_certs=None if self.cfg.ca_file is None else str(self.cfg.ca_file))
        c.will_set(f"{self.prefix}/available", "offline", qos=self.cfg.qos, retain=True)
        c.on_connect, c.on_disconnect, c.on_message = self._on_connect, self._on_disconnect, self._on_message
        self._connack, self._lost = None, False
        self._client = c
        try:
            c.connect(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive_s, clean_start=True)
            deadline = time.monotonic() + self.cfg.timeout_s
            while self._connack is None and not self._lost and time.monotonic() < deadline:
                c.loop(0.1)
        except ssl.SSLError as exc:
            self.reset()
            raise TransportError("refusing", f"TLS: {exc.reason or type(exc).__name__}") from None
        except (socket.timeout, TimeoutError):
            self.reset()
            raise TransportError("slow", "no answer to the connection") from None
        except OSError as exc:
            self.reset()
            raise TransportError("down", exc.strerror or type(exc).__name__) from None
        code = self._connack
        if code is None:
            self.reset()
            raise TransportError("down" if self._lost else "slow", "no CONNACK from the broker")
        if code.is_failure:
            self.reset()
            raise TransportError("refusing", f"broker refused the connection: {code.getName()}")
        if self.cfg.discovery:
            c.subscribe(f"{self.cfg.discovery_prefix}/status", qos=1)
        self._publish_birth()

    def _publish_birth(self) -> None:
        self._publish(f"{self.prefix}/available", b"online", True, {}, "text/plain")
        for m in self.birth():
            body = m.body if isinstance(m.body, bytes) else _json(m.body)
            self._publish(m.topic if m.absolute else f"{self.prefix}/{m.topic}", body, m.retain, m.meta,
                          "application/json")

    def send(self, msg: Stored) -> None:
        topic = msg.topic if msg.absolute else f"{self.prefix}/{msg.topic}"
        self._publish(topic, msg.body, msg.retain, {"seq": str(msg.seq), **msg.meta}, msg.content_type)

    def _publish(self, topic: str, body: bytes, retain: bool, meta: dict[str, str], content_type: str) -> None:
        c = self._client
        if c is None or self._lost:
            raise TransportError("down", "not connected to the broker")
        props = Properties(PacketTypes.PUBLISH)
        props.UserProperty = [("origin", self.origin), *meta.items()]
        props.ContentType = content_type
        info = c.publish(topic, body, qos=self.cfg.qos, retain=retain, properties=props)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_AGAIN):
            raise TransportError("down", f"publish failed: {mqtt.error_string(info.rc)}")
        deadline = time.monotonic() + self.cfg.timeout_s
        while not info.is_published():
            if self._lost:
                raise TransportError("down", "connection to the broker lost")
            if time.monotonic() > deadline:
                raise TransportError("slow", f"no acknowledgement within {self.cfg.timeout_s:g} s")
            c.loop(0.05)

    def reset(self) -> None:
        c, self._client = self._client, None
        if c is not None:
            try:
                c.disconnect()
                c.loop(0.05)  # writes the DISCONNECT and closes the socket (no network thread does it here)
            except Exception:  # noqa: BLE001 - the socket may be gone already
                pass
            if c.socket() is not None:
                c._sock_close()  # noqa: SLF001 - paho has no public close; never leak the socket

    def close(self) -> None:
        """The service is stopping: mark it offline (retained), then disconnect."""
        if self._client is not None and not self._lost:
            try:
                self._publish(f"{self.prefix}/available", b"offline", True, {}, "text/plain")
            except TransportError:
                pass
        self.reset()


def _json(body: dict) -> bytes:
    return json.dumps(body, allow_nan=False).encode()
