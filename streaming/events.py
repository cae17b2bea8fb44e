"""Alert events in SQLite (WAL, one transaction per change): open, raise the peak, close, query, prune.

Times are Unix seconds (float). Snapshots (JPEG bytes) live in their own table and go with their event.
Events still open when the service stopped are closed by `close_dangling` at the next start. Retention:
closed events older than `retention_days` and the oldest closed events beyond `max_events` are deleted
(open events are never pruned). Thread-safe within a process; several processes may share the file.

An operator's verdict on an event (`set_label`: "false_alarm" or "anomaly") and the event's score trace (`put_trace`:
the scores around it, at most MAX_TRACE_POINTS) are stored with it. Schema versions are migrated in place, in one
transaction, when an older file is opened (version 1 -> 2 adds labels and traces); a newer file is refused.
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from streaming.score_history import downsample

SCHEMA_VERSION = 2
DanglingRule = Literal["last_seen", "now", "delete"]
Label = Literal["false_alarm", "anomaly"]
LABELS: tuple[str, ...] = get_args(Label)
MAX_TRACE_POINTS = 2000  # per event: peaks kept (streaming.score_history.downsample), about 40 KB of JSON

_SCHEMA_V1 = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    camera TEXT NOT NULL,
    start_s REAL NOT NULL,
    end_s REAL,
    peak_score REAL NOT NULL,
    peak_frame INTEGER NOT NULL,
    peak_s REAL NOT NULL,
    updated_s REAL NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('open', 'closed')),
    reason TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS events_camera_start ON events (camera, start_s);
CREATE INDEX IF NOT EXISTS events_start ON events (start_s);
CREATE INDEX IF NOT EXISTS events_status ON events (status);
CREATE TABLE IF NOT EXISTS snapshots (
    event_id INTEGER PRIMARY KEY REFERENCES events (id) ON DELETE CASCADE,
    jpeg BLOB NOT NULL
);
"""
_SCHEMA_V2 = f"""
ALTER TABLE events ADD COLUMN label TEXT CHECK (label IS NULL OR label IN {LABELS!r});
ALTER TABLE events ADD COLUMN labelled_s REAL;
CREATE INDEX IF NOT EXISTS events_label ON events (label);
CREATE TABLE IF NOT EXISTS traces (
    event_id INTEGER PRIMARY KEY REFERENCES events (id) ON DELETE CASCADE,
    trace TEXT NOT NULL
);
"""
# MIGRATIONS[v] takes a file from version v - 1 to v; a new file runs them all.
MIGRATIONS = {1: _SCHEMA_V1, 2: _SCHEMA_V2}


def migrate(conn: sqlite3.Connection, path: Path) -> int:
    """Bring the file to SCHEMA_VERSION in one transaction (all or nothing); returns the version found.

    Safe with several processes opening an old file at once: the version is read again under the write lock.
    """
    found = conn.execute("PRAGMA user_version").fetchone()[0]
    if found > SCHEMA_VERSION:
        raise EventStoreError(f"{path}: events schema version {found} is newer than this code ({SCHEMA_VERSION})")
    if found == SCHEMA_VERSION:
        return found
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        for v in range(version + 1, SCHEMA_VERSION + 1):
            for stmt in MIGRATIONS[v].split(";"):
                if stmt.strip():
                    conn.execute(stmt)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return found


class EventStoreError(RuntimeError):
    """The events database cannot be used; the message names the file or event and the reason."""


@dataclass(frozen=True)
class Event:
    """One stored alert event (end_s is None while open)."""

    id: int
    camera: str
    start_s: float
    end_s: float | None
    peak_score: float
    peak_frame: int
    peak_s: float
    updated_s: float
    status: str
    reason: str
    label: str | None  # the operator's verdict: "false_alarm", "anomaly", or None before one
    labelled_s: float | None
    has_snapshot: bool

    def to_dict(self) -> dict[str, Any]:
        """The event as JSON-ready data (the API's answer)."""
        return asdict(self)


