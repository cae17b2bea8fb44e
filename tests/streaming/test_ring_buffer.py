"""RingBuffer, FrameResampler and Backoff: the pure frame-shaping parts of ingest."""
from __future__ import annotations

import random

import numpy as np
import pytest

from streaming.backoff import Backoff
from streaming.ring_buffer import FrameResampler, RingBuffer, CameraWindow


def _frame(i: int, h: int = 8, w: int = 6) -> np.ndarray:
    return np.full((h, w, 3), i % 256, dtype=np.uint8)


def _push_many(ring: RingBuffer, n: int, start: int = 0) -> list[CameraWindow]:
    out = []
    for i in range(start, start + n):
        win = ring.push(_frame(i), i, 1000.0 + i)
        if win is not None:
            out.append(win)
    return out


@pytest.mark.parametrize(
    "window, hop, n, expected_starts",
    [
        (16, 16, 47, [0, 16]),  # non-overlapping: the paper's windows
        (16, 16, 48, [0, 16, 32]),
        (16, 8, 40, [0, 8, 16, 24]),  # overlapping by half
        (4, 1, 7, [0, 1, 2, 3]),  # sliding by one
        (4, 6, 16, [0, 6, 12]),  # hop > window: frames in between are skipped
        (1, 1, 3, [0, 1, 2]),
    ],
)
def test_windows_follow_window_and_hop(window, hop, n, expected_starts):
    wins = _push_many(RingBuffer(window, hop, camera="cam"), n)
    assert [int(w.indices[0]) for w in wins] == expected_starts
    for w in wins:
        assert w.camera == "cam"
        assert w.frames.shape == (window, 8, 6, 3) and w.frames.dtype == np.uint8
        np.testing.assert_array_equal(w.indices, np.arange(w.indices[0], w.indices[0] + window))
        # frames are in time order and match their indices
        np.testing.assert_array_equal(w.frames[:, 0, 0, 0], w.indices % 256)
        np.testing.assert_allclose(w.wall_s, 1000.0 + w.indices)


def test_window_is_a_copy_not_a_view_of_the_ring():
    ring = RingBuffer(4, 4)
    (first,) = _push_many(ring, 4)
    _push_many(ring, 4, start=4)  # overwrites every slot of the ring
    np.testing.assert_array_equal(first.frames[:, 0, 0, 0], [0, 1, 2, 3])


def test_reset_and_size_change_start_a_new_window():
    ring = RingBuffer(4, 4)
    _push_many(ring, 3)
    ring.reset()
    assert len(ring) == 0
    assert _push_many(ring, 3, start=10) == []
    # a frame of another size (camera changed resolution) drops the partial window
    assert ring.push(np.zeros((5, 5, 3), np.uint8), 13, 0.0) is None
    assert len(ring) == 1
    wins = [ring.push(np.zeros((5, 5, 3), np.uint8), i, 0.0) for i in range(14, 17)]
    assert wins[-1] is not None and list(wins[-1].indices) == [13, 14, 15, 16]


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.zeros((8, 8), np.uint8), "shape"),
        (np.zeros((8, 8, 4), np.uint8), "shape"),
        (np.zeros((8, 8, 3), np.float32), "dtype"),
    ],
)
def test_push_rejects_bad_frames(bad, match):
    with pytest.raises(ValueError, match=match):
        RingBuffer(4, 4).push(bad, 0, 0.0)


@pytest.mark.parametrize("window, hop", [(0, 1), (4, 0)])
def test_ring_rejects_bad_sizes(window, hop):
    with pytest.raises(ValueError, match="window|hop"):
        RingBuffer(window, hop)


@pytest.mark.parametrize(
    "source_fps, target_fps, seconds, expected_kept",
    [
        (25, 25, 4, 100),  # same rate: keep all
        (30, 25, 4, 100),  # 30 -> 25
        (25, 10, 4, 40),
        (50, 25, 2, 50),
        (10, 25, 4, 40),  # slower source: keep everything, never duplicate
        (29.97, 25, 4, 100),
    ],
)
def test_resampler_reaches_the_target_rate(source_fps, target_fps, seconds, expected_kept):
    r = FrameResampler(target_fps)
    n = int(round(source_fps * seconds))
    kept = [i for i in range(n) if r.keep(i / source_fps)]
    assert abs(len(kept) - expected_kept) <= 1
    gaps = np.diff(kept)
    assert gaps.max() - gaps.min() <= 1  # evenly spread, no bursts


def test_resampler_tolerates_jitter_and_restarts_on_time_jumps():
    rng = np.random.default_rng(0)
    r = FrameResampler(25)
    t = np.arange(250) / 25 + rng.uniform(-0.004, 0.004, 250)  # +-4 ms network jitter
    assert sum(r.keep(x) for x in t) >= 245
    # a reconnect: timestamps restart from 0, the next frame is kept at once
    assert r.keep(0.0)
    # a jump forward (gap in the source) does not cause a burst of kept frames afterwards
    r2 = FrameResampler(10)
    kept = [r2.keep(x) for x in [0.0, 0.03, 0.06, 0.10, 5.0, 5.03, 5.06, 5.10]]
    assert kept == [True, False, False, True, True, False, False, True]


def test_resampler_none_keeps_everything_and_rejects_bad_rate():
    assert all(FrameResampler(None).keep(i / 100) for i in range(10))
    with pytest.raises(ValueError, match="target_fps"):
        FrameResampler(0)


def test_backoff_grows_caps_and_resets():
    b = Backoff(initial_s=0.5, max_s=4, factor=2, jitter=0.0)
    assert [b.next() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    b.reset()
    assert b.next() == 0.5
    delays = [b.next() for _ in range(2000)]  # many attempts: no float overflow
    assert delays[:3] == [1.0, 2.0, 4.0] and set(delays[3:]) == {4.0}


def test_backoff_jitter_is_bounded_seeded_and_spreads():
    delays = [Backoff(1, 30, 2, 0.2, rng=random.Random(s)).next() for s in range(200)]
    assert all(0.8 <= d <= 1.2 for d in delays)
    assert np.std(delays) > 0.05  # cameras do not reconnect in lock-step
    a = Backoff(jitter=0.2, rng=random.Random(7))
    b = Backoff(jitter=0.2, rng=random.Random(7))
    assert [a.next() for _ in range(5)] == [b.next() for _ in range(5)]


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"initial_s": 0}, "initial_s"),
        ({"initial_s": 5, "max_s": 1}, "max_s"),
        ({"factor": 0.5}, "factor"),
        ({"jitter": 1.0}, "jitter"),
    ],
)
def test_backoff_validates(kwargs, field):
    with pytest.raises(ValueError, match=field):
        Backoff(**kwargs)
