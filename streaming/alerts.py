"""Per-camera alert state machine: open after the score stays high for a while, close with hysteresis (pure).

States: idle -> pending (score >= threshold, waiting `min_duration_s`) -> open -> (score < threshold -
hysteresis for `close_after_s`) -> idle. The alert's start is the time the score first crossed the
threshold, so a confirmed alert covers its whole anomalous stretch; its peak (score, frame, time) is
tracked from that moment on. `update` returns the events to persist: "opened", "peak" (a higher score
while open) and "closed". After `update`, `new_peak` tells the caller that the frame just given is the
alert's peak so far (pending or open), i.e. the moment to render and keep a snapshot.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

EventKind = Literal["opened", "peak", "closed"]


@dataclass(frozen=True)
class AlertEvent:
    """One change of an alert; `end_s` is set only on "closed"."""

    kind: EventKind
    camera: str
    start_s: float
    peak_score: float
    peak_frame: int
    peak_s: float
    end_s: float | None = None
    reason: str = ""


class AlertTracker:
    """Turns one camera's stream of (time, normalised score, frame index) into alert events."""

    def __init__(
        self,
        threshold: float,
        min_duration_s: float = 1.0,
        hysteresis: float = 0.1,
        close_after_s: float = 1.0,
        camera: str = "",
    ):
        """Args:
        threshold: a score at or above this is anomalous.
        min_duration_s: the score must stay anomalous this long before an alert opens (0: at once).
        hysteresis: an open alert only counts the score as normal below `threshold - hysteresis`.
        close_after_s: the score must stay below that lower level this long before the alert closes.
        camera: copied into every event.
        """
        for name, v in (("threshold", threshold), ("min_duration_s", min_duration_s), ("hysteresis", hysteresis),
                        ("close_after_s", close_after_s)):
            if not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"AlertTracker {camera!r}: {name} must be a finite number, got {v!r}")
        for name, v in (("min_duration_s", min_duration_s), ("hysteresis", hysteresis), ("close_after_s", close_after_s)):
            if v < 0:
                raise ValueError(f"AlertTracker {camera!r}: {name} must be >= 0, got {v}")
        self.threshold = float(threshold)
        self.min_duration_s = float(min_duration_s)
        self.hysteresis = float(hysteresis)
        self.close_after_s = float(close_after_s)
        self.camera = camera
        self.new_peak = False
        self._last_s: float | None = None
        self._reset()

    def _reset(self) -> None:
        self.state: Literal["idle", "pending", "open"] = "idle"
        self._start_s = 0.0
        self._peak = (-math.inf, -1, 0.0)  # score, frame, time
        self._low_since: float | None = None

    @property
    def is_open(self) -> bool:
        """True while an alert is open for this camera."""
        return self.state == "open"

    @property
    def peak(self) -> tuple[float, int, float] | None:
        """(score, frame, time) of the pending or open alert's peak; None when idle."""
        return None if self.state == "idle" else self._peak

    def _event(self, kind: EventKind, end_s: float | None = None, reason: str = "") -> AlertEvent:
        score, frame, t = self._peak
        return AlertEvent(kind, self.camera, self._start_s, score, frame, t, end_s, reason)

    def update(self, wall_s: float, score: float, frame: int, warm: bool = True) -> list[AlertEvent]:
        """Feed one frame's score. Scores that are NaN or not `warm` (normaliser warm-up) are ignored."""
        self.new_peak = False
        if self._last_s is not None and wall_s < self._last_s:
            raise ValueError(
                f"camera {self.camera!r}: time went backwards at frame {frame}: {wall_s} < {self._last_s}"
            )
        self._last_s = wall_s
        if not warm or score is None or not math.isfinite(score):
            return []
        events: list[AlertEvent] = []
        high = score >= self.threshold
        if self.state == "idle":
            if not high:
                return []
            self.state, self._start_s, self._low_since = "pending", wall_s, None
        elif self.state == "pending" and not high:
            self._reset()
            return []

        if score > self._peak[0]:
            self._peak = (float(score), int(frame), float(wall_s))
            self.new_peak = True
            if self.state == "open":
                events.append(self._event("peak"))

        if self.state == "pending" and wall_s - self._start_s >= self.min_duration_s:
            self.state = "open"
            events.append(self._event("opened"))
        elif self.state == "open":
            if score < self.threshold - self.hysteresis:
                if self._low_since is None:
                    self._low_since = wall_s
                if wall_s - self._low_since >= self.close_after_s:
                    # the anomaly ended when the score first fell below the lower level
                    events.append(self._event("closed", end_s=self._low_since, reason="score"))
                    self._reset()
            else:
                self._low_since = None
        return events

    def resume(self, start_s: float, peak_score: float, peak_frame: int, peak_s: float) -> None:
        """Continue an alert that a previous incarnation opened (scorer restarted): open, no new `opened` event."""
        self._reset()
        self.state, self._start_s = "open", float(start_s)
        self._peak = (float(peak_score), int(peak_frame), float(peak_s))

    def close(self, wall_s: float, reason: str = "stopped") -> list[AlertEvent]:
        """Close an open alert now (camera removed, service stopping); a pending one is dropped."""
        events = [self._event("closed", end_s=wall_s, reason=reason)] if self.state == "open" else []
        self._reset()
        self.new_peak = False
        return events