_COLUMNS = "e.id, e.camera, e.start_s, e.end_s, e.peak_score, e.peak_frame, e.peak_s, e.updated_s, e.status, e.reason, e.label, e.labelled_s"
_SELECT = f"SELECT {_COLUMNS}, s.event_id IS NOT NULL FROM events e LEFT JOIN snapshots s ON s.event_id = e.id"


class EventStore:
    """SQLite store of alert events with snapshots, bounded by age and count."""

    def __init__(
        self,
        path: str | Path,
        retention_days: float = 30.0,
        max_events: int = 10_000,
        clock: Callable[[], float] = time.time,
    ):
        if not retention_days > 0:
            raise ValueError(f"events retention_days must be > 0, got {retention_days}")
        if max_events < 1:
            raise ValueError(f"events max_events must be >= 1, got {max_events}")
        self.path = Path(path)
        self.retention_days = float(retention_days)
        self.max_events = int(max_events)
        self._clock = clock
        self._lock = threading.RLock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(self.path, timeout=10.0, check_same_thread=False, isolation_level=None)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute("PRAGMA foreign_keys=ON")
            with self._lock:
                migrate(self._conn, self.path)
        except sqlite3.DatabaseError as exc:
            raise EventStoreError(f"{self.path}: cannot open the events database: {exc}") from None
        except OSError as exc:
            raise EventStoreError(f"{self.path}: cannot create the events database: {exc}") from None
        self.prune()

    # -- plumbing -------------------------------------------------------------------------------------
    class _Tx:
        def __init__(self, store: "EventStore"):
            self.store = store

        def __enter__(self) -> sqlite3.Connection:
            self.store._lock.acquire()
            try:
                self.store._conn.execute("BEGIN IMMEDIATE")
            except BaseException:
                self.store._lock.release()
                raise
            return self.store._conn

        def __exit__(self, exc_type, exc, tb) -> None:
            try:
                self.store._conn.execute("ROLLBACK" if exc_type else "COMMIT")
            finally:
                self.store._lock.release()

    def _tx(self) -> "EventStore._Tx":
        return EventStore._Tx(self)

    def close(self) -> None:
        """Close the database connection (every change is already committed)."""
        with self._lock:
            self._conn.close()

    def __enter__(self) -> "EventStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _require(self, c: sqlite3.Connection, event_id: int) -> str:
        row = c.execute("SELECT status FROM events WHERE id = ?", (int(event_id),)).fetchone()
        if row is None:
            raise EventStoreError(f"{self.path}: no event with id {event_id}")
        return row[0]

    @staticmethod
    def _put_snapshot(c: sqlite3.Connection, event_id: int, snapshot: bytes | None) -> None:
        if snapshot is not None:
            if not isinstance(snapshot, (bytes, bytearray)) or not snapshot:
                raise ValueError(f"event {event_id}: snapshot must be non-empty bytes, got {type(snapshot).__name__}")
            c.execute(
                "INSERT INTO snapshots (event_id, jpeg) VALUES (?, ?) "
                "ON CONFLICT (event_id) DO UPDATE SET jpeg = excluded.jpeg",
                (event_id, bytes(snapshot)),
            )

    # -- writes ---------------------------------------------------------------------------------------
    def open_event(
        self,
        camera: str,
        start_s: float,
        peak_score: float,
        peak_frame: int,
        peak_s: float | None = None,
        snapshot: bytes | None = None,
    ) -> int:
        """Record a newly opened alert; returns its id."""
        if not camera:
            raise ValueError("event camera must be a non-empty name")
        peak_s = start_s if peak_s is None else peak_s
        with self._tx() as c:
            cur = c.execute(
                "INSERT INTO events (camera, start_s, peak_score, peak_frame, peak_s, updated_s, status) "
                "VALUES (?, ?, ?, ?, ?, ?, 'open')",
                (camera, float(start_s), float(peak_score), int(peak_frame), float(peak_s), max(float(start_s), float(peak_s))),
            )
            event_id = int(cur.lastrowid)
            self._put_snapshot(c, event_id, snapshot)
        return event_id

    def update_peak(
        self, event_id: int, peak_score: float, peak_frame: int, peak_s: float, snapshot: bytes | None = None
    ) -> None:
        """Replace the event's peak (and its snapshot when given)."""
        with self._tx() as c:
            if self._require(c, event_id) != "open":
                raise EventStoreError(f"{self.path}: event {event_id} is closed; its peak cannot change")
            c.execute(
                "UPDATE events SET peak_score = ?, peak_frame = ?, peak_s = ?, updated_s = MAX(updated_s, ?) WHERE id = ?",
                (float(peak_score), int(peak_frame), float(peak_s), float(peak_s), int(event_id)),
            )
            self._put_snapshot(c, event_id, snapshot)

    def touch(self, event_id: int, wall_s: float) -> None:
        """Note that the open event was still going at `wall_s` (what `close_dangling("last_seen")` uses)."""
        with self._tx() as c:
            self._require(c, event_id)
            c.execute("UPDATE events SET updated_s = MAX(updated_s, ?) WHERE id = ?", (float(wall_s), int(event_id)))

    def close_event(self, event_id: int, end_s: float, reason: str = "score") -> None:
        """Close an open event at `end_s`; closing a closed event is an error."""
        with self._tx() as c:
            if self._require(c, event_id) != "open":
                raise EventStoreError(f"{self.path}: event {event_id} is already closed")
            c.execute(
                "UPDATE events SET end_s = ?, status = 'closed', reason = ?, updated_s = MAX(updated_s, ?) WHERE id = ?",
                (float(end_s), reason, float(end_s), int(event_id)),
            )
        self.prune()

    def set_label(self, event_id: int, label: str) -> bool:
        """Record the operator's verdict on an event (open or closed; a new label replaces the old); False when no
        such event exists. ValueError naming `label` for anything but "false_alarm" or "anomaly"."""
        if label not in LABELS:
            raise ValueError(f"label must be one of {', '.join(LABELS)}, got {label!r}")
        with self._tx() as c:
            n = c.execute(
                "UPDATE events SET label = ?, labelled_s = ? WHERE id = ?", (label, float(self._clock()), int(event_id))
            ).rowcount
        return n == 1

    def put_trace(self, event_id: int, points: list[tuple[float, float]], threshold: float | None = None) -> None:
        """Store (replace) the event's score trace: (wall time, score) points around it, oldest first, cut to
        MAX_TRACE_POINTS keeping peaks, with the threshold it was judged against."""
        pts = [[round(float(t), 3), round(float(v), 5)] for t, v in downsample(points, MAX_TRACE_POINTS)]
        trace = json.dumps({"threshold": threshold, "points": pts}, allow_nan=False)
        with self._tx() as c:
            self._require(c, event_id)
            c.execute(
                "INSERT INTO traces (event_id, trace) VALUES (?, ?) ON CONFLICT (event_id) DO UPDATE SET trace = excluded.trace",
                (int(event_id), trace),
            )

    def close_dangling(self, rule: DanglingRule = "last_seen") -> int:
        """At startup: settle events left open by a stopped service; returns how many.

        rule: "last_seen" ends them at their last update (peak or `touch`), "now" at the current time,
        "delete" removes them.
        """
        if rule not in ("last_seen", "now", "delete"):
            raise ValueError(f"close_dangling rule must be 'last_seen', 'now' or 'delete', got {rule!r}")
        with self._tx() as c:
            if rule == "delete":
                n = c.execute("DELETE FROM events WHERE status = 'open'").rowcount
            elif rule == "now":
                n = c.execute(
                    "UPDATE events SET end_s = ?, status = 'closed', reason = 'restart' WHERE status = 'open'",
                    (float(self._clock()),),
                ).rowcount
            else:
                n = c.execute(
                    "UPDATE events SET end_s = updated_s, status = 'closed', reason = 'restart' WHERE status = 'open'"
                ).rowcount
        self.prune()
        return n

    def prune(self) -> int:
        """Delete closed events past the retention age or beyond `max_events`; returns how many."""
        cutoff = self._clock() - self.retention_days * 86400.0
        with self._tx() as c:
            n = c.execute("DELETE FROM events WHERE status = 'closed' AND end_s < ?", (cutoff,)).rowcount
            total = c.execute("SELECT COUNT(*) FROM events").fetchone()[0]
            excess = total - self.max_events
            if excess > 0:
                n += c.execute(
                    "DELETE FROM events WHERE id IN (SELECT id FROM events WHERE status = 'closed' "
                    "ORDER BY start_s ASC, id ASC LIMIT ?)",
                    (excess,),
                ).rowcount
        return n

    # -- reads ----------------------------------------------------------------------------------------
    def get_event(self, event_id: int) -> Event | None:
        """The event `event_id`, or None."""
        with self._lock:
            row = self._conn.execute(f"{_SELECT} WHERE e.id = ?", (int(event_id),)).fetchone()
        return _event(row) if row else None

    def list_events(
        self,
        camera: str | None = None,
        since: float | None = None,
        until: float | None = None,
        min_score: float | None = None,
        limit: int = 100,
        status: Literal["open", "closed"] | None = None,
        label: Literal["false_alarm", "anomaly", "none"] | None = None,
    ) -> list[Event]:
        """Events newest first; `since`/`until` keep events overlapping that time range; `label` "none" keeps the
        events no one has labelled yet."""
        if not 1 <= int(limit) <= 10_000:
            raise ValueError(f"events limit must lie in [1, 10000], got {limit}")
        if since is not None and until is not None and since > until:
            raise ValueError(f"events since ({since}) must not be after until ({until})")
        where, args = [], []
        if camera is not None:
            where.append("e.camera = ?")
            args.append(camera)
        if since is not None:
            where.append("(e.end_s IS NULL OR e.end_s >= ?)")
            args.append(float(since))
        if until is not None:
            where.append("e.start_s <= ?")
            args.append(float(until))
        if min_score is not None:
            where.append("e.peak_score >= ?")
            args.append(float(min_score))
        if status is not None:
            where.append("e.status = ?")
            args.append(status)
        if label == "none":
            where.append("e.label IS NULL")
        elif label is not None:
            if label not in LABELS:
                raise ValueError(f"events label filter must be one of {', '.join(LABELS)}, none; got {label!r}")
            where.append("e.label = ?")
            args.append(label)
        sql = _SELECT + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY e.start_s DESC, e.id DESC LIMIT ?"
        with self._lock:
            rows = self._conn.execute(sql, (*args, int(limit))).fetchall()
        return [_event(r) for r in rows]

    def get_snapshot(self, event_id: int) -> bytes | None:
        """The JPEG snapshot of event `event_id`, or None."""
        with self._lock:
            row = self._conn.execute("SELECT jpeg FROM snapshots WHERE event_id = ?", (int(event_id),)).fetchone()
        return bytes(row[0]) if row else None

    def get_trace(self, event_id: int) -> dict[str, Any] | None:
        """The event's stored score trace `{"threshold": ..., "points": [[t, score], ...]}`, or None."""
        with self._lock:
            row = self._conn.execute("SELECT trace FROM traces WHERE event_id = ?", (int(event_id),)).fetchone()
        return json.loads(row[0]) if row else None

    def event_ids(self) -> set[int]:
        """The ids of every stored event (what files kept beside the store, like alert clips, are pruned against)."""
        with self._lock:
            return {int(r[0]) for r in self._conn.execute("SELECT id FROM events")}

    def count(self) -> int:
        """Number of stored events (retention and tests)."""
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM events").fetchone()[0])


def _event(row: tuple) -> Event:
    return Event(*row[:-1], has_snapshot=bool(row[-1]))
