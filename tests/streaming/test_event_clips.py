"""streaming/clip_buffer.py, event_clips.py and their use in camera_alerts.py: an alert's frames kept bounded, written
as an H.264 clip the dataset readers read back, kept as a camera's normal footage while labelled false_alarm, pruned
with the events."""
from __future__ import annotations

import time

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Histogram

from offline.data.readers import open_dataset, read_frames
from offline.scoring.alert_rules import AlertTracker
from streaming.batching import ScoredWindow
from streaming.camera_alerts import CameraAlerts
from streaming.clip_buffer import ClipBuffer
from streaming.config import EventsConfig
from streaming.event_clips import EventClips, clip_frames
from streaming.events import EventStore

FPS = 10.0


def frame(i: int, size: int = 32) -> np.ndarray:
    """A frame whose every pixel encodes its index (i * 5 % 256, so the decoded clip shows which frames it kept)."""
    return np.full((size, size, 3), i * 5 % 256, np.uint8)


def levels(frames) -> np.ndarray:
    """Each frame's mean level (H.264 at crf 18 keeps a flat frame's level within a grey level or two)."""
    return np.array([float(np.mean(f)) for f in frames])


def same_frames(got, indices) -> bool:
    want = levels(frame(i) for i in indices)
    return len(got) == len(want) and bool(np.all(np.abs(levels(got) - want) <= 2))


class Clock:
    def __init__(self, t: float):
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_clip_buffer_keeps_the_pre_roll_and_the_newest_frames_of_an_alert():
    buf = ClipBuffer(max_frames=10, pre_frames=3)
    for i in range(5):
        buf.add(frame(i), active=False)
    assert len(buf) == 0 and buf.take() is None
    for i in range(5, 8):
        buf.add(frame(i), active=False)
    for i in range(8, 12):  # pending/open: the 3 frames before come along
        buf.add(frame(i), active=True)
    assert same_frames(buf.take(), range(5, 12))
    assert not buf.active and len(buf) == 0

    for i in range(100, 130):  # a long alert: the newest 10 frames are kept, the bound counted
        buf.add(frame(i), active=True)
    assert buf.dropped == 20
    got = buf.take()
    assert got.shape == (10, 32, 32, 3) and same_frames(got, range(120, 130))


def test_clip_buffer_drops_a_pending_alert_that_never_opened_and_keeps_its_tail_as_pre_roll():
    buf = ClipBuffer(max_frames=50, pre_frames=2)
    for i in range(4):
        buf.add(frame(i), active=True)  # pending ...
    buf.add(frame(4), active=False)  # ... and low again: nothing kept
    assert len(buf) == 0 and not buf.active
    buf.add(frame(5), active=True)
    assert same_frames(buf.take(), (3, 4, 5))  # pre-roll: the 2 frames before frame 5, one from the pending tail
    with pytest.raises(ValueError, match="max_frames"):
        ClipBuffer(0)
    with pytest.raises(ValueError, match="pre_frames"):
        ClipBuffer(5, -1)
    assert clip_frames(30.0, 10.0) == 300 and clip_frames(0.0, 10.0) == 0 and clip_frames(0.25, 5.0) == 2


@pytest.fixture
def setup(tmp_path):
    clock = Clock(time.time())  # clips record when they began in real time
    store = EventStore(tmp_path / "events.db", retention_days=1.0, clock=clock)
    clips = EventClips(EventsConfig(path=tmp_path / "events.db").clips_dir(), 1 << 20, tmp_path / "recordings")
    yield store, clips, clock, tmp_path / "recordings"
    clips.close()
    store.close()


def closed_event(store: EventStore, camera: str, start: float) -> int:
    eid = store.open_event(camera, start, 0.9, 1, start)
    store.close_event(eid, start + 2.0)
    return eid


def test_a_clip_is_written_at_the_camera_fps_and_reads_back_through_the_dataset_readers(setup):
    store, clips, clock, _ = setup
    eid = closed_event(store, "door", clock.t - 10)
    frames = np.stack([frame(i) for i in range(24)])
    clips.save(eid, "door", frames, FPS, store).result(timeout=60)
    assert clips.dir.name == "events-clips" and clips.path(eid).is_file() and clips.exists(eid)
    assert not clips.partial(eid).exists()
    (clip,) = open_dataset(clips.path(eid)).train
    assert clip.num_frames == 24 and clip.fps == pytest.approx(FPS)
    back = np.stack(list(read_frames(clip, size=None)))
    assert back.shape == frames.shape and np.abs(back.astype(int) - frames).max() <= 3
    assert clips.read(eid) == clips.path(eid).read_bytes() and clips.read(eid + 1) is None


def test_false_alarm_keeps_the_clip_as_the_cameras_normal_footage_and_anomaly_removes_it(setup):
    store, clips, clock, recordings = setup
    eid = closed_event(store, "door", clock.t - 10)
    clips.save(eid, "door", np.stack([frame(i) for i in range(20)]), FPS, store).result(timeout=60)
    (recordings / "door" / "door-20240101T000000Z-ab12").mkdir(parents=True)  # a recording's folder beside it

    kept = clips.label(store, eid, "false_alarm")
    target = recordings / "door" / "feedback" / f"event-{eid}.mkv"
    assert kept == {"footage": "kept", "footage_path": str(target)} and target.is_file()
    assert store.get_event(eid).label == "false_alarm"
    (clip,) = open_dataset(recordings / "door").train  # what `vad learn --camera door` reads
    assert clip.id == f"feedback/event-{eid}" and clip.num_frames == 20 and clip.fps == pytest.approx(FPS)
    assert not [p for p in target.parent.iterdir() if p.name.startswith(".")]  # no partial copy left

    assert clips.label(store, eid, "anomaly") == {"footage": "removed"} and not target.exists()
    assert clips.exists(eid)  # the event keeps its clip
    assert clips.label(store, eid, "false_alarm")["footage"] == "kept" and target.is_file()
    assert clips.label(store, 999, "false_alarm") is None


