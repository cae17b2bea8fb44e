"""One sink's delivery thread: drain its outbox in sequence order through a transport, retrying with backoff.

The thread is the only place a sink's network I/O happens, so a broker or receiver that is down, slow or
refusing never holds up scoring (the scoring thread only stores messages in the outbox). A message leaves the
outbox once the transport returned (the broker acknowledged it at the sink's QoS, the receiver answered 2xx).
A failure keeps it, closes the transport and waits a backoff delay (streaming/backoff.py) before the next try;
the sink's state (`up`, `down`, `slow`, `refusing`) is logged once per change, never per attempt.
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Literal, Protocol

from streaming.backoff import Backoff
from streaming.notify.outbox import Outbox, Stored

logger = logging.getLogger(__name__)

SinkState = Literal["starting", "up", "down", "slow", "refusing"]


class TransportError(Exception):
    """A delivery attempt failed; `state` says how (down, slow, refusing). The message holds no credentials."""

    def __init__(self, state: SinkState, reason: str):
        super().__init__(reason)
        self.state = state


class Transport(Protocol):
    def connect(self) -> None: ...  # idempotent: a no-op while connected; TransportError when it cannot
    def send(self, msg: Stored) -> None: ...  # returns once acknowledged; TransportError otherwise
    def reset(self) -> None: ...  # drop the connection after a failure (a fresh one next time)
    def close(self) -> None: ...  # graceful end (the service is stopping)


class Delivery:
    """Drains `outbox` through `transport` in a daemon thread until `stop()`.

    Args:
        name: the sink's name (logs, metric label).
        metrics: the sink's NotifyMetrics (streaming/prometheus.py), or None.
        backoff: retry delays (default 0.5 s doubling to 30 s, +-20 %).
    """

    def __init__(self, name: str, outbox: Outbox, transport: Transport, metrics: Any = None,
                 backoff: Backoff | None = None, idle_s: float = 1.0):
        self.name, self.outbox, self.transport, self.metrics = name, outbox, transport, metrics
        self.backoff = backoff or Backoff(0.5, 30.0)
        self.idle_s = idle_s
        self.state: SinkState = "starting"
        self.reason = ""
        self.sent = 0
        self.failures = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"notify-{name}", daemon=True)

    def start(self) -> "Delivery":
        self._thread.start()
        return self

    def wake(self) -> None:
        """A new message is in the outbox: try now rather than at the next idle poll."""
        self._wake.set()

    def _set_state(self, state: SinkState, reason: str = "") -> None:
        if state != self.state:
            if state == "up":
                logger.warning("notify sink %s: delivering%s", self.name,
                               "" if self.state == "starting" else f" again (was {self.state})")
            else:
                logger.warning("notify sink %s: %s (%s); messages wait in the outbox and are retried with backoff",
                               self.name, state, reason)
            self.state, self.reason = state, reason
        if self.metrics is not None:
            self.metrics.up.set(1.0 if state == "up" else 0.0)

    def _depth(self) -> None:
        if self.metrics is not None:
            self.metrics.outbox_depth.set(self.outbox.depth())

    def _fail(self, exc: TransportError, seq: int | None) -> None:
        self.failures += 1
        if self.metrics is not None:
            self.metrics.failures.inc()
        if seq is not None:
            self.outbox.failed(seq)
        self._set_state(exc.state, str(exc))
        try:
            self.transport.reset()
        except Exception:  # noqa: BLE001 - the connection is being dropped anyway
            logger.debug("notify sink %s: reset failed", self.name, exc_info=True)
        self._stop.wait(self.backoff.next())

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._once()
            except Exception as exc:  # noqa: BLE001 - e.g. the database briefly locked: never end the thread
                if self.state != "down":  # the traceback once, then only the state
                    logger.exception("notify sink %s: delivery loop error", self.name)
                self._fail(TransportError("down", f"{type(exc).__name__}: {exc}"[:200]), None)

    def _once(self) -> None:
        self._depth()
        try:
            self.transport.connect()
        except TransportError as exc:
            self._fail(exc, None)
            return
        batch = self.outbox.peek(32)
        if not batch:  # connected with nothing to send (a webhook: nothing to try) counts as up; else a send decides
            self._set_state("up")
            self._wake.wait(self.idle_s)
            self._wake.clear()
            return
        for msg in batch:
            if self._stop.is_set():
                return
            try:
                self.transport.send(msg)
            except TransportError as exc:
                self._fail(exc, msg.seq)
                return
            self.outbox.ack(msg.seq)
            self.sent += 1
            self.backoff.reset()
            self._set_state("up")
            if self.metrics is not None:
                self.metrics.sent.inc()

    def stop(self, timeout_s: float = 5.0) -> None:
        """End the thread (what is undelivered stays in the outbox for the next start), then close the transport."""
        self._stop.set()
        self._wake.set()
        if self._thread.ident is not None:
            self._thread.join(timeout=timeout_s)
        try:
            self.transport.close()
        except Exception:  # noqa: BLE001 - stopping anyway
            logger.debug("notify sink %s: close failed", self.name, exc_info=True)
