"""The `notify:` config section: where alerts are delivered (MQTT brokers, webhooks) and how often.

Credentials never live in the file: a sink names the environment variables that hold them (`username_env`,
`password_env`, `headers_env`), read when the sink starts in the scorer. Every section forbids unknown keys, and
errors name the field (`notify.sinks.0.mqtt.port: ...`), like the rest of streaming/config.py.
"""
from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from offline.config import Strict

SINK_NAME = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$"  # the metric label `sink`: a name, never a host or URL
ENV_NAME = r"^[A-Z_][A-Z0-9_]*$"
TOPIC_PREFIX = r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$"  # no wildcards, no leading or trailing slash


class SinkFilter(Strict):
    """What a sink is told about: its cameras (None: all) and events whose peak reached `min_peak_score`."""

    cameras: list[str] | None = Field(None, description="only these cameras' events and states (None: every camera)")
    min_peak_score: float | None = Field(
        None, ge=0, le=1, description="an event is announced once its peak reaches this score (None: at its open)")
    max_outbox: int = Field(
        10_000, ge=10, le=1_000_000,
        description="messages kept for this sink while it is down (in the events database); beyond it the oldest go, "
        "counted in vad_notify_dropped_total")

    def wants(self, camera: str) -> bool:
        """Whether this sink hears about `camera`."""
        return self.cameras is None or camera in self.cameras


class MqttSinkConfig(SinkFilter):
    """An MQTT broker: Frigate-like topics under `topic_prefix`, Home Assistant discovery when `discovery`."""

    type: Literal["mqtt"] = "mqtt"
    name: str = Field("mqtt", pattern=SINK_NAME, description="the sink's name in logs and metrics (label `sink`)")
    host: str = Field(min_length=1, description="broker host name or address")
    port: int = Field(1883, ge=1, le=65535, description="1883 plain, 8883 usually with tls")
    tls: bool = Field(False, description="connect with TLS, verifying the broker's certificate")
    ca_file: Path | None = Field(None, description="CA certificate (PEM) to verify the broker with (None: the system's)")
    username_env: str | None = Field(None, pattern=ENV_NAME, description="environment variable holding the username")
    password_env: str | None = Field(None, pattern=ENV_NAME, description="environment variable holding the password")
    topic_prefix: str = Field("vad", pattern=TOPIC_PREFIX, description="topics are <prefix>/events, <prefix>/<camera>/...")
    qos: Literal[0, 1, 2] = Field(1, description="MQTT QoS of every message (a message leaves the outbox once acknowledged)")
    retain: bool = Field(True, description="retain the state topics (state, anomaly, score, available, snapshot)")
    discovery: bool = Field(False, description="publish Home Assistant MQTT discovery for each camera")
    discovery_prefix: str = Field("homeassistant", pattern=TOPIC_PREFIX, description="Home Assistant's discovery prefix")
    keepalive_s: int = Field(30, ge=5, le=3600, description="MQTT keepalive; a dead broker is noticed within 1.5x this")
    timeout_s: float = Field(10.0, gt=0, le=300, description="longest wait for a connection or an acknowledgement")

    @field_validator("host")
    @classmethod
    def _host(cls, v: str) -> str:
        if "://" in v or "@" in v or "/" in v:
            raise ValueError("host must be a host name or address (no scheme, credentials or path)")
        return v

    def credentials(self) -> tuple[str | None, str | None]:
        """(username, password) from the environment; KeyError naming a variable that is not set."""
        return _env(self.username_env), _env(self.password_env)


class WebhookSinkConfig(SinkFilter):
    """An HTTP(S) receiver: each event message is POSTed as JSON, its snapshot as a second image/jpeg POST."""

    type: Literal["webhook"] = "webhook"
    name: str = Field("webhook", pattern=SINK_NAME, description="the sink's name in logs and metrics (label `sink`)")
    url: str = Field(min_length=1, description="http(s) URL the messages are POSTed to (put secrets in headers_env)")
    headers_env: dict[str, str] = Field(
        default_factory=dict, description="request headers from the environment: {header name: variable name}")
    timeout_s: float = Field(5.0, gt=0, le=300, description="a request not answered in this time is retried later")
    snapshot: bool = Field(True, description="also POST the event's JPEG snapshot")

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("url must be an http:// or https:// URL with a host")  # no echo: it may hold a token
        if parts.username or parts.password:
            raise ValueError("url must not hold credentials; send them as headers_env")
        return v

    @field_validator("headers_env")
    @classmethod
    def _headers(cls, v: dict[str, str]) -> dict[str, str]:
        for header, env in v.items():
            if not re.fullmatch(r"[A-Za-z0-9-]+", header):
                raise ValueError(f"header name {header!r} must be letters, digits and '-'")
            if not re.fullmatch(ENV_NAME, env):
                raise ValueError(f"header {header}: {env!r} is not an environment variable name ({ENV_NAME})")
        return v

    def headers(self) -> dict[str, str]:
        """The configured headers with their values from the environment; KeyError naming a missing variable."""
        return {h: _env(env) for h, env in self.headers_env.items()}


SinkConfig = Annotated[MqttSinkConfig | WebhookSinkConfig, Field(discriminator="type")]


class NotifyConfig(Strict):
    """Alert delivery: the sinks, the links in messages, and how often open events and scores are updated."""

    sinks: list[SinkConfig] = Field(default_factory=list, description="where alerts go (none: nowhere)")
    base_url: str | None = Field(
        None, description="the service as receivers reach it (http://host:8000): the messages' links start with it "
        "(None: links are paths like /events/7/snapshot)")
    update_interval_s: float = Field(5.0, ge=0.5, le=3600, description="at most one update per open event this often")
    score_interval_s: float = Field(5.0, ge=0.5, le=3600, description="at most one score message per camera this often")

    @field_validator("sinks")
    @classmethod
    def _unique(cls, v: list) -> list:
        names = [s.name for s in v]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"sink name {name!r} appears twice (give each sink its own name)")
        return v

    def resolved(self, absolute: Callable[[Path], Path]) -> "NotifyConfig":
        """A copy with every sink's `ca_file` made absolute by `absolute` (the scorer may run elsewhere)."""
        sinks = [s.model_copy(update={"ca_file": absolute(s.ca_file)}) if getattr(s, "ca_file", None) else s
                 for s in self.sinks]
        return self.model_copy(update={"sinks": sinks})

    @field_validator("base_url")
    @classmethod
    def _base(cls, v: str | None) -> str | None:
        if v is not None and urlsplit(v).scheme not in ("http", "https"):
            raise ValueError("base_url must start with http:// or https://")
        return None if v is None else v.rstrip("/")


def _env(name: str | None) -> str | None:
    if name is None:
        return None
    value = os.environ.get(name)
    if value is None:
        raise KeyError(f"environment variable {name} is not set")
    return value
