"""The demo feed: deterministic, normal motion is slow, the anomaly is where the labels say, the video round-trips."""
from __future__ import annotations

import numpy as np
import pytest

from streaming.demo_feed import DemoFeed, write_demo_video


def _motion(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of pixels that changed by more than the sensor noise between two frames."""
    return float((np.abs(a.astype(int) - b.astype(int)).max(axis=2) > 25).mean())


def test_frames_are_deterministic_and_seed_dependent():
    a, b = DemoFeed(seed=5), DemoFeed(seed=5)
    for i in (0, 17, 512):
        np.testing.assert_array_equal(a.frame(i), b.frame(i))
    assert np.abs(DemoFeed(seed=6).frame(0).astype(int) - a.frame(0).astype(int)).mean() > 5
    f = a.frame(3)
    assert f.shape == (256, 256, 3) and f.dtype == np.uint8
    assert 40 < f.mean() < 200 and f.std() > 10  # a textured, mid-brightness scene, not a flat image


@pytest.mark.parametrize(
    "kwargs, anomalous_seconds",
    [
        ({"anomaly_every_s": 20.0}, [(20.0, 21.6), (40.0, 41.6)]),  # default: the first 20 s are normal
        ({"anomaly_intervals": [(5.0, 6.0), (12.0, 14.0)]}, [(5.0, 6.0), (12.0, 14.0)]),
        ({"anomaly_every_s": None}, []),
    ],
)
def test_labels_are_at_the_known_times(kwargs, anomalous_seconds):
    fps = 25
    feed = DemoFeed(fps=fps, **kwargs)
    labels = feed.labels(int(45 * fps))
    expected = np.zeros_like(labels)
    for start, end in anomalous_seconds:
        s, e = int(np.ceil(start * fps)), int(np.ceil(end * fps))
        expected[s:e] = 1
    # the vehicle enters just after the start and has left just before the end: within 2 frames
    assert np.abs(labels.astype(int) - expected).sum() <= 4 * len(anomalous_seconds)
    if anomalous_seconds:
        start = anomalous_seconds[0][0]
        assert not labels[: int(start * fps)].any()


def test_anomaly_is_large_and_fast_and_normal_motion_is_slow():
    feed = DemoFeed(seed=0, fps=25, anomaly_intervals=[(4.0, 5.6)])
    normal = [_motion(feed.frame(i), feed.frame(i + 1)) for i in range(0, 90)]
    mid = int(4.8 * 25)
    assert feed.is_anomalous(mid) and not feed.is_anomalous(90)
    abnormal = [_motion(feed.frame(i), feed.frame(i + 1)) for i in range(mid - 5, mid + 5)]
    assert max(normal) < 0.01  # walkers: a few pixels per frame
    assert min(abnormal) > 3 * max(normal)  # ~8 px/frame vs ~1 px/frame, and a much larger object
    # the vehicle covers a large area: the anomalous frame differs from the same scene without it
    quiet = DemoFeed(seed=0, fps=25, anomaly_every_s=None)
    changed = (np.abs(feed.frame(mid).astype(int) - quiet.frame(mid).astype(int)).max(axis=2) > 25).mean()
    assert changed > 0.03


def test_walkers_move_at_a_steady_speed():
    feed = DemoFeed(seed=0, fps=25, anomaly_every_s=None, noise=0.0)
    # the scene is periodic in nothing short: frames one second apart differ, consecutive frames barely
    f0, f1, f25 = feed.frame(0), feed.frame(1), feed.frame(25)
    assert _motion(f0, f25) > _motion(f0, f1) > 0
    # speeds are in pixels per second: the same instant at another frame rate shows the same scene
    feed50 = DemoFeed(seed=0, fps=50, anomaly_every_s=None, noise=0.0)
    np.testing.assert_array_equal(feed.frame(25), feed50.frame(50))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"fps": 0}, "fps"),
        ({"size": 16}, "size"),
        ({"anomaly_intervals": [(3.0, 2.0)]}, "anomaly_intervals"),
        ({"anomaly_every_s": 1.0}, "anomaly_every_s"),
    ],
)
def test_bad_parameters_name_the_field(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DemoFeed(**kwargs)
    with pytest.raises(ValueError, match="index"):
        DemoFeed().frame(-1)


def test_write_demo_video_round_trip(tmp_path):
    import av

    path = tmp_path / "demo.mp4"
    labels = write_demo_video(path, seconds=3.0, fps=10, size=128, seed=1, anomaly_intervals=[(1.0, 2.0)])
    assert labels.shape == (30,) and labels.dtype == np.uint8
    assert labels[:10].sum() == 0 and labels[12:19].all() and labels[21:].sum() == 0
    feed = DemoFeed(seed=1, fps=10, size=128, anomaly_intervals=[(1.0, 2.0)])
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        assert stream.codec_context.name == "h264" and float(stream.average_rate) == pytest.approx(10)
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) == 30
    for i, f in enumerate(frames):
        mse = np.mean((f.astype(float) - feed.frame(i).astype(float)) ** 2)
        assert 10 * np.log10(255**2 / mse) > 30, f"frame {i}"
    # keyframes every second so an RTSP client can join mid-stream
    with av.open(str(path)) as c:
        keyframes = [p.is_keyframe for p in c.demux(video=0) if p.size]
    assert sum(keyframes) == 3
    # a later segment starts where asked
    tail = write_demo_video(tmp_path / "tail.mkv", seconds=1.0, fps=10, size=128, seed=1,
                            anomaly_intervals=[(1.0, 2.0)], start_frame=10)
    np.testing.assert_array_equal(tail, labels[10:20])
