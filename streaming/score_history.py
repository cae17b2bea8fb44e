"""A camera's recent scores, bounded in time and in count, and peak-keeping downsampling for charts (pure).

The scorer keeps one `ScoreHistory` per camera (streaming/camera_alerts.py) for the page's live chart
(GET /cameras/{name}/scores) and for the score trace stored with each event. Memory is bounded twice: points older
than `horizon_s` behind the newest are dropped, and at most `max_points` are kept (a camera faster than
max_points / horizon_s frames per second keeps a shorter stretch).
"""
from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable

HORIZON_S = 600.0  # ten minutes of scores per camera
MAX_POINTS = 15_000  # 25 fps for ten minutes; about 1 MB of Python floats per camera at most
CHART_POINTS = 600  # what one JSON answer carries at most (a phone-wide chart has fewer pixels)


class ScoreHistory:
    """(wall time, score) of a camera's scored frames, oldest first, at most `horizon_s` and `max_points` long."""

    def __init__(self, horizon_s: float = HORIZON_S, max_points: int = MAX_POINTS):
        if not (isinstance(horizon_s, (int, float)) and math.isfinite(horizon_s) and horizon_s > 0):
            raise ValueError(f"score history horizon_s must be a finite number > 0, got {horizon_s!r}")
        if isinstance(max_points, bool) or not isinstance(max_points, int) or max_points < 1:
            raise ValueError(f"score history max_points must be an integer >= 1, got {max_points!r}")
        self.horizon_s = float(horizon_s)
        self._points: deque[tuple[float, float]] = deque(maxlen=max_points)

    def __len__(self) -> int:
        return len(self._points)

    def add(self, wall_s: float, score: float) -> None:
        """Append one frame's score; a non-finite score (warm-up NaN) or a time before the newest is skipped."""
        if not (math.isfinite(wall_s) and math.isfinite(score)):
            return
        if self._points and wall_s < self._points[-1][0]:
            return  # a restarted stream's clock must not scramble the order charts and traces rely on
        self._points.append((float(wall_s), float(score)))
        cutoff = wall_s - self.horizon_s
        while self._points[0][0] < cutoff:
            self._points.popleft()

    def between(self, start_s: float, end_s: float = math.inf) -> list[tuple[float, float]]:
        """Points with start_s <= t <= end_s, oldest first."""
        return [p for p in self._points if start_s <= p[0] <= end_s]


def downsample(points: Iterable[tuple[float, float]], max_points: int) -> list[tuple[float, float]]:
    """At most `max_points` of `points` (time-ordered): each of `max_points` equal runs keeps its highest score, so
    a short spike above the threshold survives where averaging or striding would hide it."""
    if max_points < 1:
        raise ValueError(f"downsample max_points must be >= 1, got {max_points}")
    pts = list(points)
    if len(pts) <= max_points:
        return pts
    out = []
    for k in range(max_points):
        run = pts[k * len(pts) // max_points : (k + 1) * len(pts) // max_points]
        out.append(max(run, key=lambda p: p[1]))
    return out