def test_a_label_before_the_clip_is_pending_and_the_writer_keeps_it(setup):
    store, clips, clock, recordings = setup
    eid = store.open_event("door", clock.t - 5, 0.9, 1, clock.t - 5)
    early = clips.label(store, eid, "false_alarm")  # the alert is still open
    assert early["footage"] == "pending" and "still open" in early["footage_reason"]
    store.close_event(eid, clock.t - 1)
    clips.save(eid, "door", np.stack([frame(i) for i in range(18)]), FPS, store).result(timeout=60)
    assert (recordings / "door" / "feedback" / f"event-{eid}.mkv").is_file()


def test_without_a_clip_the_answer_says_why(setup, tmp_path):
    store, clips, clock, _ = setup
    old = closed_event(store, "door", clips.since - 3600)  # closed before clips were kept here
    assert clips.label(store, old, "false_alarm") == {"footage": "none", "footage_reason": "the event predates alert clips"}
    lost = closed_event(store, "door", clock.t + 10)
    answer = clips.label(store, lost, "false_alarm")
    assert answer["footage"] == "none" and "pruned" in answer["footage_reason"]
    off = EventClips(tmp_path / "off", 1 << 20, tmp_path / "recordings", enabled=False)
    assert "events.clip_seconds: 0" in off.label(store, lost, "false_alarm")["footage_reason"]
    nowhere = EventClips(clips.dir, 1 << 20, None)
    assert "recordings.root" in nowhere.label(store, lost, "false_alarm")["footage_reason"]
    for c in (off, nowhere):
        c.close()


def test_clips_go_with_their_events_and_the_oldest_go_beyond_max_bytes(setup):
    store, clips, clock, recordings = setup
    ids = [closed_event(store, "door", clock.t - 100 + i) for i in range(3)]
    for eid in ids:
        clips.save(eid, "door", np.stack([frame(i + eid) for i in range(20)]), FPS, store).result(timeout=60)
    clips.label(store, ids[0], "false_alarm")
    assert all(clips.exists(e) for e in ids)

    clock.t += 2 * 86400  # past retention (1 day): the events go, and their clips with them at the next prune
    assert store.prune() == 3 and clips.prune(store) == 3
    assert not any(clips.exists(e) for e in ids)
    assert (recordings / "door" / "feedback" / f"event-{ids[0]}.mkv").is_file()  # training footage now: it stays

    newer = [closed_event(store, "door", clock.t - 10 + i) for i in range(3)]
    for eid in newer:
        clips.save(eid, "door", np.stack([frame(i) for i in range(20)]), FPS, store).result(timeout=60)
    sizes = [clips.path(e).stat().st_size for e in newer]
    clips.max_bytes = sizes[1] + sizes[2]
    assert clips.prune(store) == 1
    assert [clips.exists(e) for e in newer] == [False, True, True]  # the oldest went; its event stays
    assert store.get_event(newer[0]) is not None
    answer = clips.label(store, newer[0], "false_alarm")
    assert answer["footage"] == "none" and "clips_max_bytes" in answer["footage_reason"]


def scored(indices: range, scores: list[float], t0: float) -> ScoredWindow:
    idx = np.array(list(indices))
    return ScoredWindow(camera="door", indices=idx, wall_s=t0 + idx / FPS, score=np.array(scores, float),
                        warm=np.ones(len(idx), bool), raw={}, error_map=None,
                        frames=np.stack([frame(i) for i in idx]))


def test_camera_alerts_keep_the_alerts_windows_and_write_its_clip_when_it_closes(setup):
    """Scores above the threshold for frames 40-59 of a 100-frame stream: one event; its clip holds the window of
    context before the first high frame (pre-roll 15) through the frame at which the alert closed."""
    store, clips, clock, _ = setup
    cam = CameraAlerts("door", AlertTracker(0.5, min_duration_s=0.5, hysteresis=0.1, close_after_s=0.25, camera="door"))
    cam.clip, cam.clips, cam.fps = ClipBuffer(max_frames=300, pre_frames=15), clips, FPS
    latency = Histogram("lat", "test", ["camera"], registry=CollectorRegistry()).labels("door")
    t0 = clock.t - 20
    for s in range(0, 100, 16):
        idx = range(s, min(s + 16, 100))
        cam.observe(scored(idx, [0.9 if 40 <= i < 60 else 0.1 for i in idx], t0), store, latency, clock.t)
    (ev,) = store.list_events()
    assert ev.status == "closed" and ev.end_s == pytest.approx(t0 + 6.0)
    clips._writer.submit(lambda: None).result(timeout=60)  # the background write is done
    (clip,) = open_dataset(clips.path(ev.id)).train
    got = list(read_frames(clip, size=None))
    # the alert closes at frame 63 (low since frame 60, closed once 0.25 s have passed): frames 25..63
    assert same_frames(got, range(25, 64)), levels(got)
    assert store.get_event(ev.id) is not None and cam.clip.take() is None
