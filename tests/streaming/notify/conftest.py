"""Real receivers for the notification tests: a Mosquitto broker and an HTTP server, both on 127.0.0.1.

- `mosquitto(tls=False)`: starts Debian's `mosquitto` on a free port with a password file (user `vad`, password
  in `.password`), no anonymous access, persistence on (a subscriber's session and its queued messages survive
  a restart), and with `tls=True` a self-signed certificate for 127.0.0.1 made here with `openssl` (`.ca_file`).
  `.stop()` (SIGTERM) and `.start()` (same port) restart it; stopped at teardown.
- `Listener(broker, topics, v5=True)`: a paho subscriber (QoS 1) recording every message with its MQTT 5 user
  properties; it reconnects by itself after a broker restart. `v5=False` subscribes with MQTT 3.1.1 and a
  persistent session, which this Mosquitto (2.0.11) restores after a restart (its MQTT 5 sessions it does not):
  the messages queued for it meanwhile arrive, but without user properties.
- `receiver()`: a threaded http.server recording every POST (`.posts`), answering 200; `.hang` (an Event) makes
  it hold each request until released.
"""
from __future__ import annotations

import http.server
import json
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from tests.polling import wait_for

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
USER, PASSWORD = "vad", "s3cret-broker-pass"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Mosquitto:
    """One broker process (see the module docstring)."""

    def __init__(self, root: Path, tls: bool = False):
        if not Path(MOSQUITTO).exists() or not shutil.which("mosquitto_passwd"):
            pytest.fail("mosquitto is not installed (bash deploy/install.sh --test installs Debian's mosquitto)")
        self.root, self.tls, self.port = root, tls, free_port()
        self.user, self.password = USER, PASSWORD
        self.ca_file: Path | None = None
        self.proc: subprocess.Popen | None = None
        root.mkdir(parents=True, exist_ok=True)
        passwd = root / "passwd"
        subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwd), USER, PASSWORD], check=True, capture_output=True)
        lines = [f"listener {self.port} 127.0.0.1", "allow_anonymous false", f"password_file {passwd}",
                 "persistence true", f"persistence_location {root}/", "autosave_interval 1", "user root",
                 f"log_dest file {root}/mosquitto.log", "log_type all"]
        if tls:
            key, cert = root / "key.pem", root / "cert.pem"
            subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                            "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
                            "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
            lines += [f"certfile {cert}", f"keyfile {key}"]
            self.ca_file = cert
        self.conf = root / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n")
        passwd.chmod(0o600)

    def start(self) -> "Mosquitto":
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.STDOUT)

        def listening() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"mosquitto exited {self.proc.returncode}: {self.log()[-2000:]}")
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", self.port)) == 0
        wait_for(listening, 10, "mosquitto listening")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: it saves its persistence file (sessions, queued messages)
            self.proc.wait(timeout=10)
        self.proc = None

    def log(self) -> str:
        path = self.root / "mosquitto.log"
        return path.read_text(errors="replace") if path.exists() else ""


@pytest.fixture
def mosquitto(tmp_path):
    brokers: list[Mosquitto] = []

    def make(tls: bool = False) -> Mosquitto:
        broker = Mosquitto(tmp_path / f"broker{len(brokers)}", tls=tls).start()
        brokers.append(broker)
        return broker

    yield make
    for b in brokers:
        b.stop()


@dataclass
class Received:
    topic: str
    payload: bytes
    retain: bool
    props: dict[str, str]
    content_type: str | None

    def json(self) -> dict:
        return json.loads(self.payload)


class Listener:
    """A subscriber that records what the broker delivers (see the module docstring)."""

    def __init__(self, broker: Mosquitto, topics: list[str], client_id: str = "test-listener", v5: bool = True):
        self.messages: list[Received] = []
        self._lock = threading.Lock()
        self.topics = topics
        if v5:
            c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        else:
            c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311,
                            clean_session=False)
        c.username_pw_set(broker.user, broker.password)
        if broker.tls:
            c.tls_set(ca_certs=str(broker.ca_file))
        c.on_connect = self._on_connect
        c.on_message = self._on_message
        c.reconnect_delay_set(0.2, 1.0)
        c.connect("127.0.0.1", broker.port, keepalive=10)
        self.subscribed = threading.Event()
        c.loop_start()
        self.client = c
        assert self.subscribed.wait(10), "listener did not subscribe"

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if not reason_code.is_failure:
            if not flags.session_present:  # a resumed session keeps its subscriptions (no retained replay)
                client.subscribe([(t, 1) for t in self.topics])
            self.subscribed.set()

    def _on_message(self, client, userdata, msg) -> None:
        p = getattr(msg, "properties", None)
        props = dict(getattr(p, "UserProperty", None) or [])
        with self._lock:
            self.messages.append(Received(msg.topic, bytes(msg.payload), bool(msg.retain), props,
                                          getattr(p, "ContentType", None)))

    def on(self, topic: str) -> list[Received]:
        with self._lock:
            return [m for m in self.messages if m.topic == topic]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@dataclass
class Receiver:
    port: int
    posts: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    hang: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    status: int = 200

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"


@pytest.fixture
def receiver():
    box: list[Receiver] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's naming
            rec = box[0]
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if rec.hang.is_set():
                rec.release.wait(60)
                return
            rec.posts.append(({k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(rec.status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    box.append(Receiver(server.server_address[1]))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield box[0]
    box[0].release.set()
    server.shutdown()
    server.server_close()


def wait(predicate, timeout_s: float, what: str):
    """wait_for, polling every 0.1 s."""
    return wait_for(predicate, timeout_s, what, every_s=0.1)


def pause(seconds: float) -> None:
    """A real-time gap the test needs (the broker must be seen down for a while), not a wait for a condition."""
    time.sleep(seconds)
