"""Per-camera alert state machine: open after the score stays high for a while, close with hysteresis (pure).

States: idle -> pending (score >= threshold, waiting `min_duration_s`) -> open -> (score < threshold -
hysteresis for `close_after_s`) -> idle. The alert's start is the time the score first crossed the
threshold, so a confirmed alert covers its whole anomalous stretch; its peak (score, frame, time) is
tracked from that moment on. `update` returns the events to persist: "opened", "peak" (a higher score
while open) and "closed". After `update`, `new_peak` tells the caller that the frame just given is the
alert's peak so far (pending or open), i.e. the moment to render and keep a snapshot.

`count_alerts` replays a score trace through these rules; `threshold_for_rate` picks the lowest threshold whose
replay on a scene's normal calibration footage opens at most a target number of alerts per hour, so an operator
can ask for "at most N false alerts an hour" instead of a bare number.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

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


@dataclass(frozen=True)
class AlertRules:
    """The rules a camera's alerts follow (alerts.* in the service config), for replaying footage offline."""

    min_duration_s: float = 0.5
    hysteresis: float = 0.1
    close_after_s: float = 1.0


def count_alerts(traces: Sequence[Sequence[float]], fps: float, threshold: float, rules: AlertRules = AlertRules()) -> int:
    """How many alerts open when each trace (one clip's normalised scores in stream order, NaN = not scored) is
    replayed at `fps` through the alert rules; every trace starts idle."""
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    n = 0
    for trace in traces:
        tracker = AlertTracker(threshold, rules.min_duration_s, rules.hysteresis, rules.close_after_s)
        for i, s in enumerate(np.asarray(trace, dtype=np.float64)):  # None -> NaN: not scored
            n += sum(ev.kind == "opened" for ev in tracker.update(i / fps, float(s), i))
    return n


def alert_spans(trace: Sequence[float], fps: float, threshold: float, rules: AlertRules = AlertRules()) -> list[tuple[int, int]]:
    """The alerts one trace raises when replayed at `fps`, as (first frame, last frame) inclusive: from the frame
    whose score first crossed the threshold (the alert's start) to the last frame before it closed, or the trace's
    end for an alert still open there. The same rules and opening count as `count_alerts`."""
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    tracker = AlertTracker(threshold, rules.min_duration_s, rules.hysteresis, rules.close_after_s)
    scores = np.asarray(trace, dtype=np.float64)
    spans: list[tuple[int, int]] = []
    for i, s in enumerate(scores):
        for ev in tracker.update(i / fps, float(s), i):
            if ev.kind == "opened":
                spans.append((round(ev.start_s * fps), len(scores) - 1))
            elif ev.kind == "closed":
                spans[-1] = (spans[-1][0], max(spans[-1][0], round(ev.end_s * fps) - 1))
    return spans


@dataclass(frozen=True)
class ThresholdChoice:
    """A threshold chosen for a target false-alert rate, and what the footage says about it.

    expected_per_hour: the rate measured on the footage at `threshold`; when the footage is too short to resolve
    the target (`resolved` False: fewer than one alert's worth of footage), the threshold lies just above the
    footage's highest score (no frame of it even pending) and the true rate is only known to lie below
    `bound_per_hour` (one alert in the footage).
    """

    threshold: float
    target_per_hour: float
    expected_per_hour: float
    bound_per_hour: float
    footage_s: float
    resolved: bool

    def to_dict(self) -> dict:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in self.__dict__.items()}


