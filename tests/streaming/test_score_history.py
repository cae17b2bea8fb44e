"""streaming/score_history.py: a camera's recent scores stay bounded in time and count; downsampling keeps peaks."""
from __future__ import annotations

import math

import pytest

from streaming.score_history import ScoreHistory, downsample


def test_history_keeps_only_the_horizon_behind_the_newest_point():
    h = ScoreHistory(horizon_s=10.0, max_points=1000)
    for i in range(240):  # 30 s at 8 fps (times exact in binary)
        h.add(1000.0 + i / 8, 0.5)
    pts = h.between(0.0)
    assert (pts[0][0], pts[-1][0]) == (1019.875, 1029.875)
    assert len(h) == 81  # 10 s at 8 fps, both ends included
    assert h.between(1025.0, 1026.0) == [(1025.0 + k / 8, 0.5) for k in range(9)]


def test_history_keeps_at_most_max_points_and_skips_bad_points():
    h = ScoreHistory(horizon_s=600.0, max_points=50)
    for i in range(200):
        h.add(float(i), i / 200)
    assert len(h) == 50 and h.between(0.0)[0] == (150.0, 0.75)  # the newest 50
    h.add(300.0, math.nan)  # a warm-up score
    h.add(math.inf, 0.5)
    h.add(10.0, 0.9)  # before the newest: a restarted stream's clock
    assert len(h) == 50 and h.between(0.0)[-1] == (199.0, 199 / 200)


@pytest.mark.parametrize("kw, field", [({"horizon_s": 0}, "horizon_s"), ({"horizon_s": math.inf}, "horizon_s"),
                                       ({"max_points": 0}, "max_points"), ({"max_points": 2.5}, "max_points")])
def test_history_refuses_bad_bounds(kw, field):
    with pytest.raises(ValueError, match=field):
        ScoreHistory(**kw)


def test_downsample_bounds_the_count_and_keeps_a_one_frame_spike():
    pts = [(float(i), 0.1) for i in range(10_000)]
    pts[4321] = (4321.0, 0.99)
    out = downsample(pts, 300)
    assert len(out) == 300 and (4321.0, 0.99) in out
    assert [t for t, _ in out] == sorted(t for t, _ in out)  # still time-ordered
    assert downsample(pts[:5], 300) == pts[:5]  # short series unchanged
    assert downsample([], 3) == []
    with pytest.raises(ValueError, match="max_points"):
        downsample(pts, 0)
