"""A bounded, persisted outbox per sink, in the events SQLite database (tables `notify_outbox`, `notify_seq`).

A message is stored before any delivery attempt and deleted only once its sink acknowledged it, so a restarted
scorer resends what was not acknowledged. Each message gets the sink's next sequence number when stored (also
inside an event's JSON as `seq`, with `origin`, the scorer): a resent message keeps it, so a receiver that sees a sequence number twice has seen
the same message twice. A message with a `key` (a camera's state) replaces an undelivered one with the same key.
Beyond `max_messages` the oldest messages are dropped (and counted by the caller). The tables are created here,
beside the events schema (streaming/events.py), which never touches them.
"""
from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

from streaming.notify.messages import Message

SCHEMA = """
CREATE TABLE IF NOT EXISTS notify_outbox (
    sink TEXT NOT NULL,
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    topic TEXT NOT NULL,
    absolute INTEGER NOT NULL,
    body BLOB NOT NULL,
    is_json INTEGER NOT NULL,
    retain INTEGER NOT NULL,
    key TEXT,
    meta TEXT NOT NULL,
    created_s REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (sink, seq)
);
CREATE INDEX IF NOT EXISTS notify_outbox_key ON notify_outbox (sink, key);
CREATE TABLE IF NOT EXISTS notify_seq (sink TEXT PRIMARY KEY, next INTEGER NOT NULL)
"""


@dataclass(frozen=True)
class Stored:
    """A message as stored: its sequence number and the bytes to send."""

    seq: int
    kind: str
    topic: str
    absolute: bool
    body: bytes
    is_json: bool
    retain: bool
    meta: dict[str, str]
    attempts: int

    @property
    def content_type(self) -> str:
        return "application/json" if self.is_json else ("image/jpeg" if self.kind == "snapshot" else "text/plain")


class Outbox:
    """The undelivered messages of one sink (`sink`: its name and the scorer it belongs to, e.g. "phone@cpu")."""

    def __init__(self, path: str | Path, sink: str, origin: str, max_messages: int = 10_000):
        if max_messages < 1:
            raise ValueError(f"outbox max_messages must be >= 1, got {max_messages}")
        self.path, self.sink, self.origin, self.max_messages = Path(path), sink, origin, int(max_messages)
        self._key = f"{sink}@{origin}"
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(self.path, timeout=10.0, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        with self._lock:
            for stmt in SCHEMA.split(";"):
                if stmt.strip():
                    self._conn.execute(stmt)

    def _tx(self, fn):
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                out = fn(self._conn)
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")
            return out

    def put(self, msg: Message, now_s: float) -> tuple[int, int]:
        """Store `msg`; returns (its sequence number, how many old messages were dropped to stay in bounds)."""
        def put(c: sqlite3.Connection) -> tuple[int, int]:
            row = c.execute("SELECT next FROM notify_seq WHERE sink = ?", (self._key,)).fetchone()
            seq = row[0] if row else 1
            c.execute("INSERT INTO notify_seq (sink, next) VALUES (?, ?) ON CONFLICT (sink) DO UPDATE SET next = ?",
                      (self._key, seq + 1, seq + 1))
            is_json = isinstance(msg.body, dict)
            if is_json and msg.kind == "event":  # other JSON (discovery) goes as built: Home Assistant's schema
                body = json.dumps({**msg.body, "seq": seq, "origin": self.origin}, allow_nan=False).encode()
            else:
                body = json.dumps(msg.body, allow_nan=False).encode() if is_json else bytes(msg.body)
            if msg.key is not None:
                c.execute("DELETE FROM notify_outbox WHERE sink = ? AND key = ?", (self._key, msg.key))
            c.execute(
                "INSERT INTO notify_outbox (sink, seq, kind, topic, absolute, body, is_json, retain, key, meta, "
                "created_s) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (self._key, seq, msg.kind, msg.topic, int(msg.absolute), body, int(is_json), int(msg.retain),
                 msg.key, json.dumps(msg.meta), float(now_s)))
            excess = c.execute("SELECT COUNT(*) FROM notify_outbox WHERE sink = ?", (self._key,)).fetchone()[0]
            excess -= self.max_messages
            dropped = 0
            if excess > 0:
                dropped = c.execute(
                    "DELETE FROM notify_outbox WHERE sink = ? AND seq IN (SELECT seq FROM notify_outbox "
                    "WHERE sink = ? ORDER BY seq LIMIT ?)", (self._key, self._key, excess)).rowcount
            return seq, dropped

        return self._tx(put)

    def peek(self, limit: int = 32) -> list[Stored]:
        """The oldest undelivered messages, in sequence order."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT seq, kind, topic, absolute, body, is_json, retain, meta, attempts FROM notify_outbox "
                "WHERE sink = ? ORDER BY seq LIMIT ?", (self._key, int(limit))).fetchall()
        return [Stored(r[0], r[1], r[2], bool(r[3]), bytes(r[4]), bool(r[5]), bool(r[6]), json.loads(r[7]), r[8])
                for r in rows]

    def ack(self, seq: int) -> None:
        """The sink acknowledged message `seq`: it is gone."""
        self._tx(lambda c: c.execute("DELETE FROM notify_outbox WHERE sink = ? AND seq = ?", (self._key, int(seq))))

    def failed(self, seq: int) -> None:
        """One more failed attempt at message `seq` (shown by `attempts`)."""
        self._tx(lambda c: c.execute("UPDATE notify_outbox SET attempts = attempts + 1 WHERE sink = ? AND seq = ?",
                                     (self._key, int(seq))))

    def depth(self) -> int:
        """Messages waiting for this sink."""
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM notify_outbox WHERE sink = ?", (self._key,)).fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._conn.close()