def threshold_for_rate(
    traces: Mapping[str, Sequence[float]] | Sequence[Sequence[float]], fps: float, max_per_hour: float,
    rules: AlertRules = AlertRules(), floor: float = 0.5, ceiling: float = 0.999,
) -> ThresholdChoice:
    """The lowest threshold in [floor, ceiling] at which replaying the normal footage opens at most `max_per_hour`
    alerts an hour (the rate falls as the threshold rises; a bisection over the footage's own score levels)."""
    if not max_per_hour >= 0:
        raise ValueError(f"max_false_alerts_per_hour must be >= 0, got {max_per_hour}")
    seqs = [np.asarray(t, dtype=np.float64) for t in (traces.values() if isinstance(traces, Mapping) else traces)]
    frames = sum(len(t) for t in seqs)
    if frames == 0:
        raise ValueError("no calibration footage to choose a threshold on (the bundle has no score trace)")
    footage_s = frames / fps
    allowed = math.floor(max_per_hour * footage_s / 3600.0)  # alerts the footage may show
    finite = np.concatenate(seqs)
    finite = finite[np.isfinite(finite)]
    counted: dict[float, int] = {}

    def alerts_at(t: float) -> int:  # each level is replayed once
        if t not in counted:
            counted[t] = count_alerts(seqs, fps, t, rules)
        return counted[t]

    if allowed < 1:  # zero alerts in short footage says little: stay above every score it showed
        threshold = float(np.nextafter(finite.max(), np.inf)) if finite.size else ceiling
    else:
        levels = np.unique(np.clip(np.concatenate([finite, [floor, ceiling]]), floor, ceiling))
        lo, hi = 0, len(levels) - 1  # invariant: levels[hi] satisfies the target (or is the ceiling)
        if alerts_at(float(levels[0])) <= allowed:
            hi = 0
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if alerts_at(float(levels[mid])) <= allowed:
                hi = mid
            else:
                lo = mid
        threshold = float(levels[hi])  # any threshold in (levels[hi - 1], levels[hi]] flags the same frames
    threshold = min(max(threshold, floor), ceiling)
    n = alerts_at(threshold)
    return ThresholdChoice(
        threshold=threshold, target_per_hour=float(max_per_hour), expected_per_hour=n * 3600.0 / footage_s,
        bound_per_hour=3600.0 / footage_s, footage_s=footage_s, resolved=allowed >= 1,
    )


@dataclass(frozen=True)
class ResolvedThreshold:
    """A camera's alert threshold, where it came from, and the false-alert rate its calibration footage shows
    (None when the bundle keeps no score trace; `bound_per_hour` when that footage shows no alert at all)."""

    threshold: float
    source: Literal["config", "max_false_alerts_per_hour", "bundle_learned", "bundle"]
    expected_per_hour: float | None = None
    bound_per_hour: float | None = None
    target_per_hour: float | None = None
    note: str | None = None

    def to_dict(self) -> dict:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in self.__dict__.items()}


def resolve_threshold(
    explicit: float | None, max_per_hour: float | None, scoring, calibration, fps: float, rules: AlertRules = AlertRules(),
) -> ResolvedThreshold:
    """The threshold a camera alerts at: a bare `threshold` from the config wins; else one chosen for
    `max_false_alerts_per_hour` on the bundle's calibration trace replayed at the camera's fps through its rules;
    else the bundle's learned `alert_threshold`; else the bundle's `threshold`."""
    trace = calibration.score_trace if calibration is not None else {}
    target = None
    if explicit is not None:
        threshold, source = float(explicit), "config"
    elif max_per_hour is not None and trace:
        threshold, source, target = threshold_for_rate(trace, fps, max_per_hour, rules).threshold, "max_false_alerts_per_hour", max_per_hour
    elif scoring.alert_threshold is not None:
        threshold, source = float(scoring.alert_threshold), "bundle_learned"
    else:
        threshold, source = float(scoring.threshold), "bundle"
    if not trace:
        note = None if max_per_hour is None or explicit is not None else (
            "max_false_alerts_per_hour ignored: the bundle keeps no calibration score trace (export it again)")
        return ResolvedThreshold(threshold, source, target_per_hour=target, note=note)
    footage_s = sum(len(t) for t in trace.values()) / fps
    n = count_alerts(list(trace.values()), fps, threshold, rules)
    return ResolvedThreshold(threshold, source, n * 3600.0 / footage_s, None if n else 3600.0 / footage_s, target)
